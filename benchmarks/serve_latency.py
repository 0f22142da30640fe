"""Serving latency: a real ``rbmrec serve`` process on PostgreSQL with an ML-100K model.

What it does:

1. creates a throwaway PostgreSQL database, migrates it and imports MovieLens 100K
   (``--movielens-dir`` / ``RBMREC_MOVIELENS_DIR``, else the official download);
2. trains and activates the served model at its default sizes (no search and a few
   epochs: serving cost does not depend on how long it trained);
3. starts ``rbmrec serve`` (uvicorn) as a separate process on 127.0.0.1;
4. from this process, sends requests with ``--concurrency`` in flight (httpx, async,
   keep-alive), each phase bounded by ``--requests`` and ``--seconds``:
   ``GET /users/{id}/recommendations?n=10`` for random ML-100K users,
   ``GET /users/{id}/predictions`` of 20 random items for random users, then
   ``POST /ratings`` (upserts of random ratings);
5. prints p50/p95/p99/max latency, requests per second, and the CPU time per
   request of the server, of this client and of the PostgreSQL backends (when the
   database runs on this machine) for each phase (plus ``GET /health/live``, the
   floor of the HTTP stack), and with ``--workers`` each worker's share of the
   server's CPU; then stops the server and drops the database.

Latencies are measured by the client (they include its own overhead). Example::

    .venv/bin/python benchmarks/serve_latency.py --concurrency 16 --requests 6000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.cli.supervisor import listening_sockets
from app.db import migrate
from app.db.engine import make_engine, make_sessionmaker
from app.services import movielens_download
from app.services.importer import import_movielens
from app.services.retrain import train_and_activate
from app.settings import Settings
from rbm_core.recommender import PART_CLASSES

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@dataclass
class PhaseResult:
    name: str
    latencies: list[float]
    errors: int
    seconds: float
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    database_cpu: float | None = None
    worker_cpu: list[float] = field(default_factory=list)

    def row(self) -> dict[str, float | int | str]:
        lat = np.asarray(self.latencies) * 1000.0
        ok = len(self.latencies)
        return {
            "phase": self.name,
            "requests": ok + self.errors,
            "errors": self.errors,
            "req_per_s": round(ok / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(float(np.percentile(lat, 50)), 2) if ok else float("nan"),
            "p95_ms": round(float(np.percentile(lat, 95)), 2) if ok else float("nan"),
            "p99_ms": round(float(np.percentile(lat, 99)), 2) if ok else float("nan"),
            "max_ms": round(float(lat.max()), 2) if ok else float("nan"),
            # CPU seconds per request: what the numbers would allow on idle cores
            "server_cpu_ms": round(self.server_cpu / max(ok, 1) * 1000, 2),
            "client_cpu_ms": round(self.client_cpu / max(ok, 1) * 1000, 2),
            # PostgreSQL backends of the benchmark database (when on this machine)
            "db_cpu_ms": (
                round(self.database_cpu / max(ok, 1) * 1000, 2)
                if self.database_cpu is not None
                else "n/a"
            ),
            # each uvicorn worker's share of the server CPU: keep-alive connections
            # stay with the worker that accepted them, which need not be an even split
            "worker_cpu_split": "/".join(
                f"{100 * cpu / sum(self.worker_cpu):.0f}" for cpu in self.worker_cpu
            )
            if len(self.worker_cpu) > 1 and sum(self.worker_cpu) > 0
            else "-",
        }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("RBMREC_TEST_POSTGRES_URL", DEFAULT_POSTGRES),
        help="A PostgreSQL URL whose server gets a throwaway database.",
    )
    parser.add_argument(
        "--movielens-dir",
        default=os.environ.get("RBMREC_MOVIELENS_DIR"),
        help="Unpacked ml-100k directory (default: download).",
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=6000, help="Per phase, at most.")
    parser.add_argument("--seconds", type=float, default=30.0, help="Per phase, at most.")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes.")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--client",
        choices=("httpx", "raw"),
        default="httpx",
        help="httpx.AsyncClient, or a minimal HTTP/1.1 client that leaves more of the "
        "CPUs to the server (useful when client and server share few cores).",
    )
    return parser.parse_args()


def create_database(admin_url: str) -> tuple[str, Callable[[], None]]:
    admin = create_engine(
        make_url(admin_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    name = f"rbmrec_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(drivername="postgresql+psycopg", database=name)

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url.render_as_string(hide_password=False), drop


def prepare(settings: Settings, movielens_dir: str | None, epochs: int, seed: int) -> None:
    migrate.upgrade(settings.database_url)
    if movielens_dir:
        directory = Path(movielens_dir)
    else:
        directory = movielens_download.fetch(
            movielens_download.DATASETS["ml-100k"], movielens_download.default_cache_dir()
        )
    engine = make_engine(settings.database_url)
    try:
        report = import_movielens(engine, directory, scale=settings.rating_scale)
        print(f"imported {report.ratings_read} ratings in {report.seconds:.1f} s", flush=True)
        started = time.perf_counter()
        version = train_and_activate(
            make_sessionmaker(engine),
            settings,
            trigger="cli",
            # the served model at full size; no search and few epochs: serving costs
            # depend on the parts' sizes, not on how long they trained
            params={
                "search": False,
                "random_state": seed,
                **{f"{part}.n_epochs": epochs for part in ("user_rbm", "item_rbm", "ranker")},
            },
        )
        # the parts' sizes: chosen settings over their classes' defaults
        sizes = {
            part: {**PART_CLASSES[part]().get_params(), **settings_}["n_hidden"]
            for part, settings_ in version.hyperparameters.get("chosen", {}).items()
            if "n_hidden" in PART_CLASSES[part]().get_params()
        }
        print(
            f"trained model {version.id} (hidden units {sizes}, {version.n_items} items) "
            f"in {time.perf_counter() - started:.0f} s",
            flush=True,
        )
    finally:
        engine.dispose()


@contextlib.contextmanager
def prepared_settings(
    postgres_url: str, movielens_dir: str | None, epochs: int, seed: int
) -> Iterator[Settings]:
    """Settings of a throwaway database with ML-100K and a trained model (:func:`prepare`);
    the database and the model files are removed afterwards."""
    url, drop = create_database(postgres_url)
    with tempfile.TemporaryDirectory(prefix="rbmrec-bench-") as work:
        try:
            settings = Settings(
                database_url=url,
                model_dir=Path(work) / "models",
                model_cache_dir=Path(work) / "serving",
                log_level="WARNING",
            )
            prepare(settings, movielens_dir, epochs, seed)
            yield settings
        finally:
            drop()


@contextlib.contextmanager
def serving(settings: Settings, workers: int) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``rbmrec serve`` on a free port of 127.0.0.1, ready and listening; stopped after."""
    port = free_port()
    server = start_server(settings, port, workers)
    try:
        wait_ready(f"http://127.0.0.1:{port}", server)
        wait_listening(port, workers)
        yield port, server
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def start_server(settings: Settings, port: int, workers: int) -> subprocess.Popen[bytes]:
    rbmrec = Path(sys.executable).with_name("rbmrec")
    command = (
        [str(rbmrec)]
        if rbmrec.is_file()
        else [sys.executable, "-c", "from app.cli import main; main()"]
    )
    env = {
        **os.environ,
        "RBMREC_DATABASE_URL": settings.database_url,
        "RBMREC_MODEL_DIR": str(settings.model_dir),
        # the serving copy the workers map goes with the rest of the run's files
        "RBMREC_MODEL_CACHE_DIR": str(settings.model_dir.parent / "serving"),
        "RBMREC_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [
            *command,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--no-access-log",
        ],
        env=env,
    )


