"""Overload: a real ``rbmrec serve`` on PostgreSQL offered 5x the load it can serve.

What it does (the set-up is ``serve_latency.py``'s: a throwaway PostgreSQL database,
MovieLens 100K imported, the served model trained and activated, ``rbmrec serve``
started as a separate process with the default load-shedding bounds unless
``--max-concurrency`` / ``--max-queue`` say otherwise):

1. **unloaded**: one request in flight at a time (closed loop), ``--unloaded-seconds``:
   the latency of ``GET /users/{id}/recommendations?n=10`` when nothing waits;
2. **capacity**: ``--capacity-concurrency`` requests in flight (closed loop, as many
   as the worker scores and queues, so none is shed), ``--capacity-seconds``: the
   recommendations per second the server sustains;
3. **overload**: an open loop at ``--factor`` times that capacity for ``--seconds``:
   requests are sent at fixed arrival times whatever the answers (a new connection
   when every open one is busy), and each latency counts from the request's
   scheduled time, so a client that falls behind shows up in the numbers.

It prints the admitted throughput (200s per second), the p50/p99 latency of the
admitted requests, the share of 503s (shed), any other failure, and the ratio of
the admitted p99 to the unloaded p99 (the target: at most 3), with the load average
of the machine. Example::

    RBMREC_MOVIELENS_DIR=path/to/ml-100k .venv/bin/python benchmarks/overload.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
import urllib.request
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_latency import (
    DEFAULT_POSTGRES,
    RawConnection,
    prepared_settings,
    serving,
    tree_cpu_seconds,
)

from app.api.main import SCORING_THREADS
from app.settings import Settings

HOST = "127.0.0.1"
MAX_CONNECTIONS = 1024
"""Connections the open-loop client may hold; past them, requests wait for one."""
PREOPENED_CONNECTIONS = 256
"""Connections the open-loop client opens before it starts sending."""


@dataclass
class Outcome:
    name: str
    seconds: float
    latencies: list[float] = field(default_factory=list)
    sent_latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    offered: int = 0
    max_send_lag: float = 0.0
    connections_opened: int = 0

    @property
    def admitted(self) -> int:
        return self.statuses["200"]

    def p(self, q: float, *, from_send: bool = False) -> float:
        values = self.sent_latencies if from_send else self.latencies
        return float(np.percentile(np.asarray(values) * 1000, q)) if values else 0.0

    def summary(self) -> str:
        total = sum(self.statuses.values())
        shed = self.statuses["503"]
        other = total - self.admitted - shed
        return (
            f"{self.name}: {total} requests in {self.seconds:.1f} s, "
            f"admitted {self.admitted / self.seconds:.0f}/s, "
            f"p50 {self.p(50):.1f} ms, p99 {self.p(99):.1f} ms, max {self.p(100):.1f} ms, "
            f"503 {100 * shed / max(total, 1):.1f}%, other failures {other} "
            f"({dict(self.statuses)}), server CPU {self.server_cpu / self.seconds:.2f} cores, "
            f"client CPU {self.client_cpu / self.seconds:.2f} cores"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres-url", default=os.environ.get("RBMREC_TEST_POSTGRES_URL", DEFAULT_POSTGRES)
    )
    parser.add_argument("--movielens-dir", default=os.environ.get("RBMREC_MOVIELENS_DIR"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--factor", type=float, default=5.0, help="Offered load / capacity.")
    parser.add_argument("--seconds", type=float, default=30.0, help="Overload phase.")
    parser.add_argument("--unloaded-seconds", type=float, default=10.0)
    parser.add_argument("--capacity-seconds", type=float, default=10.0)
    parser.add_argument(
        "--capacity-concurrency",
        type=int,
        help="In flight while measuring capacity (default: the scoring threads and the "
        "queue, so that none is shed; at most 16).",
    )
    parser.add_argument("--max-concurrency", type=int, help="RBMREC_MAX_CONCURRENCY")
    parser.add_argument("--max-queue", type=int, help="RBMREC_MAX_QUEUE")
    return parser.parse_args()


def _target(rng: random.Random) -> str:
    return f"/users/{rng.randint(1, 943)}/recommendations?n=10"


async def closed_loop(
    name: str, port: int, server_pid: int, concurrency: int, seconds: float, seed: int
) -> Outcome:
    rng = random.Random(seed)
    connections = [RawConnection(HOST, port) for _ in range(concurrency)]
    cpu = tree_cpu_seconds(server_pid)
    client_cpu = time.process_time()
    started = time.perf_counter()
    deadline = started + seconds
    outcome = Outcome(name, seconds)

    async def client(connection: RawConnection) -> None:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                status = str(await connection.request("GET", _target(rng), None))
            except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                status = type(exc).__name__
            outcome.statuses[status] += 1
            if status == "200":
                outcome.latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(client(c) for c in connections))
    outcome.seconds = time.perf_counter() - started
    outcome.server_cpu = tree_cpu_seconds(server_pid) - cpu
    outcome.client_cpu = time.process_time() - client_cpu
    for connection in connections:
        connection.close()
    return outcome


async def open_loop(port: int, server_pid: int, rate: float, seconds: float, seed: int) -> Outcome:
    """Send at ``rate`` per second for ``seconds``, whatever the server answers."""
    rng = random.Random(seed)
    idle: deque[RawConnection] = deque()
    opened = 0
    available = asyncio.Condition()
    outcome = Outcome("overload", seconds)
    tasks: set[asyncio.Task[None]] = set()

    async def one(scheduled: float) -> None:
        nonlocal opened
        if not idle and opened >= MAX_CONNECTIONS:
            async with available:
                while not idle:
                    await available.wait()
        if idle:
            # the longest idle first: every connection stays in use, so none reaches
            # uvicorn's 5 s keep-alive timeout (no lock: one event loop, no await here)
            connection = idle.popleft()
        else:
            opened += 1
            outcome.connections_opened += 1
            connection = RawConnection(HOST, port)
        target = _target(rng)
        sent_at = time.perf_counter()
        reused = connection.writer is not None
        try:
            status = str(await connection.request("GET", target, None))
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            connection.close()
            connection = RawConnection(HOST, port)
            status = type(exc).__name__
            if reused:
                # the server closed an idle keep-alive connection (uvicorn's timeout):
                # what an HTTP client does, send it again on a new one
                try:
                    status = str(await connection.request("GET", target, None))
                except (OSError, ValueError, asyncio.IncompleteReadError) as again:
                    connection.close()
                    connection = RawConnection(HOST, port)
                    status = type(again).__name__
        outcome.statuses[status] += 1
        if status == "200":
            done = time.perf_counter()
            outcome.latencies.append(done - scheduled)
            outcome.sent_latencies.append(done - sent_at)
        idle.append(connection)
        if opened >= MAX_CONNECTIONS:
            async with available:
                available.notify()

    # A pool opened beforehand, as a proxy's or a client library's would be: opening
    # hundreds of connections at once in a hiccup would measure the kernel's SYN
    # back-off (1 s, 3 s...), not the server.
    for _ in range(PREOPENED_CONNECTIONS):
        connection = RawConnection(HOST, port)
        await connection.request("GET", "/health/live", None)
        idle.append(connection)
    opened = len(idle)
    cpu = tree_cpu_seconds(server_pid)
    client_cpu = time.process_time()
    started = time.perf_counter()
    total = int(rate * seconds)
    sent = 0
    while sent < total:
        now = time.perf_counter()
        due = min(total, int((now - started) * rate) + 1)
        outcome.max_send_lag = max(outcome.max_send_lag, now - (started + sent / rate))
        while sent < due:
            task = asyncio.create_task(one(started + sent / rate))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.sleep(max(0.0, started + sent / rate - time.perf_counter()))
    outcome.offered = sent
    await asyncio.gather(*tasks)
    outcome.seconds = time.perf_counter() - started
    outcome.server_cpu = tree_cpu_seconds(server_pid) - cpu
    outcome.client_cpu = time.process_time() - client_cpu
    for connection in idle:
        connection.close()
    return outcome


async def measure(port: int, server_pid: int, args: argparse.Namespace) -> list[Outcome]:
    await closed_loop("warm-up", port, server_pid, 2, 3.0, args.seed)
    unloaded = await closed_loop(
        "unloaded (1 in flight)", port, server_pid, 1, args.unloaded_seconds, args.seed + 1
    )
    print(unloaded.summary(), flush=True)
    capacity = await closed_loop(
        f"capacity ({args.capacity_concurrency} in flight)",
        port,
        server_pid,
        args.capacity_concurrency,
        args.capacity_seconds,
        args.seed + 2,
    )
    print(capacity.summary(), flush=True)
    rate = args.factor * capacity.admitted / capacity.seconds
    print(f"offering {rate:.0f} requests/s ({args.factor:g}x capacity) for {args.seconds:g} s")
    overload = await open_loop(port, server_pid, rate, args.seconds, args.seed + 3)
    print(overload.summary(), flush=True)
    print(f"the worker's scoring pool after it: {scoring_state(port)}")
    print(
        f"sent {overload.offered} ({overload.offered / args.seconds:.0f}/s); "
        f"the client was at most {1000 * overload.max_send_lag:.1f} ms behind its schedule "
        f"and opened {overload.connections_opened} connections beyond the "
        f"{PREOPENED_CONNECTIONS} opened beforehand; "
        f"admitted latency counted from the actual send: p50 "
        f"{overload.p(50, from_send=True):.1f} ms, p99 {overload.p(99, from_send=True):.1f} ms"
    )
    return [unloaded, capacity, overload]


def scoring_state(port: int) -> str:
    """The worker's overload-mode figures, from its ``/metrics``."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    wanted = {
        "rbmrec_scoring_overload_entries_total": "went into overload mode {} times",
        "rbmrec_scoring_overloaded": "overload mode now {}",
        "rbmrec_scoring_offered_load": "last offered load {}",
    }
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            found[name] = wanted[name].format(f"{float(value):g}")
    return ", ".join(found[name] for name in wanted if name in found)


