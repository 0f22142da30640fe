"""ServingCache: verified private copies of artifacts, shared by the processes mapping them."""

from __future__ import annotations

import os
import shutil
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from app.services.artifacts import ArtifactIntegrityError, artifact_digest
from app.services.model_holder import load_version
from app.services.registry import ModelVersionInfo
from app.services.serving_cache import ServingCache, ServingCacheError
from rbm_core import DEFAULT_SCALE, RatingMatrix, SoftmaxRBM, save_model
from rbm_core.artifact import mapped_file


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A small saved model and its registry digest."""
    rng = np.random.default_rng(0)
    pairs = rng.choice(40 * 30, size=400, replace=False)  # distinct (user, item) pairs
    users = np.char.add("u", (pairs // 30).astype(str))
    items = np.char.add("i", (pairs % 30).astype(str))
    ratings = rng.integers(1, 6, 400).astype(float)
    matrix = RatingMatrix.from_arrays(users, items, ratings, DEFAULT_SCALE)
    model = SoftmaxRBM(n_hidden=6, n_epochs=2, random_state=0).fit(matrix)
    path = save_model(model, tmp_path_factory.mktemp("artifact") / "v1")
    return path, artifact_digest(path)


def _version(path: Path, sha256: str) -> ModelVersionInfo:
    return ModelVersionInfo(
        id="v1",
        status="active",
        artifact_path=path,
        sha256=sha256,
        created_at=datetime.now(UTC),
        activated_at=None,
        n_users=0,
        n_items=0,
        n_ratings=0,
        snapshot_max_rated_at=None,
        hyperparameters={},
        metrics={},
        training_curves={},
    )


def test_a_copy_is_verified_read_only_and_shared(
    artifact: tuple[Path, str], tmp_path: Path
) -> None:
    source, sha = artifact
    cache = ServingCache(tmp_path / "cache")
    first = cache.materialize(source, sha)
    assert first == tmp_path / "cache" / sha
    assert artifact_digest(first) == sha
    files = [p for p in first.rglob("*") if p.is_file()]
    assert files
    assert all(p.stat().st_mode & 0o222 == 0 for p in files)
    assert (tmp_path / "cache").stat().st_mode & 0o777 == 0o700
    # a second process (here: a second cache object) maps the very same files
    inode = (first / "arrays" / "weights.npy").stat().st_ino
    again = ServingCache(tmp_path / "cache").materialize(source, sha)
    assert again == first
    assert (again / "arrays" / "weights.npy").stat().st_ino == inode


def test_the_model_is_mapped_from_the_copy_so_truncating_the_artifact_is_harmless(
    artifact: tuple[Path, str], tmp_path: Path
) -> None:
    source, sha = artifact
    work = Path(shutil.copytree(source, tmp_path / "v1"))
    cache = ServingCache(tmp_path / "cache")
    loaded = load_version(_version(work, sha), cache=cache)
    weights = loaded.model.weights_
    mapped = mapped_file(weights)
    assert mapped is not None
    assert mapped.is_relative_to(tmp_path / "cache")
    expected = np.array(weights)
    os.truncate(work / "arrays" / "weights.npy", 10)  # would be SIGBUS if it were mapped
    np.testing.assert_array_equal(np.asarray(loaded.model.weights_), expected)
    assert loaded.model.recommend({"i1": 5.0}, n=3)


def test_without_a_cache_the_model_is_read_into_memory(
    artifact: tuple[Path, str],
) -> None:
    source, sha = artifact
    loaded = load_version(_version(source, sha))
    assert mapped_file(loaded.model.weights_) is None


def test_a_damaged_copy_is_replaced_not_used(artifact: tuple[Path, str], tmp_path: Path) -> None:
    source, sha = artifact
    cache = ServingCache(tmp_path / "cache")
    copy = cache.materialize(source, sha)
    weights = copy / "arrays" / "weights.npy"
    weights.chmod(0o644)
    os.truncate(weights, 10)
    again = cache.materialize(source, sha)
    assert artifact_digest(again) == sha


def test_a_source_that_does_not_match_the_registry_is_refused(
    artifact: tuple[Path, str], tmp_path: Path
) -> None:
    source, _sha = artifact
    cache = ServingCache(tmp_path / "cache")
    with pytest.raises(ArtifactIntegrityError, match="changed while it was copied"):
        cache.materialize(source, "0" * 64)
    with pytest.raises(ArtifactIntegrityError, match="missing"):
        cache.materialize(tmp_path / "nowhere", "0" * 64)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # no staging left behind


def test_concurrent_loads_publish_one_copy(artifact: tuple[Path, str], tmp_path: Path) -> None:
    source, sha = artifact
    results: list[Path] = []
    errors: list[BaseException] = []

    def load() -> None:
        try:
            results.append(ServingCache(tmp_path / "cache").materialize(source, sha))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert set(results) == {tmp_path / "cache" / sha}
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [sha]


def test_unused_copies_are_pruned_after_the_grace_period(
    artifact: tuple[Path, str], tmp_path: Path
) -> None:
    source, sha = artifact
    root = tmp_path / "cache"
    root.mkdir(mode=0o700)
    old = root / ("a" * 64)
    recent = root / ("b" * 64)
    abandoned = root / ".tmp-abandoned"
    for directory in (old, recent, abandoned):
        directory.mkdir()
        (directory / "f").write_bytes(b"x")
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    os.utime(abandoned, (hour_ago, hour_ago))
    ServingCache(root, grace_seconds=600).materialize(source, sha)
    assert sorted(p.name for p in root.iterdir()) == sorted([sha, recent.name])


def test_a_cache_directory_others_can_write_is_refused_and_loading_falls_back(
    artifact: tuple[Path, str], tmp_path: Path
) -> None:
    source, sha = artifact
    root = tmp_path / "shared"
    root.mkdir()
    root.chmod(0o777)
    with pytest.raises(ServingCacheError, match="writable by other users"):
        ServingCache(root).materialize(source, sha)
    loaded = load_version(_version(source, sha), cache=ServingCache(root))
    assert mapped_file(loaded.model.weights_) is None  # served from memory instead
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ServingCacheError):
        ServingCache(blocker).materialize(source, sha)
