"""Load shedding: bounded work per worker process, and a quick 503 beyond it.

Without bounds, a client that floods the API makes every request wait behind its
own: requests pile up in the event loop, the thread pool and the scoring queue, and
everyone's latency grows without limit. Two bounds, per worker process:

* :class:`ConcurrencyLimitMiddleware`: at most ``RBMREC_MAX_CONCURRENCY`` requests
  in the app at once; one more is answered 503 at once.
* :class:`ScoringPool`: the recommendation route's scoring threads
  (:data:`app.api.main.SCORING_THREADS`) with at most ``RBMREC_MAX_QUEUE`` requests
  waiting for one; one more is answered 503 at once.

A refused request never waits and costs little (about 20 us in the app, 0.1 ms with
uvicorn's HTTP handling): the client is told to come back (``Retry-After``), and an
admitted request waits behind at most ``2 + RBMREC_MAX_QUEUE`` others, so its
latency stays near that of a full worker where, unbounded, it grew to tens of
seconds (``benchmarks/overload.py``, ``docs/benchmarks.md``, "Overload"). The health
probes and ``/metrics`` are never shed: an orchestrator must see a busy worker as
alive and ready, and its numbers are needed most when it is overloaded.

Shed requests are counted in ``rbmrec_shed_requests_total{reason}`` (``concurrency``
or ``scoring_queue``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final, TypeVar

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import ProblemError, problem_response
from app.api.metrics import ApiMetrics
from app.api.middleware import MAX_URL_BYTES

__all__ = [
    "RETRY_AFTER_SECONDS",
    "TYPE_OVERLOADED",
    "ConcurrencyLimitMiddleware",
    "ScoringPool",
    "ScoringQueueFullError",
    "add_limit_responses",
    "is_exempt",
    "overloaded",
]

T = TypeVar("T")

RETRY_AFTER_SECONDS: Final = 1
"""What a shed request is told to wait: a request takes milliseconds, so the load that
filled the worker is usually gone a second later."""

TYPE_OVERLOADED: Final = "urn:rbmrec:problem:overloaded"

_EXEMPT_PREFIXES: Final = ("/health/", "/metrics")


def is_exempt(path: str) -> bool:
    """Whether ``path`` is never shed nor rate limited (the probes and the metrics)."""
    return path.startswith(_EXEMPT_PREFIXES)


def overloaded(detail: str) -> ProblemError:
    """The 503 problem of a shed request (with ``Retry-After``)."""
    return ProblemError(
        503,
        detail,
        title="Server overloaded",
        type=TYPE_OVERLOADED,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


class ConcurrencyLimitMiddleware:
    """Answer 503 at once when ``limit`` requests are already in the app.

    Runs on the event loop only, so a plain counter is exact. The probes and the
    metrics route pass without being counted. A recommendation request that finds
    the scoring queue full is refused here too, before routing and validation: under
    a flood, most requests are refused, and each refusal must cost next to nothing
    (the route checks the queue again when it submits).
    """

    def __init__(self, app: ASGIApp, limit: int, metrics: ApiMetrics, scoring: ScoringPool) -> None:
        self.app = app
        self.limit = limit
        self.metrics = metrics
        self.scoring = scoring
        self.in_flight = 0
        metrics.in_flight.set_function(lambda: self.in_flight)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            self.metrics.shed.labels(reason="concurrency").inc()
            await self._refuse(
                scope,
                receive,
                send,
                f"this server process is handling its limit of {self.limit} requests "
                f"(RBMREC_MAX_CONCURRENCY); retry in {RETRY_AFTER_SECONDS} s",
            )
            return
        if self.scoring.full and _is_recommendation(scope["path"]):
            self.metrics.shed.labels(reason="scoring_queue").inc()
            await self._refuse(scope, receive, send, self.scoring.refusal())
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, detail: str) -> None:
        exc = overloaded(detail)
        response = problem_response(
            exc.status,
            exc.detail,
            title=exc.title,
            type=exc.type,
            instance=scope["path"],
            headers=exc.headers,
        )
        await response(scope, receive, send)


def _is_recommendation(path: str) -> bool:
    return path.startswith("/users/") and path.endswith("/recommendations")


class ScoringQueueFullError(Exception):
    """Every scoring thread is busy and ``max_queue`` requests already wait."""


class ScoringPool:
    """A small thread pool with a bounded queue: :meth:`submit` refuses beyond it.

    Parameters
    ----------
    threads : int
        Threads that score (each request runs whole in one).
    max_queue : int
        Requests that may wait for a thread; one more raises
        :class:`ScoringQueueFullError` instead of waiting behind them.
    metrics : ApiMetrics
        ``rbmrec_scoring_pending`` reports the requests running or waiting.
    """

    def __init__(self, threads: int, max_queue: int, metrics: ApiMetrics) -> None:
        self.threads = threads
        self.max_queue = max_queue
        self._capacity = threads + max_queue
        self._pending = 0
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        metrics.scoring_pending.set_function(lambda: self._pending)

    @property
    def pending(self) -> int:
        """Requests running or waiting now."""
        return self._pending

    @property
    def full(self) -> bool:
        """Whether :meth:`submit` would refuse now."""
        return self._pending >= self._capacity

    def start(self) -> None:
        """Start the threads (the app's lifespan begins)."""
        self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="rbmrec-scoring")

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` in a scoring thread, or refuse at once when the queue is full.

        Raises
        ------
        ScoringQueueFullError
            ``threads`` requests run and ``max_queue`` wait already.
        """
        with self._lock:
            if self._pending >= self._capacity:
                raise ScoringQueueFullError(self.refusal())
            self._pending += 1
        try:
            if self._executor is None:
                raise RuntimeError("the scoring pool is not started")
            future = self._executor.submit(fn)
        except BaseException:
            self._release(None)
            raise
        # Released when the work ends, or when its waiter is cancelled (the server
        # shutting down) before it started: a cancelled request holds no place.
        future.add_done_callback(self._release)
        return future

    def refusal(self) -> str:
        """What a request refused for a full queue is told."""
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
