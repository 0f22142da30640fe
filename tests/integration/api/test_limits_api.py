"""The API's limits: load shedding (503), rate limits (429), URL length (414), and an
activation conflict (409) that names no file system path.

Concurrency is real: the app runs with its lifespan in this test's event loop and
the requests go through ``httpx.ASGITransport`` all at once, so the bounds are hit
exactly as a flood of clients would hit them.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from _api_support import Subset, load_subset, register
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.api.load_shedding import (
    ENTER_OVERLOAD,
    FLOOD_LOAD,
    FLOOD_WINDOW_SECONDS,
    LOAD_SMOOTHING_SECONDS,
    LOAD_WINDOW_SECONDS,
    Passage,
    ScoringPool,
    ScoringQueueFullError,
)
from app.api.main import create_app
from app.api.metrics import ApiMetrics
from app.api.middleware import MAX_URL_BYTES
from app.api.users import MAX_EXCLUDE, _longest_recommendations_url
from app.settings import Settings

REDIS_URL = "redis://127.0.0.1:6379/0"
PROBLEM = "application/problem+json"


@contextlib.asynccontextmanager
async def running(app: FastAPI, client: str = "10.1.2.3") -> AsyncIterator[httpx.AsyncClient]:
    """The app started (lifespan) in this loop, and a client sending to it directly."""
    transport = httpx.ASGITransport(app=app, client=(client, 40000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as http,
    ):
        yield http


def metric(text: str, name: str) -> float:
    """The value of one sample of the Prometheus text ``text``."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no sample {name} in the metrics")


@pytest.fixture
def loaded_store(
    store: sessionmaker[Session], ml_subset: Subset, model_artifacts: list[Path]
) -> sessionmaker[Session]:
    load_subset(store, ml_subset)
    register(store, model_artifacts[0], active=True)
    return store


# -- load shedding ---------------------------------------------------------------------
def test_requests_beyond_the_concurrency_bound_get_503_at_once(
    loaded_store: sessionmaker[Session], make_settings: Callable[..., Settings]
) -> None:
    app = create_app(make_settings(max_concurrency=2, max_queue=100))

    async def flood() -> tuple[list[httpx.Response], list[httpx.Response], str]:
        async with running(app) as http:
            responses = await asyncio.gather(
                *(http.get(f"/users/{1 + i % 50}/recommendations") for i in range(40)),
                *(http.get("/health/live") for _ in range(5)),
                *(http.get("/health/ready") for _ in range(5)),
            )
            metrics = (await http.get("/metrics")).text
        return list(responses[:40]), list(responses[40:]), metrics

    recommendations, probes, metrics = asyncio.run(flood())
    statuses = Counter(r.status_code for r in recommendations)
    assert set(statuses) == {200, 503}, statuses
    assert statuses[200] >= 2
    shed = [r for r in recommendations if r.status_code == 503]
    for response in shed:
        assert response.headers["retry-after"] == "1"
        assert response.headers["content-type"] == PROBLEM
        body = response.json()
        assert body["type"] == "urn:rbmrec:problem:overloaded"
        assert "RBMREC_MAX_CONCURRENCY" in body["detail"]
    # the probes are never shed, however busy the worker
    assert [r.status_code for r in probes] == [200] * len(probes)
    assert metric(metrics, 'rbmrec_shed_requests_total{reason="concurrency"}') == len(shed)


def test_the_scoring_queue_is_bounded(
    loaded_store: sessionmaker[Session], make_settings: Callable[..., Settings]
) -> None:
    app = create_app(make_settings(max_concurrency=1000, max_queue=1))

    async def flood() -> tuple[list[httpx.Response], str, float]:
        async with running(app) as http:
            responses = await asyncio.gather(
                *(http.get(f"/users/{1 + i % 50}/recommendations") for i in range(30))
            )
            metrics = (await http.get("/metrics")).text
            pending = metric(metrics, "rbmrec_scoring_pending")
        return list(responses), metrics, pending

    responses, metrics, pending = asyncio.run(flood())
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) == {200, 503}, statuses
    shed = [r for r in responses if r.status_code == 503]
    assert all(r.headers["retry-after"] == "1" for r in shed)
    assert all("RBMREC_MAX_QUEUE" in r.json()["detail"] for r in shed)
    assert metric(metrics, 'rbmrec_shed_requests_total{reason="scoring_queue"}') == len(shed)
    assert pending == 0  # every place in the queue was given back


