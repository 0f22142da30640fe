"""Hostile and malformed requests: each a clear 4xx problem, nothing stored, no key logged.

Every case runs against the real app (lifespan included) on SQLite and on PostgreSQL,
with API keys configured and a valid key sent, so that only the payload is at fault.
Around each case the test checks that the store did not change, that no SQL
statement sent to the database contains request data (everything travels as bound
parameters), that nothing was logged at ERROR, and that no key (configured or
presented) appears in the log or in a response.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from _reliability_support import PROBLEM, count_rows, empty_database
from fastapi.testclient import TestClient
from sqlalchemy import event

from app.api.main import create_app
from app.api.users import MAX_EXCLUDE
from app.db.engine import make_engine, make_sessionmaker
from app.db.items import ItemIn, upsert_items
from app.settings import Settings

WRITE_KEY = "wk-7Hq2mZpX9vLr4TnB"
ADMIN_KEY = "ak-3Jd8sWcY1eKo6UfG"
WRONG_KEY = "wk-7Hq2mZpX9vLr4TnC"  # one character off: a typo must not be logged either
SECRETS = (WRITE_KEY, ADMIN_KEY, WRONG_KEY)
AUTH = {"Authorization": f"Bearer {WRITE_KEY}"}
CANARY = "qzcanary"
"""Marker put in hostile values: it must never appear in SQL text."""

ITEMS = ("m1", "m2")
GOOD = {"user_id": "u1", "item_id": "m1", "rating": 4}
MAX_BODY = 2_000_000


@dataclass
class Api:
    client: TestClient
    url: str
    statements: list[str] = field(default_factory=list)

    def counts(self) -> tuple[int, int]:
        return count_rows(self.url, "ratings"), count_rows(self.url, "items")


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The app with API keys, on a store holding two items (one per backend)."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    engine = make_engine(url)
    with make_sessionmaker(engine).begin() as session:
        upsert_items(session, [ItemIn(id=i, title=f"Movie {i}") for i in ITEMS])
    engine.dispose()
    settings = Settings(
        database_url=url,
        model_dir=tmp_path_factory.mktemp("hostile-models"),
        api_keys=[WRITE_KEY],
        admin_api_keys=[ADMIN_KEY],
        max_body_bytes=MAX_BODY,
    )
    with TestClient(create_app(settings)) as client:
        api = Api(client, url)
        app_engine = client.app.state.engine  # type: ignore[attr-defined]

        @event.listens_for(app_engine, "before_cursor_execute")
        def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            api.statements.append(statement)

        yield api
    empty_database(url)


@pytest.fixture
def watched(api: Api, caplog: pytest.LogCaptureFixture) -> Iterator[Api]:
    """Check, after the test, the invariants every hostile request must keep."""
    caplog.set_level(logging.DEBUG)
    before = api.counts()
    api.statements.clear()
    yield api
    assert api.counts() == before, "a refused request changed the store"
    leaked = [s for s in api.statements if CANARY in s]
    assert not leaked, f"request data in SQL text: {leaked[:1]}"
    for secret in SECRETS:
        assert secret not in caplog.text
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def assert_problem(response: Any, *statuses: int) -> dict[str, Any]:
    """A 4xx RFC 9457 problem with one of ``statuses``, small, without internals."""
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code
    assert body["title"]
    assert body["detail"]
    # never an echo of a huge input, a traceback, or a key
    assert len(response.content) < 20_000, len(response.content)
    for word in ("Traceback", "sqlalchemy", "psycopg", "sqlite3", *SECRETS):
        assert word not in response.text
    return body


def post_raw(api: Api, path: str, body: bytes | str, content_type: str = "application/json") -> Any:
    data = body.encode() if isinstance(body, str) else body
    return api.client.post(path, content=data, headers={**AUTH, "content-type": content_type})


# -- sizes ---------------------------------------------------------------------------------
def test_oversized_declared_body_is_413(watched: Api) -> None:
    big = json.dumps({"ratings": [GOOD] * 50_000})
    assert len(big) > MAX_BODY
    assert_problem(post_raw(watched, "/ratings/batch", big), 413)


def test_oversized_chunked_body_is_413_without_reading_it_all(watched: Api) -> None:
    sent = 0

    def endless() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"ratings": ['
        while sent < 50 * MAX_BODY:  # far more than the limit, if nobody stops reading
            chunk = b'{"user_id": "u1", "item_id": "m1", "rating": 4},' * 1000
            sent += len(chunk)
            yield chunk

    response = watched.client.post(
        "/ratings/batch", content=endless(), headers={**AUTH, "content-type": "application/json"}
    )
    assert_problem(response, 413)


@pytest.mark.parametrize("n", [10_001, 30_000])
def test_batches_over_10000_are_422_with_a_bounded_answer(watched: Api, n: int) -> None:
    entries = [{"user_id": f"u{i % 97}", "item_id": ITEMS[i % 2], "rating": 3} for i in range(n)]
    body = assert_problem(
        watched.client.post("/ratings/batch", json={"ratings": entries}, headers=AUTH), 422
    )
    assert body["errors"]


@pytest.mark.parametrize("bad", [{"rating": 7}, {"rating": "x"}, {"user_id": "a b"}, {"extra": 1}])
def test_a_batch_of_10000_wrong_entries_gets_a_bounded_answer(
    watched: Api, bad: dict[str, Any]
) -> None:
    entries = [{**GOOD, **bad} for _ in range(10_000)]
    response = watched.client.post("/ratings/batch", json={"ratings": entries}, headers=AUTH)
    body = assert_problem(response, 422)
    assert 0 < len(body["errors"]) <= 100
    assert "10000" in body["detail"]


# -- ids -------------------------------------------------------------------------------------
ODD_IDS: list[Any] = [
    "",
    " ",
    "u" * 65,
    "u" * 1_000_000,
    "a b",
    "abc\n",
    "\tabc",
    "a\u0000b",
    "../../etc/passwd",
    "a/b",
    "%41",
    "ünïcödé",
    "🎬",
    "\u202eevil",
    "\uff21\uff22\uff23",  # full-width letters are not ASCII letters
    f"{CANARY}' OR '1'='1",
    f"{CANARY}'; DROP TABLE ratings; --",
    f'{CANARY}"',
    f"{CANARY}\\",
    f"{CANARY}%",
    f"{CANARY}*",
    123,
    12.5,
    True,
    None,
    ["u1"],
    {"id": "u1"},
]


@pytest.mark.parametrize("field_name", ["user_id", "item_id"])
@pytest.mark.parametrize("value", ODD_IDS, ids=lambda v: repr(v)[:24])
def test_odd_ids_in_bodies_are_422(watched: Api, field_name: str, value: Any) -> None:
    single = {**GOOD, field_name: value}
    body = assert_problem(watched.client.post("/ratings", json=single, headers=AUTH), 422)
    assert any(field_name in map(str, e["loc"]) for e in body["errors"])
    batch = {"ratings": [GOOD, single]}
    body = assert_problem(watched.client.post("/ratings/batch", json=batch, headers=AUTH), 422)
    assert any(e["loc"][:3] == ["body", "ratings", 1] for e in body["errors"])


@pytest.mark.parametrize(
    "value",
    [
        "u" * 65,
        "u" * 8000,
        "a b",
        "%00",
        "a%0Ab",
        "%C3%BC",
        "%F0%9F%8E%AC",
        f"{CANARY}'--",
        "a%2Fb",
    ],
)
def test_odd_ids_in_paths_are_4xx(watched: Api, value: str) -> None:
    paths = [
        ("GET", f"/users/{value}/ratings"),
        ("GET", f"/users/{value}/recommendations"),
        ("GET", f"/users/{value}/predictions?item_id=m1"),
        ("GET", f"/items/{value}"),
        ("GET", f"/items/{value}/similar"),
        ("DELETE", f"/users/u1/ratings/{value}"),
        ("DELETE", f"/users/{value}/ratings/m1"),
    ]
    for method, path in paths:
        assert_problem(watched.client.request(method, path, headers=AUTH), 404, 422)
    put = watched.client.put(f"/items/{value}", json={"title": "x"}, headers=AUTH)
    assert_problem(put, 404, 405, 422)


def test_odd_ids_in_query_values_are_422(watched: Api) -> None:
    for value in ("u" * 65, "a b", f"{CANARY}'--", "\u0000"):
        response = watched.client.get("/users/u1/predictions", params={"item_id": value})
        assert_problem(response, 422)
        response = watched.client.get("/users/u1/recommendations", params={"exclude": value})
        assert_problem(response, 422)
    response = watched.client.get("/users/u1/predictions", params={"item_id": ["m1"] * 101})
    assert_problem(response, 422)
    too_many = ["m1"] * (MAX_EXCLUDE + 1)
    response = watched.client.get("/users/u1/recommendations", params={"exclude": too_many})
    assert_problem(response, 422)


# -- rating values -----------------------------------------------------------------------
BAD_RATINGS_JSON = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e309",
    "-1e309",
    "1e-400",
    '"5"',
    '"five"',
    '"NaN"',
    "true",
    "false",
    "null",
    "[5]",
    '{"value": 5}',
    "4.5",
    "0",
    "6",
    "-4",
    "5.001",
    "9" * 5000,  # beyond Python's int-to-str limit
]


@pytest.mark.parametrize("literal", BAD_RATINGS_JSON, ids=lambda v: v[:16])
def test_bad_rating_values_are_4xx(watched: Api, literal: str) -> None:
    single = f'{{"user_id": "u1", "item_id": "m1", "rating": {literal}}}'
    body = assert_problem(post_raw(watched, "/ratings", single), 400, 422)
    if body["status"] == 422:
        assert body["errors"]
    batch = f'{{"ratings": [{json.dumps(GOOD)}, {single}]}}'
    assert_problem(post_raw(watched, "/ratings/batch", batch), 400, 422)


def test_off_scale_ratings_list_the_allowed_values(watched: Api) -> None:
    body = assert_problem(
        watched.client.post("/ratings", json={**GOOD, "rating": 6}, headers=AUTH), 422
    )
    assert "1, 2, 3, 4, 5" in body["detail"]


@pytest.mark.parametrize(
    "rated_at",
    [
        f"{CANARY}'; DROP TABLE ratings; --",
        "2026-13-45T00:00:00",
        "now()",
        "yesterday",
        1e300,
        [],
        {},
    ],
    ids=repr,
)
def test_bad_timestamps_are_422(watched: Api, rated_at: Any) -> None:
    response = watched.client.post("/ratings", json={**GOOD, "rated_at": rated_at}, headers=AUTH)
    assert_problem(response, 422)


def test_unknown_fields_are_422(watched: Api) -> None:
    for extra in ({"is_admin": True}, {f"{CANARY}'": 1}, {"rating_scale": "1..100"}):
        response = watched.client.post("/ratings", json={**GOOD, **extra}, headers=AUTH)
        assert_problem(response, 422)
    assert_problem(
        watched.client.put("/items/m9", json={"title": "t", "owner": "x"}, headers=AUTH), 422
    )


# -- malformed JSON and content types ----------------------------------------------------
MALFORMED = [
    b"",
    b"{",
    b'{"user_id": "u1"',
    b"[",
    b"nul",
    b"{'user_id': 'u1'}",
    b'{"user_id": "u1", "item_id": "m1", "rating": 4} trailing',
    b'{"user_id": "u1", "item_id": "m1", "rating": 4,}',
    b"\xff\xfe\xfa garbage",
    b'{"user_id": "\xc3\x28", "item_id": "m1", "rating": 4}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    b'"just a string"',
    b"42",
    b"[]",
    b"{}",
]


@pytest.mark.parametrize("raw", MALFORMED, ids=lambda v: repr(v[:20]))
@pytest.mark.parametrize("path", ["/ratings", "/ratings/batch", "/items/m9"])
def test_malformed_json_is_4xx(watched: Api, raw: bytes, path: str) -> None:
    method = "PUT" if path.startswith("/items") else "POST"
    if raw == b"{}" and method == "PUT":
        return  # an item with no metadata is a valid PUT
    response = watched.client.request(
        method, path, content=raw, headers={**AUTH, "content-type": "application/json"}
    )
    assert_problem(response, 400, 422)


WRONG_TYPES = [
    ("text/plain", json.dumps(GOOD)),
    ("application/x-www-form-urlencoded", "user_id=u1&item_id=m1&rating=4"),
    (
        "multipart/form-data; boundary=x",
        '--x\r\nContent-Disposition: form-data; name="user_id"\r\n\r\nu1\r\n--x--',
    ),
    ("application/xml", "<rating><user_id>u1</user_id></rating>"),
    ("text/json", json.dumps(GOOD)),
    ("application/jsonx", json.dumps(GOOD)),
    ("application/octet-stream", json.dumps(GOOD)),
    ("image/png", "\x89PNG"),
    (f"{CANARY}/'--", json.dumps(GOOD)),
]


@pytest.mark.parametrize(("content_type", "body"), WRONG_TYPES, ids=[t for t, _ in WRONG_TYPES])
def test_wrong_content_types_are_415(watched: Api, content_type: str, body: str) -> None:
    for method, path in (("POST", "/ratings"), ("POST", "/ratings/batch"), ("PUT", "/items/m9")):
        response = watched.client.request(
            method, path, content=body.encode(), headers={**AUTH, "content-type": content_type}
        )
        assert_problem(response, 415)


# -- free-text fields: stored verbatim, never interpreted --------------------------------
SQL_TEXT = [
    "'; DROP TABLE items; --",
    '" OR "1"="1',
    "Robert'); DELETE FROM ratings WHERE ('1'='1",
    "%_\\%",
    "$1 :param ? %s %(x)s {0}",
    "\\x00\\n",
    "ünïcödé 🎬 \u202e",
]


@pytest.mark.parametrize("text", SQL_TEXT)
def test_sql_metacharacters_in_item_fields_are_stored_verbatim(api: Api, text: str) -> None:
    api.statements.clear()
    body = {"title": text, "genres": [text[:64], "Drama"], "attributes": {text: text, "k": [text]}}
    created = api.client.put("/items/sqlitem", json=body, headers=AUTH)
    assert created.status_code in (200, 201), created.text
    got = api.client.get("/items/sqlitem").json()
    assert (got["title"], got["genres"], got["attributes"]) == (
        body["title"],
        body["genres"],
        body["attributes"],
    )
    assert api.counts()[1] == len(ITEMS) + 1
    # the genre filter takes it as a plain value
    response = api.client.get("/users/nobody/recommendations", params={"genre": text[:64]})
    assert response.status_code == 200
    assert not [s for s in api.statements if text in s]


def test_valid_ids_made_of_sql_and_like_characters_are_taken_literally(api: Api) -> None:
    # '_', '.', ':', '-' are id characters; '_' is also LIKE's wildcard and '--' SQL's comment
    ratings = {"a_c": 5, "abc": 1, "--": 3, "a.c": 4, "1:-": 2}
    for user, value in ratings.items():
        response = api.client.post(
            "/ratings", json={**GOOD, "user_id": user, "rating": value}, headers=AUTH
        )
        assert response.status_code == 201, response.text
    for user, value in ratings.items():
        page = api.client.get(f"/users/{user}/ratings").json()
        assert [(r["user_id"], r["rating"]) for r in page["items"]] == [(user, value)]
        assert api.client.delete(f"/users/{user}/ratings/m1", headers=AUTH).status_code == 204


@pytest.mark.parametrize("char", ["\\u0000", "\\ud800", "\\udfff"])
def test_unstorable_characters_in_free_text_are_422_on_every_backend(
    watched: Api, char: str
) -> None:
    # NUL: PostgreSQL cannot store it, SQLite would; lone surrogates are not UTF-8.
    for body in (
        f'{{"title": "a{char}b"}}',
        f'{{"genres": ["Dra{char}ma"]}}',
        f'{{"attributes": {{"k": "v{char}"}}}}',
        f'{{"attributes": {{"k{char}": 1}}}}',
        f'{{"attributes": {{"k": [[{{"deep": "{char}"}}]]}}}}',
    ):
        response = watched.client.put(
            "/items/odd-text",
            content=body.encode(),
            headers={**AUTH, "content-type": "application/json"},
        )
        assert_problem(response, 422)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_in_item_attributes_are_422(watched: Api, literal: str) -> None:
    raw = f'{{"title": "t", "attributes": {{"score": {literal}}}}}'
    response = watched.client.put(
        "/items/nan-item",
        content=raw.encode(),
        headers={**AUTH, "content-type": "application/json"},
    )
    assert_problem(response, 422)


# -- keys ------------------------------------------------------------------------------------
def test_bad_credentials_are_401_or_403_and_never_logged(watched: Api) -> None:
    attempts = [
        {},
        {"Authorization": f"Bearer {WRONG_KEY}"},
        {"Authorization": f"Basic {WRITE_KEY}"},
        {"Authorization": f"Bearer {WRITE_KEY} extra"},
        {"Authorization": f"Bearer {WRITE_KEY[:-1]}"},
        {"Authorization": "Bearer " + "k" * 100_000},
        {"Authorization": f"Bearer {CANARY}' OR '1'='1"},
    ]
    for headers in attempts:
        response = watched.client.post("/ratings", json=GOOD, headers=headers)
        assert_problem(response, 401, 403)
    admin = watched.client.post("/admin/retrain", headers=AUTH)  # a write key is no admin key
    assert_problem(admin, 403)
