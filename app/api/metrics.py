"""Prometheus metrics of the API (``GET /metrics``).

* ``rbmrec_http_requests_total{method, route, status}`` and
  ``rbmrec_http_request_duration_seconds{method, route}``: per route *template*
  (``/users/{user_id}/recommendations``), never the raw path, so ids do not explode
  the number of series; requests that match no route count as ``<unmatched>``.
* ``rbmrec_model_info{version}`` (1 for the served version) and
  ``rbmrec_model_loaded`` (0 or 1).
* ``rbmrec_recommendations_total{strategy}``: ``rbm`` or ``popular``.
* ``rbmrec_replica_info{replica}`` (value 1): which replica these numbers are from
  (the ``Rbmrec-Replica`` header of its answers).
* ``rbmrec_shed_requests_total{reason}``, ``rbmrec_requests_in_flight``,
  ``rbmrec_scoring_pending``, ``rbmrec_scoring_offered_load``,
  ``rbmrec_scoring_overloaded``, ``rbmrec_scoring_overload_entries_total``,
  ``rbmrec_rate_limited_requests_total`` and
  ``rbmrec_rate_limit_backend_errors_total``: load shedding and rate limits
  (:mod:`app.api.load_shedding`, :mod:`app.api.rate_limit`).
* ``rbmrec_http_client_requests_total{client}``: requests by client address (the one
  a trusted proxy forwarded, see :mod:`app.api.proxy`); the first
  ``MAX_CLIENT_LABELS`` addresses get a series each, later ones count as ``<other>``.

Each app instance has its own registry (tests build many apps in one process).
The numbers are per process: with ``--workers N`` each worker reports its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.services.model_holder import LoadedModel

__all__ = ["CONTENT_TYPE", "ApiMetrics", "MetricsMiddleware", "RouteTraffic"]

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
UNMATCHED: Final = "<unmatched>"
OTHER_CLIENTS: Final = "<other>"
MAX_CLIENT_LABELS: Final = 100
"""Distinct client addresses with a series of their own; bounds the metric's size."""


@dataclass(frozen=True)
class RouteTraffic:
    """What this process's metrics say about one route since it started.

    Quantiles are estimated from the latency histogram's buckets as Prometheus's
    ``histogram_quantile`` does (linear within a bucket), so they are only as fine
    as the buckets; ``None`` when no request was timed or the quantile lies in the
    open last bucket.
    """

    method: str
    route: str
    requests: int
    client_errors: int
    server_errors: int
    per_second: float
    mean_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


