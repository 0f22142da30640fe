"""The app factory: ``create_app(settings)`` composes the routers, and its lifespan owns
the resources (engine, sessions, the model holder and its poll task).

Run it with ``rbmrec serve`` (uvicorn, factory ``app.api.main:create_app``).
Nothing happens at import time; the database schema is migrated separately
(``rbmrec db upgrade``), never here.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import Receive, Scope, Send
from threadpoolctl import threadpool_limits

from app.api import (
    admin,
    dashboard,
    docs,
    health,
    items,
    model,
    model_versions,
    ratings,
    recommendations,
    users,
)
from app.api.contract import document_contract
from app.api.deps import Recommender
from app.api.errors import PROBLEM_MEDIA_TYPE, document_common_statuses, install_error_handlers
from app.api.load_shedding import (
    Admission,
    ConcurrencyLimitMiddleware,
    Passage,
    ScoringPool,
    add_limit_responses,
    holding_scoring_place,
)
from app.api.metrics import ApiMetrics, MetricsMiddleware
from app.api.middleware import (
    BodySizeLimitMiddleware,
    RepeatedQueryMiddleware,
    ResponseGuard,
    UrlLengthLimitMiddleware,
)
from app.api.openapi_links import add_openapi_links
from app.api.proxy import (
    REPLICA_HEADER,
    ForwardedHeadersMiddleware,
    ReplicaHeaderMiddleware,
    TrustedProxies,
    replica_name,
)
from app.api.rate_limit import Buckets, LocalBuckets, RateLimitMiddleware, RedisBuckets
from app.api.security import log_security_posture
from app.db.engine import engine_from_settings, is_sqlite, make_sessionmaker
from app.services.catalog import CatalogCache
from app.services.model_holder import ModelHolder, poll_forever
from app.services.serving_cache import ServingCache, default_cache_root
from app.settings import Settings, get_settings

logger = logging.getLogger(__name__)

__all__ = ["create_app"]

SCORING_THREADS = 2
"""Recommendation requests a process serves at once (each in a thread of its own small
pool, holding one pooled connection). Scoring is CPU-bound under the GIL, so threads
beyond two only fight over it: with 16 requests in flight on one worker, 4 threads
cost 1.4 ms of CPU per recommendation and a p99 of 30 ms, 2 threads 1.1 ms and 20 ms
(``benchmarks/serve_latency.py``). Two still overlap one request's database round
trip with another's scoring, and keep one slow query from holding up every request."""

_heap_frozen = False
"""Whether :func:`_freeze_startup_heap` ran in this process."""

# Every router here declares ValidationProblem, so the component always exists.
_VALIDATION_PROBLEM_REF = "#/components/schemas/ValidationProblem"

_DESCRIPTION = """\
Recommendations from a softmax-visible Restricted Boltzmann Machine, folded in from
each user's current ratings at request time.

* API keys (`Authorization: Bearer <key>`): read keys read users' data, write keys
  also write, admin keys may do everything. Each operation that needs a key in this
  server's configuration names its scheme (`ReadKey`, `WriteKey`, `AdminKey`);
  one that names none is open here.
* Every error is an RFC 9457 problem document (`application/problem+json`).
* The operator dashboard (models, training curves, retrain runs, "try it") is at
  [/dashboard](/dashboard).
"""

_TAGS: list[dict[str, Any]] = [
    {"name": "ratings", "description": "Store users' ratings."},
    {"name": "users", "description": "A user's ratings, recommendations and predictions."},
    {"name": "items", "description": "The item catalog and similar items."},
    {"name": "model", "description": "The model this process serves."},
    {"name": "models", "description": "The model registry: versions, activation (admin)."},
    {"name": "admin", "description": "Retraining (admin)."},
    {"name": "health", "description": "Liveness and readiness probes."},
]


def _routers(settings: Settings) -> list[APIRouter]:
    optional = [
        *([docs.router] if settings.docs_enabled else []),
        *([dashboard.router] if settings.dashboard_enabled else []),
    ]
    return [
        ratings.router,
        users.router,
        recommendations.router,
        items.router,
        model.router,
        model_versions.router,
        admin.router,
        health.router,
        *optional,
    ]


