"""Engine and session factory for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def normalize_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def is_sqlite(engine_or_url: Engine | str) -> bool:
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else make_url(engine_or_url)
    return url.get_backend_name() == "sqlite"


def make_engine(url: str, *, timeout_seconds: float = 5.0, **kwargs: Any) -> Engine:
    """Create an engine with sane production settings for either backend.

    SQLite: WAL journal (readers never block the writer), foreign keys on, and a busy
    timeout so concurrent writers wait instead of failing. PostgreSQL: pre-ping, a
    connect timeout, a statement timeout and TCP timeouts, so a dead, stopped or
    unreachable database fails fast.
    """
    url = normalize_url(url)
    if is_sqlite(url):
        engine = create_engine(
            url,
            connect_args={"timeout": timeout_seconds, "check_same_thread": False},
            **kwargs,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy own transactions (pysqlite's implicit BEGIN is off).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(timeout_seconds * 1000)}")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # IMMEDIATE takes the write lock up front, so two writers never
            # deadlock upgrading a read lock.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    connect_args: dict[str, Any] = {
        "connect_timeout": max(1, int(timeout_seconds)),
        "options": f"-c statement_timeout={int(timeout_seconds * 1000) * 6}",
        # A vanished server (host down, network partition) sends no reset: without
        # these, a pooled connection waits on it for the kernel's ~15 minutes. With
        # them, data unacknowledged for the timeout fails the connection, and idle
        # ones are probed.
        "tcp_user_timeout": int(timeout_seconds * 1000),
        "keepalives": 1,
        "keepalives_idle": max(1, int(timeout_seconds)),
        "keepalives_interval": 1,
        "keepalives_count": 3,
    }
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=kwargs.pop("pool_size", 10),
        max_overflow=kwargs.pop("max_overflow", 20),
        pool_timeout=kwargs.pop("pool_timeout", timeout_seconds),
        connect_args=connect_args,
        **kwargs,
    )


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)