def test_cancelled_scoring_work_gives_its_place_back() -> None:
    pool = ScoringPool(threads=1, max_queue=1, metrics=ApiMetrics())
    pool.start()
    release = threading.Event()
    try:
        running_work = pool.submit(release.wait)
        waiting = pool.submit(lambda: "queued")
        with pytest.raises(ScoringQueueFullError, match="RBMREC_MAX_QUEUE"):
            pool.submit(lambda: "refused")
        assert waiting.cancel()  # not started: cancelled, and its place is free again
        replacement = pool.submit(lambda: "admitted")
        release.set()
        assert running_work.result(timeout=10) is True
        assert replacement.result(timeout=10) == "admitted"
    finally:
        release.set()
        pool.shutdown()
    assert pool.pending == 0


def test_a_refusal_at_the_gate_is_the_refusal_the_middleware_would_write(
    loaded_store: sessionmaker[Session], make_settings: Callable[..., Settings]
) -> None:
    # the pool held full by work that waits: every scored request is refused, before any
    # middleware (the gate), or by ConcurrencyLimitMiddleware when the gate is off
    app = create_app(make_settings(max_concurrency=1000, max_queue=0))
    release = threading.Event()

    async def refused(gate: bool) -> tuple[list[httpx.Response], str]:
        async with running(app) as http:
            if not gate:
                app.admission = None
            pool = app.state.scoring
            busy = [pool.submit(release.wait) for _ in range(pool.threads)]
            try:
                if gate:
                    # the gate answers by itself, or lets the request through
                    messages: list[dict[str, Any]] = []

                    async def keep(message: Any) -> None:
                        messages.append(message)

                    for path, refuses in [
                        ("/users/3/recommendations", True),
                        ("/health/live", False),
                    ]:
                        scope = {"type": "http", "method": "GET", "path": path}
                        passage = await app.admission.gate(scope, keep)
                        assert (passage is Passage.REFUSED) is refuses
                    assert [m["type"] for m in messages] == [
                        "http.response.start",
                        "http.response.body",
                    ]
                    assert messages[0]["status"] == 503
                    assert b"strict-transport-security" not in dict(messages[0]["headers"])
                    https = {"type": "http", "method": "GET", "scheme": "https"}
                    passage = await app.admission.gate(
                        {**https, "path": "/users/3/predictions"}, keep
                    )
                    assert passage is Passage.REFUSED
                    assert b"strict-transport-security" in dict(messages[2]["headers"])
                responses = [
                    await http.get("/users/3/recommendations?n=5"),
                    await http.get("/users/3/predictions?item_id=1"),
                    await http.post("/recommendations", json={"ratings": []}),
                    await http.get("/health/live"),
                    await http.get("/items?limit=1"),
                ]
            finally:
                release.set()
                for work in busy:
                    work.result(timeout=10)
                release.clear()
            metrics = (await http.get("/metrics")).text
        return responses, metrics

    admission = app.admission
    at_gate, metrics = asyncio.run(refused(gate=True))
    app.admission = admission  # the same app, its middleware refusing instead
    in_stack, _ = asyncio.run(refused(gate=False))
    assert [r.status_code for r in at_gate] == [503, 503, 503, 200, 200]
    assert [r.status_code for r in in_stack] == [503, 503, 503, 200, 200]
    for early, late in zip(at_gate[:3], in_stack[:3], strict=True):
        assert early.json() == late.json()
        assert early.json()["instance"] == early.request.url.path
        assert "RBMREC_MAX_QUEUE" in early.json()["detail"]
        assert dict(early.headers) == dict(late.headers)
        assert early.headers["retry-after"] == "1"
        assert early.headers["x-content-type-options"] == "nosniff"
        assert early.headers["rbmrec-replica"]
    assert metric(metrics, 'rbmrec_shed_requests_total{reason="scoring_queue"}') == 5
    assert (
        metric(
            metrics,
            'rbmrec_http_requests_total{method="GET",route="<unmatched>",status="503"}',
        )
        == 4
    )


