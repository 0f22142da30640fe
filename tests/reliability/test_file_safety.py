"""Files in shared directories: no symlink is followed, nothing outside the model
directory is deleted.

* The serving cache (``rbmrec-<uid>-serving`` in the temporary directory) with a
  symlink planted in its place: the API reads the model into memory instead, and
  nothing in the link's target is deleted (its pruning used to empty it).
* The serve supervisor's port lock with a symlink planted in its place: refused,
  and no file is created where the link points.
* Retention and the retrain clean-ups with an artifact path from the database that
  lies outside the model directory: refused (logged), the directory stays.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy.orm import Session, sessionmaker

from app.cli.supervisor import WorkerSupervisor, port_lock_path
from app.services import registry
from app.services.artifacts import artifact_digest, remove_artifact
from app.services.model_holder import load_version
from app.services.serving_cache import ServingCache

TWO_HOURS_AGO = time.time() - 7200


def _victim(tmp_path: Path) -> Path:
    """A directory the test owns, with old entries that a prune would delete."""
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o700)
    for name in ("precious-dir", "other"):
        (victim / name).mkdir()
        (victim / name / "data.txt").write_text("keep me")
        os.utime(victim / name, (TWO_HOURS_AGO, TWO_HOURS_AGO))
    (victim / "file.txt").write_text("keep me too")
    os.utime(victim / "file.txt", (TWO_HOURS_AGO, TWO_HOURS_AGO))
    return victim


def _snapshot(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*"))


def test_serving_cache_does_not_follow_a_planted_symlink(
    small_artifact: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    victim = _victim(tmp_path)
    before = _snapshot(victim)
    planted = tmp_path / "shared-tmp" / "rbmrec-1000-serving"
    planted.parent.mkdir()
    planted.symlink_to(victim, target_is_directory=True)
    sha = artifact_digest(small_artifact)
    version = registry.ModelVersionInfo.model_validate(
        {
            "id": "20260101T000000000Z-a1b2c3",
            "status": "active",
            "artifact_path": small_artifact,
            "sha256": sha,
            "created_at": "2026-01-01T00:00:00Z",
            "activated_at": None,
            "n_users": 0,
            "n_items": 0,
            "n_ratings": 0,
            "snapshot_max_rated_at": None,
            "hyperparameters": {},
            "metrics": {},
            "training_curves": {},
        }
    )

    with caplog.at_level(logging.WARNING):
        loaded = load_version(version, cache=ServingCache(planted, grace_seconds=60))

    # served all the same, from memory; the link and everything behind it untouched
    assert loaded.version.id == version.id
    assert "symlink" in caplog.text
    assert planted.is_symlink()
    assert _snapshot(victim) == before
    assert (victim / "precious-dir" / "data.txt").read_text() == "keep me"
    assert not (victim / sha).exists()


def test_serving_cache_prunes_without_following_links_inside(
    small_artifact: Path, tmp_path: Path
) -> None:
    victim = _victim(tmp_path)
    before = _snapshot(victim)
    root = tmp_path / "cache"
    root.mkdir(mode=0o700)
    link = root / "old-copy"
    link.symlink_to(victim, target_is_directory=True)
    os.utime(link, (TWO_HOURS_AGO, TWO_HOURS_AGO), follow_symlinks=False)

    ServingCache(root, grace_seconds=60).materialize(
        small_artifact, artifact_digest(small_artifact)
    )

    assert not link.is_symlink()  # the stale entry itself is removed...
    assert _snapshot(victim) == before  # ...never what it points to


def test_the_port_lock_does_not_follow_a_planted_symlink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    target = tmp_path / "elsewhere" / "created-by-serve"
    target.parent.mkdir()
    # A plain socket holds the port, so that a supervisor which got past its lock
    # stops at once instead of starting workers.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        port_lock_path(port).symlink_to(target)
        config = uvicorn.Config(
            "app.api.main:create_app", factory=True, host="127.0.0.1", port=port
        )
        status = WorkerSupervisor(config, workers=2).run()

    assert status == 1
    assert not target.exists()  # the link was not followed: nothing created where it points
    assert port_lock_path(port).is_symlink()


def test_retention_never_deletes_outside_the_model_directory(
    session_factory: sessionmaker[Session],
    small_artifact: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    outside = tmp_path / "not-models" / "20250101T000000000Z-0utsid"
    shutil.copytree(small_artifact, outside)
    inside = []
    for suffix in ("aaaaaa", "bbbbbb"):
        path = model_dir / f"2026010{len(inside) + 2}T000000000Z-{suffix}"
        shutil.copytree(small_artifact, path)
        inside.append(path)
    with session_factory.begin() as session:
        # the oldest row names a directory outside model_dir (a row changed by hand)
        stray = registry.register_version(session, outside, status="candidate")
        for path in inside:
            registry.register_version(session, path, status="candidate")
    before = _snapshot(outside)

    with caplog.at_level(logging.ERROR), session_factory.begin() as session:
        deleted = registry.prune_artifacts(session, keep=1, model_dir=model_dir)

    assert stray.id not in deleted
    assert _snapshot(outside) == before
    assert "not inside the model directory" in caplog.text
    assert len(deleted) == 1
    assert not inside[0].exists()
    with session_factory() as session:
        row = registry.get_version(session, stray.id)
    assert row is not None
    assert row.artifact_available


def test_remove_artifact_refuses_links_out_of_the_model_directory(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    before = _snapshot(victim)
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    (model_dir / "20260101T000000000Z-linked").symlink_to(victim, target_is_directory=True)

    assert not remove_artifact(model_dir / "20260101T000000000Z-linked", model_dir)
    assert not remove_artifact(victim, model_dir)
    assert not remove_artifact(model_dir / "..", model_dir)
    assert not remove_artifact(model_dir, model_dir)
    assert _snapshot(victim) == before
    assert model_dir.is_dir()
