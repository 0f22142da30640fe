"""Behind a reverse proxy: X-Forwarded-* believed from trusted proxies only; replica names.

Through the real app (``TestClient`` with a chosen peer address) and through a real
``rbmrec serve`` process, whose uvicorn access log must show the forwarded client
only when the peer is a trusted proxy.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from _api_support import free_port, rbmrec_command
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.api.main import create_app
from app.api.metrics import MAX_CLIENT_LABELS, OTHER_CLIENTS, ApiMetrics
from app.settings import Settings

PROXY = "10.0.0.5"
CLIENT = "203.0.113.7"


@contextmanager
def app_seen_from(
    make_settings: Callable[..., Settings], peer: str, **overrides: object
) -> Iterator[TestClient]:
    """The app (lifespan included), every request coming from the address ``peer``."""
    with TestClient(create_app(make_settings(**overrides)), client=(peer, 41000)) as client:
        yield client


def client_counts(client: TestClient) -> dict[str, float]:
    """``rbmrec_http_client_requests_total`` by client address (the /metrics call excluded)."""
    text = client.get("/metrics").text
    pattern = r'^rbmrec_http_client_requests_total\{client="([^"]*)"\} (\S+)$'
    return {m.group(1): float(m.group(2)) for m in re.finditer(pattern, text, re.MULTILINE)}


def forwarded(for_: str, proto: str = "https") -> dict[str, str]:
    return {"X-Forwarded-For": for_, "X-Forwarded-Proto": proto}


def test_a_trusted_proxy_forwards_the_client_address_and_scheme(
    make_settings: Callable[..., Settings],
) -> None:
    with app_seen_from(make_settings, PROXY, trusted_proxies=[PROXY]) as client:
        response = client.get("/health/live", headers=forwarded(CLIENT))
        assert response.status_code == 200
        # the scheme the proxy forwarded: HTTPS, hence HSTS
        assert "strict-transport-security" in response.headers
        assert client_counts(client) == {CLIENT: 1.0}


def test_forwarded_headers_from_any_other_peer_are_ignored(
    make_settings: Callable[..., Settings],
) -> None:
    with app_seen_from(make_settings, "10.0.0.6", trusted_proxies=[PROXY]) as client:
        response = client.get("/health/live", headers=forwarded(CLIENT))
        assert "strict-transport-security" not in response.headers
        assert client_counts(client) == {"10.0.0.6": 1.0}
    with app_seen_from(make_settings, PROXY, trusted_proxies=[]) as client:
        client.get("/health/live", headers=forwarded(CLIENT))
        assert client_counts(client) == {PROXY: 1.0}


def test_the_client_is_the_right_most_untrusted_hop(
    make_settings: Callable[..., Settings],
) -> None:
    trusted = ["10.0.0.0/24"]
    with app_seen_from(make_settings, PROXY, trusted_proxies=trusted) as client:
        # a client's own X-Forwarded-For, then each proxy appends what it saw
        client.get("/health/live", headers=forwarded(f"1.1.1.1, {CLIENT}, 10.0.0.9"))
        # only proxies: the first of them
        client.get("/health/live", headers=forwarded("10.0.0.8, 10.0.0.9"))
        # garbage or a port where the client should be: the peer stays the client
        client.get("/health/live", headers=forwarded("1.1.1.1, not-an-address"))
        client.get("/health/live", headers=forwarded(f"{CLIENT}:5555"))
        # IPv6, bracketed or not, and two X-Forwarded-For lines read as one list
        client.get("/health/live", headers=forwarded("[2001:db8::1]"))
        client.get(
            "/health/live",
            headers=[("X-Forwarded-For", "198.51.100.1"), ("X-Forwarded-For", "10.0.0.9")],
        )
        assert client_counts(client) == {
            CLIENT: 1.0,
            "10.0.0.8": 1.0,
            PROXY: 2.0,
            "2001:db8::1": 1.0,
            "198.51.100.1": 1.0,
        }


def test_a_trusted_proxy_given_by_host_name_is_resolved(
    make_settings: Callable[..., Settings],
) -> None:
    loopback = socket.getaddrinfo("localhost", None, type=socket.SOCK_STREAM)[0][4][0]
    with app_seen_from(make_settings, loopback, trusted_proxies=["localhost"]) as client:
        client.get("/health/live", headers=forwarded(CLIENT))
        assert client_counts(client) == {CLIENT: 1.0}
    with app_seen_from(make_settings, PROXY, trusted_proxies=["localhost"]) as client:
        client.get("/health/live", headers=forwarded(CLIENT))
        assert client_counts(client) == {PROXY: 1.0}


def test_every_response_names_the_replica(make_settings: Callable[..., Settings]) -> None:
    replica = socket.gethostname()
    with app_seen_from(make_settings, PROXY, max_body_bytes=100) as client:
        responses = [
            client.get("/health/live"),
            client.get("/no/such/route"),
            client.get("/users/u1/recommendations", params={"n": 0}),
            client.post("/ratings", content=b"x" * 200, headers={"Content-Type": "text/plain"}),
        ]
        assert [r.status_code for r in responses] == [200, 404, 422, 413]
        assert all(r.headers["rbmrec-replica"] == replica for r in responses)
        ready = client.get("/health/ready")
        assert ready.json()["replica"] == replica
        metrics = client.get("/metrics").text
        assert f'rbmrec_replica_info{{replica="{replica}"}} 1.0' in metrics


def test_cors_exposes_the_replica_header(make_settings: Callable[..., Settings]) -> None:
    origin = "https://dashboard.example"
    with app_seen_from(make_settings, PROXY, cors_origins=[origin]) as client:
        response = client.get("/health/live", headers={"Origin": origin})
        assert "rbmrec-replica" in response.headers["access-control-expose-headers"].lower()


def test_client_addresses_in_the_metrics_are_bounded() -> None:
    metrics = ApiMetrics("r1")
    for i in range(MAX_CLIENT_LABELS + 5):
        metrics.count_client(f"198.51.100.{i}")
    metrics.count_client("198.51.100.0")
    text = metrics.render().decode()
    series = re.findall(
        r'^rbmrec_http_client_requests_total\{client="([^"]*)"\} (\S+)$', text, re.M
    )
    assert len(series) == MAX_CLIENT_LABELS + 1
    assert (OTHER_CLIENTS, "5.0") in series
    assert ("198.51.100.0", "2.0") in series


@pytest.mark.parametrize("entry", ["not a host!", "10.0.0.0/33", "1.2.3", "-proxy", "a..b"])
def test_a_bad_trusted_proxy_is_a_clear_configuration_error(entry: str) -> None:
    with pytest.raises(ValidationError, match="is not an IP address, a network"):
        Settings(_env_file=None, trusted_proxies=entry)  # type: ignore[call-arg]


def test_trusted_proxies_accept_addresses_networks_and_names() -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, trusted_proxies="10.0.0.5, 172.16.0.0/12,proxy,::1,rbmrec_proxy.local"
    )
    assert settings.trusted_proxies == [
        "10.0.0.5",
        "172.16.0.0/12",
        "proxy",
        "::1",
        "rbmrec_proxy.local",
    ]
    assert Settings(_env_file=None).trusted_proxies == ["127.0.0.1", "::1"]  # type: ignore[call-arg]


@pytest.mark.e2e
def test_rbmrec_serve_logs_the_forwarded_client_only_from_a_trusted_proxy(
    sqlite_url: str, tmp_path: Path
) -> None:
    """uvicorn's own X-Forwarded-For handling (which trusts 127.0.0.1) is off: the app's
    decides, and the access log follows it. 127.0.0.2 plays the proxy (Linux answers
    on all of 127.0.0.0/8)."""
    port = free_port()
    env = {
        **os.environ,
        "RBMREC_DATABASE_URL": sqlite_url,
        "RBMREC_MODEL_DIR": str(tmp_path / "models"),
        "RBMREC_TRUSTED_PROXIES": "127.0.0.2",
    }
    process = subprocess.Popen(
        [*rbmrec_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    proxy = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=5)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()[0]
            try:
                if httpx.get(f"{base}/health/live", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        via_proxy = proxy.get(f"{base}/items?limit=1", headers=forwarded(CLIENT))
        direct = httpx.get(f"{base}/items?limit=2", headers=forwarded("198.51.100.9"), timeout=5)
        assert via_proxy.status_code == direct.status_code == 200
        assert via_proxy.headers["rbmrec-replica"] == socket.gethostname()
    finally:
        proxy.close()
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert f'{CLIENT}:0 - "GET /items?limit=1 HTTP/1.1" 200' in output
    assert re.search(r'127\.0\.0\.1:\d+ - "GET /items\?limit=2 HTTP/1\.1" 200', output), output
    assert "198.51.100.9" not in output
