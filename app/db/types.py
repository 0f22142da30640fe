"""Column types and SQL functions that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, Float
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator

__all__ = ["SQLITE_UTCNOW", "FloatValue", "JSONDocument", "UTCDateTime", "utcnow"]


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
