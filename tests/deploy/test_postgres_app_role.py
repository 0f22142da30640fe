"""deploy/postgres/10-app-role.sh on a real PostgreSQL server, as the compose db runs it.

The image runs it as POSTGRES_USER (a superuser, the tables' owner) on a new cluster.
Here: a fresh owner role and database on the test server, the script run twice (it
must be idempotent), the migrations as the owner, then the service's own work (an
import: COPY into a temporary table and upserts; a deletion) as the app role, which
must be refused every schema change.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from app.db import migrate
from app.db.engine import make_engine, make_sessionmaker
from app.services import ratings as ratings_service
from app.services.importer import import_movielens
from rbm_core.scale import RatingScale

pytestmark = pytest.mark.postgres

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "postgres" / "10-app-role.sh"


@dataclass(frozen=True)
class Cluster:
    owner_url: str
    app_url: str
    env: dict[str, str]


@pytest.fixture
def cluster(postgres_url: str) -> Iterator[Cluster]:
    if shutil.which("psql") is None:
        pytest.skip("psql is not installed")
    base = make_url(postgres_url)
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    suffix = uuid.uuid4().hex[:10]
    owner, app, database = f"own_{suffix}", f"app_{suffix}", f"roles_{suffix}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{owner}" LOGIN SUPERUSER'))
        conn.execute(text(f'CREATE DATABASE "{database}" OWNER "{owner}"'))
    env = {
        **os.environ,
        "PGHOST": base.host or "127.0.0.1",
        "PGPORT": str(base.port or 5432),
        "POSTGRES_USER": owner,
        "POSTGRES_DB": database,
        "POSTGRES_APP_USER": app,
        "POSTGRES_APP_PASSWORD": f"pw-{suffix}",
    }
    owner_url = base.set(username=owner, password=None, database=database)
    app_url = base.set(username=app, password=f"pw-{suffix}", database=database)
    try:
        yield Cluster(
            owner_url.render_as_string(hide_password=False),
            app_url.render_as_string(hide_password=False),
            env,
        )
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            conn.execute(text(f'DROP ROLE IF EXISTS "{app}"'))
            conn.execute(text(f'DROP ROLE IF EXISTS "{owner}"'))
        admin.dispose()


def _run_script(cluster: Cluster) -> None:
    done = subprocess.run(
        ["sh", str(SCRIPT)], env=cluster.env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert cluster.env["POSTGRES_APP_PASSWORD"] not in done.stdout + done.stderr


def _subset(movielens_dir: Path, directory: Path) -> Path:
    lines = (movielens_dir / "u.data").read_text().splitlines()
    kept = [line for line in lines if int(line.split("\t", 1)[0]) <= 20]
    (directory / "u.data").write_text("\n".join(kept) + "\n")
    for name in ("u.item", "u.genre"):
        shutil.copyfile(movielens_dir / name, directory / name)
    return directory


def test_the_app_role_reads_and_writes_rows_and_changes_no_schema(
    cluster: Cluster, movielens_dir: Path, tmp_path: Path
) -> None:
    _run_script(cluster)
    _run_script(cluster)  # idempotent: a volume initialised earlier can run it again
    migrate.upgrade(cluster.owner_url)

    engine = make_engine(cluster.app_url)
    try:
        report = import_movielens(
            engine, _subset(movielens_dir, tmp_path), scale=RatingScale.parse("1,2,3,4,5")
        )
        assert report.ratings_read > 1000
        factory = make_sessionmaker(engine)
        with factory.begin() as session:
            assert ratings_service.delete_rating(session, "1", "1")
        with engine.connect() as conn:
            user = conn.execute(text("SELECT current_user")).scalar_one()
            assert user == cluster.env["POSTGRES_APP_USER"]
            assert (
                conn.execute(
                    text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
                ).scalar_one()
                is False
            )
        for statement in (
            "CREATE TABLE intruder (a int)",
            "DROP TABLE ratings",
            "TRUNCATE ratings",
            "ALTER TABLE ratings ADD COLUMN extra int",
            "CREATE ROLE another",
        ):
            with engine.connect() as conn, pytest.raises(ProgrammingError):
                conn.execute(text(statement))
    finally:
        engine.dispose()
