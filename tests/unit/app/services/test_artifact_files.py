"""The registry's view of artifact files (app.services.artifacts)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.services.artifacts import (
    ArtifactIntegrityError,
    artifact_digest,
    check_artifact,
    remove_artifact,
)


@pytest.fixture
def copy(artifact: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(artifact, target)
    return target


def test_the_digest_covers_every_file_and_its_name(artifact: Path, copy: Path) -> None:
    digest = artifact_digest(artifact)
    assert artifact_digest(copy) == digest  # the directory's own name does not count
    (copy / "metadata.json").rename(copy / "metadata.json.bak")
    renamed = artifact_digest(copy)
    assert renamed != digest
    (copy / "extra").write_text("x")
    assert artifact_digest(copy) not in {digest, renamed}


def test_check_artifact_compares_the_digest_and_loads_the_model(artifact: Path, copy: Path) -> None:
    digest = artifact_digest(artifact)
    assert check_artifact(copy, digest) == digest
    assert check_artifact(copy) == digest
    with pytest.raises(ArtifactIntegrityError, match="fails its checksum"):
        check_artifact(copy, "0" * 64)
    # with no digest to compare with, rbm_core's per-file checksums catch a changed file
    next(copy.rglob("*.npy")).write_bytes(b"garbage")
    with pytest.raises(ArtifactIntegrityError, match="cannot be loaded"):
        check_artifact(copy)


def test_missing_or_empty_directories(tmp_path: Path) -> None:
    with pytest.raises(ArtifactIntegrityError, match="does not exist"):
        artifact_digest(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactIntegrityError, match="is empty"):
        artifact_digest(tmp_path / "empty")


def test_remove_artifact(copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert remove_artifact(copy, copy.parent)
    assert not copy.exists()
    assert remove_artifact(copy, copy.parent)  # already gone
    # an empty path names no artifact (it would be the working directory)
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    (workdir / "keep").write_text("x")
    monkeypatch.chdir(workdir)
    assert not remove_artifact(Path(""), workdir)
    assert not remove_artifact("", workdir)
    assert (workdir / "keep").is_file()
