"""Queries of the ``training_runs`` table (the retrain job's records).

Functions take a session and never commit. Rows read for a change are locked
(``SELECT .. FOR UPDATE`` on PostgreSQL) and re-read (``populate_existing``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db.tables import TrainingRun

__all__ = [
    "claim_queued",
    "get",
    "newest",
    "oldest_queued_id",
    "with_status",
]


def get(session: Session, run_id: str, *, for_update: bool = False) -> TrainingRun | None:
    """One run's row, read from the database (locked when ``for_update``)."""
    return session.get(
        TrainingRun, run_id, with_for_update=for_update or None, populate_existing=True
    )


def newest(session: Session, limit: int) -> list[TrainingRun]:
    """The newest rows first (by request time, then id)."""
    stmt = (
        select(TrainingRun)
        .order_by(TrainingRun.requested_at.desc(), TrainingRun.id.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))


def oldest_queued_id(session: Session) -> str | None:
    """The id of the oldest ``queued`` run, if any."""
    stmt = (
        select(TrainingRun.id)
        .where(TrainingRun.status == "queued")
        .order_by(TrainingRun.requested_at, TrainingRun.id)
        .limit(1)
    )
    return session.scalars(stmt).first()


def with_status(session: Session, status: str) -> list[TrainingRun]:
    """Every row with this status."""
    return list(session.scalars(select(TrainingRun).where(TrainingRun.status == status)))


def claim_queued(session: Session, run_id: str, *, started_at: datetime, owner: str) -> bool:
    """Move a ``queued`` run to ``running`` in one statement; ``False`` if it was not queued.

    One ``UPDATE .. WHERE status = 'queued'``: of several workers claiming the same
    run, exactly one succeeds.
    """
    result = session.execute(
        update(TrainingRun)
        .where(TrainingRun.id == run_id, TrainingRun.status == "queued")
        .values(status="running", started_at=started_at, owner=owner)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))
