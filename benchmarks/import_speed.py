"""Import speed: MovieLens 100K and a synthetic 1M-rating file, into SQLite and PostgreSQL.

For every (dataset, backend) pair the script creates a throwaway store (a temporary
SQLite file; a new PostgreSQL database, dropped afterwards), migrates it, and times

* the first import (everything new),
* a second import of the same files (nothing changes: the idempotent re-run),
* ``read_ratings_snapshot`` of the whole store (the retrain job's read).

Usage::

    .venv/bin/python benchmarks/import_speed.py [--ratings 1000000] [--skip-sqlite]

PostgreSQL is reached through ``$RBMREC_BENCH_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``; the role must be able to create
databases); it is skipped with a note when it does not answer. ML-100K is read from
``$RBMREC_TEST_MOVIELENS_DIR`` (default ``../shared/datasets/ml-100k``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from app.db import migrate  # noqa: E402
from app.db.engine import make_engine  # noqa: E402
from app.db.snapshot import read_ratings_snapshot  # noqa: E402
from app.services.importer import import_movielens  # noqa: E402
from rbm_core.scale import RatingScale  # noqa: E402

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_ML100K = PROJECT_ROOT.parent / "shared" / "datasets" / "ml-100k"
SCALE = RatingScale.parse("1,2,3,4,5")


def synthetic_movielens(directory: Path, n_ratings: int, seed: int = 0) -> Path:
    """Write a CSV-family MovieLens directory with ``n_ratings`` distinct (user, item) pairs."""
    rng = np.random.default_rng(seed)
    n_users = max(10, n_ratings // 100)
    n_items = max(10, n_ratings // 200)
    pairs = rng.choice(n_users * n_items, size=n_ratings, replace=False)
    ratings = pd.DataFrame(
        {
            "userId": pairs // n_items + 1,
            "movieId": pairs % n_items + 1,
            "rating": rng.integers(1, 6, size=n_ratings).astype(float),
            "timestamp": rng.integers(946_684_800, 1_700_000_000, size=n_ratings),
        }
    )
    directory.mkdir(parents=True, exist_ok=True)
    ratings.to_csv(directory / "ratings.csv", index=False)
    movies = pd.DataFrame(
        {
            "movieId": np.arange(1, n_items + 1),
            "title": [f"Synthetic movie {k} (2000)" for k in range(1, n_items + 1)],
            "genres": "Drama|Comedy",
        }
    )
    movies.to_csv(directory / "movies.csv", index=False)
    return directory


@contextmanager
def sqlite_store(workdir: Path) -> Iterator[str]:
    path = workdir / f"bench-{uuid.uuid4().hex[:8]}.db"
    url = f"sqlite:///{path}"
    migrate.upgrade(url)
    try:
        yield url
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


@contextmanager
def postgres_store(admin_url: str) -> Iterator[str]:
    admin_sa = make_url(admin_url).set(drivername="postgresql+psycopg")
    admin = create_engine(admin_sa, isolation_level="AUTOCOMMIT")
    name = f"rbmrec_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_sa.set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def postgres_answers(admin_url: str) -> bool:
    engine = create_engine(
        make_url(admin_url).set(drivername="postgresql+psycopg"),
        connect_args={"connect_timeout": 3},
    )
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception as exc:
        print(
            f"note: PostgreSQL at {admin_url} does not answer ({exc.__class__.__name__}); skipped"
        )
        return False
    finally:
        engine.dispose()


def bench_one(url: str, directory: Path) -> dict[str, float]:
    engine = make_engine(url, timeout_seconds=30)
    try:
        first = import_movielens(engine, directory, scale=SCALE)
        second = import_movielens(engine, directory, scale=SCALE)
        assert second.ratings_inserted == second.ratings_updated == 0, "re-run changed rows"
        started = time.perf_counter()
        snapshot = read_ratings_snapshot(engine)
        snapshot_s = time.perf_counter() - started
        assert snapshot.n_ratings == first.ratings_read
    finally:
        engine.dispose()
    return {
        "ratings": first.ratings_read,
        "import_s": first.seconds,
        "reimport_s": second.seconds,
        "snapshot_s": snapshot_s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ratings", type=int, default=1_000_000, help="synthetic file size")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()

    admin_url = os.environ.get("RBMREC_BENCH_POSTGRES_URL", DEFAULT_POSTGRES)
    ml100k = Path(os.environ.get("RBMREC_TEST_MOVIELENS_DIR", str(DEFAULT_ML100K)))

    backends: list[str] = []
    if not args.skip_sqlite:
        backends.append("sqlite")
    if not args.skip_postgres and postgres_answers(admin_url):
        backends.append("postgresql")

    rows: list[tuple[str, str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="rbmrec-bench-") as tmp:
        workdir = Path(tmp)
        datasets: list[tuple[str, Path]] = []
        if (ml100k / "u.data").is_file():
            datasets.append(("ml-100k", ml100k))
        else:
            print(f"note: ML-100K not found at {ml100k}; skipped")
        started = time.perf_counter()
        synthetic = synthetic_movielens(workdir / "synthetic", args.ratings)
        print(
            f"generated {args.ratings:,} synthetic ratings in {time.perf_counter() - started:.1f} s"
        )
        datasets.append((f"synthetic {args.ratings:,}", synthetic))

        for dataset, directory in datasets:
            for backend in backends:
                store = sqlite_store(workdir) if backend == "sqlite" else postgres_store(admin_url)
                with store as url:
                    result = bench_one(url, directory)
                rows.append((dataset, backend, result))
                print(
                    f"{dataset:>20} {backend:>10}: import {result['import_s']:6.2f} s, "
                    f"re-import {result['reimport_s']:6.2f} s, "
                    f"snapshot {result['snapshot_s']:6.2f} s",
                    flush=True,
                )

    print()
    print("| dataset | backend | ratings | import (s) | ratings/s | re-import (s) | snapshot (s) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for dataset, backend, r in rows:
        print(
            f"| {dataset} | {backend} | {int(r['ratings']):,} | {r['import_s']:.2f} | "
            f"{r['ratings'] / r['import_s']:,.0f} | {r['reimport_s']:.2f} | "
            f"{r['snapshot_s']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
