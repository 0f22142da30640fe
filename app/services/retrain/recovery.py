"""Recovery of retrains abandoned by a dead process, and of the files they left.

A run killed at any step leaves nothing half-published: the artifact becomes
visible only complete (atomic rename), a version is registered only after its
files verify, and activation is one transaction. What a killed run does leave (a
``running`` run, a ``training`` version, files in the staging directory or an
unregistered version directory) is cleaned up here, by the next run or worker
start.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from app.services import registry
from app.services.artifacts import STAGING_DIR, remove_artifact
from app.services.retrain.runs import abandon_running_runs

logger = logging.getLogger(__name__)

__all__ = ["recover_abandoned"]

_ABANDONED_VERSION = "abandoned: its training run stopped before the artifact was complete"


def recover_abandoned(session_factory: sessionmaker[Session], model_dir: Path) -> list[str]:
    """Mark runs left ``running`` by a dead process ``failed``; delete their leftovers.

    Call only while holding the retrain lock: then no run is in progress anywhere,
    so every ``running`` run and every ``training`` version was abandoned.

    Returns
    -------
    list of str
        Ids of the runs marked failed.
    """
    with session_factory.begin() as session:
        runs = abandon_running_runs(session)
        for version in registry.versions_with_status(session, "training"):
            registry.set_version_status(session, version.id, "failed", note=_ABANDONED_VERSION)
            remove_artifact(version.artifact_path, model_dir)
    for run in runs:
        logger.warning("marked abandoned run %s (owner %s) failed", run.id, run.owner)
    _clean_model_dir(session_factory, Path(model_dir))
    return [run.id for run in runs]


def _clean_model_dir(session_factory: sessionmaker[Session], model_dir: Path) -> None:
    """Delete staging leftovers and unregistered version directories."""
    remove_artifact(model_dir / STAGING_DIR, model_dir)
    if not model_dir.is_dir():
        return
    with session_factory() as session:
        versions = registry.list_versions(session)
    keep = {
        Path(v.artifact_path).resolve()
        for v in versions
        if v.status in registry.ACTIVATABLE_STATUSES
    }
    for entry in model_dir.iterdir():
        if not entry.is_dir() or entry.resolve() in keep:
            continue
        # Only directories that look like ours: a version id, or save_model's
        # temporary sibling of one. Anything else an operator put here is left alone.
        name = entry.name.lstrip(".")
        if _looks_like_version(name):
            logger.warning("deleting unregistered model directory %s", entry)
            remove_artifact(entry, model_dir)


def _looks_like_version(name: str) -> bool:
    head = name[:19]
    return len(head) == 19 and head[8] == "T" and head[18] == "Z" and head[:8].isdigit()
