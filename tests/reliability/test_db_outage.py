"""PostgreSQL going away under traffic, simulated with a TCP proxy the test controls.

The shared PostgreSQL server cannot be stopped (other tests use it), so a real
``rbmrec serve`` process reaches it through :class:`TcpProxy`. Cutting the proxy
is what a stopped server looks like to the service: open connections are reset,
new ones refused. A blackhole (connections accepted, nothing answered) is what a
hung server or a lost network looks like to new connections.

During the outage every request must end quickly (within the configured database
timeout and a margin) with a 503 problem, never a 500 or a hang, while requests
that need no database keep working; ``/health/ready`` says the database is down.
Once the proxy forwards again the service recovers by itself, without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from _reliability_support import (
    PROBLEM,
    ApiServer,
    Store,
    TcpProxy,
    api_server,
    can_drop_packets,
    dropped_port,
)
from sqlalchemy.engine import make_url

# real server processes for seconds each: `make test` runs them, `make test-fast` not
pytestmark = [pytest.mark.postgres, pytest.mark.e2e, pytest.mark.slow]

DB_TIMEOUT = 2.0
"""RBMREC_DB_TIMEOUT_SECONDS of the server under test."""

LIMITS = {"stopped": DB_TIMEOUT + 2.5, "hung": DB_TIMEOUT + 2.5, "partition": 2 * DB_TIMEOUT + 2.5}
"""Longest any request may take during each outage: the database timeout (a partition:
one to notice the pooled connection is dead, one for the reconnection attempt), plus
a scheduling margin."""

RATED = {"50": 5, "181": 4, "1": 3, "100": 2, "98": 1}


@dataclass
class Outcome:
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    slowest: float = 0.0
    bad: list[str] = field(default_factory=list)


@pytest.fixture
def proxied(pg_store: Store, tmp_path: Path) -> Iterator[tuple[TcpProxy, ApiServer]]:
    """The server, reaching PostgreSQL through a proxy."""
    target = make_url(pg_store.url)
    proxy = TcpProxy((target.host or "127.0.0.1", target.port or 5432))
    url = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    env = {
        "RBMREC_DATABASE_URL": url,
        "RBMREC_MODEL_DIR": str(pg_store.model_dir),
        "RBMREC_DB_TIMEOUT_SECONDS": str(DB_TIMEOUT),
        "RBMREC_MODEL_POLL_SECONDS": "1",
    }
    try:
        with api_server(env, tmp_path) as server:
            yield proxy, server
    finally:
        proxy.close()


async def _requests(http: httpx.AsyncClient, outcome: Outcome, rounds: int, limit: float) -> None:
    """Reads and writes from 6 clients; records statuses, checks bodies and times."""

    async def one(n: int) -> None:
        for k in range(rounds):
            method, path, body = [
                ("GET", f"/users/{n}/recommendations", None),
                ("GET", f"/users/{n}/ratings", None),
                ("POST", "/ratings", {"user_id": f"out-{n}", "item_id": "50", "rating": 4}),
                ("GET", "/items/50", None),
                ("GET", "/health/ready", None),
            ][(n + k) % 5]
            started = time.monotonic()
            try:
                response = await http.request(method, path, json=body)
            except httpx.HTTPError as exc:
                outcome.bad.append(f"{method} {path}: {type(exc).__name__}")
                continue
            took = time.monotonic() - started
            outcome.slowest = max(outcome.slowest, took)
            outcome.statuses[(path.split("/")[1], response.status_code)] += 1
            if took > limit:
                outcome.bad.append(f"{method} {path}: {took:.1f}s")
            if response.status_code >= 500:
                if response.status_code != 503 or response.headers["content-type"] != PROBLEM:
                    outcome.bad.append(f"{method} {path}: {response.status_code} {response.text}")
                elif "retry-after" not in response.headers:
                    outcome.bad.append(f"{method} {path}: 503 without Retry-After")

    await asyncio.gather(*(one(n) for n in range(1, 7)))


def _traffic(server: ApiServer, rounds: int, limit: float = LIMITS["stopped"]) -> Outcome:
    outcome = Outcome()

    async def main() -> None:
        limits = httpx.Limits(keepalive_expiry=1.0)
        async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as http:
            await _requests(http, outcome, rounds, limit)

    asyncio.run(main())
    return outcome


def _wait_recovered(server: ApiServer, timeout: float = 30.0) -> float:
    """Seconds until reads, writes and readiness all succeed again."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            ready = httpx.get(f"{server.url}/health/ready", timeout=10)
            read = httpx.get(f"{server.url}/users/1/recommendations", timeout=10)
            write = httpx.post(
                f"{server.url}/ratings",
                json={"user_id": "back", "item_id": "50", "rating": 5},
                timeout=10,
            )
        except httpx.HTTPError:
            time.sleep(0.1)
            continue
        if (ready.status_code, read.status_code, write.status_code) in {
            (200, 200, 201),
            (200, 200, 200),
        }:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"the service did not recover within {timeout:.0f}s")


