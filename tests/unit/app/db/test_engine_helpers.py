"""The engine helpers of app.db.engine: the configured engine, a factory's engine, ping."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import sessionmaker

from app.db.engine import engine_from_settings, engine_of, make_sessionmaker, ping
from app.settings import Settings


def test_the_configured_engine_uses_the_configured_url_and_timeout(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = engine_from_settings(Settings(database_url=url, db_timeout_seconds=2.5))
    try:
        assert engine.url.database == str(tmp_path / "store.db")
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 2500
        factory = make_sessionmaker(engine)
        assert engine_of(factory) is engine
        ping(factory)
    finally:
        engine.dispose()


def test_a_factory_without_an_engine_is_refused() -> None:
    with pytest.raises(TypeError, match="bound to an Engine"):
        engine_of(sessionmaker())


def test_ping_fails_when_the_database_cannot_be_opened(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'no-such-dir' / 'store.db'}"
    engine = engine_from_settings(Settings(database_url=url))
    try:
        with pytest.raises(OperationalError):
            ping(make_sessionmaker(engine))
    finally:
        engine.dispose()
