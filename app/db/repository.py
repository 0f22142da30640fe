"""Repository functions of the ratings store.

Plain functions that take a :class:`~sqlalchemy.orm.Session` (or, for the training
snapshot, a connection or engine). They validate their input, write with the
database's own upsert (``INSERT .. ON CONFLICT``) so that concurrent writers never
race, and **never commit**: the caller owns the transaction. An error raised here
leaves nothing written once the caller rolls back.

Both SQLite and PostgreSQL (psycopg 3) are supported with the same semantics.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sqlalchemy import (
    Connection,
    Engine,
    Float,
    Insert,
    Table,
    bindparam,
    delete,
    func,
    select,
    type_coerce,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db.tables import Item, Rating
from app.db.types import utcnow
from app.domain import ItemsNotInStoreError, validate_id, validate_rating
from rbm_core.scale import RatingScale

logger = logging.getLogger(__name__)

__all__ = [
    "ItemIn",
    "RatingIn",
    "RatingsSnapshot",
    "count_items",
    "count_ratings",
    "count_user_ratings",
    "delete_rating",
    "existing_item_ids",
    "get_item",
    "get_user_ratings",
    "item_rating_counts",
    "list_items",
    "read_ratings_snapshot",
    "upsert_items",
    "upsert_rating",
    "upsert_ratings",
    "user_rating_map",
]

WRITE_CHUNK = 5_000
"""Rows per executemany call in batch writes."""

_IN_CHUNK = 10_000
"""Ids per ``IN (...)`` list (SQLite caps the number of bound parameters)."""


@dataclass(frozen=True)
class RatingIn:
    """One rating to write: ``rated_at`` ``None`` means "now"."""

    user_id: str
    item_id: str
    rating: float
    rated_at: datetime | None = None


@dataclass(frozen=True)
class ItemIn:
    """One item to write, with its display metadata."""

    id: str
    title: str = ""
    genres: list[str] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)


# -- helpers ---------------------------------------------------------------------------
def _dialect_insert(session: Session, table: Table | type[Rating]) -> Insert:
    """The backend's INSERT construct (it knows ``on_conflict_do_update``).

    Given the mapped class, the statement is ORM-enabled (RETURNING yields entities).
    """
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"unsupported database backend {name!r}")


def _utc(value: datetime | None, default: datetime) -> datetime:
    if value is None:
        return default
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _is_foreign_key_violation(exc: IntegrityError) -> bool:
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return sqlstate == "23503" or "FOREIGN KEY constraint failed" in str(exc.orig)


def _chunks(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


def _rating_upsert(session: Session, *, orm: bool = False) -> Any:
    """``INSERT INTO ratings .. ON CONFLICT (user_id, item_id) DO UPDATE``.

    The update replaces the value and time, stamps ``updated_at`` and bumps
    ``version``, so ``version == 1`` afterwards means "this statement created the row".
    """
    table = cast(Table, Rating.__table__)
    ins = _dialect_insert(session, Rating if orm else table)
    excluded = ins.excluded  # type: ignore[attr-defined]
    return ins.on_conflict_do_update(  # type: ignore[attr-defined]
        index_elements=[table.c.user_id, table.c.item_id],
        set_={
            "rating": excluded.rating,
            "rated_at": excluded.rated_at,
            "version": table.c.version + 1,
            "updated_at": utcnow(),
        },
    )


# -- ratings ---------------------------------------------------------------------------
def upsert_rating(
    session: Session,
    user_id: str,
    item_id: str,
    rating: float,
    rated_at: datetime | None = None,
    *,
    scale: RatingScale,
) -> tuple[Rating, bool]:
    """Insert or replace one rating in a single ``INSERT .. ON CONFLICT .. RETURNING``.

    Parameters
    ----------
    session : Session
        The unit of work; not committed here.
    user_id, item_id : str
        Ids (validated with :func:`app.domain.validate_id`). The item must exist.
    rating : float
        A level of ``scale``.
    rated_at : datetime, optional
        When the rating was given (naive means UTC); default: now.
    scale : RatingScale
        Allowed values (``Settings.rating_scale``).

    Returns
    -------
    tuple of (Rating, bool)
        The stored row and whether it was created (``False``: an existing rating of
        this user for this item was replaced).

    Raises
    ------
    InvalidIdError, InvalidRatingError
        Bad input; nothing is executed.
    ItemsNotInStoreError
        The item is not in the store. The session's transaction is then unusable
        (PostgreSQL aborts it): roll back.
    """
    validate_id(user_id, "user id")
    validate_id(item_id, "item id")
    value = validate_rating(rating, scale)
    stmt = (
        _rating_upsert(session, orm=True)
        .values(
            user_id=user_id,
            item_id=item_id,
            rating=value,
            rated_at=_utc(rated_at, datetime.now(UTC)),
            version=1,
        )
        .returning(Rating)
    )
    try:
        row = session.scalars(stmt, execution_options={"populate_existing": True}).one()
    except IntegrityError as exc:
        if _is_foreign_key_violation(exc):
            raise ItemsNotInStoreError([item_id]) from exc
        raise
    return row, row.version == 1


def upsert_ratings(session: Session, ratings: Sequence[RatingIn], *, scale: RatingScale) -> int:
    """Insert or replace a batch of ratings, all or nothing.

    Every entry is validated (ids, scale, item existence) before anything is written,
    so one bad entry raises and writes nothing. Within the batch the last entry for a
    (user, item) pair wins. Writes are chunked ``executemany`` upserts in the caller's
    transaction.

    Parameters
    ----------
    session : Session
        The unit of work; not committed here.
    ratings : sequence of RatingIn
        The ratings; ``rated_at`` ``None`` means now.
    scale : RatingScale
        Allowed values (``Settings.rating_scale``).

    Returns
    -------
    int
        The number of distinct (user, item) pairs written.

    Raises
    ------
    InvalidIdError, InvalidRatingError
        An entry is invalid; the message names its position in the batch.
    ItemsNotInStoreError
        Some items are not in the store (all of them are listed).
    """
    now = datetime.now(UTC)
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for position, entry in enumerate(ratings):
        try:
            validate_id(entry.user_id, "user id")
            validate_id(entry.item_id, "item id")
            value = validate_rating(entry.rating, scale)
        except ValueError as exc:
            raise type(exc)(f"rating #{position}: {exc}") from None
        rows[(entry.user_id, entry.item_id)] = {
            "user_id": entry.user_id,
            "item_id": entry.item_id,
            "rating": value,
            "rated_at": _utc(entry.rated_at, now),
            "version": 1,
        }
    if not rows:
        return 0
    wanted = {item_id for _, item_id in rows}
    missing = wanted - existing_item_ids(session, wanted)
    if missing:
        raise ItemsNotInStoreError(sorted(missing))
    stmt = _rating_upsert(session)
    values = list(rows.values())
    try:
        for chunk in _chunks(values, WRITE_CHUNK):
            session.execute(stmt, list(chunk))
    except IntegrityError as exc:
        # an item deleted between the check and the write
        if _is_foreign_key_violation(exc):
            missing = wanted - existing_item_ids(session, wanted)
            raise ItemsNotInStoreError(sorted(missing)) from exc
        raise
    return len(values)


def delete_rating(session: Session, user_id: str, item_id: str) -> bool:
    """Delete one rating; ``True`` if it existed."""
    validate_id(user_id, "user id")
    validate_id(item_id, "item id")
    result = session.execute(
        delete(Rating).where(Rating.user_id == user_id, Rating.item_id == item_id)
    )
    return bool(getattr(result, "rowcount", 0))


def get_user_ratings(
    session: Session, user_id: str, *, offset: int = 0, limit: int | None = None
) -> list[Rating]:
    """A user's ratings, newest first (ties by item id), one page of them.

    Parameters
    ----------
    session : Session
        The unit of work.
    user_id : str
        The user.
    offset : int, default 0
        Ratings to skip.
    limit : int, optional
        Largest number of ratings returned; default: all.

    Returns
    -------
    list of Rating
        Ordered by ``rated_at`` descending, then ``item_id``.
    """
    if offset < 0 or (limit is not None and limit < 0):
        raise ValueError("offset and limit must not be negative")
    stmt = (
        select(Rating)
        .where(Rating.user_id == user_id)
        .order_by(Rating.rated_at.desc(), Rating.item_id)
        .offset(offset)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def count_user_ratings(session: Session, user_id: str) -> int:
    """How many ratings a user has."""
    stmt = select(func.count()).select_from(Rating).where(Rating.user_id == user_id)
    return int(session.scalar(stmt) or 0)


_RATINGS = cast(Table, Rating.__table__)
_USER_RATINGS = select(_RATINGS.c.item_id, type_coerce(_RATINGS.c.rating, Float)).where(
    _RATINGS.c.user_id == bindparam("user_id")
)
"""The read of every recommendation: a Core statement over the table, built once, whose
rows skip the ORM's and ``FloatValue``'s per-row processing (a fifth of that request's
CPU on PostgreSQL, measured)."""


def user_rating_map(db: Session | Connection, user_id: str) -> dict[str, float]:
    """A user's ratings as ``{item id: rating}``, in one query on the primary key index.

    Parameters
    ----------
    db : Session or Connection
        Where to read; a plain connection costs less per call than a session.
    user_id : str
        The user (an unknown user has no ratings).

    Returns
    -------
    dict of str to float
    """
    rows = db.execute(_USER_RATINGS, {"user_id": user_id}).all()  # one fetchall, not row by row
    return {item: float(value) for item, value in rows}


def count_ratings(session: Session) -> int:
    """How many ratings the store holds."""
    return int(session.scalar(select(func.count()).select_from(Rating)) or 0)


def item_rating_counts(
    session: Session | Connection, limit: int | None = None
) -> list[tuple[str, int, float]]:
    """Items by number of ratings, most-rated first (ties by item id).

    Parameters
    ----------
    session : Session or Connection
        Where to read.
    limit : int, optional
        Largest number of items returned; default: all rated items.

    Returns
    -------
    list of (str, int, float)
        ``(item_id, number of ratings, mean rating)``.
    """
    n = func.count().label("n")
    stmt = (
        select(Rating.item_id, n, func.avg(Rating.rating))
        .group_by(Rating.item_id)
        .order_by(n.desc(), Rating.item_id)
        .limit(limit)
    )
    return [(item_id, int(cnt), float(mean)) for item_id, cnt, mean in session.execute(stmt)]


# -- items -----------------------------------------------------------------------------
def upsert_items(session: Session, items: Sequence[ItemIn]) -> int:
    """Insert items or update their metadata; unchanged items are left untouched.

    Within the batch the last entry for an id wins; all ids are validated before
    anything is written.

    Parameters
    ----------
    session : Session
        The unit of work; not committed here.
    items : sequence of ItemIn
        The items.

    Returns
    -------
    int
        The number of distinct item ids in the batch.

    Raises
    ------
    InvalidIdError
        An id is invalid; nothing is written.
    """
    rows: dict[str, dict[str, Any]] = {}
    for position, item in enumerate(items):
        try:
            validate_id(item.id, "item id")
        except ValueError as exc:
            raise type(exc)(f"item #{position}: {exc}") from None
        rows[item.id] = {
            "id": item.id,
            "title": item.title,
            "genres": list(item.genres),
            "attributes": dict(item.attributes),
        }
    if not rows:
        return 0
    table = cast(Table, Item.__table__)
    ins = _dialect_insert(session, table)
    excluded = ins.excluded  # type: ignore[attr-defined]
    changed = (
        table.c.title.is_distinct_from(excluded.title)
        | table.c.genres.is_distinct_from(excluded.genres)
        | table.c.attributes.is_distinct_from(excluded.attributes)
    )
    stmt = ins.on_conflict_do_update(  # type: ignore[attr-defined]
        index_elements=[table.c.id],
        set_={
            "title": excluded.title,
            "genres": excluded.genres,
            "attributes": excluded.attributes,
            "updated_at": utcnow(),
        },
        where=changed,
    )
    values = list(rows.values())
    for chunk in _chunks(values, WRITE_CHUNK):
        session.execute(stmt, list(chunk))
    return len(values)


def get_item(session: Session, item_id: str) -> Item | None:
    """One item by id, or ``None``."""
    return session.get(Item, item_id)


def list_items(session: Session, *, offset: int = 0, limit: int = 100) -> list[Item]:
    """A page of items ordered by id."""
    if offset < 0 or limit < 0:
        raise ValueError("offset and limit must not be negative")
    return list(session.scalars(select(Item).order_by(Item.id).offset(offset).limit(limit)))


def count_items(session: Session) -> int:
    """How many items the store holds."""
    return int(session.scalar(select(func.count()).select_from(Item)) or 0)


def existing_item_ids(session: Session, item_ids: Iterable[str]) -> set[str]:
    """The subset of ``item_ids`` that are in the store."""
    wanted = sorted(set(item_ids))
    found: set[str] = set()
    for chunk in _chunks(wanted, _IN_CHUNK):
        found.update(session.scalars(select(Item.id).where(Item.id.in_(chunk))))
    return found


# -- training snapshot -----------------------------------------------------------------
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
