"""Cross-cutting HTTP behaviour: problem details, API keys, body limits, docs, CORS, metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.api.deps import SessionDep
from app.api.main import create_app
from app.db.items import ItemIn, upsert_items
from app.db.ratings import count_ratings, upsert_rating, user_rating_map
from app.settings import Settings
from rbm_core.scale import DEFAULT_SCALE

PROBLEM = "application/problem+json"
RATING = {"user_id": "u1", "item_id": "m1", "rating": 4}


@pytest.fixture
def item(store: sessionmaker[Session]) -> str:
    with store.begin() as session:
        upsert_items(session, [ItemIn(id="m1", title="Movie")])
    return "m1"


def test_unknown_route_and_wrong_method_are_problems(client: TestClient) -> None:
    missing = client.get("/no/such/route")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == PROBLEM
    assert missing.json() == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "no such resource: check the path (the API is described at /docs)",
        "instance": "/no/such/route",
    }
    wrong = client.delete("/items")
    assert wrong.status_code == 405
    assert wrong.headers["content-type"] == PROBLEM
    assert "GET" in wrong.headers["allow"]
    assert wrong.json()["title"] == "Method Not Allowed"


def test_unexpected_errors_are_a_generic_500_with_the_traceback_only_in_the_log(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(make_settings())

    def explode() -> None:
        raise RuntimeError("secret internal detail")

    async def explode_async() -> None:
        raise KeyError("another internal detail")

    app.add_api_route("/explode", explode)
    app.add_api_route("/explode-async", explode_async)
    with TestClient(app) as client, caplog.at_level(logging.ERROR):
        for path in ("/explode", "/explode-async"):
            response = client.get(path)
            assert response.status_code == 500
            assert response.headers["content-type"] == PROBLEM
            assert response.json() == {
                "type": "about:blank",
                "title": "Internal Server Error",
                "status": 500,
                "detail": "an unexpected error occurred; it has been logged",
                "instance": path,
            }
            assert "internal detail" not in response.text
        metrics = client.get("/metrics").text
    assert "secret internal detail" in caplog.text
    assert "Traceback" in caplog.text
    assert 'route="/explode",status="500"' in metrics


def test_a_failing_handler_rolls_its_writes_back(
    make_settings: Callable[..., Settings], store: sessionmaker[Session], item: str
) -> None:
    app = create_app(make_settings())

    def write_then_fail(session: SessionDep) -> None:
        upsert_rating(session, "ghost", item, 2.0, scale=DEFAULT_SCALE)
        session.flush()
        raise RuntimeError("after the write")

    app.add_api_route("/write-then-fail", write_then_fail, methods=["POST"])
    with TestClient(app) as client:
        assert client.post("/write-then-fail").status_code == 500
        # the connection went back to the pool clean: the next write works
        assert client.post("/ratings", json=RATING).status_code == 201
    with store() as session:
        assert user_rating_map(session, "ghost") == {}
        assert user_rating_map(session, "u1") == {"m1": 4.0}


def test_security_headers(client: TestClient) -> None:
    for response in (client.get("/health/live"), client.get("/nope")):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("OPTIONS", "/admin/retrain", "GET, POST"),
        ("PATCH", "/items/m1", "GET, PUT"),
        ("POST", "/users/u1/ratings/m1", "DELETE"),
        ("DELETE", "/items", "GET"),
    ],
)
def test_405_lists_every_method_of_the_path(
    client: TestClient, method: str, path: str, allow: str
) -> None:
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["allow"] == allow


# -- API keys ---------------------------------------------------------------------------
# (every combination of roles and keys: test_api_key_roles.py)
WRITE_1 = "write-key-1-Qm4x9TzL"
WRITE_2 = "write-key-2-Hc7p2WsN"
ADMIN_KEY = "admin-key-Vb8r3KdJ"


@pytest.fixture
def keyed(make_client: Callable[..., TestClient], item: str) -> TestClient:
    return make_client(api_keys=[WRITE_1, WRITE_2], admin_api_keys=[ADMIN_KEY])


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_writes_need_a_valid_key(keyed: TestClient, store: sessionmaker[Session]) -> None:
    missing = keyed.post("/ratings", json=RATING)
    assert missing.status_code == 401
    assert missing.headers["content-type"] == PROBLEM
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert (
        keyed.post("/ratings", json=RATING, headers={"Authorization": "Basic abc"}).status_code
        == 401
    )
    # a key that is none of the configured ones: 401 too (403 is for a known key's role)
    wrong = keyed.post("/ratings", json=RATING, headers=bearer("write-key-3-Zr5t8YqP"))
    assert wrong.status_code == 401
    assert wrong.headers["content-type"] == PROBLEM
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    with store() as session:
        assert count_ratings(session) == 0

    assert keyed.post("/ratings", json=RATING, headers=bearer(WRITE_2)).status_code == 201
    assert keyed.post("/ratings", json=RATING, headers=bearer(ADMIN_KEY)).status_code == 200
    assert keyed.put("/items/m2", json={}, headers=bearer(WRITE_1)).status_code == 201
    assert keyed.put("/items/m3", json={}).status_code == 401
    assert keyed.delete("/users/u1/ratings/m1").status_code == 401
    assert keyed.delete("/users/u1/ratings/m1", headers=bearer(WRITE_1)).status_code == 204
    batch = {"ratings": [RATING]}
    assert keyed.post("/ratings/batch", json=batch).status_code == 401
    assert keyed.post("/ratings/batch", json=batch, headers=bearer(WRITE_1)).status_code == 200


def test_reads_stay_open_with_keys_but_no_read_keys(keyed: TestClient) -> None:
    assert keyed.get("/users/u1/recommendations").status_code == 200
    assert keyed.get("/users/u1/ratings").status_code == 200
    assert keyed.get("/items/m1").status_code == 200


def test_admin_routes_need_an_admin_key(keyed: TestClient) -> None:
    assert keyed.get("/models").status_code == 401
    assert keyed.get("/models", headers=bearer(WRITE_1)).status_code == 403
    assert keyed.get("/models", headers=bearer(ADMIN_KEY)).status_code == 200


def test_a_write_key_is_not_an_admin_key_when_no_admin_keys_are_set(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(api_keys=[WRITE_1])
    assert client.get("/models").status_code == 401
    assert client.get("/models", headers=bearer("wrong-key-Pq2m7XcB")).status_code == 401
    refused = client.get("/models", headers=bearer(WRITE_1))
    assert refused.status_code == 403
    assert refused.headers["content-type"] == PROBLEM
    assert client.post("/admin/retrain", headers=bearer(WRITE_1)).status_code == 403


def test_open_api_warns_at_start_and_keys_are_never_logged(
    make_client: Callable[..., TestClient], item: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        open_client = make_client()
        assert open_client.post("/ratings", json=RATING).status_code == 201
    assert "auth: open" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        keyed = make_client(api_keys=["s3cret-write-Lm3n"], admin_api_keys=["s3cret-admin-Kd9f"])
        keyed.post("/ratings", json=RATING, headers=bearer("s3cret-guess-Tb4w"))
        keyed.post("/ratings", json=RATING, headers=bearer("s3cret-write-Lm3n"))
        keyed.get("/models", headers=bearer("s3cret-admin-Kd9f"))
    assert "auth: open" not in caplog.text
    assert "s3cret" not in caplog.text


# -- body limits ------------------------------------------------------------------------
def test_body_larger_than_the_limit_is_413(
    make_client: Callable[..., TestClient], item: str, store: sessionmaker[Session]
) -> None:
    client = make_client(max_body_bytes=1000)
    big = {"ratings": [RATING] * 100}
    declared = client.post("/ratings/batch", json=big)
    assert declared.status_code == 413
    assert declared.headers["content-type"] == PROBLEM
    assert "1000 bytes" in declared.json()["detail"]

    def chunks() -> Iterator[bytes]:
        yield b'{"ratings": ['
        for i in range(200):
            yield (b"," if i else b"") + b'{"user_id": "u1", "item_id": "m1", "rating": 4}'
        yield b"]}"

    chunked = client.post(
        "/ratings/batch", content=chunks(), headers={"content-type": "application/json"}
    )
    assert chunked.status_code == 413
    assert chunked.headers["content-type"] == PROBLEM
    with store() as session:
        assert count_ratings(session) == 0
    small = client.post("/ratings", json=RATING)
    assert small.status_code == 201


# -- docs, OpenAPI, CORS ------------------------------------------------------------
def test_docs_can_be_disabled(make_client: Callable[..., TestClient]) -> None:
    enabled = make_client()
    assert enabled.get("/docs").status_code == 200
    assert enabled.get("/openapi.json").status_code == 200
    disabled = make_client(docs_enabled=False)
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert disabled.get(path).status_code == 404


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    resolved: dict[str, Any] = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return resolved


def test_openapi_documents_every_operation_with_examples(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    operations = [
        (path, method, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if path.split("/")[1] in {"ratings", "users", "items", "model", "health"}
    ]
    assert len(operations) == 13
    for path, method, op in operations:
        where = f"{method.upper()} {path}"
        assert op.get("summary"), where
        assert op.get("tags"), where
        body = op.get("requestBody")
        if body is not None:
            schema = _resolve(body["content"]["application/json"]["schema"], spec)
            assert schema.get("examples"), where
        for code, response in op["responses"].items():
            content = response.get("content", {})
            if code.startswith("2") and "application/json" in content:
                schema = _resolve(content["application/json"]["schema"], spec)
                assert schema.get("examples"), f"{where} {code}"
            if code[0] in "45":
                assert list(content) == [PROBLEM], f"{where} {code}"
    for name in ("Problem", "ValidationProblem"):
        assert spec["components"]["schemas"][name]["examples"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_cors_is_off_unless_configured(make_client: Callable[..., TestClient]) -> None:
    preflight = {
        "Origin": "https://shop.example",
        "Access-Control-Request-Method": "POST",
    }
    off = make_client()
    assert "access-control-allow-origin" not in off.options("/ratings", headers=preflight).headers
    on = make_client(cors_origins=["https://shop.example"])
    response = on.options("/ratings", headers=preflight)
    assert response.headers["access-control-allow-origin"] == "https://shop.example"


def test_a_single_valued_query_parameter_given_twice_is_a_422(client: TestClient) -> None:
    # Starlette would keep the last genre; the document says genre is one string
    response = client.get("/users/1/recommendations?genre=Comedy&n=3&genre=Horror&genre=x")
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"] == [
        {"loc": ["query", "genre"], "msg": "given 3 times; give it once", "type": "repeated"}
    ]
    two = client.get("/items?limit=2&offset=1&limit=3&offset=0").json()["errors"]
    assert [e["loc"] for e in two] == [["query", "limit"], ["query", "offset"]]
    # arrays repeat by design, and a parameter no operation has is ignored as before
    assert client.get("/users/1/recommendations?exclude=1&exclude=2&n=3").status_code == 200
    assert client.get("/users/1/predictions?item_id=1&item_id=2").status_code == 200
    assert client.get("/items?limit=2&extra=1&extra=2").status_code == 200


def test_metrics_label_unmatched_routes(client: TestClient) -> None:
    client.get("/users/abc/ratings")
    client.get("/this/does/not/exist")
    text = client.get("/metrics").text
    assert 'route="/users/{user_id}/ratings",status="200"' in text
    assert 'route="<unmatched>",status="404"' in text
    assert "/this/does/not/exist" not in text
    assert "/users/abc" not in text
    assert "rbmrec_model_loaded 0.0" in text
