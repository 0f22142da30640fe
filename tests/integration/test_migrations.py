"""The Alembic history upgrades to head and back down one step, on both databases."""

from __future__ import annotations

from sqlalchemy import inspect

from app.db import migrate
from app.db.engine import make_engine


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_head_creates_store_tables(database_url: str) -> None:
    assert {"items", "ratings"} <= _tables(database_url)
    assert migrate.current(database_url) is not None


def test_downgrade_one_step_and_back(database_url: str) -> None:
    head = migrate.current(database_url)
    migrate.downgrade(database_url, "-1")
    assert migrate.current(database_url) != head
    migrate.upgrade(database_url)
    assert migrate.current(database_url) == head
    assert {"items", "ratings"} <= _tables(database_url)
