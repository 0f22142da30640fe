"""PUT /items/{id}, GET /items/{id}, GET /items on both stores."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.db.items import get_item

TOY_STORY = {
    "title": "Toy Story (1995)",
    "genres": ["Animation", "Children's", "Comedy"],
    "attributes": {"year": 1995, "imdb": {"id": "tt0114709"}},
}


def test_put_creates_then_replaces(client: TestClient, store: sessionmaker[Session]) -> None:
    created = client.put("/items/toy-story", json=TOY_STORY)
    assert created.status_code == 201
    body = created.json()
    assert body["id"] == "toy-story"
    assert {k: body[k] for k in TOY_STORY} == TOY_STORY
    assert body["created_at"]

    replaced = client.put("/items/toy-story", json={"title": "Toy Story"})
    assert replaced.status_code == 200
    assert replaced.json()["title"] == "Toy Story"
    assert replaced.json()["genres"] == []
    assert replaced.json()["attributes"] == {}
    with store() as session:
        item = get_item(session, "toy-story")
        assert item is not None
        assert item.title == "Toy Story"

    fetched = client.get("/items/toy-story")
    assert fetched.status_code == 200
    assert fetched.json()["title"] == "Toy Story"


def test_get_unknown_item_is_404(client: TestClient) -> None:
    response = client.get("/items/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:rbmrec:problem:unknown-item"
    assert "nothing-here" in response.json()["detail"]


@pytest.mark.parametrize(
    "payload",
    [
        {"title": "x" * 501},
        {"genres": ["ok", ""]},
        {"genres": ["g"] * 51},
        {"genres": "Comedy"},
        {"attributes": {f"k{i}": i for i in range(101)}},
        {"title": "t", "unexpected": True},
        {"title": 5},
    ],
)
def test_put_validates_the_body(
    client: TestClient, store: sessionmaker[Session], payload: dict[str, Any]
) -> None:
    response = client.put("/items/i1", json=payload)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"][0] == "body"
    with store() as session:
        assert get_item(session, "i1") is None


def test_put_validates_the_id(client: TestClient) -> None:
    # %2E and %2E%2E arrive as '.' and '..', ids no URL could address afterwards
    for bad in ("a%20b", "x" * 65, "%C3%A9t%C3%A9", "%2E", "%2E%2E"):
        response = client.put(f"/items/{bad}", json={"title": "t"})
        assert response.status_code == 422, bad
        assert response.json()["errors"][0]["loc"] == ["path", "item_id"]
        if bad != "x" * 65:  # the rule in words, not the regular expression
            assert response.json()["errors"][0]["msg"].startswith("an id must be 1-64 characters")


def test_list_items_pages_by_id(client: TestClient) -> None:
    for item in ("b", "a", "c"):
        assert client.put(f"/items/{item}", json={"title": item.upper()}).status_code == 201
    first = client.get("/items", params={"limit": 2}).json()
    assert first["total"] == 3
    assert [i["id"] for i in first["items"]] == ["a", "b"]
    second = client.get("/items", params={"offset": 2, "limit": 2}).json()
    assert [i["id"] for i in second["items"]] == ["c"]
    assert client.get("/items", params={"limit": 1001}).status_code == 422
    assert client.get("/items", params={"offset": -5}).status_code == 422
