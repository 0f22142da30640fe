"""Security controls: key comparison and secrecy, SQL never built from values, CORS,
security headers, and documentation pages that production can switch off.

Settings are read from the environment here (``RBMREC_*``), the way a deployment
sets them, and a real server process is used where its own logging matters.
"""

from __future__ import annotations

import hmac
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from _reliability_support import PROBLEM, PROJECT_ROOT, api_server, free_port, rbmrec_command
from _sql_scan import scan_paths, scan_source
from fastapi.testclient import TestClient

from app.api import security
from app.api.main import create_app
from app.settings import Settings, get_settings

KEYS = ["first-key-Ax81", "second-key-Bq27", "third-key-Cz63"]
ADMIN = "admin-key-Dm45"


@pytest.fixture
def env_app(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_url: str
) -> Iterator[Callable[..., TestClient]]:
    """Start the app from environment variables (``RBMREC_X=value`` keyword arguments)."""
    clients: list[TestClient] = []

    def start(base_url: str = "http://testserver", **variables: str) -> TestClient:
        monkeypatch.setenv("RBMREC_DATABASE_URL", sqlite_url)
        monkeypatch.setenv("RBMREC_MODEL_DIR", str(tmp_path))
        for name, value in variables.items():
            monkeypatch.setenv(f"RBMREC_{name.upper()}", value)
        get_settings.cache_clear()
        client = TestClient(create_app(), base_url=base_url)
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)
    get_settings.cache_clear()


# -- keys ------------------------------------------------------------------------------------
def test_keys_are_compared_in_constant_time_against_every_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", counting)
    for presented in [*KEYS, "wrong", KEYS[0][:-1], KEYS[0] + "x", "k" * 10_000, ""]:
        calls.clear()
        matched = security.key_matches(presented, KEYS)
        assert matched == (presented in KEYS)
        # no early exit, and digests of one length whatever the key's length
        assert len(calls) == len(KEYS)
        assert set(calls) == {(32, 32)}


