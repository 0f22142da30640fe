"""CPU of the recommendation service alone: no HTTP, no ASGI, one thread.

Calls ``app.services.recommend.recommend`` for random ML-100K users over one
connection, as the route's scoring thread does, on the same throwaway PostgreSQL
database and model as ``serve_latency.py``; prints the CPU milliseconds per call
(after a warm-up of 1,000 calls) and, with ``--profile``, where they go::

    RBMREC_MOVIELENS_DIR=path/to/ml-100k .venv/bin/python benchmarks/recommend_service.py
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import random
import time
from typing import Any

from serve_latency import DEFAULT_POSTGRES, prepared_settings
from threadpoolctl import threadpool_limits

from app.api.main import create_app
from app.services import recommend as recommend_service


async def measure(app: Any, calls: int, seed: int, profile: bool) -> None:
    async with app.router.lifespan_context(app):
        recommender = app.state.recommender
        loaded = recommender.holder.current
        rng = random.Random(seed)
        users = [str(rng.randint(1, 943)) for _ in range(calls)]

        def run(batch: list[str]) -> None:
            with recommender.read_engine.connect() as connection:
                for user in batch:
                    recommend_service.recommend(connection, loaded, recommender.catalog, user, n=10)

        with threadpool_limits(limits=1, user_api="blas"):
            run(users[:1000])
            cpu = time.process_time()
            run(users)
            per_call = (time.process_time() - cpu) / len(users)
            print(f"recommend service: {per_call * 1000:.3f} ms of CPU per call")
            if profile:
                profiler = cProfile.Profile()
                profiler.enable()
                run(users)
                profiler.disable()
                pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres-url", default=os.environ.get("RBMREC_TEST_POSTGRES_URL", DEFAULT_POSTGRES)
    )
    parser.add_argument("--movielens-dir", default=os.environ.get("RBMREC_MOVIELENS_DIR"))
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="Profile the calls (cProfile).")
    args = parser.parse_args()
    with prepared_settings(
        args.postgres_url, args.movielens_dir, args.epochs, args.seed
    ) as settings:
        asyncio.run(measure(create_app(settings), args.calls, args.seed, args.profile))


if __name__ == "__main__":
    main()
