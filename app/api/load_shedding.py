"""Load shedding: bounded work per worker process, and a quick 503 beyond it.

Without bounds, a client that floods the API makes every request wait behind its
own: requests pile up in the event loop, the thread pool and the scoring queue, and
everyone's latency grows without limit. Two bounds, per worker process, held by one
:class:`Admission`:

* at most ``RBMREC_MAX_CONCURRENCY`` requests in the app at once
  (:class:`ConcurrencyLimitMiddleware` counts them); one more is answered 503 at once;
* :class:`ScoringPool`: the scoring threads of the recommendation and prediction
  routes (:data:`app.api.main.SCORING_THREADS`) with at most ``RBMREC_MAX_QUEUE``
  requests waiting for one, to absorb bursts; one more is answered 503 at once. A
  request takes its place on arrival and holds it until it is answered. When the
  load offered to the pool stays above what it serves (a flood, not a burst), it
  closes its queue and takes one request at a time until the load falls again: a
  queue that never drains only adds its length to every admitted request's latency.

Under a flood most requests are refused, so a refusal must cost next to nothing: the
check runs first, in front of every middleware and the router
(:meth:`Admission.gate`, called by the app's ``__call__``), and the 503 is written
directly: about 25 us of CPU per refusal against about 48 through the middleware stack
(``benchmarks/refusal_cost.py``), which leaves that much more of the worker's core to
the requests it admits (``benchmarks/overload.py``, ``docs/benchmarks.md``,
"Overload"). The client is told
to come back (``Retry-After``). The health probes and ``/metrics`` are never shed: an
orchestrator must see a busy worker as alive and ready, and its numbers are needed
most when it is overloaded.

Shed requests are counted in ``rbmrec_shed_requests_total{reason}`` (``concurrency``
or ``scoring_queue``) and in the request metrics as ``<unmatched>`` 503s; the pool's
estimate of its offered load and whether it is in overload mode are the gauges
``rbmrec_scoring_offered_load`` and ``rbmrec_scoring_overloaded``.
"""

from __future__ import annotations

import enum
import json
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any, Final, TypeVar

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import ProblemError
from app.api.metrics import UNMATCHED, ApiMetrics
from app.api.middleware import CONTENT_SECURITY_POLICY, HSTS, MAX_URL_BYTES, SECURITY_HEADERS
from app.api.proxy import REPLICA_HEADER

__all__ = [
    "ENTER_OVERLOAD",
    "FLOOD_LOAD",
    "FLOOD_WINDOW_SECONDS",
    "LEAVE_OVERLOAD",
    "LOAD_SMOOTHING_SECONDS",
    "LOAD_WINDOW_SECONDS",
    "RETRY_AFTER_SECONDS",
    "TYPE_OVERLOADED",
    "Admission",
    "ConcurrencyLimitMiddleware",
    "Passage",
    "ScoringPool",
    "ScoringQueueFullError",
    "add_limit_responses",
    "holding_scoring_place",
    "is_exempt",
    "is_scored",
    "overloaded",
]

T = TypeVar("T")

RETRY_AFTER_SECONDS: Final = 1
"""What a shed request is told to wait: a request takes milliseconds, so the load that
filled the worker is usually gone a second later."""

TYPE_OVERLOADED: Final = "urn:rbmrec:problem:overloaded"

LOAD_WINDOW_SECONDS: Final = 0.1
"""How often the scoring pool estimates the load offered to it (a hundred requests or
so at this service's rates: enough to tell a flood from a burst, and a flood is met
within a tenth of a second)."""
LOAD_SMOOTHING_SECONDS: Final = 0.2
"""Time constant of the exponential average of the windows' estimates: a flood of 5
times the capacity crosses ``ENTER_OVERLOAD`` in one window, a window that a burst
happens to fill does not, and a quiet spell brings the average down at once."""
ENTER_OVERLOAD: Final = 2.0
"""Offered load (requests asked for per second x seconds of pool time each, averaged)
at or above which, with requests refused in the last window, the pool closes its
queue. Not at 1: one request at a time leaves the pool idle between an answer and the
next arrival (it refuses ``load / (1 + load)`` of them, where ``1 - 1 / load`` is all a
full pool must refuse), a waste that only a flood makes small."""
LEAVE_OVERLOAD: Final = 1.5
"""Offered load under which it opens the queue again (below ``ENTER_OVERLOAD``, so
that a load near that line does not flip the mode back and forth)."""
FLOOD_WINDOW_SECONDS: Final = 0.02
"""How soon within a window an obvious flood is acted on: waiting for the window and
the average to agree leaves the queue full for the first tenth of a second of a flood,
and those requests' waits reach the admitted p99 of a whole 30 s flood (without this,
9.3 and 10.5 ms against 6.8 to 7.7 ms in ``benchmarks/overload.py``, 5 times the
capacity; ``docs/benchmarks.md``, "Overload")."""
FLOOD_LOAD: Final = 2 * ENTER_OVERLOAD
"""Offered load, over the first :data:`FLOOD_WINDOW_SECONDS` or more of a window, with
refusals, at which the pool goes into overload mode at once (about 40 requests at once
on a pool that takes 8, at 2 ms a request: a burst that large is a flood)."""