def test_a_scored_request_holds_its_place_from_the_gate_to_its_answer(
    loaded_store: sessionmaker[Session], make_settings: Callable[..., Settings]
) -> None:
    # No other admitted request's routing or answer runs beside a scoring that has the
    # pool to itself (overload mode): the place is taken on arrival, given back answered.
    app = create_app(make_settings(max_concurrency=1000, max_queue=0))

    async def check() -> tuple[list[int], list[int], int]:
        async with running(app) as http:
            pool = app.state.scoring
            sent: list[Any] = []

            async def keep(message: Any) -> None:
                sent.append(message)

            scope = {"type": "http", "method": "GET", "path": "/users/3/recommendations"}
            passages = [await app.admission.gate(dict(scope), keep) for _ in range(pool.threads)]
            assert passages == [Passage.PLACED] * pool.threads
            assert pool.pending == pool.threads  # before any of them reached the pool
            assert await app.admission.gate(dict(scope), keep) is Passage.REFUSED
            assert (await http.get("/users/3/recommendations")).status_code == 503
            assert (await http.get("/items?limit=1")).status_code == 200  # not scored
            for _ in range(pool.threads):
                pool.release_place()
            # through the app: the place is still held while the answer is written
            pending_when_answering: list[int] = []

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message: Any) -> None:
                if message["type"] == "http.response.start":
                    statuses.append(message["status"])
                    pending_when_answering.append(pool.pending)

            statuses: list[int] = []
            request = {
                **scope,
                "raw_path": b"/users/3/recommendations",
                "query_string": b"n=5",
                "headers": [(b"host", b"test")],
                "http_version": "1.1",
                "scheme": "http",
                "server": ("test", 80),
                "client": ("10.1.2.3", 40000),
                "root_path": "",
            }
            await app(request, receive, send)
            return statuses, pending_when_answering, pool.pending

    statuses, pending_when_answering, pending_after = asyncio.run(check())
    assert statuses == [200]
    assert pending_when_answering == [1]
    assert pending_after == 0


def _flood(pool: ScoringPool, requests: int, work: Callable[[], object]) -> int:
    """Submit ``requests`` at once; how many were refused."""
    refused = 0
    for _ in range(requests):
        try:
            pool.submit(work)
        except ScoringQueueFullError:
            refused += 1
    return refused


@pytest.fixture
def small_pool() -> Iterator[tuple[ScoringPool, ApiMetrics]]:
    """A started scoring pool of one thread and 4 places of queue, and its metrics."""
    metrics = ApiMetrics()
    pool = ScoringPool(threads=1, max_queue=4, metrics=metrics)
    pool.start()
    try:
        yield pool, metrics
    finally:
        pool.shutdown()


def test_a_flood_closes_the_scoring_queue_until_the_load_falls(
    small_pool: tuple[ScoringPool, ApiMetrics],
) -> None:
    pool, metrics = small_pool
    # a burst that the queue absorbs, at a low rate: no overload
    for _ in range(3):
        assert _flood(pool, 5, lambda: time.sleep(0.002)) == 0
        time.sleep(LOAD_WINDOW_SECONDS + 0.02)
    _flood(pool, 1, lambda: None)
    assert not pool.overloaded
    assert pool.capacity == 5
    # a flood: far more asked for than the pool does, window after window
    for _ in range(3):
        assert _flood(pool, 60, lambda: time.sleep(0.01)) > 0
        time.sleep(LOAD_WINDOW_SECONDS + 0.02)
    _flood(pool, 1, lambda: None)
    assert pool.overloaded
    assert pool.capacity == 1  # one at a time, no queue
    while pool.pending:
        time.sleep(0.01)
    assert pool.submit(lambda: "one").result(timeout=10) == "one"
    release = threading.Event()
    pool.submit(release.wait)
    try:
        with pytest.raises(ScoringQueueFullError, match="overloaded"):
            pool.submit(lambda: "a second one")
    finally:
        release.set()
    text = metrics.render().decode()
    assert metric(text, "rbmrec_scoring_overloaded") == 1
    assert metric(text, "rbmrec_scoring_overload_entries_total") == 1
    assert metric(text, "rbmrec_scoring_offered_load") >= ENTER_OVERLOAD
    # the flood stops: after a quiet spell the next request opens the queue again
    while pool.pending:
        time.sleep(0.01)
    time.sleep(3 * LOAD_SMOOTHING_SECONDS)
    _flood(pool, 1, lambda: None)
    assert not pool.overloaded
    assert pool.capacity == 5


