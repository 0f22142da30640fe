"""Engine and session factory for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import time
from typing import Any, Final

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.orm import Session, sessionmaker

from app.settings import Settings

PING_AFTER_IDLE_SECONDS: Final = 1.0
"""A pooled PostgreSQL connection idle for longer is pinged before it is used."""

_IDLE_SINCE: Final = "rbmrec_idle_since"


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
    timeout so concurrent writers wait instead of failing. PostgreSQL: a ping of
    connections that sat idle (:func:`_ping_after_idle`), a connect timeout, a
    statement timeout and TCP timeouts, so a dead, stopped or unreachable database
    fails fast.
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
    engine = create_engine(
        url,
        pool_size=kwargs.pop("pool_size", 10),
        max_overflow=kwargs.pop("max_overflow", 20),
        pool_timeout=kwargs.pop("pool_timeout", timeout_seconds),
        connect_args=connect_args,
        **kwargs,
    )
    _ping_after_idle(engine, PING_AFTER_IDLE_SECONDS)
    return engine


def engine_from_settings(settings: Settings, **kwargs: Any) -> Engine:
    """The engine of the configured store.

    ``RBMREC_DATABASE_URL`` with the ``RBMREC_DB_TIMEOUT_SECONDS`` timeouts; what the
    API, the CLI and the demo open (tests and benchmarks call :func:`make_engine`).
    """
    return make_engine(settings.database_url, timeout_seconds=settings.db_timeout_seconds, **kwargs)


def _ping_after_idle(engine: Engine, idle_seconds: float) -> None:
    """Ping a pooled connection at checkout, but only when it sat idle for a while.

    ``pool_pre_ping`` pings at every checkout: one more round trip on every request,
    mostly on connections that were in use a moment before (0.15 ms of the API's
    CPU per recommendation, measured, plus the database's). Here a connection idle
    for more than ``idle_seconds`` is pinged; a dead one makes the pool invalidate
    all older connections and reconnect, as ``pool_pre_ping`` does. A connection
    that died since its last use fails its statement instead, and SQLAlchemy then
    invalidates the pool just the same, so the service recovers either way.
    """
    dialect = engine.dialect

    def stamp(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    def check(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is not None and time.monotonic() - since < idle_seconds:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:  # whatever the failure: reconnect, as pre-ping does
            raise InvalidatePoolError(f"ping failed: {exc}") from exc

    event.listen(engine, "connect", stamp)
    event.listen(engine, "checkin", stamp)
    event.listen(engine, "checkout", check)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def ping(session_factory: sessionmaker[Session]) -> None:
    """``SELECT 1`` on a pooled connection; raises ``SQLAlchemyError`` if the database is down."""
    with session_factory() as session:
        session.execute(text("SELECT 1"))


def engine_of(session_factory: sessionmaker[Session]) -> Engine:
    """The engine a session factory is bound to (the retrain lock and snapshot need it)."""
    bind = session_factory.kw.get("bind")
    if not isinstance(bind, Engine):
        raise TypeError("the session factory must be bound to an Engine")
    return bind
