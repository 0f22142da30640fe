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

KEYS = ["first-key-Ax81-Rt5w", "second-key-Bq27-Np3d", "third-key-Cz63-Hs8k"]
ADMIN = "admin-key-Dm45-Wf2y"
READ = "read-key-Jv61-Qc4z"


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
    client = env_app(api_keys=",".join(KEYS), admin_api_keys=ADMIN, read_api_keys=READ)
    seen: list[int] = []
    real = security.key_matches

    def spy(presented: str, keys: list[str]) -> bool:
        seen.append(len(keys))
        return real(presented, keys)

    monkeypatch.setattr(security, "key_matches", spy)
    body = {"user_id": "u", "item_id": "nope", "rating": 4}
    for key, route, status in [
        ("x", "/ratings", 401),
        (KEYS[2], "/ratings", 404),
        (KEYS[0], "/models", 403),
        (ADMIN, "/models", 200),
        (READ, "/users/u/ratings", 200),
    ]:
        headers = {"Authorization": f"Bearer {key}"}
        if route == "/ratings":
            response = client.post(route, json=body, headers=headers)
        else:
            response = client.get(route, headers=headers)
        assert response.status_code == status, (key, route)
    # every presented key is compared with every configured key of every role (admin,
    # write, read), whichever matched: which one matched shows in no timing
    assert seen == [1, len(KEYS), 1] * 5


@pytest.mark.e2e
def test_keys_never_reach_the_logs_of_a_real_server(sqlite_url: str, tmp_path: Path) -> None:
    env = {
        "RBMREC_DATABASE_URL": sqlite_url,
        "RBMREC_MODEL_DIR": str(tmp_path / "models"),
        "RBMREC_API_KEYS": ",".join(KEYS),
        "RBMREC_ADMIN_API_KEYS": ADMIN,
        "RBMREC_LOG_LEVEL": "DEBUG",
    }
    wrong = "wrong-key-Ez99-Mn4b"
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


def _serve(tmp_path: Path, *args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """``rbmrec serve ARGS`` with only ``RBMREC_*`` VARIABLES set, to its refusal (or 8 s)."""
    env = {
        "PATH": "/usr/bin:/bin",
        "RBMREC_DATABASE_URL": "sqlite:///:memory:",
        **{f"RBMREC_{k.upper()}": v for k, v in variables.items()},
    }
    try:
        return subprocess.run(
            [*rbmrec_command(), "serve", "--port", str(free_port()), *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=8,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        # still serving: what it printed until then
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        return subprocess.CompletedProcess(exc.cmd, -1, out, err)


@pytest.mark.parametrize("short", ["", "x" * 15])
def test_keys_shorter_than_16_characters_are_refused_at_start(tmp_path: Path, short: str) -> None:
    for variable in ("api_keys", "admin_api_keys", "read_api_keys"):
        keys = f"{KEYS[0]},short-key{short[:6]}"
        done = _serve(tmp_path, **{variable: keys})
        assert done.returncode not in (0, -1), done.stderr
        assert "at least 16 characters" in done.stderr
        assert "number(s) 2" in done.stderr
        assert f"short-key{short[:6]}" not in done.stdout + done.stderr
        assert KEYS[0] not in done.stdout + done.stderr
    with pytest.raises(ValueError, match="at least 16"):
        Settings(api_keys=["x" * 15])
    assert Settings(api_keys=["x" * 16]).api_keys[0].get_secret_value() == "x" * 16


def test_keys_never_show_in_the_settings_repr_or_dump() -> None:
    settings = Settings(api_keys=KEYS, admin_api_keys=[ADMIN], read_api_keys=[READ])
    for text in (repr(settings), str(settings), str(settings.model_dump())):
        for secret in [*KEYS, ADMIN, READ]:
            assert secret not in text


def test_serve_refuses_an_open_api_on_a_non_loopback_address(tmp_path: Path) -> None:
    for host in ("0.0.0.0", "::", "192.0.2.10", "example.org"):
        done = _serve(tmp_path, "--host", host)
        assert done.returncode == 1, done.stderr
        assert f"refusing to serve an open API on {host}" in done.stderr
        assert "RBMREC_ALLOW_OPEN=true" in done.stderr
    # the same address through RBMREC_HOST, as the container images set it
    done = _serve(tmp_path, host="0.0.0.0")
    assert done.returncode == 1
    assert "refusing to serve an open API on 0.0.0.0" in done.stderr


@pytest.mark.parametrize(
    ("args", "variables", "banner"),
    [
        (("--host", "127.0.0.1"), {}, "auth: OPEN"),
        (("--host", "0.0.0.0"), {"allow_open": "true"}, "auth: OPEN"),
        (("--host", "0.0.0.0"), {"admin_api_keys": ADMIN}, "auth: keyed"),
    ],
)
def test_serve_starts_on_loopback_with_keys_or_when_open_is_allowed(
    tmp_path: Path, args: tuple[str, ...], variables: dict[str, str], banner: str
) -> None:
    done = _serve(tmp_path, *args, **variables)
    assert done.returncode == -1, done.stderr  # still serving after 8 s
    assert banner in done.stderr
    assert ADMIN not in done.stderr
    if banner == "auth: keyed":
        assert "admin (1)" in done.stderr
        assert "per-user reads public" in done.stderr


def test_start_up_logs_say_the_api_is_open_without_keys(
    env_app: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        env_app()
    assert "auth: open" in caplog.text


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