@pytest.mark.parametrize("fault", ["stopped", "hung", "partition"])
def test_outage_fails_fast_with_503_and_recovers_without_restart(
    proxied: tuple[TcpProxy, ApiServer], fault: str
) -> None:
    proxy, server = proxied
    for item, value in RATED.items():
        httpx.post(
            f"{server.url}/ratings", json={"user_id": "fan", "item_id": item, "rating": value}
        ).raise_for_status()
    before = _traffic(server, rounds=3)
    assert before.bad == []
    assert {status for _, status in before.statuses} <= {200, 201}

    # stopped: open connections reset, new ones refused; hung: new connections get
    # no answer; partition: every packet lost, pooled connections included
    with contextlib.ExitStack() as outage:
        if fault == "partition":
            reason = can_drop_packets()
            if reason is not None:
                pytest.skip(f"a real partition cannot be simulated here: {reason}")
            outage.enter_context(dropped_port(proxy.port))
        else:
            proxy.cut()
            if fault == "hung":
                proxy.blackhole()
        during = _traffic(server, rounds=4, limit=LIMITS[fault])
        ready = httpx.get(f"{server.url}/health/ready", timeout=30)
        live = httpx.get(f"{server.url}/health/live", timeout=30)
        invalid = httpx.get(f"{server.url}/users/fan/recommendations?n=0", timeout=30)
    restored_at = time.monotonic()
    proxy.restore()
    recovery = _wait_recovered(server)

    print(
        f"DB OUTAGE ({fault}): during {sum(during.statuses.values())} requests "
        f"{dict(during.statuses)}, slowest {during.slowest:.2f}s; recovered "
        f"{recovery:.2f}s after the database returned"
    )
    assert during.bad == [], during.bad[:5]
    data_statuses = {s for (kind, s) in during.statuses if kind in ("users", "ratings", "items")}
    assert data_statuses == {503}, during.statuses
    assert ready.status_code == 503
    assert ready.headers["content-type"] == PROBLEM
    body = ready.json()
    assert body["database"]["ok"] is False
    assert body["model"]["loaded"] is True  # the loaded model is kept
    assert "127.0.0.1" not in ready.text  # no internal addresses to clients
    assert live.status_code == 200
    assert invalid.status_code == 422  # validation needs no database
    assert recovery < 15, recovery
    assert time.monotonic() - restored_at < 20

    after = _traffic(server, rounds=2)
    assert after.bad == []
    assert {status for _, status in after.statuses} <= {200, 201}
    recs = httpx.get(f"{server.url}/users/fan/recommendations").json()
    assert recs["strategy"] == "rbm"
    assert not {i["item_id"] for i in recs["items"]} & set(RATED)
    assert "Traceback" not in server.log_text()
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'status="503"' in metrics
    assert json.dumps(body)  # the readiness body is plain JSON