def test_a_sudden_flood_closes_the_scoring_queue_before_its_window_ends(
    small_pool: tuple[ScoringPool, ApiMetrics],
) -> None:
    pool, metrics = small_pool
    # a window that measures the pool's time per request (10 ms)
    for _ in range(3):
        pool.submit(lambda: time.sleep(0.01)).result(timeout=10)
    time.sleep(LOAD_WINDOW_SECONDS + 0.02)
    _flood(pool, 1, lambda: None)  # closes that window, opens the next
    opened = time.monotonic()
    # then requests far faster than 4 per 10 ms, for as long as it takes
    while not pool.overloaded and time.monotonic() - opened < 2 * LOAD_WINDOW_SECONDS:
        _flood(pool, 1, lambda: time.sleep(0.01))
        time.sleep(0.0005)
    entered = time.monotonic() - opened
    assert pool.overloaded
    assert FLOOD_WINDOW_SECONDS <= entered < LOAD_WINDOW_SECONDS
    text = metrics.render().decode()
    assert metric(text, "rbmrec_scoring_overload_entries_total") == 1
    assert metric(text, "rbmrec_scoring_offered_load") >= FLOOD_LOAD


def test_the_schema_documents_the_limits(make_client: Callable[..., TestClient]) -> None:
    schema = make_client(rate_limit_per_second=5).get("/openapi.json").json()
    recommend = schema["paths"]["/users/{user_id}/recommendations"]["get"]["responses"]
    assert "Retry-After" in recommend["503"]["headers"]
    assert "RBMREC_MAX_QUEUE" in recommend["503"]["description"]
    assert "Retry-After" in recommend["429"]["headers"]
    assert "414" in recommend
    rate = schema["paths"]["/ratings"]["post"]["responses"]
    assert {"414", "429", "503"} <= set(rate)
    live = schema["paths"]["/health/live"]["get"]["responses"]
    assert "503" not in live
    assert "429" not in live
    plain = make_client().get("/openapi.json").json()
    assert "429" not in plain["paths"]["/users/{user_id}/recommendations"]["get"]["responses"]


# -- rate limits -----------------------------------------------------------------------
def test_local_rate_limit_per_key_and_per_address(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(rate_limit_per_second=0.5, rate_limit_burst=3))
    key_a = {"Authorization": f"Bearer {secrets.token_hex(16)}"}
    key_b = {"Authorization": f"Bearer {secrets.token_hex(16)}"}

    async def run() -> dict[str, list[httpx.Response]]:
        async with running(app) as http:
            out: dict[str, list[httpx.Response]] = {"a": [], "b": [], "anon": [], "live": []}
            for _ in range(4):
                out["a"].append(await http.get("/users/1/ratings", headers=key_a))
            out["b"].append(await http.get("/users/1/ratings", headers=key_b))
            for _ in range(4):
                out["anon"].append(await http.get("/users/1/ratings"))
            for _ in range(5):
                out["live"].append(await http.get("/health/live"))
            out["metrics"] = [await http.get("/metrics")]
        return out

    out = asyncio.run(run())
    assert [r.status_code for r in out["a"]] == [200, 200, 200, 429]
    limited = out["a"][3]
    assert limited.headers["content-type"] == PROBLEM
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["type"] == "urn:rbmrec:problem:rate-limited"
    assert [r.status_code for r in out["b"]] == [200]  # another key, another bucket
    assert [r.status_code for r in out["anon"]] == [200, 200, 200, 429]  # by address
    assert {r.status_code for r in out["live"]} == {200}
    assert metric(out["metrics"][0].text, "rbmrec_rate_limited_requests_total") == 2


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.mark.skipif(not _redis_up(), reason=f"needs Redis at {REDIS_URL}")
def test_redis_buckets_are_shared_by_processes(make_settings: Callable[..., Settings]) -> None:
    settings: dict[str, Any] = {
        "rate_limit_per_second": 0.5,
        "rate_limit_burst": 3,
        "redis_url": REDIS_URL,
    }
    # two apps: two worker processes as far as the buckets know
    first, second = create_app(make_settings(**settings)), create_app(make_settings(**settings))
    key = {"Authorization": f"Bearer {secrets.token_hex(16)}"}

    async def run() -> list[int]:
        async with running(first) as one, running(second) as two:
            statuses = []
            for http in (one, two, one, two):
                statuses.append((await http.get("/users/1/ratings", headers=key)).status_code)
        return statuses

    assert asyncio.run(run()) == [200, 200, 200, 429]


