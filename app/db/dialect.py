"""What the query modules share: the backend's INSERT (it knows ``ON CONFLICT``), chunking.

Both SQLite and PostgreSQL (psycopg 3) are supported with the same semantics.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Final

from sqlalchemy import Insert, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Session

__all__ = ["WRITE_CHUNK", "chunks", "dialect_insert", "is_foreign_key_violation"]

WRITE_CHUNK: Final = 5_000
"""Rows per executemany call in batch writes."""


def dialect_insert(session: Session, table: Table | type[DeclarativeBase]) -> Insert:
    """The backend's INSERT construct (it knows ``on_conflict_do_update``).

    Given the mapped class, the statement is ORM-enabled (RETURNING yields entities).
    """
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"unsupported database backend {name!r}")


def is_foreign_key_violation(exc: IntegrityError) -> bool:
    """Whether the database refused a write for a foreign key (an unknown item)."""
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return sqlstate == "23503" or "FOREIGN KEY constraint failed" in str(exc.orig)


def chunks(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """``seq`` in slices of at most ``size``."""
    for start in range(0, len(seq), size):
        yield seq[start : start + size]
