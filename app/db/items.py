"""Queries of the ``items`` table: the catalog, its upserts, titles and genres.

Like every query module here, the functions take a session (or a plain connection
on read paths) and never commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast

from sqlalchemy import ColumnClause, ColumnElement, Connection, Table, column, exists, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.db.dialect import WRITE_CHUNK, chunks, dialect_insert
from app.db.tables import Item, Rating
from app.db.types import utcnow
from app.domain import validate_id

__all__ = [
    "ItemIn",
    "catalog_entries",
    "count_items",
    "existing_item_ids",
    "genre_names",
    "get_item",
    "insert_missing_items",
    "item_titles",
    "list_items",
    "search_items",
    "upsert_items",
]

ItemOrder = Literal["id", "title", "popularity"]
"""Orders of a catalog page: ``id`` (numeric ids in numeric order), ``title``, or
``popularity`` (most rated first)."""

_IN_CHUNK: Final = 10_000
"""Ids per ``IN (...)`` list (SQLite caps the number of bound parameters)."""


@dataclass(frozen=True)
class ItemIn:
    """One item to write, with its display metadata."""

    id: str
    title: str = ""
    genres: list[str] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)


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
    ins = dialect_insert(session, table)
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
    for chunk in chunks(values, WRITE_CHUNK):
        session.execute(stmt, list(chunk))
    return len(values)


def get_item(session: Session, item_id: str, *, reload: bool = False) -> Item | None:
    """One item by id, or ``None``; ``reload`` reads it again even if the session has it."""
    return session.get(Item, item_id, populate_existing=reload)


def list_items(session: Session, *, offset: int = 0, limit: int = 100) -> list[Item]:
    """A page of items ordered by id."""
    if offset < 0 or limit < 0:
        raise ValueError("offset and limit must not be negative")
    return list(session.scalars(select(Item).order_by(Item.id).offset(offset).limit(limit)))


def _natural_id_order() -> list[ColumnElement[Any] | InstrumentedAttribute[str]]:
    # Shorter ids first, then the text: numeric ids (the usual case) come in numeric
    # order (2 before 10), and the order is the same on both backends.
    return [func.length(Item.id), Item.id]


def _has_genre(session: Session, genre: str) -> ColumnElement[bool]:
    """Whether the item lists ``genre`` (case-insensitive) among its genres."""
    if session.get_bind().dialect.name == "postgresql":
        elements = func.jsonb_array_elements_text(Item.genres).table_valued("value")
    else:
        elements = func.json_each(Item.genres).table_valued("value")
    value: ColumnClause[str] = column("value")
    return exists(select(1).select_from(elements).where(func.lower(value) == genre.casefold()))


def search_items(
    session: Session,
    *,
    q: str | None = None,
    genre: str | None = None,
    order: ItemOrder = "id",
    offset: int = 0,
    limit: int = 100,
) -> tuple[list[Item], int]:
    """A page of the items matching a search, and how many match.

    Parameters
    ----------
    session : Session
        Where to read.
    q : str, optional
        Only items whose title contains this text (case-insensitive; ``%`` and ``_``
        are plain characters).
    genre : str, optional
        Only items listing this genre (case-insensitive).
    order : {"id", "title", "popularity"}
        ``id``: numeric ids in numeric order; ``title``: by title; ``popularity``:
        most ratings first. Ties by id.
    offset, limit : int
        The page.
    """
    if offset < 0 or limit < 0:
        raise ValueError("offset and limit must not be negative")
    conditions: list[ColumnElement[bool]] = []
    if q:
        conditions.append(Item.title.icontains(q, autoescape=True))
    if genre is not None:
        conditions.append(_has_genre(session, genre))
    total = int(session.scalar(select(func.count()).select_from(Item).where(*conditions)) or 0)
    stmt = select(Item).where(*conditions)
    if order == "title":
        stmt = stmt.order_by(func.lower(Item.title), *_natural_id_order())
    elif order == "popularity":
        counts = select(Rating.item_id, func.count().label("n")).group_by(Rating.item_id).subquery()
        stmt = stmt.outerjoin(counts, counts.c.item_id == Item.id).order_by(
            func.coalesce(counts.c.n, 0).desc(), *_natural_id_order()
        )
    else:
        stmt = stmt.order_by(*_natural_id_order())
    return list(session.scalars(stmt.offset(offset).limit(limit))), total


def genre_names(session: Session) -> list[str]:
    """Every genre some item lists, as spelled by the first item listing it, sorted."""
    names: dict[str, str] = {}
    for genres in session.scalars(select(Item.genres)):
        for name in genres or ():
            names.setdefault(str(name).casefold(), str(name))
    return sorted(names.values(), key=str.casefold)


def count_items(session: Session) -> int:
    """How many items the store holds."""
    return int(session.scalar(select(func.count()).select_from(Item)) or 0)


def existing_item_ids(session: Session, item_ids: Iterable[str]) -> set[str]:
    """The subset of ``item_ids`` that are in the store."""
    wanted = sorted(set(item_ids))
    found: set[str] = set()
    for chunk in chunks(wanted, _IN_CHUNK):
        found.update(session.scalars(select(Item.id).where(Item.id.in_(chunk))))
    return found


def insert_missing_items(session: Session, item_ids: Sequence[str]) -> int:
    """Create the items of ``item_ids`` that do not exist (empty title, no genres).

    Uses ``INSERT .. ON CONFLICT DO NOTHING``, so an item created concurrently by
    someone else keeps its metadata.

    Returns
    -------
    int
        The number of items that were missing before the call.
    """
    missing = sorted(set(item_ids) - existing_item_ids(session, item_ids))
    if not missing:
        return 0
    table = cast(Table, Item.__table__)
    session.execute(
        dialect_insert(session, table).on_conflict_do_nothing(  # type: ignore[attr-defined]
            index_elements=[table.c.id]
        ),
        [{"id": item, "title": "", "genres": [], "attributes": {}} for item in missing],
    )
    return len(missing)


def item_titles(db: Session | Connection, item_ids: Sequence[str]) -> dict[str, str]:
    """Titles of some items (one query); items not in the store are absent."""
    if not item_ids:
        return {}
    stmt = select(Item.id, Item.title).where(Item.id.in_(list(item_ids)))
    return {item_id: title for item_id, title in db.execute(stmt)}


def catalog_entries(db: Session | Connection) -> Iterator[tuple[str, str, list[str]]]:
    """Every item's ``(id, title, genres)``, in one scan of the table."""
    for item_id, title, genres in db.execute(select(Item.id, Item.title, Item.genres)):
        yield item_id, title, list(genres or ())
