"""Benchmark: read 1M ratings from PostgreSQL into the training matrix.

Creates a scratch database (dropped afterwards unless ``--keep``), migrates it, fills
it with synthetic ratings (6,040 users x 3,706 items, ML-1M-like popularity skew)
through COPY, then times what a retrain does before training:

1. ``read_ratings_snapshot`` (COPY in one REPEATABLE READ transaction),
2. the stable hold-out split (``holdout_mask``),
3. ``RatingMatrix.from_arrays`` on the training part.

Usage::

    .venv/bin/python benchmarks/snapshot_read.py \
        [--url postgresql+psycopg://postgres@127.0.0.1:5432/postgres] \
        [--ratings 1000000] [--repeat 3] [--keep]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
import uuid

import numpy as np
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.db import migrate
from app.db.engine import make_engine
from app.db.snapshot import read_ratings_snapshot
from app.services.retrain import holdout_mask
from rbm_core.data import RatingMatrix
from rbm_core.scale import DEFAULT_SCALE

DEFAULT_URL = os.environ.get(
    "RBMREC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _fill(url: str, n_ratings: int, n_users: int, n_items: int, seed: int = 0) -> None:
    """Write ``n_ratings`` distinct synthetic (user, item) ratings with COPY."""
    rng = np.random.default_rng(seed)
    # item popularity ~ Zipf-like, user activity ~ lognormal, as in MovieLens
    item_p = 1.0 / np.arange(1, n_items + 1) ** 0.8
    item_p /= item_p.sum()
    keys: np.ndarray = np.empty(0, dtype=np.int64)
    while keys.size < n_ratings:
        need = int((n_ratings - keys.size) * 1.3) + 1000
        users = rng.integers(0, n_users, need)
        items = rng.choice(n_items, size=need, p=item_p)
        keys = np.unique(np.concatenate([keys, users.astype(np.int64) * n_items + items]))
    keys = rng.permutation(keys)[:n_ratings]
    users, items = np.divmod(keys, n_items)
    values = rng.integers(1, 6, n_ratings)
    stamps = rng.integers(956_703_932, 1_046_454_590, n_ratings)

    engine = create_engine(url)
    try:
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            with cur.copy("COPY items (id, title, genres, attributes) FROM STDIN") as copy:
                for item in range(n_items):
                    copy.write_row((str(item + 1), f"Item {item + 1}", "[]", "{}"))
            buffer = io.StringIO()
            for u, i, r, t in zip(
                (users + 1).tolist(),
                (items + 1).tolist(),
                values.tolist(),
                stamps.tolist(),
                strict=True,
            ):
                buffer.write(f"{u}\t{i}\t{r}\t{t}\n")
            cur.execute(
                "CREATE TEMP TABLE stage (user_id text, item_id text, rating float8, ts bigint)"
            )
            with cur.copy("COPY stage FROM STDIN") as copy:
                copy.write(buffer.getvalue())
            cur.execute(
                "INSERT INTO ratings (user_id, item_id, rating, rated_at) "
                "SELECT user_id, item_id, rating, to_timestamp(ts) FROM stage"
            )
            raw.commit()
            cur.execute("ANALYZE ratings")
            raw.commit()
        finally:
            raw.close()
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL, help="Admin URL of the PostgreSQL server.")
    parser.add_argument("--ratings", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=6_040)
    parser.add_argument("--items", type=int, default=3_706)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="Keep the scratch database.")
    args = parser.parse_args()

    admin_url = make_url(args.url).set(drivername="postgresql+psycopg")
    name = f"rbmrec_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        started = time.perf_counter()
        _fill(url, args.ratings, args.users, args.items)
        seconds = time.perf_counter() - started
        print(f"database {name}: wrote {args.ratings:,} ratings in {seconds:.1f} s")

        engine = make_engine(url)
        read_s, split_s, matrix_s, total_s = [], [], [], []
        try:
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                snapshot = read_ratings_snapshot(engine)
                t1 = time.perf_counter()
                held = holdout_mask(snapshot.user_ids, snapshot.item_ids)
                t2 = time.perf_counter()
                kept = ~held
                matrix = RatingMatrix.from_arrays(
                    snapshot.user_ids[kept].astype(str),
                    snapshot.item_ids[kept].astype(str),
                    snapshot.ratings[kept],
                    DEFAULT_SCALE,
                )
                t3 = time.perf_counter()
                read_s.append(t1 - t0)
                split_s.append(t2 - t1)
                matrix_s.append(t3 - t2)
                total_s.append(t3 - t0)
        finally:
            engine.dispose()
        assert snapshot.n_ratings == args.ratings
        print(
            f"snapshot: {snapshot.n_ratings:,} ratings -> matrix {matrix.n_users} x "
            f"{matrix.n_items}, {matrix.n_ratings:,} training + {int(held.sum()):,} held out"
        )
        med = statistics.median
        print(f"read_ratings_snapshot (COPY)  median {med(read_s):6.2f} s   runs {_fmt(read_s)}")
        print(f"holdout split                 median {med(split_s):6.2f} s   runs {_fmt(split_s)}")
        print(
            f"RatingMatrix.from_arrays      median {med(matrix_s):6.2f} s   runs {_fmt(matrix_s)}"
        )
        print(f"total (store -> matrix)       median {med(total_s):6.2f} s   runs {_fmt(total_s)}")
        print(f"throughput                    {args.ratings / med(total_s):,.0f} ratings/s")
    finally:
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    main()