class RbmrecAPI(FastAPI):
    """The FastAPI app with load shedding's first check in front of everything.

    Under a flood most requests are refused; :meth:`Admission.gate` answers them
    before Starlette's and the app's middleware and the router run: about 25 instead
    of about 48 us of CPU per refusal, uvicorn's own 19.5 included
    (``benchmarks/refusal_cost.py``).
    """

    admission: Admission | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        admission = self.admission
        if admission is None or scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        passage = await admission.gate(scope, send)
        if passage is Passage.PASSED:
            await super().__call__(scope, receive, send)
        elif passage is Passage.PLACED:
            token = holding_scoring_place.set(True)
            try:
                await super().__call__(scope, receive, send)
            finally:
                holding_scoring_place.reset(token)
                admission.scoring.release_place()


def create_app(settings: Settings | None = None) -> RbmrecAPI:
    """Build the API application.

    Parameters
    ----------
    settings : Settings, optional
        The configuration; default: :func:`app.settings.get_settings` (environment).

    Returns
    -------
    RbmrecAPI
        The app; its lifespan connects to the database and loads the active model.
    """
    settings = settings if settings is not None else get_settings()
    docs = settings.docs_enabled
    app = RbmrecAPI(
        title="rbmrec",
        version="0.1.0",
        summary="Collaborative-filtering recommendations from a Restricted Boltzmann Machine.",
        description=_DESCRIPTION,
        openapi_tags=_TAGS,
        lifespan=_lifespan,
        # Swagger UI with its assets served by the app (app.api.docs), so it works
        # offline; ReDoc would load from a CDN and is not offered.
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
    )
    replica = replica_name()
    metrics = ApiMetrics(replica)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.replica = replica
    install_error_handlers(app)
    for router in _routers(settings):
        app.include_router(router)
    if docs or settings.dashboard_enabled:
        dashboard.mount_static(app)
    # Added innermost first: the last one added wraps all the others.
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=[REPLICA_HEADER],
        )
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    # Shed before anything else works on a request; a rate-limited one takes no slot.
    scoring = ScoringPool(SCORING_THREADS, settings.max_queue, metrics)
    admission = Admission(settings.max_concurrency, scoring, metrics, replica)
    app.state.scoring = scoring
    app.admission = admission
    app.add_middleware(ConcurrencyLimitMiddleware, admission=admission)
    buckets = _rate_limit_buckets(settings, metrics)
    if buckets is not None:
        app.state.rate_limit_buckets = buckets
        app.add_middleware(
            RateLimitMiddleware,
            buckets=buckets,
            metrics=metrics,
            rate=settings.rate_limit_per_second,
            burst=settings.rate_limit_burst,
        )
    # the document is read when first needed (it is complete by then)
    app.add_middleware(RepeatedQueryMiddleware, openapi=lambda: app.openapi())
    app.add_middleware(UrlLengthLimitMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(ResponseGuard)
    app.add_middleware(ReplicaHeaderMiddleware, replica=replica)
    # Outermost: everything inside (metrics, HSTS, the access log) sees the client
    # and scheme that a trusted proxy forwarded.
    app.add_middleware(ForwardedHeadersMiddleware, trusted=TrustedProxies(settings.trusted_proxies))
    _document_problems(app)
    add_limit_responses(app, rate_limited=buckets is not None)
    add_openapi_links(app)
    document_contract(app, settings)
    return app


def _rate_limit_buckets(settings: Settings, metrics: ApiMetrics) -> Buckets | None:
    rate, burst = settings.rate_limit_per_second, settings.rate_limit_burst
    if rate <= 0:
        return None
    if settings.redis_url:
        return RedisBuckets(settings.redis_url, rate, burst, metrics)
    return LocalBuckets(rate, burst)


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    metrics: ApiMetrics = app.state.metrics
    log_security_posture(settings)
    # Each request is one user's matrix-vector product, run in a thread of the
    # server's pool: BLAS threads on top of those oversubscribe the cores (measured:
    # 7x fewer recommendations per second with OpenBLAS's default threads).
    blas = threadpool_limits(limits=1, user_api="blas")
    engine = engine_from_settings(settings)
    session_factory = make_sessionmaker(engine)
    # Read-only handlers skip BEGIN/COMMIT on PostgreSQL (same pool); SQLite keeps
    # its own transaction handling.
    read_engine = (
        engine if is_sqlite(engine) else engine.execution_options(isolation_level="AUTOCOMMIT")
    )
    holder = ModelHolder(
        session_factory, on_change=metrics.model_changed, serving_cache=_serving_cache(settings)
    )
    app.state.engine = engine
    app.state.session_factory = session_factory
    app.state.read_session_factory = make_sessionmaker(read_engine)
    app.state.model_holder = holder
    app.state.catalog = CatalogCache()
    scoring: ScoringPool = app.state.scoring
    scoring.start()
    app.state.recommender = Recommender(
        read_engine=read_engine,
        holder=holder,
        catalog=app.state.catalog,
        metrics=metrics,
        scoring=scoring,
    )
    metrics.model_changed(None)
    # Load the active model before serving; a database that is down only delays it
    # (the poll task retries) and never stops the start.
    _freeze_startup_heap()
    await anyio.to_thread.run_sync(holder.refresh)
    poll = asyncio.create_task(poll_forever(holder, settings.model_poll_seconds))
    remove_hup = _on_sighup(holder)
    try:
        yield
    finally:
        remove_hup()
        poll.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poll
        # uvicorn has let the requests in flight finish; what is left belongs to
        # cancelled ones, which must not hold up the shutdown
        scoring.shutdown()
        buckets: Buckets | None = getattr(app.state, "rate_limit_buckets", None)
        if buckets is not None:
            await buckets.aclose()
        engine.dispose()
        blas.restore_original_limits()


def _serving_cache(settings: Settings) -> ServingCache | None:
    if not settings.model_mmap:
        return None
    return ServingCache(settings.model_cache_dir or default_cache_root())


def _freeze_startup_heap() -> None:
    """Move the objects alive at start-up out of the garbage collector's reach, once.

    Modules, routers and schemas (about 180,000 objects) live as long as the process,
    yet every full collection walked them all: pauses of 120-175 ms under load that
    stalled every request in flight, 4-17 ms once frozen
    (``benchmarks/recommend_inprocess.py`` with and without ``--unfreeze``). It runs
    before the model is loaded, so a replaced model is still freed, and once per
    process, so that test processes starting many apps do not pin each one's objects.
    """
    global _heap_frozen
    if _heap_frozen:
        return
    _heap_frozen = True
    gc.collect()
    gc.freeze()


def _on_sighup(holder: ModelHolder) -> Callable[[], None]:
    """Refresh the model on ``SIGHUP`` (main thread only); returns the uninstaller."""
    hup = getattr(signal, "SIGHUP", None)
    if hup is None or threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Future[Any]] = set()

    def handle() -> None:
        logger.info("SIGHUP: checking the registry for a new active model")
        task = asyncio.ensure_future(anyio.to_thread.run_sync(holder.refresh))
        pending.add(task)
        task.add_done_callback(pending.discard)

    try:
        loop.add_signal_handler(hup, handle)
    except (NotImplementedError, RuntimeError, ValueError):
        return lambda: None

    def remove() -> None:
        loop.remove_signal_handler(hup)

    return remove


def _document_problems(app: FastAPI) -> None:
    """Declare error responses as ``application/problem+json`` in the OpenAPI schema."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                for code, response in operation.get("responses", {}).items():
                    content = response.get("content")
                    if code[:1] in "45" and content and "application/json" in content:
                        content.setdefault(PROBLEM_MEDIA_TYPE, content.pop("application/json"))
                    body = (content or {}).get(PROBLEM_MEDIA_TYPE, {})
                    # FastAPI's default 422 schema is not what the handler answers.
                    if body.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                        body["schema"] = {"$ref": _VALIDATION_PROBLEM_REF}
        document_common_statuses(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
