"""The item catalog for the API: one item, a page of items, an item created or replaced.

Plain functions over a session that never commit (the request owns the
transaction), on top of :mod:`app.db.items`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.db import items as item_store
from app.db.tables import Item

__all__ = ["find_item", "item_page", "save_item"]


def find_item(session: Session, item_id: str) -> Item | None:
    """One item, or ``None`` when the store has no such item."""
    return item_store.get_item(session, item_id)


def item_page(session: Session, *, offset: int, limit: int) -> tuple[list[Item], int]:
    """One page of the catalog (ordered by id) and the catalog's size."""
    return item_store.list_items(session, offset=offset, limit=limit), item_store.count_items(
        session
    )


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
