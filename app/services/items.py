"""The item catalog for the API: one item, a page of items, an item created or replaced.

Plain functions over a session that never commit (the request owns the
transaction), on top of :mod:`app.db.items`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.db import items as item_store
from app.db.tables import Item

__all__ = ["UnknownGenreError", "find_item", "item_page", "save_item"]


class UnknownGenreError(LookupError):
    """No item of the catalog lists the genre asked for."""

    def __init__(self, genre: str, known: list[str]) -> None:
        self.genre = genre
        self.known = known
        listed = ", ".join(known) if known else "none: no item has genres"
        super().__init__(f"unknown genre {genre!r}; the catalog's genres are: {listed}")


def find_item(session: Session, item_id: str) -> Item | None:
    """One item, or ``None`` when the store has no such item."""
    return item_store.get_item(session, item_id)


def item_page(
    session: Session,
    *,
    offset: int,
    limit: int,
    q: str | None = None,
    genre: str | None = None,
    order: item_store.ItemOrder = "id",
) -> tuple[list[Item], int]:
    """One page of the items matching ``q`` (in the title) and ``genre``, and how many match.

    Raises
    ------
    UnknownGenreError
        No item lists ``genre`` (a typo should not look like an empty result).
    """
    items, total = item_store.search_items(
        session, q=q, genre=genre, order=order, offset=offset, limit=limit
    )
    if genre is not None and total == 0:
        _, in_genre = item_store.search_items(session, genre=genre, limit=0)
        if in_genre == 0:
            raise UnknownGenreError(genre, item_store.genre_names(session))
    return items, total


def save_item(
    session: Session,
    item_id: str,
    *,
    title: str,
    genres: list[str],
    attributes: dict[str, Any],
) -> tuple[Item, bool]:
    """Create an item or replace its metadata (title, genres, attributes).

    Returns
    -------
    tuple of (Item, bool)
        The stored item, read back with its server-set times, and whether it was
        created (``False``: an existing item was replaced).
    """
    existed = item_store.get_item(session, item_id) is not None
    item_store.upsert_items(
        session,
        [item_store.ItemIn(id=item_id, title=title, genres=genres, attributes=attributes)],
    )
    item = item_store.get_item(session, item_id, reload=True)
    assert item is not None  # just written in this transaction
    return item, not existed