def wait_ready(base: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            response = httpx.get(f"{base}/health/ready", timeout=2)
            if response.status_code == 200 and response.json()["model"]["loaded"]:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError("the server did not become ready")


def wait_listening(port: int, workers: int, timeout: float = 60) -> None:
    """Wait until every worker listens (uvicorn's own supervisor: one shared socket).

    Keep-alive connections opened earlier would all stay with the workers that were
    ready first.
    """
    deadline = time.monotonic() + timeout
    while listening_sockets(port) < workers and time.monotonic() < deadline:
        time.sleep(0.1)


def _process_table() -> dict[int, tuple[int, float]]:
    """Every process's (parent pid, user + system CPU seconds), from Linux /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the command: state ppid ... utime(12) stime(13)
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)
    return stats


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants (Linux /proc)."""
    stats = _process_table()
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += stats.get(current, (0, 0.0))[1]
        todo += [child for child, (parent, _) in stats.items() if parent == current]
    return total


def worker_cpu_seconds(pid: int) -> list[float]:
    """CPU seconds of each uvicorn worker (a spawned child of ``pid``), by pid."""
    workers = []
    for child, (parent, cpu) in sorted(_process_table().items()):
        try:
            spawned = parent == pid and b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if spawned:
            workers.append(cpu)
    return workers


def database_cpu_seconds(database: str) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend serving ``database`` on this machine.

    A backend's command line names its database (``postgres: ... user db host``);
    empty when none is visible (a server on another machine).
    """
    backends = {}
    for pid, (_, cpu) in _process_table().items():
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if command.startswith(b"postgres:") and f" {database} ".encode() in command:
            backends[pid] = cpu
    return backends


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU used between two snapshots by the processes alive at the second one.

    Backends that exited in between are missed (an undercount, never negative).
    """
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


Request = tuple[str, str, bytes | None]
"""(method, path with query, JSON body or None)."""


class RawConnection:
    """A minimal HTTP/1.1 keep-alive client connection (a fraction of httpx's CPU cost).

    Enough for this server: every response has a Content-Length.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes | None) -> int:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        try:
            # the whole head in one read: a load generator's CPU is taken from the server
            response_head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            self.writer = self.reader = None
            raise ConnectionError("the server closed the connection") from exc
        status = int(response_head.split(b" ", 2)[1])
        length = 0
        close = False
        for line in response_head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if length:
            await self.reader.readexactly(length)
        if close:
            self.writer.close()
            self.writer = self.reader = None
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def run_phase(
    name: str,
    server_pid: int,
    send: Callable[[int, Request], Awaitable[int]],
    make_request: Callable[[int], Request],
    *,
    concurrency: int,
    max_requests: int,
    max_seconds: float,
    database: str | None = None,
) -> PhaseResult:
    latencies: list[float] = []
    errors = 0
    counter = 0
    server_cpu = tree_cpu_seconds(server_pid)
    workers = worker_cpu_seconds(server_pid)
    backends = database_cpu_seconds(database) if database else {}
    client_cpu = time.process_time()
    started = time.perf_counter()
    deadline = started + max_seconds

    async def worker(slot: int) -> None:
        nonlocal counter, errors
        while counter < max_requests and time.perf_counter() < deadline:
            i = counter
            counter += 1
            request = make_request(i)
            t0 = time.perf_counter()
            try:
                ok = await send(slot, request) < 400
            except (httpx.HTTPError, OSError, ValueError, asyncio.IncompleteReadError):
                ok = False
            if ok:
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1

    await asyncio.gather(*(worker(slot) for slot in range(concurrency)))
    seconds = time.perf_counter() - started
    client_cpu = time.process_time() - client_cpu
    backends_after = database_cpu_seconds(database) if database else {}
    return PhaseResult(
        name,
        latencies,
        errors,
        seconds,
        server_cpu=tree_cpu_seconds(server_pid) - server_cpu,
        client_cpu=client_cpu,
        database_cpu=cpu_used(backends, backends_after) if backends_after else None,
        worker_cpu=[
            after - before
            for before, after in zip(workers, worker_cpu_seconds(server_pid), strict=False)
        ],
    )


async def load(
    host: str, port: int, server_pid: int, database: str | None, args: argparse.Namespace
) -> list[PhaseResult]:
    rng = random.Random(args.seed)
    users = [str(u) for u in range(1, 944)]
    items = [str(i) for i in range(1, 1683)]

    def recommend(_i: int) -> Request:
        return ("GET", f"/users/{rng.choice(users)}/recommendations?n=10", None)

    def predict(_i: int) -> Request:
        query = "&".join(f"item_id={item}" for item in rng.sample(items, 20))
        return ("GET", f"/users/{rng.choice(users)}/predictions?{query}", None)

    def rate(i: int) -> Request:
        body: dict[str, object] = {
            "user_id": f"bench-{i % 2000}",
            "item_id": rng.choice(items),
            "rating": rng.randint(1, 5),
        }
        return ("POST", "/ratings", json.dumps(body).encode())

    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    raw = [RawConnection(host, port) for _ in range(args.concurrency)]
    async with httpx.AsyncClient(
        base_url=f"http://{host}:{port}", limits=limits, timeout=30
    ) as client:

        async def send_httpx(_slot: int, request: Request) -> int:
            method, path, body = request
            headers = {"content-type": "application/json"} if body is not None else None
            response = await client.request(method, path, content=body, headers=headers)
            return response.status_code

        async def send_raw(slot: int, request: Request) -> int:
            return await raw[slot].request(*request)

        send = send_raw if args.client == "raw" else send_httpx
        common = {
            "concurrency": args.concurrency,
            "max_seconds": args.seconds,
            "database": database,
        }
        await run_phase("warmup", server_pid, send, recommend, max_requests=args.warmup, **common)
        results = [
            await run_phase(
                "GET /users/{id}/recommendations",
                server_pid,
                send,
                recommend,
                max_requests=args.requests,
                **common,
            ),
            await run_phase(
                "GET /users/{id}/predictions (20 items)",
                server_pid,
                send,
                predict,
                max_requests=args.requests,
                **common,
            ),
            await run_phase(
                "POST /ratings", server_pid, send, rate, max_requests=args.requests, **common
            ),
            # The floor: the same stack with a handler that does nothing.
            await run_phase(
                "GET /health/live",
                server_pid,
                send,
                lambda _i: ("GET", "/health/live", None),
                max_requests=args.requests,
                **common,
            ),
        ]
    for connection in raw:
        connection.close()
    return results


def main() -> None:
    args = parse_args()
    # This measures a saturated worker: every request of the closed loop must be
    # admitted, so the scoring queue holds them all (benchmarks/overload.py measures
    # the default bounds).
    os.environ.setdefault("RBMREC_MAX_QUEUE", str(args.concurrency))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"{cpus} CPUs, concurrency {args.concurrency}, {args.workers} uvicorn worker(s), "
        f"{args.client} client"
    )
    with (
        prepared_settings(
            args.postgres_url, args.movielens_dir, args.epochs, args.seed
        ) as settings,
        serving(settings, args.workers) as (port, server),
    ):
        database = make_url(settings.database_url).database
        results = asyncio.run(load("127.0.0.1", port, server.pid, database, args))
    header = (
        "phase",
        "requests",
        "errors",
        "req_per_s",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "max_ms",
        "server_cpu_ms",
        "client_cpu_ms",
        "db_cpu_ms",
        "worker_cpu_split",
    )
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(" | ".join(header))
    for result in results:
        row = result.row()
        print(" | ".join(str(row[key]) for key in header))
    print("\n" + json.dumps([r.row() for r in results]))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


if __name__ == "__main__":
    main()
