"""The training snapshot: every rating at one instant, as numpy arrays, without ORM objects.

PostgreSQL streams ``COPY (SELECT ..) TO STDOUT`` inside one ``REPEATABLE READ``
transaction; SQLite reads in a deferred transaction (WAL keeps writers unblocked).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.orm import Session

from app.db.tables import Rating

__all__ = ["RatingsSnapshot", "read_ratings_snapshot"]


@dataclass
class RatingsSnapshot:
    """All ratings at one instant, as parallel arrays (what training needs).

    Attributes
    ----------
    user_ids : ndarray of shape (n_ratings,), dtype object
        User id (``str``) of each rating.
    item_ids : ndarray of shape (n_ratings,), dtype object
        Item id (``str``) of each rating.
    ratings : ndarray of shape (n_ratings,), dtype float64
        The rating values.
    max_rated_at : datetime or None
        The newest ``rated_at`` (UTC); ``None`` when there are no ratings.
    n_ratings : int
        Number of ratings.
    max_updated_at : datetime or None
        The newest write (``updated_at``, UTC); a later value means the store changed.
    """

    user_ids: NDArray[np.object_]
    item_ids: NDArray[np.object_]
    ratings: NDArray[np.float64]
    max_rated_at: datetime | None
    n_ratings: int
    max_updated_at: datetime | None = None


_SNAPSHOT_QUERY = "SELECT user_id, item_id, rating FROM ratings ORDER BY user_id, item_id"
_COPY_PARSE_BYTES = 32 * 1024 * 1024


def read_ratings_snapshot(source: Engine | Connection | Session) -> RatingsSnapshot:
    """Read every rating into numpy arrays, consistently, without ORM objects.

    PostgreSQL: ``COPY (SELECT ..) TO STDOUT`` through psycopg, parsed in large
    blocks, inside one ``REPEATABLE READ`` transaction (counts and rows see the same
    snapshot; no statement timeout). SQLite: a deferred read transaction (WAL keeps
    writers unblocked) and a ``fetchmany`` loop. Rows come ordered by (user, item).

    Parameters
    ----------
    source : Engine, Connection or Session
        Where to read. Given an engine, a connection is borrowed for the read. A
        connection or session already inside a transaction is read in that
        transaction (its isolation level is kept).

    Returns
    -------
    RatingsSnapshot
        The ratings and summary values.
    """
    if isinstance(source, Session):
        return _snapshot_in(source.connection())
    if isinstance(source, Connection):
        if source.in_transaction():
            return _snapshot_in(source)
        return _snapshot_own_transaction(source)
    with source.connect() as conn:
        return _snapshot_own_transaction(conn)


def _snapshot_own_transaction(conn: Connection) -> RatingsSnapshot:
    if conn.dialect.name == "sqlite":
        # Not conn.begin(): the engine begins SQLite transactions IMMEDIATE (write
        # lock), and a snapshot read must not block writers.
        raw = conn.connection.driver_connection
        assert raw is not None
        raw.execute("BEGIN DEFERRED")
        try:
            return _snapshot_sqlite(raw)
        finally:
            raw.execute("ROLLBACK")
    with conn.begin():
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        return _snapshot_in(conn)


def _snapshot_in(conn: Connection) -> RatingsSnapshot:
    raw = conn.connection.driver_connection
    assert raw is not None
    if conn.dialect.name == "sqlite":
        return _snapshot_sqlite(raw)
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
        return _snapshot_postgres(conn, raw)
    raise NotImplementedError(f"unsupported database backend {conn.dialect.name!r}")


def _summary(conn: Connection) -> tuple[int, datetime | None, datetime | None]:
    stmt = select(func.count(), func.max(Rating.rated_at), func.max(Rating.updated_at))
    n, max_rated, max_updated = conn.execute(stmt).one()
    return int(n), max_rated, max_updated


def _snapshot_postgres(conn: Connection, raw: Any) -> RatingsSnapshot:
    n, max_rated, max_updated = _summary(conn)
    parser = _TsvBlocks()
    with raw.cursor() as cur, cur.copy(f"COPY ({_SNAPSHOT_QUERY}) TO STDOUT") as copy:
        for data in copy:
            parser.feed(bytes(data))
    users, items, values = parser.finish()
    if len(values) != n:
        raise RuntimeError(f"snapshot read {len(values)} ratings, expected {n}")
    return RatingsSnapshot(users, items, values, max_rated, n, max_updated)


def _snapshot_sqlite(raw: Any) -> RatingsSnapshot:
    cur = raw.cursor()
    try:
        n, max_rated_text, max_updated_text = cur.execute(
            "SELECT count(*), max(rated_at), max(updated_at) FROM ratings"
        ).fetchone()
        users: list[NDArray[np.object_]] = []
        items: list[NDArray[np.object_]] = []
        values: list[NDArray[np.float64]] = []
        cur.execute(_SNAPSHOT_QUERY)
        while rows := cur.fetchmany(100_000):
            block = np.array(rows, dtype=object)
            users.append(block[:, 0])
            items.append(block[:, 1])
            values.append(block[:, 2].astype(np.float64))
    finally:
        cur.close()
    return RatingsSnapshot(
        _concat_objects(users),
        _concat_objects(items),
        np.concatenate(values) if values else np.empty(0, dtype=np.float64),
        _sqlite_time(max_rated_text),
        int(n),
        _sqlite_time(max_updated_text),
    )


def _sqlite_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _concat_objects(parts: list[NDArray[np.object_]]) -> NDArray[np.object_]:
    return np.concatenate(parts) if parts else np.empty(0, dtype=object)


class _TsvBlocks:
    """Parse COPY text output (``user<TAB>item<TAB>rating``) in large blocks.

    Ids match the id pattern, so COPY never escapes anything in them.
    """

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._users: list[NDArray[np.object_]] = []
        self._items: list[NDArray[np.object_]] = []
        self._values: list[NDArray[np.float64]] = []

    def feed(self, data: bytes) -> None:
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= _COPY_PARSE_BYTES:
            buffer = b"".join(self._pending)
            cut = buffer.rfind(b"\n") + 1
            self._parse(buffer[:cut])
            rest = buffer[cut:]
            self._pending = [rest] if rest else []
            self._pending_size = len(rest)

    def finish(self) -> tuple[NDArray[np.object_], NDArray[np.object_], NDArray[np.float64]]:
        if self._pending_size:
            self._parse(b"".join(self._pending))
            self._pending, self._pending_size = [], 0
        values = np.concatenate(self._values) if self._values else np.empty(0, dtype=np.float64)
        return _concat_objects(self._users), _concat_objects(self._items), values

    def _parse(self, block: bytes) -> None:
        if not block:
            return
        frame = pd.read_csv(
            io.BytesIO(block),
            sep="\t",
            header=None,
            names=["user_id", "item_id", "rating"],
            dtype={"user_id": str, "item_id": str, "rating": np.float64},
            quoting=csv.QUOTE_NONE,
            na_filter=False,
            engine="c",
        )
        self._users.append(frame["user_id"].to_numpy(dtype=object))
        self._items.append(frame["item_id"].to_numpy(dtype=object))
        self._values.append(frame["rating"].to_numpy(dtype=np.float64))
