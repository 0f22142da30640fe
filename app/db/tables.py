"""The tables, as SQLAlchemy 2 typed mappings: the ratings store and the model registry.

``items`` and ``ratings`` hold the catalog and users' ratings. ``model_versions`` is
the source of truth for which model is active: the partial unique index
``uq_model_versions_one_active`` (``WHERE status = 'active'``, on both PostgreSQL and
SQLite) lets at most one row be active, so the database, not the code, enforces it.
``training_runs`` records every retrain.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base
from app.db.types import FloatValue, JSONDocument, UTCDateTime, utcnow
from app.domain import ID_MAX_LENGTH

__all__ = [
    "ID_LENGTH",
    "RUN_STATUSES",
    "RUN_TRIGGERS",
    "VERSION_STATUSES",
    "Item",
    "ModelVersion",
    "Rating",
    "TrainingRun",
]

ID_LENGTH: Final = ID_MAX_LENGTH
"""Width of the user and item id columns (see :data:`app.domain.ID_PATTERN`)."""


# -- the ratings store -------------------------------------------------------------------
class Item(Base):
    """A recommendable item (a movie, for MovieLens) with its display metadata."""

    __tablename__ = "items"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    title: Mapped[str] = mapped_column(Text, default="")
    genres: Mapped[list[str]] = mapped_column(JSONDocument, default=list)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=utcnow())
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, server_default=utcnow(), onupdate=utcnow()
    )

    def __repr__(self) -> str:
        return f"Item(id={self.id!r}, title={self.title!r})"


class Rating(Base):
    """One user's rating of one item; exactly one row per (user, item)."""

    __tablename__ = "ratings"
    __table_args__ = (Index("ix_ratings_item_id", "item_id"),)

    # The composite primary key is the "one row per (user, item)" rule and the
    # index for "all ratings of a user"; ix_ratings_item_id serves "all of an item".
    user_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    item_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("items.id", ondelete="CASCADE"), primary_key=True
    )
    rating: Mapped[float] = mapped_column(FloatValue)
    rated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # 1 when the row is inserted, +1 on every update that changes it: lets one
    # INSERT .. ON CONFLICT .. RETURNING say "created or replaced" on both backends.
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, server_default=utcnow(), onupdate=utcnow()
    )

    def __repr__(self) -> str:
        return f"Rating(user_id={self.user_id!r}, item_id={self.item_id!r}, rating={self.rating!r})"


# -- the model registry ----------------------------------------------------------------
VERSION_STATUSES: Final = ("training", "candidate", "active", "rejected", "retired", "failed")
"""Life cycle of a version: ``training`` -> ``candidate`` -> ``active`` or ``rejected``;
an active version becomes ``retired`` when another is activated; ``failed`` when its
run died before the artifact was complete."""

RUN_STATUSES: Final = ("queued", "running", "activated", "rejected", "skipped", "failed")
"""Life cycle of a run: ``queued`` (asked for through the API) -> ``running`` -> one
outcome: ``activated``, ``rejected`` (candidate worse than the active model),
``skipped`` (nothing to do, with the reason) or ``failed`` (with the error)."""

RUN_TRIGGERS: Final = ("schedule", "api", "cli")
"""What started a run."""

VERSION_ID_LENGTH: Final = 64


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class ModelVersion(Base):
    """One trained model: its artifact, the data it saw, its parameters and metrics."""

    __tablename__ = "model_versions"
    __table_args__ = (
        CheckConstraint(_in("status", VERSION_STATUSES), name="status"),
        Index(
            "uq_model_versions_one_active",
            "status",
            unique=True,
            postgresql_where=text("status = 'active'"),
            sqlite_where=text("status = 'active'"),
        ),
        Index("ix_model_versions_created_at", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(VERSION_ID_LENGTH), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=utcnow())
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    artifact_path: Mapped[str] = mapped_column(Text)
    # SHA-256 over the artifact's files (see app.services.artifacts.artifact_digest);
    # empty while the version is still training.
    sha256: Mapped[str] = mapped_column(String(64), default="")
    artifact_deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    n_users: Mapped[int] = mapped_column(Integer, default=0)
    n_items: Mapped[int] = mapped_column(Integer, default=0)
    n_ratings: Mapped[int] = mapped_column(Integer, default=0)
    snapshot_max_rated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # What the store looked like just before the snapshot was read (count, sum of
    # row versions, newest write); equal fingerprints mean nothing changed since.
    data_fingerprint: Mapped[str | None] = mapped_column(String(200), default=None)
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    training_curves: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    note: Mapped[str | None] = mapped_column(Text, default=None)

    def __repr__(self) -> str:
        return f"ModelVersion(id={self.id!r}, status={self.status!r})"


class TrainingRun(Base):
    """One retrain: what started it, how it went, and the version it produced."""

    __tablename__ = "training_runs"
    __table_args__ = (
        CheckConstraint(_in("status", RUN_STATUSES), name="status"),
        CheckConstraint(_in("trigger", RUN_TRIGGERS), name="trigger"),
        Index("ix_training_runs_status", "status"),
        Index("ix_training_runs_requested_at", "requested_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    trigger: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=utcnow())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # host:pid of the process that ran it, for the operator reading a stuck run
    owner: Mapped[str | None] = mapped_column(String(200), default=None)
    n_users: Mapped[int | None] = mapped_column(Integer, default=None)
    n_items: Mapped[int | None] = mapped_column(Integer, default=None)
    n_ratings: Mapped[int | None] = mapped_column(Integer, default=None)
    n_train: Mapped[int | None] = mapped_column(Integer, default=None)
    n_validation: Mapped[int | None] = mapped_column(Integer, default=None)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    model_version_id: Mapped[str | None] = mapped_column(
        String(VERSION_ID_LENGTH),
        ForeignKey("model_versions.id", ondelete="SET NULL"),
        default=None,
    )
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)

    def __repr__(self) -> str:
        return f"TrainingRun(id={self.id!r}, status={self.status!r})"