def test_the_http_layer_uses_the_constant_time_check(
    monkeypatch: pytest.MonkeyPatch, env_app: Callable[..., TestClient]
) -> None:
    client = env_app(api_keys=",".join(KEYS), admin_api_keys=ADMIN)
    seen: list[int] = []
    real = security.key_matches

    def spy(presented: str, keys: list[str]) -> bool:
        seen.append(len(keys))
        return real(presented, keys)

    monkeypatch.setattr(security, "key_matches", spy)
    body = {"user_id": "u", "item_id": "nope", "rating": 4}
    assert (
        client.post("/ratings", json=body, headers={"Authorization": "Bearer x"}).status_code == 403
    )
    assert (
        client.post(
            "/ratings", json=body, headers={"Authorization": f"Bearer {KEYS[2]}"}
        ).status_code
        == 404
    )
    assert client.get("/models", headers={"Authorization": f"Bearer {KEYS[0]}"}).status_code == 403
    assert client.get("/models", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200
    # writes check the write and admin keys; admin routes the admin keys only
    assert seen == [len(KEYS) + 1, len(KEYS) + 1, 1, 1]


@pytest.mark.e2e
def test_keys_never_reach_the_logs_of_a_real_server(sqlite_url: str, tmp_path: Path) -> None:
    env = {
        "RBMREC_DATABASE_URL": sqlite_url,
        "RBMREC_MODEL_DIR": str(tmp_path / "models"),
        "RBMREC_API_KEYS": ",".join(KEYS),
        "RBMREC_ADMIN_API_KEYS": ADMIN,
        "RBMREC_LOG_LEVEL": "DEBUG",
    }
    wrong = "wrong-key-Ez99"
    with api_server(env, tmp_path) as server:
        for key in [*KEYS, ADMIN, wrong, KEYS[0][:-1]]:
            headers = {"Authorization": f"Bearer {key}"}
            httpx.post(
                f"{server.url}/ratings",
                json={"user_id": "u", "item_id": "x", "rating": 4},
                headers=headers,
            )
            httpx.get(f"{server.url}/models", headers=headers)
            httpx.post(f"{server.url}/admin/retrain", headers=headers)
        metrics = httpx.get(f"{server.url}/metrics").text
        log = server.log_text()
    assert "Application startup complete" in log
    for secret in [*KEYS, ADMIN, wrong, KEYS[0][:-1]]:
        assert secret not in log
        assert secret not in metrics


def test_a_bad_configuration_error_does_not_echo_the_keys(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "RBMREC_DATABASE_URL": "sqlite:///:memory:",
        "RBMREC_API_KEYS": ",".join(KEYS),
        "RBMREC_ADMIN_API_KEYS": ADMIN,
        "RBMREC_WORKERS": "0",  # invalid
    }
    done = subprocess.run(
        [*rbmrec_command(), "serve", "--port", str(free_port())],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "invalid configuration" in done.stderr
    for secret in [*KEYS, ADMIN]:
        assert secret not in done.stdout + done.stderr


def test_start_up_logs_say_the_api_is_open_without_keys(
    env_app: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        env_app()
    assert "RBMREC_API_KEYS is not set" in caplog.text


# -- SQL ----------------------------------------------------------------------------------------
def test_ruff_s608_finds_no_string_built_sql_in_app_or_rbm_core() -> None:
    ruff = Path(sys.executable).with_name("ruff")
    done = subprocess.run(
        [str(ruff), "check", "--select", "S608", "--no-cache", "app", "rbm_core"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_sql_text_is_built_from_values_in_app_or_rbm_core() -> None:
    findings = scan_paths([PROJECT_ROOT / "app", PROJECT_ROOT / "rbm_core"], PROJECT_ROOT)
    assert findings == [], "\n".join(map(str, findings))


BAD = {
    "f-string": "def q(user):\n    return f\"SELECT * FROM ratings WHERE user_id = '{user}'\"\n",
    "percent": 'def q(v):\n    return "DELETE FROM ratings WHERE item_id = %s" % v\n',
    "format": "def q(v):\n    return \"UPDATE items SET title = '{}'\".format(v)\n",
    "concat": 'def q(v):\n    return "SELECT 1 FROM items WHERE id = " + v\n',
    "via a helper": (
        "def _where(clause):\n    return f'SELECT * FROM ratings WHERE {clause}'\n"
        "def public(user):\n    return _where(f\"user_id = '{user}'\")\n"
    ),
    "via a local": "def q(v):\n    name = v.strip()\n    return f'DROP TABLE {name}'\n",
    "via a loop": "def q(vs):\n    for v in vs:\n        run(f'ANALYZE {v}')\n",
}
GOOD = {
    "constant": "_STAGE = 'stage'\ndef q():\n    return f'DROP TABLE IF EXISTS {_STAGE}'\n",
    "number cast": "def q(t):\n    return f'PRAGMA busy_timeout={int(t * 1000)}'\n",
    "literal fragments through helpers": (
        "def _sql(now, where):\n    return f'INSERT INTO r SELECT {now} FROM s WHERE {where}'\n"
        "def merge(pg):\n    now = 'now()' if pg else \"datetime('now')\"\n"
        "    return _sql(now, f'r.id IS NULL OR r.v {\"<>\"} s.v')\n"
    ),
    "not sql": "def msg(v):\n    return f'could not read {v}'\n",
}


@pytest.mark.parametrize("name", list(BAD))
def test_the_sql_scanner_catches_sql_built_from_values(name: str) -> None:
    assert scan_source(BAD[name]), name


@pytest.mark.parametrize("name", list(GOOD))
def test_the_sql_scanner_accepts_fixed_fragments(name: str) -> None:
    assert scan_source(GOOD[name]) == [], name


# -- CORS, headers, docs -------------------------------------------------------------------
PREFLIGHT = {
    "Origin": "https://app.example",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type,authorization",
}


def test_cors_is_off_unless_origins_are_configured(env_app: Callable[..., TestClient]) -> None:
    closed = env_app()
    for response in (
        closed.options("/ratings", headers=PREFLIGHT),
        closed.get("/items", headers={"Origin": "https://app.example"}),
    ):
        assert "access-control-allow-origin" not in response.headers

    opened = env_app(cors_origins="https://app.example, https://admin.example")
    allowed = opened.options("/ratings", headers=PREFLIGHT)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in allowed.headers["access-control-allow-methods"]
    simple = opened.get("/items", headers={"Origin": "https://admin.example"})
    assert simple.headers["access-control-allow-origin"] == "https://admin.example"
    other = opened.options("/ratings", headers={**PREFLIGHT, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    assert (
        "access-control-allow-origin"
        not in opened.get("/items", headers={"Origin": "https://evil.example"}).headers
    )


COMMON_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def test_every_kind_of_response_carries_the_security_headers(
    env_app: Callable[..., TestClient],
) -> None:
    client = env_app(max_body_bytes="1000")
    app = client.app

    def explode() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/explode", explode)  # type: ignore[attr-defined]
    responses = {
        200: client.get("/items"),
        201: client.put("/items/h1", json={"title": "t"}),
        204: (
            client.post("/ratings", json={"user_id": "u", "item_id": "h1", "rating": 4}),
            client.delete("/users/u/ratings/h1"),
        )[1],
        404: client.get("/items/none"),
        405: client.delete("/items"),
        413: client.post(
            "/ratings/batch", content=b"x" * 2000, headers={"content-type": "application/json"}
        ),
        415: client.post("/ratings", content=b"x", headers={"content-type": "text/plain"}),
        422: client.get("/users/u/recommendations?n=0"),
        500: client.get("/explode"),
    }
    for status, response in responses.items():
        assert response.status_code == status, (status, response.text)
        for name, value in COMMON_HEADERS.items():
            assert response.headers[name] == value, (status, name)
        assert (
            response.headers["content-security-policy"]
            == "default-src 'none'; frame-ancestors 'none'"
        )
        assert response.headers["cache-control"] == "no-store"
        assert "strict-transport-security" not in response.headers  # plain HTTP
    metrics = client.get("/metrics")
    assert metrics.headers["x-content-type-options"] == "nosniff"
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["x-frame-options"] == "DENY"
    # Swagger UI's assets are served by the app: its page allows this origin only
    policy = docs.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self' 'unsafe-inline'" in policy
    assert "http" not in policy


def test_https_responses_add_strict_transport_security(env_app: Callable[..., TestClient]) -> None:
    client = env_app(base_url="https://testserver")
    response = client.get("/health/live")
    assert response.headers["strict-transport-security"].startswith("max-age=")


def test_database_unavailable_answers_carry_the_headers_too(tmp_path: Path) -> None:
    dead = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x"
    settings = Settings(database_url=dead, model_dir=tmp_path, db_timeout_seconds=1)
    with TestClient(create_app(settings)) as client:
        response = client.get("/users/u/ratings")
    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("value", ["false", "0", "no", "off"])
def test_docs_pages_are_off_with_rbmrec_docs_enabled_false(
    env_app: Callable[..., TestClient], value: str
) -> None:
    client = env_app(docs_enabled=value)
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == PROBLEM
    assert client.get("/health/live").status_code == 200
    on = env_app(docs_enabled="true")
    assert on.get("/openapi.json").status_code == 200


@pytest.mark.e2e
def test_docs_are_off_in_a_real_server_configured_by_environment(
    sqlite_url: str, tmp_path: Path
) -> None:
    env = {
        "RBMREC_DATABASE_URL": sqlite_url,
        "RBMREC_MODEL_DIR": str(tmp_path / "models"),
        "RBMREC_DOCS_ENABLED": "false",
    }
    with api_server(env, tmp_path) as server:
        assert httpx.get(f"{server.url}/docs").status_code == 404
        assert httpx.get(f"{server.url}/openapi.json").status_code == 404
        assert httpx.get(f"{server.url}/health/live").status_code == 200
