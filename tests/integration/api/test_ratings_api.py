"""POST /ratings, POST /ratings/batch, GET and DELETE /users/{id}/ratings, on both stores."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.db.items import ItemIn, get_item, upsert_items
from app.db.ratings import count_ratings, user_rating_map

PROBLEM = "application/problem+json"


@pytest.fixture
def items(store: sessionmaker[Session]) -> list[str]:
    ids = ["m1", "m2", "m3", "m4"]
    with store.begin() as session:
        upsert_items(session, [ItemIn(id=i, title=f"Movie {i}") for i in ids])
    return ids


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert body["type"]
    assert "Traceback" not in response.text
    return body


def test_post_rating_creates_then_replaces(
    client: TestClient, items: list[str], store: sessionmaker[Session]
) -> None:
    first = client.post("/ratings", json={"user_id": "u1", "item_id": "m1", "rating": 4})
    assert first.status_code == 201
    body = first.json()
    assert body["user_id"] == "u1"
    assert body["item_id"] == "m1"
    assert body["rating"] == 4.0
    assert body["rated_at"]
    assert body["updated_at"]

    second = client.post(
        "/ratings",
        json={"user_id": "u1", "item_id": "m1", "rating": 2, "rated_at": "2020-01-02T03:04:05"},
    )
    assert second.status_code == 200
    assert second.json()["rating"] == 2.0
    assert second.json()["rated_at"].startswith("2020-01-02T03:04:05")
    with store() as session:
        assert user_rating_map(session, "u1") == {"m1": 2.0}
        assert count_ratings(session) == 1


@pytest.mark.parametrize(
    ("rating", "kind"),
    [
        (6, "rating_scale"),
        (0, "rating_scale"),
        (3.5, "rating_scale"),
        ("4", "float_type"),
        (True, "float_type"),
        (None, "float_type"),
    ],
)
def test_bad_rating_values_are_422(
    client: TestClient, items: list[str], store: sessionmaker[Session], rating: Any, kind: str
) -> None:
    response = client.post("/ratings", json={"user_id": "u1", "item_id": "m1", "rating": rating})
    body = assert_problem(response, 422)
    assert body["errors"][0]["loc"] == ["body", "rating"]
    assert body["errors"][0]["type"] == kind
    if kind == "rating_scale":
        assert "allowed values: 1, 2, 3, 4, 5" in body["errors"][0]["msg"]
        assert "allowed values: 1, 2, 3, 4, 5" in body["detail"]
    with store() as session:
        assert count_ratings(session) == 0


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_ratings_are_422(client: TestClient, items: list[str], literal: str) -> None:
    raw = f'{{"user_id": "u1", "item_id": "m1", "rating": {literal}}}'
    response = client.post("/ratings", content=raw, headers={"content-type": "application/json"})
    body = assert_problem(response, 422)
    assert body["errors"][0]["loc"] == ["body", "rating"]


@pytest.mark.parametrize(
    "payload",
    [
        {"user_id": "", "item_id": "m1", "rating": 4},
        {"user_id": "x" * 65, "item_id": "m1", "rating": 4},
        {"user_id": "a b", "item_id": "m1", "rating": 4},
        {"user_id": "u1", "item_id": "m1'; DROP TABLE ratings; --", "rating": 4},
        {"user_id": "u1", "item_id": 7, "rating": 4},
        {"user_id": "u1", "rating": 4},
        {"user_id": "u1", "item_id": "m1", "rating": 4, "extra": 1},
        {"user_id": "u1", "item_id": "m1", "rating": 4, "rated_at": "yesterday"},
    ],
)
def test_invalid_bodies_are_422_with_field_errors(
    client: TestClient, items: list[str], store: sessionmaker[Session], payload: dict[str, Any]
) -> None:
    body = assert_problem(client.post("/ratings", json=payload), 422)
    assert body["errors"], body
    assert all(err["loc"][0] == "body" for err in body["errors"])
    with store() as session:
        assert count_ratings(session) == 0


def test_malformed_json_and_wrong_content_type(client: TestClient, items: list[str]) -> None:
    broken = client.post(
        "/ratings", content=b'{"user_id": "u1",', headers={"content-type": "application/json"}
    )
    assert assert_problem(broken, 422)["errors"][0]["type"] == "json_invalid"
    text = client.post(
        "/ratings",
        content=b'{"user_id": "u1", "item_id": "m1", "rating": 4}',
        headers={"content-type": "text/plain"},
    )
    assert "application/json" in assert_problem(text, 415)["detail"]
    # not UTF-8: FastAPI's parser answers 400, which the document lists
    binary = client.post(
        "/ratings", content=b'{"user_id": "\xff"}', headers={"content-type": "application/json"}
    )
    assert assert_problem(binary, 400)["status"] == 400


def test_unknown_item_is_404(
    client: TestClient, items: list[str], store: sessionmaker[Session]
) -> None:
    response = client.post("/ratings", json={"user_id": "u1", "item_id": "nope", "rating": 4})
    body = assert_problem(response, 404)
    assert "nope" in body["detail"]
    with store() as session:
        assert count_ratings(session) == 0


def test_unknown_item_is_created_when_configured(
    make_client: Callable[..., TestClient], store: sessionmaker[Session]
) -> None:
    client = make_client(auto_create_items=True)
    response = client.post("/ratings", json={"user_id": "u1", "item_id": "fresh", "rating": 5})
    assert response.status_code == 201
    batch = client.post(
        "/ratings/batch",
        json={"ratings": [{"user_id": "u2", "item_id": "fresh2", "rating": 3}]},
    )
    assert batch.status_code == 200
    with store() as session:
        assert get_item(session, "fresh") is not None
        assert get_item(session, "fresh2") is not None
        assert user_rating_map(session, "u1") == {"fresh": 5.0}


def test_batch_writes_all(
    client: TestClient, items: list[str], store: sessionmaker[Session]
) -> None:
    ratings = [
        {"user_id": "u1", "item_id": "m1", "rating": 5},
        {"user_id": "u1", "item_id": "m2", "rating": 3},
        {"user_id": "u2", "item_id": "m1", "rating": 1},
        {"user_id": "u1", "item_id": "m1", "rating": 4},  # repeated pair: the last wins
    ]
    response = client.post("/ratings/batch", json={"ratings": ratings})
    assert response.status_code == 200
    assert response.json() == {"written": 3}
    with store() as session:
        assert user_rating_map(session, "u1") == {"m1": 4.0, "m2": 3.0}
        assert user_rating_map(session, "u2") == {"m1": 1.0}


def test_rejected_batch_names_each_wrong_entry_and_writes_nothing(
    client: TestClient, items: list[str], store: sessionmaker[Session]
) -> None:
    ratings = [
        {"user_id": "u1", "item_id": "m1", "rating": 5},
        {"user_id": "u1", "item_id": "ghost", "rating": 3},
        {"user_id": "u1", "item_id": "m2", "rating": 9},
        {"user_id": "u1", "item_id": "m3", "rating": 2},
    ]
    body = assert_problem(client.post("/ratings/batch", json={"ratings": ratings}), 422)
    assert [(e["loc"], e["type"]) for e in body["errors"]] == [
        (["body", "ratings", 1, "item_id"], "unknown_item"),
        (["body", "ratings", 2, "rating"], "rating_scale"),
    ]
    assert "ghost" in body["errors"][0]["msg"]
    with store() as session:
        assert count_ratings(session) == 0


def test_a_batch_whose_only_fault_is_unknown_items_is_404_naming_them(
    client: TestClient, items: list[str], store: sessionmaker[Session]
) -> None:
    ratings = [
        {"user_id": "u1", "item_id": "m1", "rating": 5},
        {"user_id": "u1", "item_id": "ghost", "rating": 3},
    ]
    body = assert_problem(client.post("/ratings/batch", json={"ratings": ratings}), 404)
    assert body["type"] == "urn:rbmrec:problem:unknown-item"
    assert [e["loc"] for e in body["errors"]] == [["body", "ratings", 1, "item_id"]]
    with store() as session:
        assert count_ratings(session) == 0


@pytest.mark.parametrize("rated_at", [0, 1_700_000_000, 1.5, True, ["2026-11-29T10:15:00Z"]])
def test_rated_at_is_only_taken_as_a_date_time_string(
    client: TestClient, items: list[str], rated_at: Any
) -> None:
    body = {"user_id": "u1", "item_id": "m1", "rating": 4, "rated_at": rated_at}
    problem = assert_problem(client.post("/ratings", json=body), 422)
    assert problem["errors"][0]["loc"] == ["body", "rated_at"]
    stored = {**body, "rated_at": "2026-11-29T10:15:00Z"}
    assert client.post("/ratings", json=stored).status_code == 201


def test_batch_schema_errors_name_positions(client: TestClient, items: list[str]) -> None:
    ratings = [
        {"user_id": "u1", "item_id": "m1", "rating": 5},
        {"user_id": "bad id", "item_id": "m1", "rating": "x"},
    ]
    body = assert_problem(client.post("/ratings/batch", json={"ratings": ratings}), 422)
    locs = [e["loc"] for e in body["errors"]]
    assert ["body", "ratings", 1, "user_id"] in locs
    assert ["body", "ratings", 1, "rating"] in locs


def test_batch_size_is_bounded(client: TestClient, items: list[str]) -> None:
    empty = client.post("/ratings/batch", json={"ratings": []})
    assert assert_problem(empty, 422)["errors"][0]["type"] == "too_short"
    entry = {"user_id": "u", "item_id": "m1", "rating": 1}
    too_many = client.post("/ratings/batch", json={"ratings": [entry] * 10_001})
    assert assert_problem(too_many, 422)["errors"][0]["type"] == "too_long"


def test_user_ratings_pages_newest_first(client: TestClient, items: list[str]) -> None:
    for day, item in enumerate(items, start=1):
        client.post(
            "/ratings",
            json={
                "user_id": "u1",
                "item_id": item,
                "rating": 3,
                "rated_at": f"2021-01-0{day}T00:00:00Z",
            },
        )
    page = client.get("/users/u1/ratings", params={"limit": 3})
    assert page.status_code == 200
    body = page.json()
    assert body["total"] == 4
    assert body["offset"] == 0
    assert body["limit"] == 3
    assert [r["item_id"] for r in body["items"]] == ["m4", "m3", "m2"]
    rest = client.get("/users/u1/ratings", params={"offset": 3, "limit": 3}).json()
    assert [r["item_id"] for r in rest["items"]] == ["m1"]
    assert rest["total"] == 4
    unknown = client.get("/users/nobody/ratings").json()
    assert unknown["total"] == 0
    assert unknown["items"] == []
    assert_problem(client.get("/users/u1/ratings", params={"limit": 0}), 422)
    assert_problem(client.get("/users/u1/ratings", params={"limit": 1001}), 422)
    assert_problem(client.get("/users/u1/ratings", params={"offset": -1}), 422)
    assert_problem(client.get("/users/bad%20id/ratings"), 422)
    assert_problem(client.get(f"/users/{'u' * 65}/ratings"), 422)


def test_delete_rating(client: TestClient, items: list[str], store: sessionmaker[Session]) -> None:
    client.post("/ratings", json={"user_id": "u1", "item_id": "m1", "rating": 4})
    deleted = client.delete("/users/u1/ratings/m1")
    assert deleted.status_code == 204
    assert deleted.content == b""
    with store() as session:
        assert user_rating_map(session, "u1") == {}
    assert "no rating" in assert_problem(client.delete("/users/u1/ratings/m1"), 404)["detail"]
    assert_problem(client.delete("/users/u1/ratings/bad%20id"), 422)
