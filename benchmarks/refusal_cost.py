"""CPU of one refused request (503, load shedding) in a real uvicorn server process.

Under a flood most requests are refused, and a worker's refusals take CPU (and the
GIL) from the requests it admits. This measures, over HTTP with keep-alive
connections (``--concurrency`` in flight, the minimal client of ``serve_latency.py``),
the server's CPU per refused ``GET /users/{id}/recommendations`` for three apps,
each in its own ``uvicorn`` process (httptools, uvloop, no access log):

* ``bare``: an ASGI app that answers 503 and nothing else (uvicorn's own floor);
* ``gate``: the rbmrec app with its scoring pool held full by work that waits, so
  that every recommendation request is refused by :meth:`Admission.gate`, in front of
  every middleware (what a flood meets);
* ``middleware``: the same with the gate off, so that ``ConcurrencyLimitMiddleware``
  refuses them after the outer middleware (how refusals were made before the gate).

The rbmrec apps use a throwaway SQLite store and no model: a refusal never reaches
either. Example::

    .venv/bin/python benchmarks/refusal_cost.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_latency import RawConnection, free_port, tree_cpu_seconds, wait_listening

from app.api.main import RbmrecAPI, create_app
from app.db import migrate
from app.settings import Settings

_BODY = b'{"status": 503}'
_HEADERS = [
    (b"content-type", b"application/problem+json"),
    (b"retry-after", b"1"),
    (b"content-length", str(len(_BODY)).encode()),
]


async def bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The floor: answer every HTTP request 503 at once."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 503, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})


def _full_pool_app(gate: bool) -> RbmrecAPI:
    """The rbmrec app whose scoring pool is held full while it runs."""
    work = Path(os.environ["RBMREC_BENCH_DIR"])
    settings = Settings(database_url=f"sqlite:///{work}/store.db", model_dir=work / "models")
    app = create_app(settings)
    if not gate:
        app.admission = None
    started = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[None]:
        async with started(app_):
            pool = app_.state.scoring
            release = threading.Event()
            held = [pool.submit(release.wait) for _ in range(pool.threads + pool.max_queue)]
            try:
                yield
            finally:
                release.set()
                for future in held:
                    future.result(timeout=10)

    app.router.lifespan_context = lifespan
    return app


def gate_app() -> RbmrecAPI:
    """Factory: refusals by the gate."""
    return _full_pool_app(gate=True)


def middleware_app() -> RbmrecAPI:
    """Factory: refusals by ConcurrencyLimitMiddleware."""
    return _full_pool_app(gate=False)


async def load(port: int, requests: int, concurrency: int) -> set[int]:
    connections = [RawConnection("127.0.0.1", port) for _ in range(concurrency)]
    left = requests
    statuses: set[int] = set()

    async def client(connection: RawConnection, seed: int) -> None:
        nonlocal left
        user = seed
        while left > 0:
            left -= 1
            user = user % 943 + 1
            statuses.add(await connection.request("GET", f"/users/{user}/recommendations", None))

    await asyncio.gather(*(client(c, i) for i, c in enumerate(connections)))
    for connection in connections:
        connection.close()
    return statuses


def measure(
    target: list[str], args: argparse.Namespace, env: dict[str, str]
) -> tuple[float, float]:
    """(server CPU microseconds per request, requests per second) for one app."""
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            *target,
            "--app-dir",
            str(Path(__file__).resolve().parent),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
        ],
        env=env,
    )
    try:
        wait_listening(port, 1)
        asyncio.run(load(port, args.warmup, args.concurrency))
        cpu, started = tree_cpu_seconds(server.pid), time.perf_counter()
        statuses = asyncio.run(load(port, args.requests, args.concurrency))
        seconds = time.perf_counter() - started
        used = tree_cpu_seconds(server.pid) - cpu
    finally:
        server.terminate()
        server.wait(timeout=30)
    if statuses != {503}:
        raise SystemExit(f"{target}: expected only 503s, got {sorted(statuses)}")
    return used / args.requests * 1e6, args.requests / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rbmrec-refusal-") as work:
        migrate.upgrade(f"sqlite:///{work}/store.db")
        env = {**os.environ, "RBMREC_BENCH_DIR": work, "RBMREC_LOG_LEVEL": "WARNING"}
        apps = {
            "bare": ["refusal_cost:bare"],
            "gate": ["--factory", "refusal_cost:gate_app"],
            "middleware": ["--factory", "refusal_cost:middleware_app"],
        }
        print(f"{args.requests} refused requests, {args.concurrency} in flight, per app:")
        for name, target in apps.items():
            cpu_us, rate = measure(target, args, env)
            print(f"{name:>10}: {cpu_us:5.1f} us of server CPU per refusal, {rate:,.0f}/s")


if __name__ == "__main__":
    main()
