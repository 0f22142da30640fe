"""Recovery of abandoned runs and their files, on real stores and a real model directory."""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from app.services import registry
from app.services.artifacts import STAGING_DIR
from app.services.retrain import recover_abandoned, runs


def test_abandoned_runs_versions_and_files_are_cleaned_up(
    session_factory: sessionmaker[Session], artifact: Path, tmp_path: Path
) -> None:
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    kept = model_dir / "20260101T000000000Z-aaaaaa"
    shutil.copytree(artifact, kept)
    abandoned_dir = model_dir / "20260102T000000000Z-bbbbbb"
    shutil.copytree(artifact, abandoned_dir)
    stray = model_dir / ".20260103T000000000Z-cccccc.tmp"  # save_model's temporary sibling
    stray.mkdir()
    (model_dir / STAGING_DIR / "run-x").mkdir(parents=True)
    operators = model_dir / "notes"  # not ours: left alone
    operators.mkdir()
    with session_factory.begin() as session:
        registry.register_version(session, kept, status="active")
        registry.reserve_version(session, abandoned_dir.name, abandoned_dir)
        running = runs.start_run(session, trigger="cli", run_id=None)
    assert running is not None

    assert recover_abandoned(session_factory, model_dir) == [running.id]

    with session_factory() as session:
        assert runs.get_run(session, running.id).status == "failed"  # type: ignore[union-attr]
        version = registry.get_version(session, abandoned_dir.name)
        active = registry.get_active_version(session)
    assert version is not None
    assert version.status == "failed"
    assert version.note == "abandoned: its training run stopped before the artifact was complete"
    assert active is not None
    assert active.id == kept.name
    assert sorted(p.name for p in model_dir.iterdir()) == [kept.name, "notes"]
    # nothing left to do the second time
    assert recover_abandoned(session_factory, model_dir) == []
    assert kept.is_dir()
