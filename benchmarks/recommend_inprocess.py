"""CPU per request inside one process, and the garbage collector's pauses.

No HTTP server, no load generator, no concurrency: requests go straight through the
ASGI app (middleware, routing, validation, the scoring thread, the PostgreSQL read,
the JSON answer), one after the other, so the CPU each costs is measured without the
noise of processes sharing the cores. Same throwaway database and ML-100K model as
``serve_latency.py``.

It prints, for ``GET /users/{id}/recommendations``, ``GET /users/{id}/predictions``
(20 items), ``POST /ratings`` and
``GET /health/live`` (the floor of the stack), the CPU milliseconds per request and
the number and longest pause of the collections of each generation. ``--unfreeze``
undoes the ``gc.freeze()`` the app does at start-up, to show what full collections
cost without it. Example::

    RBMREC_MOVIELENS_DIR=path/to/ml-100k .venv/bin/python benchmarks/recommend_inprocess.py
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import pstats
import random
import time
from typing import Any

from serve_latency import DEFAULT_POSTGRES, prepared_settings

from app.api.main import create_app


class GcPauses:
    """Count and longest pause of each generation's collections (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.longest = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        generation = int(info["generation"])
        self.count[generation] += 1
        self.longest[generation] = max(
            self.longest[generation], time.perf_counter() - self._started
        )


async def call(app: Any, method: str, path: str, query: bytes = b"", body: bytes = b"") -> None:
    """One request through the ASGI app; fails unless it answers 2xx."""
    headers = [(b"host", b"bench")]
    if body:
        headers.append((b"content-type", b"application/json"))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)
    if len(statuses) != 1 or statuses[0] // 100 != 2:
        raise RuntimeError(f"{method} {path}: {statuses}")


Request = tuple[str, str, bytes, bytes]
"""(method, path, query string, JSON body)."""


async def phase(app: Any, name: str, requests: list[Request], profile: bool = False) -> None:
    pauses = GcPauses()
    gc.callbacks.append(pauses)
    profiler = cProfile.Profile() if profile else None
    cpu = time.process_time()
    if profiler is not None:
        profiler.enable()
    for request in requests:
        await call(app, *request)
    if profiler is not None:
        profiler.disable()
    per_request = (time.process_time() - cpu) / len(requests)
    gc.callbacks.remove(pauses)
    collections = ", ".join(
        f"gen{g} {pauses.count[g]} (longest {pauses.longest[g] * 1000:.1f} ms)" for g in range(3)
    )
    print(f"{name}: {per_request * 1000:.3f} ms of CPU per request; collections: {collections}")
    if profiler is not None:
        # where the time goes (the profiler's own cost inflates the figures above)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)


async def measure(app: Any, requests: int, unfreeze: bool, seed: int, profile: bool) -> None:
    rng = random.Random(seed)
    users = [str(rng.randint(1, 943)) for _ in range(requests)]
    recommend = [("GET", f"/users/{u}/recommendations", b"n=10", b"") for u in users]
    predict = [
        (
            "GET",
            f"/users/{u}/predictions",
            "&".join(f"item_id={rng.randint(1, 1682)}" for _ in range(20)).encode(),
            b"",
        )
        for u in users
    ]
    rate = [
        (
            "POST",
            "/ratings",
            b"",
            json.dumps(
                {"user_id": u, "item_id": str(rng.randint(1, 1682)), "rating": rng.randint(1, 5)}
            ).encode(),
        )
        for u in users
    ]
    async with app.router.lifespan_context(app):
        if unfreeze:
            gc.unfreeze()
        for request in recommend[:200]:  # warm-up: caches, prepared statements
            await call(app, *request)
        await phase(app, "GET /users/{id}/recommendations", recommend, profile)
        await phase(app, "GET /users/{id}/predictions (20 items)", predict, profile)
        await phase(app, "POST /ratings", rate)
        await phase(app, "GET /health/live", [("GET", "/health/live", b"", b"")] * requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres-url", default=os.environ.get("RBMREC_TEST_POSTGRES_URL", DEFAULT_POSTGRES)
    )
    parser.add_argument("--movielens-dir", default=os.environ.get("RBMREC_MOVIELENS_DIR"))
    parser.add_argument("--requests", type=int, default=3000, help="Per phase.")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--unfreeze", action="store_true", help="Undo the app's gc.freeze() after start-up."
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="Profile the recommendations and predictions phases (cProfile, cumulative).",
    )
    args = parser.parse_args()
    with prepared_settings(
        args.postgres_url, args.movielens_dir, args.epochs, args.seed
    ) as settings:
        asyncio.run(
            measure(create_app(settings), args.requests, args.unfreeze, args.seed, args.profile)
        )


if __name__ == "__main__":
    main()
