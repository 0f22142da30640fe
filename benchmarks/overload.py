"""Overload: a real ``rbmrec serve`` on PostgreSQL offered 5x the load it can serve.

What it does (the set-up is ``serve_latency.py``'s: a throwaway PostgreSQL database,
MovieLens 100K imported, the served model trained and activated, ``rbmrec serve``
started as a separate process with the default load-shedding bounds unless
``--max-concurrency`` / ``--max-queue`` say otherwise):

1. **unloaded**: one request in flight at a time (closed loop), ``--unloaded-seconds``:
   the latency of ``GET /users/{id}/recommendations?n=10`` when nothing waits;
   measured again after the overload (4.), and the two pooled: on a machine shared
   with other work, its speed drifts between phases a minute apart, and a baseline
   taken on both sides of the flood is not biased by which way it drifted;
2. **capacity**: ``--capacity-concurrency`` requests in flight (closed loop, as many
   as the worker scores and queues, so none is shed), ``--capacity-seconds``: the
   recommendations per second the server sustains;
3. **overload**: an open loop at ``--factor`` times that capacity for ``--seconds``:
   requests are sent at fixed arrival times whatever the answers (a new connection
   when every open one is busy), and each latency counts from the request's
   scheduled time, so a client that falls behind shows up in the numbers. The times
   are kept by a Linux timerfd (:class:`Metronome`): asyncio's own timers wait in
   whole milliseconds, which would make the client, not the server, late;
4. **unloaded again**, as 1.

It prints the admitted throughput (200s per second), the p50/p99 latency of the
admitted requests, the share of 503s (shed), any other failure, and the ratio of
the admitted p99 to the unloaded p99 (before and after, pooled; the target: at most
3), with the load average of the machine. Example::

    RBMREC_MOVIELENS_DIR=path/to/ml-100k .venv/bin/python benchmarks/overload.py
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import random
import sys
import time
import urllib.request
from collections import Counter, deque
from collections.abc import Callable
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


class Metronome:
    """A Linux timerfd that fires every ``interval`` seconds from ``start`` (on the clock
    of ``time.perf_counter``, CLOCK_MONOTONIC on Linux); the event loop reads it.

    asyncio's timers wait in whole milliseconds (epoll's timeout is rounded up): with
    requests due every 0.2 to 0.5 ms, a client pacing itself with ``asyncio.sleep``
    sends most of them up to a millisecond late, and counts that as the server's
    latency. The kernel's timer ends the loop's wait at the tick (the script prints
    how late the requests left).
    """

    _CLOCK_MONOTONIC = 1
    _TFD_TIMER_ABSTIME = 1

    class _Itimerspec(ctypes.Structure):
        _fields_ = [("it_interval", ctypes.c_long * 2), ("it_value", ctypes.c_long * 2)]

    def __init__(self, start: float, interval: float) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.timerfd_create(self._CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        spec = self._Itimerspec(self._timespec(interval), self._timespec(start))
        if libc.timerfd_settime(self.fd, self._TFD_TIMER_ABSTIME, ctypes.byref(spec), None):
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    @staticmethod
    def _timespec(seconds: float) -> ctypes.Array[ctypes.c_long]:
        whole = int(seconds)
        return (ctypes.c_long * 2)(whole, round((seconds - whole) * 1e9))

    def ticks(self) -> int:
        """Ticks since the last call (0 when none is due yet)."""
        try:
            return int.from_bytes(os.read(self.fd, 8), sys.byteorder)
        except BlockingIOError:
            return 0

    def close(self) -> None:
        os.close(self.fd)


@dataclass
class Outcome:
    name: str
    seconds: float
    latencies: list[float] = field(default_factory=list)
    sent_latencies: list[float] = field(default_factory=list)
    send_lags: list[float] = field(default_factory=list)
    admitted_at: list[float] = field(default_factory=list)
    """When each admitted request was due, in seconds from the start of the phase."""
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


class Exchange(asyncio.Protocol):
    """One keep-alive connection of the open loop: a request at a time, its answer parsed
    as its bytes arrive.

    No task, no stream and no coroutine per request (what :class:`RawConnection` costs):
    the load generator shares the cores with the server it measures, so each of its
    microseconds is taken from the requests being timed.
    """

    def __init__(self, answered: Callable[[Exchange, str], None]) -> None:
        self.answered = answered
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.target = ""
        self.scheduled = self.sent = 0.0
        self.busy = False
        self.answers = 0
        """Answers received on this connection (0: it is new)."""
        self.retried = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, target: str, scheduled: float) -> None:
        assert self.transport is not None
        self.target, self.scheduled, self.busy = target, scheduled, True
        self.sent = time.perf_counter()
        self.transport.write(f"GET {target} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        stop = head.find(b"\r\n", at + 2) if at >= 0 else -1
        length = int(head[at + 17 : stop if stop >= 0 else None]) if at >= 0 else 0
        if len(buffer) < end + 4 + length:
            return
        del buffer[: end + 4 + length]
        self.busy = False
        self.answers += 1
        self.answered(self, head[9:12].decode())

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.busy:
            self.busy = False
            self.answered(self, "ConnectionError")


async def open_loop(port: int, server_pid: int, rate: float, seconds: float, seed: int) -> Outcome:
    """Send at ``rate`` per second for ``seconds``, whatever the server answers."""
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    outcome = Outcome("overload", seconds)
    idle: deque[Exchange] = deque()
    waiting: deque[tuple[str, float]] = deque()
    """Requests due while every connection was busy and no more could be opened."""
    opened = 0
    in_flight = 0
    total = int(rate * seconds)
    sent = 0
    finished = loop.create_future()
    openers: set[asyncio.Task[None]] = set()

    def answered(exchange: Exchange, status: str) -> None:
        nonlocal in_flight, opened
        now = time.perf_counter()
        if exchange.transport is None:
            opened -= 1  # the server closed it
        if status == "ConnectionError" and exchange.answers and not exchange.retried:
            # the server closed an idle keep-alive connection (uvicorn's timeout): what an
            # HTTP client does, send it again on a new one
            start_opening(exchange.target, exchange.scheduled, retried=True)
            return
        in_flight -= 1
        outcome.statuses[status] += 1
        if status == "200":
            outcome.latencies.append(now - exchange.scheduled)
            outcome.sent_latencies.append(now - exchange.sent)
            outcome.admitted_at.append(exchange.scheduled - started)
        outcome.send_lags.append(exchange.sent - exchange.scheduled)
        if exchange.transport is not None:
            if waiting:
                exchange.send(*waiting.popleft())
                return
            idle.append(exchange)
        elif waiting and opened < MAX_CONNECTIONS:
            start_opening(*waiting.popleft())
        if sent == total and in_flight == 0 and not finished.done():
            finished.set_result(None)

    async def open_and_send(target: str, scheduled: float, retried: bool) -> None:
        nonlocal in_flight
        try:
            _, exchange = await loop.create_connection(lambda: Exchange(answered), HOST, port)
        except OSError as exc:
            in_flight -= 1
            outcome.statuses[type(exc).__name__] += 1
            return
        exchange.retried = retried
        exchange.send(target, scheduled)

    def start_opening(target: str, scheduled: float, *, retried: bool = False) -> None:
        nonlocal opened
        opened += 1
        outcome.connections_opened += 1
        task = loop.create_task(open_and_send(target, scheduled, retried))
        openers.add(task)
        task.add_done_callback(openers.discard)

    def idle_connection() -> Exchange | None:
        """The longest idle open connection: every one stays in use, so none reaches
        uvicorn's 5 s keep-alive timeout (one the server closed is dropped)."""
        nonlocal opened
        while idle:
            exchange = idle.popleft()
            if exchange.transport is not None:
                return exchange
            opened -= 1
        return None

    def dispatch(target: str, scheduled: float) -> None:
        nonlocal in_flight
        in_flight += 1
        exchange = idle_connection()
        if exchange is not None:
            exchange.send(target, scheduled)
        elif opened < MAX_CONNECTIONS:
            start_opening(target, scheduled)
        else:
            waiting.append((target, scheduled))

    # A pool opened beforehand, as a proxy's or a client library's would be: opening
    # hundreds of connections at once in a hiccup would measure the kernel's SYN
    # back-off (1 s, 3 s...), not the server.
    ready: asyncio.Future[None] = loop.create_future()
    warming = PREOPENED_CONNECTIONS

    def warmed(exchange: Exchange, status: str) -> None:
        nonlocal warming
        exchange.answered = answered
        if exchange.transport is not None:
            idle.append(exchange)
        warming -= 1
        if warming == 0:
            ready.set_result(None)

    for _ in range(PREOPENED_CONNECTIONS):
        _, exchange = await loop.create_connection(lambda: Exchange(warmed), HOST, port)
        exchange.send("/health/live", 0.0)
    await ready
    opened = len(idle)
    outcome.connections_opened = 0
    cpu = tree_cpu_seconds(server_pid)
    client_cpu = time.process_time()
    started = time.perf_counter()
    metronome = Metronome(started, 1 / rate)

    def on_tick() -> None:
        nonlocal sent
        due = min(total, sent + metronome.ticks())
        if due > sent:
            lag = time.perf_counter() - (started + sent / rate)  # the earliest due
            outcome.max_send_lag = max(outcome.max_send_lag, lag)
        while sent < due:
            dispatch(_target(rng), started + sent / rate)
            sent += 1
        if sent == total:
            loop.remove_reader(metronome.fd)
            if in_flight == 0 and not finished.done():
                finished.set_result(None)

    loop.add_reader(metronome.fd, on_tick)
    try:
        await finished
    finally:
        loop.remove_reader(metronome.fd)
        metronome.close()
    outcome.offered = sent
    outcome.seconds = time.perf_counter() - started
    outcome.server_cpu = tree_cpu_seconds(server_pid) - cpu
    outcome.client_cpu = time.process_time() - client_cpu
    for exchange in idle:
        if exchange.transport is not None:
            exchange.transport.close()
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
    print(f"the worker's scoring pool after it: {scoring_state(port)}", flush=True)
    lags = np.asarray(overload.send_lags) * 1000
    at = np.asarray(overload.admitted_at)
    latencies = np.asarray(overload.latencies) * 1000
    print(
        f"sent {overload.offered} ({overload.offered / args.seconds:.0f}/s), "
        f"p50 {np.percentile(lags, 50):.2f} ms and p99 {np.percentile(lags, 99):.2f} ms "
        f"after their scheduled time (at most {1000 * overload.max_send_lag:.1f} ms); "
        f"opened {overload.connections_opened} connections beyond the "
        f"{PREOPENED_CONNECTIONS} opened beforehand; "
        f"admitted latency counted from the actual send: p50 "
        f"{overload.p(50, from_send=True):.1f} ms, p99 {overload.p(99, from_send=True):.1f} ms"
    )
    if (at < 1).any() and (at >= 1).any():
        print(
            f"admitted p99 in the flood's first second {np.percentile(latencies[at < 1], 99):.1f} "
            f"ms, after it {np.percentile(latencies[at >= 1], 99):.1f} ms"
        )
    after = await closed_loop(
        "unloaded again (1 in flight)", port, server_pid, 1, args.unloaded_seconds, args.seed + 4
    )
    print(after.summary(), flush=True)
    print(
        f"unloaded p99 before the overload {unloaded.p(99):.1f} ms, after it {after.p(99):.1f} ms"
    )
    unloaded.latencies += after.latencies
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
        f"admitted p99 / unloaded p99 (before and after) = {overload.p(99):.1f} / "
        f"{unloaded.p(99):.1f} ms = {ratio:.2f} (target <= 3); other failures: {failures}"
    )
    print(
        f"admitted p99 / p99 at capacity (closed loop, nothing shed) = "
        f"{overload.p(99):.1f} / {capacity.p(99):.1f} ms = {overload.p(99) / capacity.p(99):.2f}"
    )


if __name__ == "__main__":
    main()