def main() -> None:
    args = parse_args()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{cpus} CPUs; load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.max_concurrency is not None:
        os.environ["RBMREC_MAX_CONCURRENCY"] = str(args.max_concurrency)
    if args.max_queue is not None:
        os.environ["RBMREC_MAX_QUEUE"] = str(args.max_queue)
    if args.capacity_concurrency is None:
        args.capacity_concurrency = min(SCORING_THREADS + Settings().max_queue, 16)
    with (
        prepared_settings(
            args.postgres_url, args.movielens_dir, args.epochs, args.seed
        ) as settings,
        serving(settings, 1) as (port, server),
    ):
        unloaded, capacity, overload = asyncio.run(measure(port, server.pid, args))
    ratio = overload.p(99) / unloaded.p(99) if unloaded.latencies else float("nan")
    failures = sum(overload.statuses.values()) - overload.admitted - overload.statuses["503"]
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"admitted p99 / unloaded p99 = {overload.p(99):.1f} / {unloaded.p(99):.1f} ms "
        f"= {ratio:.2f} (target <= 3); other failures: {failures}"
    )
    print(
        f"admitted p99 / p99 at capacity (closed loop, nothing shed) = "
        f"{overload.p(99):.1f} / {capacity.p(99):.1f} ms = {overload.p(99) / capacity.p(99):.2f}"
    )


if __name__ == "__main__":
    main()
