"""Bounded HTTP load and model-switch watching through the proxy (Python standard library only).

Used by ``scripts/compose-scale-smoke.sh`` and ``benchmarks/compose_scale.py``; it
needs nothing but Python 3.11, so the smoke runs with the system ``python3``.

``load`` sends a fixed number of requests with ``--concurrency`` keep-alive
connections, optionally paced to ``--rate`` requests per second:
``GET /users/{id}/recommendations?n=10`` for random ML-100K users and, every
``--post-every``-th request, ``POST /ratings`` of one new (user, item) pair. Nothing is
retried, except what every HTTP/1.1 client retries (see :class:`Connection`): an
idempotent request on a reused keep-alive connection that the server closed before
answering; those are counted apart. Every failure the client sees is counted (status
0 = no HTTP answer). It prints one JSON document: counts by method and status,
requests per second, GET latency percentiles, answers per replica
(``Rbmrec-Replica``), and each failed request (the POSTs among them with their
bodies, so they can be re-sent).

``watch-model`` asks ``GET /model`` over and over and records, per replica, when it
first served ``--version``; once every one of ``--replicas`` replicas has, it goes on
for ``--hold`` seconds and counts answers of any other version (flips back).

    python3 scripts/proxy_load.py load --url http://127.0.0.1:8000 --requests 4000
    python3 scripts/proxy_load.py watch-model --url http://127.0.0.1:8000 \\
        --version 20261129T030000123Z-9f2c1a --replicas 3
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import select
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

REPLICA_HEADER = "rbmrec-replica"


@dataclass
class Outcome:
    """One request as the client saw it."""

    index: int
    method: str
    path: str
    body: str | None
    started: float
    seconds: float
    status: int
    error: str | None
    replica: str | None
    retried: bool


IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
# Raised when a connection ends before the first byte of the answer.
_NO_ANSWER = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    BrokenPipeError,
    ConnectionAbortedError,
)


class Connection:
    """One keep-alive HTTP/1.1 connection that reconnects after any failure.

    As HTTP/1.1 clients do (RFC 9112, section 9.3.1; curl, Go's net/http and browsers
    alike), an idempotent request sent on a *reused* connection that the server closed
    before answering is sent once more on a new connection: a keep-alive connection
    may be closed at any moment (nginx closes its idle ones when it reloads), and the
    request then never reached the server. Such retries are counted (``retried``);
    a POST is never retried, and nothing else is.
    """

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.conn: http.client.HTTPConnection | None = None

    def _usable(self) -> tuple[http.client.HTTPConnection, bool]:
        """A connection, and whether it is a reused keep-alive one."""
        conn = self.conn
        if conn is not None and conn.sock is not None:
            # An idle keep-alive socket that is readable has been closed by the server
            # (urllib3 checks the same before reusing a pooled connection).
            readable, _, _ = select.select([conn.sock], [], [], 0)
            if readable:
                conn.close()
                conn = None
        if conn is not None and conn.sock is not None:
            return conn, True
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self.conn = conn
        return conn, False

    def request(
        self, method: str, path: str, body: str | None = None
    ) -> tuple[int, bytes, str | None, bool]:
        """(status, body, replica, retried) or raises (the connection is then dropped)."""
        try:
            return (*self._once(method, path, body, retry_stale=method in IDEMPOTENT), False)
        except _StaleConnectionError:
            return (*self._once(method, path, body, retry_stale=False), True)

    def _once(
        self, method: str, path: str, body: str | None, *, retry_stale: bool
    ) -> tuple[int, bytes, str | None]:
        conn, reused = self._usable()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
            except _NO_ANSWER as exc:
                if reused and retry_stale:
                    raise _StaleConnectionError from exc
                raise
            data = response.read()
        except BaseException:
            conn.close()
            self.conn = None
            raise
        if response.will_close:
            conn.close()
            self.conn = None
        return response.status, data, response.getheader(REPLICA_HEADER)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


class _StaleConnectionError(Exception):
    """A reused keep-alive connection ended before any answer to an idempotent request."""


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise SystemExit(f"--url must be http://HOST[:PORT], not {url!r}")
    return parts.hostname, parts.port or 80


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]

    return {
        "p50_ms": round(rank(0.50) * 1000, 2),
        "p95_ms": round(rank(0.95) * 1000, 2),
        "p99_ms": round(rank(0.99) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def plan(args: argparse.Namespace) -> list[tuple[str, str, str | None]]:
    """The requests, fixed in advance by ``--seed``."""
    rng = random.Random(args.seed)
    requests: list[tuple[str, str, str | None]] = []
    for i in range(args.requests):
        if args.post_every and i % args.post_every == args.post_every - 1:
            body = {
                "user_id": f"{args.post_user_prefix}{i}",
                "item_id": str(rng.randint(1, args.items)),
                "rating": rng.randint(1, 5),
            }
            requests.append(("POST", "/ratings", json.dumps(body)))
        else:
            user = rng.randint(1, args.users)
            requests.append(("GET", f"/users/{user}/recommendations?n=10", None))
    return requests


def run_load(args: argparse.Namespace) -> dict[str, Any]:
    host, port = _address(args.url)
    requests = plan(args)
    outcomes: list[Outcome | None] = [None] * len(requests)
    next_index = iter(range(len(requests)))
    lock = threading.Lock()
    started = time.monotonic() + 0.05
    wall_start = time.time() + 0.05

    def worker() -> None:
        connection = Connection(host, port, args.timeout)
        try:
            while True:
                with lock:
                    index = next(next_index, None)
                if index is None:
                    return
                if args.rate:
                    delay = started + index / args.rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                method, path, body = requests[index]
                t0 = time.monotonic()
                wall = time.time()
                retried = False
                try:
                    status, _data, replica, retried = connection.request(method, path, body)
                    error = None if 200 <= status < 300 else f"HTTP {status}"
                except (OSError, http.client.HTTPException) as exc:
                    status, replica, error = 0, None, f"{type(exc).__name__}: {exc}"
                outcomes[index] = Outcome(
                    index,
                    method,
                    path,
                    body,
                    wall,
                    time.monotonic() - t0,
                    status,
                    error,
                    replica,
                    retried,
                )
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done = [o for o in outcomes if o is not None]
    seconds = max(o.started + o.seconds for o in done) - wall_start if done else 0.0
    failed = [o for o in done if o.error is not None]
    by_method: dict[str, dict[str, Any]] = {}
    for method in sorted({o.method for o in done}):
        mine = [o for o in done if o.method == method]
        by_method[method] = {
            "sent": len(mine),
            "failed": sum(o.error is not None for o in mine),
            "retried_on_a_new_connection": sum(o.retried for o in mine),
            "statuses": dict(sorted(Counter(str(o.status) for o in mine).items())),
        }
    if args.log:
        with open(args.log, "w") as out:
            for outcome in done:
                out.write(json.dumps(asdict(outcome)) + "\n")
    ok_gets = [o.seconds for o in done if o.method == "GET" and o.error is None]
    return {
        "url": args.url,
        "requests": len(done),
        "concurrency": args.concurrency,
        "rate": args.rate,
        "seconds": round(seconds, 2),
        "req_per_s": round(len(done) / seconds, 1) if seconds > 0 else 0.0,
        "failed": len(failed),
        "by_method": by_method,
        "get_latency": _percentiles(ok_gets),
        "replicas": dict(sorted(Counter(o.replica or "-" for o in done).items())),
        "failures": [asdict(o) for o in failed],
    }


def watch_model(args: argparse.Namespace) -> dict[str, Any]:
    host, port = _address(args.url)
    connection = Connection(host, port, args.timeout)
    first_new: dict[str, float] = {}
    last_old: dict[str, float] = {}
    samples: Counter[str] = Counter()
    flips = errors = after = 0
    all_at: float | None = None
    deadline = time.monotonic() + args.timeout_total
    try:
        while time.monotonic() < deadline:
            now = time.time()
            try:
                status, data, replica, _retried = connection.request("GET", "/model")
                version = json.loads(data).get("version") if status == 200 else None
            except (OSError, http.client.HTTPException, ValueError):
                errors += 1
                time.sleep(args.interval)
                continue
            replica = replica or "-"
            samples[replica] += 1
            if version == args.version:
                first_new.setdefault(replica, now)
            else:
                last_old[replica] = now
                if replica in first_new:
                    flips += 1  # this replica had switched and answered another version
            if all_at is not None:
                after += 1
                if now - all_at >= args.hold:
                    break
            elif len(first_new) >= args.replicas:
                all_at = now
            time.sleep(args.interval)
    finally:
        connection.close()
    return {
        "version": args.version,
        "replicas_expected": args.replicas,
        "first_new": first_new,
        "last_old": last_old,
        "all_switched_at": all_at,
        "samples": dict(samples),
        "samples_after_all_switched": after,
        "flips_back": flips,
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    load = sub.add_parser("load", help="a fixed number of requests; prints a JSON summary")
    load.add_argument("--url", required=True, help="http://HOST:PORT of the proxy")
    load.add_argument("--requests", type=int, default=4000)
    load.add_argument("--concurrency", type=int, default=8)
    load.add_argument("--rate", type=float, default=0.0, help="requests/s in all (0: no cap)")
    load.add_argument("--post-every", type=int, default=0, help="every Nth request a POST")
    load.add_argument("--post-user-prefix", default="load-", help="user ids of the POSTs")
    load.add_argument("--users", type=int, default=943, help="GET users 1..N")
    load.add_argument("--items", type=int, default=1682, help="POST items 1..N")
    load.add_argument("--seed", type=int, default=0)
    load.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    load.add_argument("--log", help="write every request as a JSON line to this file")
    watch = sub.add_parser("watch-model", help="when each replica serves a model version")
    watch.add_argument("--url", required=True)
    watch.add_argument("--version", required=True)
    watch.add_argument("--replicas", type=int, required=True)
    watch.add_argument("--hold", type=float, default=5.0, help="seconds to go on afterwards")
    watch.add_argument("--interval", type=float, default=0.02)
    watch.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    watch.add_argument("--timeout-total", type=float, default=60.0)
    args = parser.parse_args(argv)
    if args.command == "load":
        if args.requests < 1 or args.concurrency < 1:
            parser.error("--requests and --concurrency must be at least 1")
        result = run_load(args)
    else:
        result = watch_model(args)
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    socket.setdefaulttimeout(60)
    sys.exit(main())