def _quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """``histogram_quantile`` over cumulative ``(upper bound, count)`` pairs, sorted."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return None
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return None


class ApiMetrics:
    """The metrics of one app instance, in their own registry."""

    def __init__(self, replica: str = "") -> None:
        self.started = time.monotonic()
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "rbmrec_http_requests",
            "HTTP requests answered, by route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "rbmrec_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.model_info = Gauge(
            "rbmrec_model_info",
            "The model version served (value 1).",
            ["version"],
            registry=self.registry,
        )
        self.model_loaded = Gauge(
            "rbmrec_model_loaded",
            "Whether a model is loaded (1) or not (0).",
            registry=self.registry,
        )
        self.recommendations = Counter(
            "rbmrec_recommendations",
            "Recommendation responses, by strategy (rbm or popular).",
            ["strategy"],
            registry=self.registry,
        )
        for strategy in ("rbm", "popular"):
            self.recommendations.labels(strategy=strategy)
        self.replica_info = Gauge(
            "rbmrec_replica_info",
            "The replica these metrics come from (value 1).",
            ["replica"],
            registry=self.registry,
        )
        self.replica_info.labels(replica=replica).set(1)
        self.client_requests = Counter(
            "rbmrec_http_client_requests",
            f"HTTP requests by client address (the first {MAX_CLIENT_LABELS} addresses; "
            f"later ones as {OTHER_CLIENTS}).",
            ["client"],
            registry=self.registry,
        )
        self.shed = Counter(
            "rbmrec_shed_requests",
            "Requests answered 503 at once because this process was at a bound: "
            "concurrency (RBMREC_MAX_CONCURRENCY) or scoring_queue (RBMREC_MAX_QUEUE).",
            ["reason"],
            registry=self.registry,
        )
        for reason in ("concurrency", "scoring_queue"):
            self.shed.labels(reason=reason)
        self.in_flight = Gauge(
            "rbmrec_requests_in_flight",
            "Requests in the app now (health and metrics excepted).",
            registry=self.registry,
        )
        self.scoring_pending = Gauge(
            "rbmrec_scoring_pending",
            "Recommendation and prediction requests holding a place in the scoring pool "
            "(from their arrival to their answer).",
            registry=self.registry,
        )
        self.scoring_offered_load = Gauge(
            "rbmrec_scoring_offered_load",
            "Load offered to the scoring pool in its last window: requests asked for per "
            "second times its seconds per request (1 = all it can do).",
            registry=self.registry,
        )
        self.scoring_overload_entries = Counter(
            "rbmrec_scoring_overload_entries",
            "Times the scoring pool went into overload mode.",
            registry=self.registry,
        )
        self.scoring_overloaded = Gauge(
            "rbmrec_scoring_overloaded",
            "1 while the scoring pool is in overload mode (one request at a time, no "
            "queue), else 0.",
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "rbmrec_rate_limited_requests",
            "Requests answered 429: the client's token bucket was empty.",
            registry=self.registry,
        )
        self.rate_limit_errors = Counter(
            "rbmrec_rate_limit_backend_errors",
            "Rate-limit checks that could not reach Redis (the request was let through).",
            registry=self.registry,
        )
        self._clients: set[str] = set()
        self._version: str | None = None

    def count_client(self, client: str) -> None:
        """Count one request from ``client`` (bounded: see ``MAX_CLIENT_LABELS``)."""
        if client not in self._clients:
            if len(self._clients) >= MAX_CLIENT_LABELS:
                client = OTHER_CLIENTS
            else:
                self._clients.add(client)
        self.client_requests.labels(client=client).inc()

    def model_changed(self, loaded: LoadedModel | None) -> None:
        """Point the model gauges at the newly served version."""
        version = loaded.version.id if loaded is not None else None
        if self._version is not None and self._version != version:
            self.model_info.remove(self._version)
        if version is not None:
            self.model_info.labels(version=version).set(1)
        self.model_loaded.set(1 if version is not None else 0)
        self._version = version

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)

    def uptime(self) -> float:
        """Seconds since this app instance was built (at least a microsecond)."""
        return max(time.monotonic() - self.started, 1e-6)

    def traffic(self) -> list[RouteTraffic]:
        """Requests, errors, rate and latency of each route, read from the registry.

        The rate is the mean since this app instance started (``per_second``); the
        figures are this process's alone, like ``GET /metrics``.
        """
        counts: dict[tuple[str, str], list[int]] = {}
        buckets: dict[tuple[str, str], list[tuple[float, float]]] = {}
        sums: dict[tuple[str, str], float] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                labels = sample.labels
                key = (labels.get("method", ""), labels.get("route", ""))
                if sample.name == "rbmrec_http_requests_total":
                    status = int(labels.get("status", "0") or 0)
                    tally = counts.setdefault(key, [0, 0, 0])
                    tally[0] += int(sample.value)
                    tally[1] += int(sample.value) if 400 <= status < 500 else 0
                    tally[2] += int(sample.value) if status >= 500 else 0
                elif sample.name == "rbmrec_http_request_duration_seconds_bucket":
                    buckets.setdefault(key, []).append((float(labels["le"]), sample.value))
                elif sample.name == "rbmrec_http_request_duration_seconds_sum":
                    sums[key] = sample.value
        elapsed = self.uptime()
        out = []
        for key, (total, client, server) in counts.items():
            timed = sorted(buckets.get(key, []))
            n_timed = timed[-1][1] if timed else 0.0

            def ms(value: float | None) -> float | None:
                return None if value is None else value * 1000.0

            out.append(
                RouteTraffic(
                    method=key[0],
                    route=key[1],
                    requests=total,
                    client_errors=client,
                    server_errors=server,
                    per_second=total / elapsed,
                    mean_ms=ms(sums.get(key, 0.0) / n_timed) if n_timed else None,
                    p50_ms=ms(_quantile(0.5, timed)),
                    p95_ms=ms(_quantile(0.95, timed)),
                    p99_ms=ms(_quantile(0.99, timed)),
                )
            )
        return sorted(out, key=lambda t: (-t.requests, t.route, t.method))


class MetricsMiddleware:
    """Pure ASGI middleware counting requests and timing them per route template."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_recording)
        finally:
            # The router stores the matched route in the (shared) scope.
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            method = str(scope.get("method", ""))
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)
            self.metrics.requests.labels(method, route, str(status)).inc()
            # the client a trusted proxy forwarded (app.api.proxy runs before this)
            peer = scope.get("client")
            self.metrics.count_client(str(peer[0]) if peer else "unknown")
