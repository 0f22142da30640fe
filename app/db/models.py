"""ORM models of the ratings store (SQLAlchemy 2 typed mappings)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator

from app.db.base import Base
from app.domain import ID_MAX_LENGTH, ID_PATTERN

ID_LENGTH = ID_MAX_LENGTH
"""User and item ids are opaque strings of 1-64 characters: letters, digits, ``_.:-``."""

__all__ = [
    "ID_LENGTH",
    "ID_PATTERN",
    "SQLITE_UTCNOW",
    "FloatValue",
    "Item",
    "JSONDocument",
    "Rating",
    "UTCDateTime",
    "utcnow",
]


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, on every backend.

    PostgreSQL stores ``timestamptz``. SQLite has no time zone support: values are
    stored as naive UTC text (``YYYY-MM-DD HH:MM:SS.ffffff``, so text order is time
    order) and come back tagged as UTC. Naive datetimes passed in are taken as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        if dialect.name == "sqlite":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class FloatValue(TypeDecorator[float]):
    """A float column that always reads back as ``float``.

    SQLite's RETURNING yields the bound value before column affinity applies, so an
    integral float such as 4.0 would come back as the int 4.
    """

    impl = Float
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Dialect) -> float | None:
        return None if value is None else float(value)


class utcnow(FunctionElement[datetime]):
    """The current time, UTC, in the column format of each backend.

    PostgreSQL: ``now()`` (the transaction's start). SQLite: text with microsecond
    digits, so it sorts with the values :class:`UTCDateTime` writes (SQLite's own
    ``CURRENT_TIMESTAMP`` has whole seconds only).
    """

    type = UTCDateTime()
    inherit_cache = True


@compiles(utcnow)
def _utcnow_default(element: utcnow, compiler: Any, **kw: Any) -> str:
    return "now()"


@compiles(utcnow, "sqlite")
def _utcnow_sqlite(element: utcnow, compiler: Any, **kw: Any) -> str:
    return SQLITE_UTCNOW


SQLITE_UTCNOW = "strftime('%Y-%m-%d %H:%M:%f000', 'now')"
"""SQLite expression of the current UTC time as ``YYYY-MM-DD HH:MM:SS.ffffff``."""

JSONDocument = JSON().with_variant(JSONB(), "postgresql")
"""JSON on SQLite, JSONB on PostgreSQL (JSONB has equality, so upserts can skip no-op
updates)."""


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
