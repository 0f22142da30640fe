"""The catalog service (app.services.items) on real SQLite and PostgreSQL stores."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from app.services.items import find_item, item_page, save_item


def test_an_item_is_created_then_replaced(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as session:
        item, created = save_item(
            session, "film", title="A film", genres=["Drama"], attributes={"year": 1999}
        )
    assert created
    assert (item.title, item.genres, item.attributes) == ("A film", ["Drama"], {"year": 1999})
    first_update = item.updated_at
    with session_factory.begin() as session:
        item, created = save_item(session, "film", title="Renamed", genres=[], attributes={})
    assert not created
    # read back after the write: the server's new time and the new values
    assert (item.title, item.genres, item.attributes) == ("Renamed", [], {})
    assert item.updated_at >= first_update
    with session_factory() as session:
        stored = find_item(session, "film")
    assert stored is not None
    assert stored.title == "Renamed"


def test_pages_of_the_catalog(store: sessionmaker[Session]) -> None:
    with store() as session:
        page, total = item_page(session, offset=0, limit=5)
        assert total == 31
        assert [i.id for i in page] == sorted(i.id for i in page)
        assert len(page) == 5
        last, _ = item_page(session, offset=30, limit=5)
        assert len(last) == 1
        assert find_item(session, "missing") is None
