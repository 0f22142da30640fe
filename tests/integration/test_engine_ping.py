"""PostgreSQL engine: pooled connections are pinged only after sitting idle.

``make_engine`` replaces ``pool_pre_ping`` (a round trip at every checkout) with a
ping of connections idle for longer than ``PING_AFTER_IDLE_SECONDS``. These tests
kill the server process behind a pooled connection (``pg_terminate_backend``, what a
database restart does to it) and check both sides of that trade-off.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from app.db import engine as engine_module
from app.db.engine import make_engine

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_engine(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """An engine whose idle threshold is short enough to wait out in a test."""
    monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_SECONDS", 0.2)
    engine = make_engine(postgres_url, timeout_seconds=2)
    yield engine
    engine.dispose()


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(postgres_url: str, pid: int) -> None:
    admin = make_engine(postgres_url)
    try:
        with admin.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
            conn.commit()
        # the backend is gone once it no longer shows in pg_stat_activity
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with admin.connect() as conn:
                alive = conn.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
                ).scalar_one()
            if not alive:
                return
            time.sleep(0.02)
        raise AssertionError(f"backend {pid} did not exit")
    finally:
        admin.dispose()


def _count_pings(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    ping = engine.dialect.do_ping

    def counting(dbapi_connection: Any) -> bool:
        calls.append(1)
        return ping(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counting)
    return calls


def test_connections_in_use_are_not_pinged(
    pg_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings = _count_pings(pg_engine, monkeypatch)
    pids = {_backend_pid(pg_engine) for _ in range(50)}
    assert len(pids) == 1  # one pooled connection, reused
    assert pings == []
    time.sleep(0.3)  # idle past the threshold: the next checkout pings once
    assert _backend_pid(pg_engine) in pids
    assert pings == [1]


def test_a_dead_idle_connection_is_replaced_without_an_error(
    pg_engine: Engine, postgres_url: str
) -> None:
    first = _backend_pid(pg_engine)
    _terminate(postgres_url, first)
    time.sleep(0.3)
    second = _backend_pid(pg_engine)  # the ping failed, the pool reconnected
    assert second != first


def test_a_connection_killed_while_recently_used_fails_once_then_recovers(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Within the idle window nothing is pinged: the statement meets the dead
    # connection, and SQLAlchemy invalidates the pool so the next checkout is fresh.
    monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_SECONDS", 600.0)
    engine = make_engine(postgres_url, timeout_seconds=2)
    try:
        first = _backend_pid(engine)
        _terminate(postgres_url, first)
        with pytest.raises(OperationalError), engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        assert _backend_pid(engine) != first
    finally:
        engine.dispose()