_EXEMPT_PREFIXES: Final = ("/health/", "/metrics")

holding_scoring_place: ContextVar[bool] = ContextVar("holding_scoring_place", default=False)
"""Whether the current request took its place in the scoring pool at the gate (it holds
it until it is answered, and :meth:`ScoringPool.submit` does not count it again)."""


class Passage(enum.Enum):
    """What :meth:`Admission.gate` did with a request."""

    REFUSED = "refused"
    """Answered 503 at the gate."""
    PASSED = "passed"
    """Goes on to the app."""
    PLACED = "placed"
    """Goes on to the app holding a place in the scoring pool, to release once answered."""


def is_exempt(path: str) -> bool:
    """Whether ``path`` is never shed nor rate limited (the probes and the metrics)."""
    return path.startswith(_EXEMPT_PREFIXES)


def is_scored(path: str) -> bool:
    """Whether requests for ``path`` run on the scoring pool (recommendations, predictions)."""
    return path == "/recommendations" or (
        path.startswith("/users/") and path.endswith(("/recommendations", "/predictions"))
    )


def overloaded(detail: str) -> ProblemError:
    """The 503 problem of a shed request (with ``Retry-After``)."""
    return ProblemError(
        503,
        detail,
        title="Server overloaded",
        type=TYPE_OVERLOADED,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


class Admission:
    """What one worker process takes on now: its requests in the app and its scoring pool.

    Runs on the event loop only (the pool has a lock of its own), so the counter of
    requests in the app is exact.

    Parameters
    ----------
    limit : int
        ``RBMREC_MAX_CONCURRENCY``.
    scoring : ScoringPool
    metrics : ApiMetrics
    replica : str
        This replica's name, for the ``Rbmrec-Replica`` header of refusals.
    """

    def __init__(self, limit: int, scoring: ScoringPool, metrics: ApiMetrics, replica: str) -> None:
        self.limit = limit
        self.scoring = scoring
        self.metrics = metrics
        self.in_flight = 0
        metrics.in_flight.set_function(lambda: self.in_flight)
        self._shed = {
            reason: metrics.shed.labels(reason=reason)
            for reason in ("concurrency", "scoring_queue")
        }
        self._series: dict[str, tuple[Any, Any]] = {}
        problem = overloaded("")
        self._body_start = (
            json.dumps({"type": problem.type, "title": problem.title, "status": problem.status})
            .encode()
            .removesuffix(b"}")
            + b', "detail": '
        )
        # what ResponseGuard and ReplicaHeaderMiddleware put on every response (HSTS
        # when the request itself came over HTTPS; at the gate, the scheme a trusted
        # proxy forwards is not read yet, and the client's next answer carries it)
        self._headers = [
            (b"content-type", b"application/problem+json"),
            (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
            *((name.encode(), value.encode()) for name, value in SECURITY_HEADERS),
            (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
            (REPLICA_HEADER.encode(), replica.encode("latin-1")),
        ]

    def refusal(self, path: str) -> tuple[str, str] | None:
        """``(reason, detail)`` when a request for ``path`` must be refused now, else None.

        The middleware's check (the gate takes a place in the scoring pool instead); a
        request holding a place is not refused for the pool's sake. A refusal for the
        scoring pool is recorded in its load estimate.
        """
        if is_exempt(path):
            return None
        if self.in_flight >= self.limit:
            return self._concurrency_refusal()
        if is_scored(path) and not holding_scoring_place.get() and self.scoring.full:
            return "scoring_queue", self.scoring.refuse()
        return None

    def _concurrency_refusal(self) -> tuple[str, str]:
        return (
            "concurrency",
            f"this server process is handling its limit of {self.limit} requests "
            f"(RBMREC_MAX_CONCURRENCY); retry in {RETRY_AFTER_SECONDS} s",
        )

    async def gate(self, scope: Scope, send: Send) -> Passage:
        """Admit or refuse an HTTP request, before any middleware runs.

        A request for the scoring routes takes its place in the scoring pool here, and
        holds it until it is answered (the caller releases it,
        :meth:`ScoringPool.release_place`): in overload mode, one request at a time
        from its arrival to its answer, so that no other admitted request's routing,
        validation or answer runs beside its scoring. A refusal is the 503 problem,
        written directly with the headers the middleware would have added, and counted
        in the shed and request metrics.
        """
        path = scope["path"]
        if is_exempt(path):
            return Passage.PASSED
        if self.in_flight >= self.limit:
            refusal = self._concurrency_refusal()
        elif not is_scored(path):
            return Passage.PASSED
        else:
            detail = self.scoring.take_place()
            if detail is None:
                return Passage.PLACED
            refusal = ("scoring_queue", detail)
        started = time.perf_counter()
        await self.refuse(scope, send, *refusal)
        # what MetricsMiddleware would have counted (each method's series looked up once)
        method = str(scope.get("method", ""))
        series = self._series.get(method)
        if series is None:
            series = self._series[method] = (
                self.metrics.latency.labels(method, UNMATCHED),
                self.metrics.requests.labels(method, UNMATCHED, "503"),
            )
        series[0].observe(time.perf_counter() - started)
        series[1].inc()
        return Passage.REFUSED

    async def refuse(self, scope: Scope, send: Send, reason: str, detail: str) -> None:
        """Answer the 503 problem of a shed request (``Retry-After``) and count it."""
        self._shed[reason].inc()
        # the problem document of overloaded(detail), as problem_response writes it
        body = b"".join(
            (
                self._body_start,
                json.dumps(detail).encode(),
                b', "instance": ',
                json.dumps(scope["path"]).encode(),
                b"}",
            )
        )
        headers = [*self._headers, (b"content-length", str(len(body)).encode())]
        if scope.get("scheme") == "https":
            headers.append((b"strict-transport-security", HSTS.encode()))
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class ConcurrencyLimitMiddleware:
    """Count the requests in the app, and refuse those over a bound (:class:`Admission`).

    The probes and the metrics route pass without being counted. Most refusals happen
    earlier, in :meth:`Admission.gate`; this check catches a bound reached while a
    request was on its way in (the rate limiter awaits Redis, for one).
    """

    def __init__(self, app: ASGIApp, admission: Admission) -> None:
        self.app = app
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        admission = self.admission
        refusal = admission.refusal(scope["path"])
        if refusal is not None:
            await admission.refuse(scope, send, *refusal)
            return
        admission.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            admission.in_flight -= 1


class ScoringQueueFullError(Exception):
    """Every scoring thread is busy and ``max_queue`` requests already wait."""


class ScoringPool:
    """A small thread pool with a bounded queue: :meth:`submit` refuses beyond it.

    Its capacity is ``threads + max_queue`` requests running or waiting, enough to ride
    out bursts. It also estimates the load offered to it, every
    :data:`LOAD_WINDOW_SECONDS`: requests asked for per second (admitted or refused)
    times the pool's time per request (seconds during which it scored anything, over
    requests done: under the GIL, the cost of one more request), averaged over
    windows. At :data:`ENTER_OVERLOAD` or more, with refusals, the load is a flood: the
    pool goes into overload mode and takes one request at a time, no queue, until the
    estimate falls under :data:`LEAVE_OVERLOAD` (or at once, within a window, at
    :data:`FLOOD_LOAD`). Under a flood a queue is always full, so each place in it is
    one more request's wait for everyone admitted; one at a time, an admitted request
    takes about as long as on an idle worker (measured: ``benchmarks/overload.py``).

    Requests through the gate take their place on arrival (:meth:`take_place`) and give
    it back once answered (:meth:`release_place`); their :meth:`submit` runs in it.

    Parameters
    ----------
    threads : int
        Threads that score (each request runs whole in one).
    max_queue : int
        Requests that may wait for a thread; one more raises
        :class:`ScoringQueueFullError` instead of waiting behind them.
    metrics : ApiMetrics
        ``rbmrec_scoring_pending`` reports the requests running or waiting,
        ``rbmrec_scoring_offered_load`` the last estimate of the load,
        ``rbmrec_scoring_overloaded`` the mode and
        ``rbmrec_scoring_overload_entries_total`` how often it went into overload.
    """

    def __init__(self, threads: int, max_queue: int, metrics: ApiMetrics) -> None:
        self.threads = threads
        self.max_queue = max_queue
        self._capacity = threads + max_queue
        self._pending = 0
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._overloaded = False
        self._offered_load = 0.0
        # the current window of the load estimate
        self._window_started = time.monotonic()
        self._arrivals = 0
        self._refused = 0
        self._done = 0
        self._busy = 0.0
        self._running = 0
        self._busy_since = 0.0
        self._seconds_per_request = 0.0
        self._entries = metrics.scoring_overload_entries
        metrics.scoring_pending.set_function(lambda: self._pending)
        metrics.scoring_offered_load.set_function(lambda: self._offered_load)
        metrics.scoring_overloaded.set_function(lambda: int(self._overloaded))

    @property
    def pending(self) -> int:
        """Requests running or waiting now."""
        return self._pending

    @property
    def overloaded(self) -> bool:
        """Whether the pool is in overload mode (one request at a time, no queue)."""
        return self._overloaded

    @property
    def capacity(self) -> int:
        """Requests it takes running or waiting now: 1 in overload mode."""
        return 1 if self._overloaded else self._capacity

    @property
    def full(self) -> bool:
        """Whether :meth:`submit` would refuse now."""
        return self._pending >= self.capacity

    def start(self) -> None:
        """Start the threads (the app's lifespan begins)."""
        self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="rbmrec-scoring")

    def take_place(self) -> str | None:
        """Take a place for a request that will be scored; None, or why it is refused.

        For a request at the gate: it holds the place until it is answered
        (:meth:`release_place`), and its :meth:`submit` runs in it.
        """
        with self._lock:
            self._estimate(time.monotonic())
            self._arrivals += 1
            if self._pending >= self.capacity:
                self._refused += 1
                return self.refusal()
            self._pending += 1
        return None

    def release_place(self) -> None:
        """Give back a place taken by :meth:`take_place`."""
        self._release(None)

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` in a scoring thread, or refuse at once when the pool is full.

        A request that took its place at the gate (:data:`holding_scoring_place`) runs
        in it, without another check.

        Raises
        ------
        ScoringQueueFullError
            ``threads`` requests run and ``max_queue`` wait already (in overload mode:
            one request runs).
        """
        if holding_scoring_place.get():
            return self._execute(fn)
        refusal = self.take_place()
        if refusal is not None:
            raise ScoringQueueFullError(refusal)
        try:
            future = self._execute(fn)
        except BaseException:
            self.release_place()
            raise
        # Released when the work ends, or when its waiter is cancelled (the server
        # shutting down) before it started: a cancelled request holds no place.
        future.add_done_callback(self._release)
        return future

    def _execute(self, fn: Callable[[], T]) -> Future[T]:
        if self._executor is None:
            raise RuntimeError("the scoring pool is not started")
        return self._executor.submit(self._run, fn)

    def refuse(self) -> str:
        """Count a request refused for a full pool before it was submitted; its message."""
        with self._lock:
            self._estimate(time.monotonic())
            self._arrivals += 1
            self._refused += 1
        return self.refusal()

    def refusal(self) -> str:
        """What a request refused for a full pool is told."""
        if self._overloaded:
            return (
                f"this server process is overloaded: it is offered {self._offered_load:.1f} "
                "times the scoring it can do, so it scores one request at a time and "
                f"queues none until the load falls (RBMREC_MAX_QUEUE is {self.max_queue} "
                f"otherwise); retry in {RETRY_AFTER_SECONDS} s"
            )
        return (
            f"all {self.threads} scoring threads of this server process are busy and "
            f"{self.max_queue} requests wait for one (RBMREC_MAX_QUEUE); retry in "
            f"{RETRY_AFTER_SECONDS} s"
        )

    def shutdown(self) -> None:
        """Stop the threads; work not yet started is cancelled."""
        if self._executor is not None:
            executor, self._executor = self._executor, None
            executor.shutdown(wait=False, cancel_futures=True)

    def _run(self, fn: Callable[[], T]) -> T:
        """``fn`` in a scoring thread, timing the pool's busy time around it."""
        with self._lock:
            if self._running == 0:
                self._busy_since = time.monotonic()
            self._running += 1
        try:
            return fn()
        finally:
            with self._lock:
                self._running -= 1
                self._done += 1
                if self._running == 0:
                    self._busy += time.monotonic() - self._busy_since

    def _estimate(self, now: float) -> None:
        """Close the window of the load estimate once it is long enough (lock held).

        ``arrivals / seconds x busy seconds / requests done``: the share of the pool's
        time the requests asked for in the window would take, averaged exponentially
        over windows (:data:`LOAD_SMOOTHING_SECONDS`). It ticks on arrivals only, so
        after a quiet spell the next request's window is long and weighs all. Within a
        window, a load of :data:`FLOOD_LOAD` or more over its first
        :data:`FLOOD_WINDOW_SECONDS` is a flood at once.
        """
        elapsed = now - self._window_started
        if elapsed < LOAD_WINDOW_SECONDS:
            if not self._overloaded and self._refused and elapsed >= FLOOD_WINDOW_SECONDS:
                load = self._arrivals / elapsed * self._seconds_per_request
                if load >= FLOOD_LOAD:
                    self._overloaded = True
                    self._entries.inc()
                    self._offered_load = max(self._offered_load, load)
            return
        busy = self._busy + (now - self._busy_since if self._running else 0.0)
        if self._done:
            self._seconds_per_request = busy / self._done
        window_load = self._arrivals / elapsed * self._seconds_per_request
        weight = 1.0 - math.exp(-elapsed / LOAD_SMOOTHING_SECONDS)
        load = self._offered_load + weight * (window_load - self._offered_load)
        if self._overloaded:
            self._overloaded = load >= LEAVE_OVERLOAD
        elif load >= ENTER_OVERLOAD and self._refused > 0:
            self._overloaded = True
            self._entries.inc()
        self._offered_load = load
        self._window_started = now
        self._arrivals = self._refused = self._done = 0
        self._busy = 0.0
        if self._running:
            self._busy_since = now

    def _release(self, _future: Future[Any] | None) -> None:
        with self._lock:
            self._pending -= 1


def add_limit_responses(app: FastAPI, *, rate_limited: bool) -> None:
    """Document the answers of the limits in the schema: 414, 503 when shed, 429.

    Any operation answers 414 to a URL over :data:`app.api.middleware.MAX_URL_BYTES`;
    every one but the probes and the metrics can be shed (the database's own 503,
    where an operation has one, keeps its entry with both causes described) and, with
    rate limits configured, rate limited.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        retry_after = {
            "Retry-After": {
                "description": "Seconds to wait before retrying.",
                "schema": {"type": "integer", "minimum": 0},
            }
        }
        problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        for path, item in schema.get("paths", {}).items():
            for operation in item.values():
                responses = operation.setdefault("responses", {})
                responses.setdefault(
                    "414",
                    {
                        "description": f"The URL is longer than {MAX_URL_BYTES} bytes.",
                        "content": problem,
                    },
                )
                if is_exempt(path):
                    continue
                shed = "This server process is at its limit (`RBMREC_MAX_CONCURRENCY`"
                if path.endswith("/recommendations"):
                    shed += ", or `RBMREC_MAX_QUEUE` requests wait for scoring"
                shed += "); retry after `Retry-After` seconds."
                existing = responses.get("503")
                if existing is None:
                    responses["503"] = {
                        "description": shed,
                        "headers": retry_after,
                        "content": problem,
                    }
                else:
                    existing["description"] = f"{existing['description']} {shed}"
                    existing.setdefault("headers", {}).update(retry_after)
                if rate_limited:
                    responses.setdefault(
                        "429",
                        {
                            "description": "The rate limit of this API key (or client "
                            "address) is exceeded (`RBMREC_RATE_LIMIT_PER_SECOND`); retry "
                            "after `Retry-After` seconds.",
                            "headers": retry_after,
                            "content": problem,
                        },
                    )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
