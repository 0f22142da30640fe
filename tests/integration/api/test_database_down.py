"""The database unreachable: fast 503 problems, readiness, recovery without restart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _api_support import TcpProxy, free_port
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from app.api.main import create_app
from app.settings import Settings

PROBLEM = "application/problem+json"


def assert_unavailable(response: object, limit_seconds: float, started: float) -> None:
    elapsed = time.monotonic() - started
    assert elapsed < limit_seconds, f"took {elapsed:.1f}s"
    status = getattr(response, "status_code", None)
    assert status == 503, getattr(response, "text", response)
    headers = response.headers  # type: ignore[attr-defined]
    assert headers["content-type"] == PROBLEM
    assert headers["retry-after"]
    body = response.json()  # type: ignore[attr-defined]
    assert body["type"] == "urn:rbmrec:problem:database-unavailable"
    assert "retry" in body["detail"]


@pytest.fixture
def dead_client(tmp_path: Path) -> Iterator[TestClient]:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/rbmrec"
    settings = Settings(database_url=url, model_dir=tmp_path, db_timeout_seconds=2)
    with TestClient(create_app(settings)) as client:
        yield client


def test_requests_fail_fast_with_503_when_the_database_is_unreachable(
    dead_client: TestClient,
) -> None:
    requests = [
        ("GET", "/users/u1/recommendations", None),
        ("GET", "/users/u1/ratings", None),
        ("GET", "/items", None),
        ("POST", "/ratings", {"user_id": "u1", "item_id": "1", "rating": 4}),
        ("PUT", "/items/1", {"title": "t"}),
    ]
    for method, path, body in requests:
        started = time.monotonic()
        response = dead_client.request(method, path, json=body)
        assert_unavailable(response, 3.0, started)

    started = time.monotonic()
    ready = dead_client.get("/health/ready")
    assert time.monotonic() - started < 3.0
    assert ready.status_code == 503
    assert ready.headers["content-type"] == PROBLEM
    body = ready.json()
    assert body["database"] == {"ok": False, "error": "the database does not answer"}
    assert body["model"]["loaded"] is False
    assert "registry" in body["model"]["error"]
    assert "127.0.0.1" not in ready.text  # no internal addresses to clients
    assert dead_client.get("/health/live").status_code == 200
    # validation still answers without the database
    assert dead_client.get("/users/u1/recommendations?n=0").status_code == 422


@pytest.mark.postgres
def test_service_recovers_by_itself_when_the_database_returns(
    postgres_url: str, tmp_path: Path
) -> None:
    target = make_url(postgres_url)
    proxy = TcpProxy((target.host or "127.0.0.1", target.port or 5432))
    proxy.start()
    url = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    settings = Settings(database_url=url, model_dir=tmp_path, db_timeout_seconds=2)
    try:
        with TestClient(create_app(settings)) as client:
            assert client.get("/users/u1/ratings").status_code == 200
            assert client.get("/health/ready").status_code == 200

            proxy.stop()  # the database goes away, pooled connections die
            for _ in range(3):
                started = time.monotonic()
                assert_unavailable(client.get("/users/u1/ratings"), 3.0, started)
            assert client.get("/health/ready").status_code == 503

            proxy.start()  # it is back: no restart needed
            assert client.get("/users/u1/ratings").status_code == 200
            assert client.get("/users/u1/recommendations").status_code == 200
            ready = client.get("/health/ready")
            assert ready.status_code == 200
            assert ready.json()["database"]["ok"] is True
    finally:
        proxy.stop()


def test_the_dashboard_overview_says_the_database_does_not_answer(
    dead_client: TestClient,
) -> None:
    started = time.monotonic()
    page = dead_client.get("/dashboard")
    assert time.monotonic() - started < 6.0
    assert page.status_code == 200
    assert "does not answer" in page.text
    assert "127.0.0.1" not in page.text
    # the pages that need the store answer as the API does
    started = time.monotonic()
    assert_unavailable(dead_client.get("/dashboard/models"), 3.0, started)
