"""Who may read and write what: every role of route against every kind of key.

Through real HTTP (the ASGI app with its lifespan, on SQLite and PostgreSQL), for
each configuration a deployment can have: open, all three roles keyed, no read keys
(per-user reads public), only read keys (writes and admin routes then refuse
everyone). Roles: a read key reads users' data; a write key also writes; an admin
key may do everything. A write key is never an admin key. The catalogue, ``/model``
and the health probes are public whatever the keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.api.security import auth_mode
from app.db.items import ItemIn, upsert_items
from app.settings import Settings

PROBLEM = "application/problem+json"
READ = "read-key-Fz6q1NcW2e"
WRITE = "write-key-Yh3s8PmT5r"
ADMIN = "admin-key-Gk7v4BnR9u"
UNKNOWN = "unknown-key-Xw2j5LdQ8a"
CREDENTIALS: dict[str, str | None] = {
    "none": None,
    "unknown": UNKNOWN,
    "read": READ,
    "write": WRITE,
    "admin": ADMIN,
}

# (method, path, body) of one route per role
ROUTES: dict[str, list[tuple[str, str, Any]]] = {
    "read": [
        ("GET", "/users/u1/ratings", None),
        ("GET", "/users/u1/recommendations", None),
        ("GET", "/users/u1/predictions?item_id=m1", None),
    ],
    "write": [
        ("POST", "/ratings", {"user_id": "u1", "item_id": "m1", "rating": 4}),
        ("PUT", "/items/m1", {"title": "Movie"}),
    ],
    "admin": [("GET", "/models", None), ("GET", "/admin/retrain", None)],
    "public": [
        ("GET", "/items", None),
        ("GET", "/items/m1", None),
        ("GET", "/health/ready", None),
        ("GET", "/health/live", None),
    ],
}

ALL = {"admin_api_keys": [ADMIN], "api_keys": [WRITE], "read_api_keys": [READ]}
CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "open": {},
    "all-roles": ALL,
    "no-read-keys": {"admin_api_keys": [ADMIN], "api_keys": [WRITE]},
    "only-read-keys": {"read_api_keys": [READ]},
}

OK = "ok"
# configuration -> role of the route -> credential -> expected status (OK: 2xx)
EXPECTED: dict[str, dict[str, dict[str, int | str]]] = {
    "open": {role: dict.fromkeys(CREDENTIALS, OK) for role in ("read", "write", "admin", "public")},
    "all-roles": {
        "read": {"none": 401, "unknown": 401, "read": OK, "write": OK, "admin": OK},
        "write": {"none": 401, "unknown": 401, "read": 403, "write": OK, "admin": OK},
        "admin": {"none": 401, "unknown": 401, "read": 403, "write": 403, "admin": OK},
        "public": dict.fromkeys(CREDENTIALS, OK),
    },
    "no-read-keys": {
        # READ is not configured here: it is just an unknown key, where one is needed
        "read": dict.fromkeys(CREDENTIALS, OK),
        "write": {"none": 401, "unknown": 401, "read": 401, "write": OK, "admin": OK},
        "admin": {"none": 401, "unknown": 401, "read": 401, "write": 403, "admin": OK},
        "public": dict.fromkeys(CREDENTIALS, OK),
    },
    "only-read-keys": {
        "read": {"none": 401, "unknown": 401, "read": OK, "write": 401, "admin": 401},
        "write": {"none": 401, "unknown": 401, "read": 403, "write": 401, "admin": 401},
        "admin": {"none": 401, "unknown": 401, "read": 403, "write": 401, "admin": 401},
        "public": dict.fromkeys(CREDENTIALS, OK),
    },
}


@pytest.fixture
def item(store: sessionmaker[Session]) -> str:
    with store.begin() as session:
        upsert_items(session, [ItemIn(id="m1", title="Movie")])
    return "m1"


def _send(client: TestClient, route: tuple[str, str, Any], key: str | None) -> Any:
    method, path, body = route
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize("configuration", list(CONFIGURATIONS))
def test_each_role_of_route_against_each_kind_of_key(
    make_client: Callable[..., TestClient], item: str, configuration: str
) -> None:
    client = make_client(**CONFIGURATIONS[configuration])
    for role, routes in ROUTES.items():
        for route in routes:
            for credential, key in CREDENTIALS.items():
                response = _send(client, route, key)
                want = EXPECTED[configuration][role][credential]
                if want == OK:
                    assert response.is_success, (route, credential, response.text)
                    continue
                assert response.status_code == want, (route, credential, response.text)
                assert response.headers["content-type"] == PROBLEM
                assert response.json()["status"] == want
                if want == 401:
                    assert response.headers["www-authenticate"].startswith("Bearer")
                else:
                    assert "www-authenticate" not in response.headers


@pytest.mark.parametrize("configuration", list(CONFIGURATIONS))
def test_readiness_reports_the_mode(
    make_client: Callable[..., TestClient], configuration: str
) -> None:
    client = make_client(**CONFIGURATIONS[configuration])
    want = "open" if configuration == "open" else "keyed"
    assert client.get("/health/ready").json()["auth"] == want


def test_auth_mode_is_open_only_without_any_key() -> None:
    assert auth_mode(Settings(database_url="sqlite://")) == "open"
    for overrides in (
        {"api_keys": [WRITE]},
        {"admin_api_keys": [ADMIN]},
        {"read_api_keys": [READ]},
    ):
        assert auth_mode(Settings(database_url="sqlite://", **overrides)) == "keyed"


def test_refusals_do_not_echo_the_key(make_client: Callable[..., TestClient], item: str) -> None:
    client = make_client(**ALL)
    for key in (UNKNOWN, READ, WRITE):
        response = _send(client, ("GET", "/models", None), key)
        assert response.status_code in (401, 403)
        assert key not in response.text
        assert key not in str(response.headers)