def test_a_redis_url_that_is_not_one_is_refused() -> None:
    with pytest.raises(ValueError, match="redis://"):
        Settings(redis_url="127.0.0.1:6379")
    assert Settings(redis_url="").redis_url is None


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_unreachable_redis_fails_open(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(
        make_settings(
            rate_limit_per_second=0.5,
            rate_limit_burst=1,
            redis_url=f"redis://127.0.0.1:{_closed_port()}/0",
        )
    )

    async def run() -> tuple[list[int], str]:
        async with running(app) as http:
            statuses = [(await http.get("/users/1/ratings")).status_code for _ in range(4)]
            return statuses, (await http.get("/metrics")).text

    statuses, metrics = asyncio.run(run())
    assert statuses == [200, 200, 200, 200]
    assert metric(metrics, "rbmrec_rate_limit_backend_errors_total") == 4
    assert "does not answer" in caplog.text


# -- URL length --------------------------------------------------------------------------
def test_urls_over_the_limit_get_414(client: TestClient) -> None:
    long_query = {"item_id": ["m1"] * ((MAX_URL_BYTES // len("&item_id=m1")) + 10)}
    response = client.get("/users/u1/predictions", params=long_query)
    assert response.status_code == 414
    assert response.headers["content-type"] == PROBLEM
    assert str(MAX_URL_BYTES) in response.json()["detail"]
    assert client.get("/users/" + "u" * MAX_URL_BYTES + "/ratings").status_code == 414


def test_the_longest_valid_recommendations_url_fits(client: TestClient) -> None:
    worst_id = ":" * 64  # each ':' is sent as %3A: the longest encoding of a valid id
    params: dict[str, Any] = {
        "n": 100,
        "offset": 10_000,
        "explain": "false",
        "genre": "\U0001f3ac" * 64,  # four UTF-8 bytes per character, each percent-encoded
        "exclude": [worst_id] * MAX_EXCLUDE,
    }
    request = client.build_request("GET", f"/users/{worst_id}/recommendations", params=params)
    assert len(request.url.raw_path) <= _longest_recommendations_url(MAX_EXCLUDE) <= MAX_URL_BYTES
    response = client.send(request)
    assert response.status_code == 200, response.text
    params["exclude"] = [worst_id] * (MAX_EXCLUDE + 1)
    too_many = client.get("/users/u1/recommendations", params=params)
    assert too_many.status_code == 422  # over the bound, and still under the URL limit


# -- the activation conflict -------------------------------------------------------------
def test_the_activation_conflict_names_no_path(
    store: sessionmaker[Session],
    model_artifacts: list[Path],
    tmp_path: Path,
    make_client: Callable[..., TestClient],
) -> None:
    copy = tmp_path / "models" / model_artifacts[1].name
    shutil.copytree(model_artifacts[1], copy)
    version = register(store, copy, active=False)
    metadata = copy / "metadata.json"
    metadata.write_text(metadata.read_text() + " ")
    client = make_client()

    response = client.post(f"/models/{version}/activate")

    assert response.status_code == 409
    detail = response.json()["detail"]
    assert version in detail
    assert "checksum" in detail
    assert "SHA-256" in detail
    assert str(tmp_path) not in response.text
    assert "/" not in detail.replace("SHA-256", "")
