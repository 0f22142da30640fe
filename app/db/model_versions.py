"""Queries of the ``model_versions`` table (the registry's rows).

Functions take a session and never commit. Rows read for a change are locked
(``SELECT .. FOR UPDATE`` on PostgreSQL) and re-read (``populate_existing``), so a
caller acts on the committed state, not on what its session cached.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from app.db.tables import ModelVersion

__all__ = [
    "get",
    "get_active",
    "lock_activations",
    "newest",
    "retire_active",
    "with_files",
    "with_status",
]

_ACTIVATION_LOCK_KEY: Final = 0x7262_6D72_6163_7476
"""PostgreSQL advisory lock (transaction scoped) that serialises activations."""


def get(session: Session, version_id: str, *, for_update: bool = False) -> ModelVersion | None:
    """One version's row, read from the database (locked when ``for_update``)."""
    return session.get(
        ModelVersion, version_id, with_for_update=for_update or None, populate_existing=True
    )


def get_active(session: Session) -> ModelVersion | None:
    """The row with status ``active``, if any (the schema allows at most one)."""
    return session.scalars(select(ModelVersion).where(ModelVersion.status == "active")).first()


def newest(session: Session, limit: int | None = None) -> list[ModelVersion]:
    """Rows newest first (``limit``: at most that many)."""
    stmt = (
        select(ModelVersion)
        .order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))


def with_status(session: Session, status: str) -> list[ModelVersion]:
    """Every row with this status."""
    return list(session.scalars(select(ModelVersion).where(ModelVersion.status == status)))


def with_files(session: Session, statuses: Collection[str]) -> list[ModelVersion]:
    """Rows in ``statuses`` whose files retention has not deleted, newest first."""
    stmt = (
        select(ModelVersion)
        .where(
            ModelVersion.status.in_(sorted(statuses)),
            ModelVersion.artifact_deleted_at.is_(None),
        )
        .order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())
    )
    return list(session.scalars(stmt))


def lock_activations(session: Session) -> None:
    """Serialise activations until the transaction ends.

    PostgreSQL: a transaction-scoped advisory lock. SQLite: nothing to do; its
    transactions already take the write lock up front (``BEGIN IMMEDIATE``).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _signed_key()})


def retire_active(session: Session) -> str | None:
    """Mark the active row ``retired``; returns its id (``None``: none was active)."""
    previous = session.scalars(
        select(ModelVersion.id).where(ModelVersion.status == "active")
    ).first()
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.status == "active")
        .values(status="retired")
        .execution_options(synchronize_session=False)
    )
    return previous


def _signed_key() -> int:
    # PostgreSQL advisory lock keys are signed 64-bit integers.
    key = _ACTIVATION_LOCK_KEY
    return key - (1 << 64) if key >= 1 << 63 else key
