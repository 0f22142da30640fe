"""Shared fixtures: the MovieLens 100K copy, and throwaway SQLite / PostgreSQL stores.

Every test session gets its own PostgreSQL database (created, migrated, dropped at the
end) and its own SQLite file; tables are emptied after each test that uses them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from app.db import migrate
from app.db.engine import make_engine, make_sessionmaker

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MOVIELENS_ENV = "RBMREC_TEST_MOVIELENS_DIR"
POSTGRES_ENV = "RBMREC_TEST_POSTGRES_URL"
DEFAULT_MOVIELENS_DIR = PROJECT_ROOT.parent / "shared" / "datasets" / "ml-100k"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"

# Tables emptied between tests, children first.
_TABLES_TO_CLEAR = ["ratings", "items", "training_runs", "model_versions"]


def pytest_configure(config: pytest.Config) -> None:
    # Nothing in the tests may read a developer's .env or real database by accident.
    os.environ.setdefault("RBMREC_DATABASE_URL", "sqlite:///:memory:")
    # Serving copies of the many test models go to a directory of this run (servers
    # started as subprocesses inherit it), removed at the end.
    if "RBMREC_MODEL_CACHE_DIR" not in os.environ:
        cache = Path(tempfile.mkdtemp(prefix="rbmrec-test-serving-"))
        config.add_cleanup(lambda: shutil.rmtree(cache, ignore_errors=True))
        os.environ["RBMREC_MODEL_CACHE_DIR"] = str(cache)


@pytest.fixture(scope="session")
def movielens_dir() -> Path:
    """The MovieLens 100K directory (``$RBMREC_TEST_MOVIELENS_DIR`` or ../shared)."""
    path = Path(os.environ.get(MOVIELENS_ENV, str(DEFAULT_MOVIELENS_DIR)))
    if not (path / "u.data").is_file():
        pytest.skip(f"MovieLens 100K not found at {path} (set {MOVIELENS_ENV})")
    return path


# -- databases ---------------------------------------------------------------------
def _admin_postgres_url() -> str:
    return os.environ.get(POSTGRES_ENV, DEFAULT_POSTGRES_URL)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a fresh, migrated PostgreSQL database, dropped after the session."""
    admin_url = make_url(_admin_postgres_url()).set(drivername="postgresql+psycopg")
    admin = create_engine(
        admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        admin.dispose()
        pytest.skip(
            f"PostgreSQL not reachable at {admin_url.render_as_string()} ({POSTGRES_ENV}): {exc}"
        )
    name = f"rbmrec_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """URL of a fresh, migrated SQLite file for the session."""
    path = tmp_path_factory.mktemp("sqlite") / "rbmrec-test.db"
    url = f"sqlite:///{path}"
    migrate.upgrade(url)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A migrated database URL, once for SQLite and once for PostgreSQL; emptied after use."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    yield url
    _clear(url)


def _clear(url: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for table in _TABLES_TO_CLEAR:
                conn.execute(text(f"DELETE FROM {table}"))  # noqa: S608 (fixed names)
    finally:
        engine.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    with session_factory() as sess:
        yield sess
