"""Retrain run records (``training_runs``): request, claim, progress, outcome, queries.

Functions take a session and never commit; the caller's transaction is the unit
of work (a request of ``POST /admin/retrain``, or one step of the job).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator
from sqlalchemy.orm import Session

from app.db import training_runs as run_rows
from app.db.base import insert_row, update_row
from app.db.tables import RUN_TRIGGERS, TrainingRun
from app.jsonable import record_to_dict, to_jsonable

logger = logging.getLogger(__name__)

__all__ = [
    "TrainingRunInfo",
    "abandon_running_runs",
    "fail_run",
    "finish_run",
    "get_run",
    "list_runs",
    "new_run_id",
    "next_queued_run",
    "record_busy",
    "request_retrain",
    "start_run",
    "update_run",
    "validate_trigger",
]


class TrainingRunInfo(BaseModel):
    """One retrain run as recorded in ``training_runs`` (a detached, immutable record).

    Built from its row with ``model_validate`` (``from_attributes``).

    Attributes
    ----------
    id : str
        Run id.
    trigger : str
        ``schedule``, ``api`` or ``cli``.
    status : str
        ``queued``, ``running``, ``activated``, ``rejected``, ``skipped`` or ``failed``.
    requested_at, started_at, finished_at : datetime
        Timings (UTC).
    owner : str or None
        ``host:pid`` of the process that ran it.
    n_users, n_items, n_ratings, n_train, n_validation : int or None
        Snapshot and split sizes.
    metrics : dict
        Candidate and active model metrics, the tolerance, the decision.
    model_version_id : str or None
        The version it produced.
    reason : str or None
        Why it was skipped or rejected.
    error : str or None
        Why it failed.
    """

    model_config = ConfigDict(from_attributes=True, frozen=True)

    id: str
    trigger: str
    status: str
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    owner: str | None
    n_users: int | None
    n_items: int | None
    n_ratings: int | None
    n_train: int | None
    n_validation: int | None
    metrics: dict[str, Any]
    model_version_id: str | None
    reason: str | None
    error: str | None

    @field_validator("metrics", mode="before")
    @classmethod
    def _null_as_empty(cls, value: object) -> object:
        return {} if value is None else value

    @property
    def duration_seconds(self) -> float | None:
        """Seconds from start to end, when both are known."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def finished(self) -> bool:
        """Whether the run has an outcome."""
        return self.status not in {"queued", "running"}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (times as ISO 8601 strings), for ``--json`` output."""
        return record_to_dict(self, duration_seconds=self.duration_seconds)


def _info(row: TrainingRun) -> TrainingRunInfo:
    return TrainingRunInfo.model_validate(row)


def _existing(session: Session, run_id: str, *, for_update: bool = False) -> TrainingRun:
    row = run_rows.get(session, run_id, for_update=for_update)
    if row is None:
        raise LookupError(f"no training run {run_id!r}")
    return row


def validate_trigger(trigger: str) -> str:
    """Check that ``trigger`` is one of :data:`~app.db.tables.RUN_TRIGGERS`; returns it."""
    if trigger not in RUN_TRIGGERS:
        raise ValueError(f"trigger must be one of {', '.join(RUN_TRIGGERS)}, got {trigger!r}")
    return trigger


def new_run_id() -> str:
    """A new run id (sorts by time; unique across hosts)."""
    now = datetime.now(UTC)
    return f"run-{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{secrets.token_hex(4)}"


def run_owner() -> str:
    """``host:pid`` of this process, recorded with the runs it executes."""
    return f"{socket.gethostname()}:{os.getpid()}"


# -- queries -----------------------------------------------------------------------------
def get_run(session: Session, run_id: str) -> TrainingRunInfo | None:
    """One run by id, or ``None``."""
    row = run_rows.get(session, run_id)
    return _info(row) if row is not None else None


def list_runs(session: Session, *, limit: int = 20) -> list[TrainingRunInfo]:
    """The newest runs first."""
    return [_info(row) for row in run_rows.newest(session, limit)]


def next_queued_run(session: Session) -> str | None:
    """The id of the oldest queued run, if any."""
    return run_rows.oldest_queued_id(session)


# -- the life of a run ---------------------------------------------------------------------
def request_retrain(session: Session, *, trigger: str = "api") -> tuple[TrainingRunInfo, bool]:
    """Queue a retrain for the worker (what ``POST /admin/retrain`` does).

    A run that is already queued and not started is returned instead of a second
    one: both requests are served by the same run.

    Parameters
    ----------
    session : Session
        The unit of work; not committed here.
    trigger : str, default "api"
        Recorded as the run's trigger.

    Returns
    -------
    tuple of (TrainingRunInfo, bool)
        The queued run, and whether it was created by this call.
    """
    existing = next_queued_run(session)
    if existing is not None:
        row = run_rows.get(session, existing)
        if row is not None:
            return _info(row), False
    row = insert_row(
        session, TrainingRun, id=new_run_id(), trigger=trigger, status="queued", metrics={}
    )
    return _info(row), True


def start_run(session: Session, *, trigger: str, run_id: str | None) -> TrainingRunInfo | None:
    """Record the start of a run: a new ``running`` run, or a claim of a queued one.

    Parameters
    ----------
    trigger : {"schedule", "api", "cli"}
        What started it (for a new run).
    run_id : str or None
        A queued run to claim; ``None`` for a new run.

    Returns
    -------
    TrainingRunInfo or None
        The running run; ``None`` when ``run_id`` was not queued any more (another
        worker claimed it, or it does not exist).
    """
    if run_id is None:
        return _info(_insert_started(session, trigger=trigger, status="running"))
    if not run_rows.claim_queued(session, run_id, started_at=datetime.now(UTC), owner=run_owner()):
        return None
    return get_run(session, run_id)


def record_busy(session: Session, *, trigger: str, run_id: str | None, why: str) -> TrainingRunInfo:
    """What a run that found the retrain lock taken leaves behind.

    A queued run stays queued (a later attempt runs it); a new run is recorded
    ``skipped`` with the reason.

    Raises
    ------
    LookupError
        ``run_id`` names no run.
    """
    if run_id is not None:
        queued = _existing(session, run_id)
        logger.info("run %s stays queued: %s", run_id, why)
        return _info(queued)
    row = _insert_started(
        session,
        trigger=trigger,
        status="skipped",
        finished=True,
        reason=f"another retrain is in progress: {why}",
    )
    logger.info("retrain skipped: %s", why)
    return _info(row)


def _insert_started(
    session: Session, *, trigger: str, status: str, finished: bool = False, **values: Any
) -> TrainingRun:
    """A new run of this process, started now (and finished now, if ``finished``)."""
    now = datetime.now(UTC)
    if finished:
        values["finished_at"] = now
    return insert_row(
        session,
        TrainingRun,
        id=new_run_id(),
        trigger=trigger,
        status=status,
        requested_at=now,
        started_at=now,
        owner=run_owner(),
        metrics={},
        **values,
    )


def update_run(session: Session, run_id: str, **values: Any) -> TrainingRunInfo:
    """Record progress of a run: snapshot and split sizes, its version, metrics."""
    row = _existing(session, run_id, for_update=True)
    if "metrics" in values:
        values["metrics"] = to_jsonable(values["metrics"])
    return _info(update_row(session, row, **values))


def finish_run(session: Session, run_id: str, status: str, **values: Any) -> TrainingRunInfo:
    """Record a run's outcome (``activated``, ``rejected`` or ``skipped``) and its end."""
    info = update_run(session, run_id, status=status, finished_at=datetime.now(UTC), **values)
    logger.info(
        "retrain run %s %s%s",
        run_id,
        status,
        f": {info.reason or info.error}" if info.reason or info.error else "",
    )
    return info


def fail_run(session: Session, run_id: str, error: str) -> TrainingRunInfo | None:
    """Mark a ``running`` run ``failed`` with ``error``.

    A run whose outcome is already recorded keeps it (e.g. retention or a final
    read failed after the activation).

    Returns
    -------
    TrainingRunInfo or None
        The failed run; ``None`` when it was not running (or does not exist).
    """
    row = run_rows.get(session, run_id, for_update=True)
    if row is None or row.status != "running":
        return None
    return _info(
        update_row(session, row, status="failed", finished_at=datetime.now(UTC), error=error)
    )


def abandon_running_runs(session: Session) -> list[TrainingRunInfo]:
    """Mark every ``running`` run ``failed``: its process stopped before it finished.

    Call only while holding the retrain lock: then no run is in progress anywhere,
    so every ``running`` run was abandoned.
    """
    now = datetime.now(UTC)
    abandoned = []
    for row in run_rows.with_status(session, "running"):
        error = (
            f"abandoned: the process running it ({row.owner or 'unknown'}) stopped "
            "before the run finished; nothing it produced was published"
        )
        abandoned.append(
            _info(update_row(session, row, status="failed", finished_at=now, error=error))
        )
    return abandoned
