"""Facts about the whole catalog that requests need but must not recompute each time.

The store's most-rated items (the ``popular`` strategy without a model), every
item's title and the items of each genre, cached per process for a few seconds
(:class:`CatalogCache`) and read through the caller's session or connection.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from app.db.items import catalog_entries, item_titles
from app.db.ratings import item_rating_counts

__all__ = ["CATALOG_TTL_SECONDS", "CatalogCache", "CatalogIndex", "Db", "PopularList"]

CATALOG_TTL_SECONDS: Final = 30.0
"""How long cached catalog facts are reused when this process changed nothing."""

T = TypeVar("T")

Db = Session | Connection
"""Where the catalog is read: a request's session, or (cheaper, for the hot
recommendation path) a plain connection."""


@dataclass(frozen=True)
class PopularList:
    """Items of the store by number of ratings, most rated first."""

    item_ids: list[str]
    counts: list[int]
    means: list[float]


class _Cached(Generic[T]):
    """A value computed from the store, reused for ``ttl`` seconds or until marked stale.

    Only one thread recomputes at a time; the others keep using the previous value
    meanwhile (or wait for the first one).
    """

    def __init__(self, compute: Callable[[Db], T], ttl: float) -> None:
        self._compute = compute
        self._ttl = ttl
        self._value: tuple[T, float] | None = None
        self._stale = True
        self._lock = threading.Lock()

    def mark_stale(self) -> None:
        self._stale = True

    def get(self, session: Db) -> T:
        current = self._value
        if current is not None and not self._stale and time.monotonic() - current[1] < self._ttl:
            return current[0]
        if current is not None:
            if not self._lock.acquire(blocking=False):
                return current[0]  # another thread is recomputing: use the previous value
        else:
            self._lock.acquire()
            if self._value is not None:  # computed while this thread waited
                self._lock.release()
                return self._value[0]
        try:
            self._stale = False
            try:
                value = self._compute(session)
            except BaseException:
                self._stale = True
                raise
            self._value = (value, time.monotonic())
            return value
        finally:
            self._lock.release()


def _read_popular(db: Db) -> PopularList:
    rows = item_rating_counts(db)
    return PopularList([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])


@dataclass(frozen=True)
class CatalogIndex:
    """Every item's title, and the items of each genre (keys case-folded)."""

    titles: dict[str, str]
    genres: dict[str, frozenset[str]]


def _read_catalog(db: Db) -> CatalogIndex:
    titles: dict[str, str] = {}
    genres: dict[str, set[str]] = {}
    for item_id, title, item_genres in catalog_entries(db):
        titles[item_id] = title
        for genre in item_genres:
            genres.setdefault(str(genre).casefold(), set()).add(item_id)
    return CatalogIndex(titles, {genre: frozenset(ids) for genre, ids in genres.items()})


class CatalogCache:
    """Facts about the whole catalog that requests need but must not recompute each time.

    * the store's most-rated items (the ``popular`` strategy without a model): one
      ``GROUP BY`` over all ratings;
    * every item's title and the items of each genre (the ``genre`` filter): one
      scan of the items. A title asked for but missing from the cache (an item
      created since) is read from the store, so results never lack a title.

    Each is recomputed when older than ``ttl_seconds``, or at the next use after this
    process changed ratings (:meth:`ratings_changed`) or items (:meth:`items_changed`);
    other processes' changes show within ``ttl_seconds``. They are read through the
    caller's session: on SQLite a second connection would wait for the write lock
    that the request's own transaction holds.

    Parameters
    ----------
    ttl_seconds : float
        Longest reuse of a computed value.
    """

    def __init__(self, ttl_seconds: float = CATALOG_TTL_SECONDS) -> None:
        self._popular = _Cached(_read_popular, ttl_seconds)
        self._catalog = _Cached(_read_catalog, ttl_seconds)

    def ratings_changed(self) -> None:
        """This process wrote ratings: recompute the popular items at their next use."""
        self._popular.mark_stale()

    def items_changed(self) -> None:
        """This process wrote items: re-read titles and genres at their next use."""
        self._catalog.mark_stale()

    def popular(self, session: Db) -> PopularList:
        """The store's items by number of ratings, most rated first."""
        return self._popular.get(session)

    def genre_items(self, session: Db, genre: str) -> frozenset[str]:
        """Ids of the items listing ``genre`` (case-insensitive)."""
        return self._catalog.get(session).genres.get(genre.casefold(), frozenset())

    def titles(self, session: Db, item_ids: Sequence[str]) -> dict[str, str]:
        """Titles of ``item_ids``; ids not in the store are absent."""
        known = self._catalog.get(session).titles
        found = {item: known[item] for item in item_ids if item in known}
        if len(found) < len(item_ids):
            found.update(item_titles(session, [item for item in item_ids if item not in known]))
        return found
