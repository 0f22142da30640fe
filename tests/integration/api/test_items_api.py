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


def _put(client: TestClient, item: str, title: str, genres: list[str]) -> None:
    response = client.put(f"/items/{item}", json={"title": title, "genres": genres})
    assert response.status_code == 201, response.text


def _ids(client: TestClient, **params: Any) -> list[str]:
    response = client.get("/items", params=params)
    assert response.status_code == 200, response.text
    return [i["id"] for i in response.json()["items"]]


def test_numeric_ids_come_in_numeric_order(client: TestClient) -> None:
    for item in ("100", "2", "10", "1"):
        _put(client, item, f"Film {item}", [])
    assert _ids(client) == ["1", "2", "10", "100"]
    assert _ids(client, offset=1, limit=2) == ["2", "10"]


def test_search_by_title_and_genre(client: TestClient) -> None:
    _put(client, "1", "Star Wars (1977)", ["Action", "Sci-Fi"])
    _put(client, "2", "Return of the Jedi (1983)", ["Action", "Sci-Fi"])
    _put(client, "3", "Stargate (1994)", ["Sci-Fi"])
    _put(client, "4", "100% Wolf", ["Comedy"])
    _put(client, "5", "Toy Story (1995)", ["Comedy", "Animation"])
    assert _ids(client, q="STAR") == ["1", "3"]
    page = client.get("/items", params={"q": "star", "limit": 1}).json()
    assert page["total"] == 2
    assert _ids(client, genre="sci-fi") == ["1", "2", "3"]
    assert _ids(client, q="star", genre="Action") == ["1"]
    assert _ids(client, q="toy", genre="Action") == []  # a known genre: just no match
    # % and _ are text, not wildcards
    assert _ids(client, q="100%") == ["4"]
    assert _ids(client, q="_") == []
    assert _ids(client, sort="title") == ["4", "2", "1", "3", "5"]


def test_an_unknown_genre_says_so(client: TestClient) -> None:
    _put(client, "1", "Star Wars (1977)", ["Action", "Sci-Fi"])
    response = client.get("/items", params={"genre": "Westren"})
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    detail = response.json()["detail"]
    assert "unknown genre 'Westren'" in detail
    assert "Action, Sci-Fi" in detail


def test_popularity_order_puts_the_most_rated_first(client: TestClient) -> None:
    for item in ("1", "2", "3"):
        _put(client, item, f"Film {item}", [])
    ratings = [("u1", "3"), ("u2", "3"), ("u1", "2")]
    for user, item in ratings:
        body = {"user_id": user, "item_id": item, "rating": 4}
        assert client.post("/ratings", json=body).status_code == 201
    assert _ids(client, sort="popularity") == ["3", "2", "1"]
    assert client.get("/items", params={"sort": "price"}).status_code == 422
