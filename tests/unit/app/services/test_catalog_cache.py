"""Cached catalog facts (app.services.catalog) read from real SQLite and PostgreSQL stores."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from app.db.items import ItemIn, upsert_items
from app.db.ratings import RatingIn, upsert_ratings
from app.services.catalog import CatalogCache
from rbm_core.scale import DEFAULT_SCALE


def _rate(store: sessionmaker[Session], user: str, item: str) -> None:
    with store.begin() as session:
        upsert_ratings(session, [RatingIn(user, item, 5)], scale=DEFAULT_SCALE)


def test_the_popular_items_are_cached_until_this_process_writes(
    store: sessionmaker[Session],
) -> None:
    cache = CatalogCache(ttl_seconds=3600)
    with store() as session:
        popular = cache.popular(session)
    assert popular.counts == sorted(popular.counts, reverse=True)
    assert sum(popular.counts) == 60 * 15
    assert "i99" not in popular.item_ids  # never rated
    for n in range(100):  # i99 becomes the most rated item
        _rate(store, f"fan{n}", "i99")
    with store() as session:
        assert cache.popular(session) is popular  # within the TTL, nothing marked stale
        cache.ratings_changed()
        fresh = cache.popular(session)
    assert fresh.item_ids[0] == "i99"
    assert fresh.counts[0] == 100
    assert fresh.means[0] == 5.0


def test_a_short_ttl_sees_other_processes_writes(store: sessionmaker[Session]) -> None:
    cache = CatalogCache(ttl_seconds=0)
    with store() as session:
        cache.popular(session)
    for n in range(100):
        _rate(store, f"fan{n}", "i99")
    with store() as session:
        assert cache.popular(session).item_ids[0] == "i99"


def test_titles_and_genres(store: sessionmaker[Session]) -> None:
    cache = CatalogCache(ttl_seconds=3600)
    with store() as session:
        assert cache.genre_items(session, "low") == {f"i{i}" for i in range(15)}
        assert cache.genre_items(session, "LOW") == cache.genre_items(session, "Low")
        assert cache.genre_items(session, "Horror") == frozenset()
        assert cache.titles(session, ["i1", "missing"]) == {"i1": "Title of i1"}
    with store.begin() as session:
        upsert_items(session, [ItemIn(id="late", title="Created later", genres=["Low"])])
    with store() as session:
        # a title missing from the cache is read from the store at once ...
        assert cache.titles(session, ["late"]) == {"late": "Created later"}
        # ... the genre index follows when this process says its items changed
        assert "late" not in cache.genre_items(session, "Low")
        cache.items_changed()
        assert "late" in cache.genre_items(session, "Low")
