"""End to end on PostgreSQL, with real processes: import, retrain, serve, swap, roll back.

One scenario (bounded, about a minute on 2 cores):

1. ``rbmrec db upgrade`` and ``rbmrec import movielens`` (ML-100K users 1-300);
2. ``rbmrec retrain``: the first version becomes active;
3. ``rbmrec serve`` on a free port serves it; a new user posts 5 ratings and at once
   gets ``rbm`` recommendations (fold-in), none of them items already rated;
4. ``rbmrec retrain`` again: the new version becomes active, and the running API
   serves it without a restart;
5. ``rbmrec models activate <first>``: rollback, and the API follows;
6. ``POST /admin/retrain`` queues a run, ``rbmrec worker`` runs it, the API serves
   the result, ``GET /admin/retrain/{id}`` reports it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from integration._registry_support import write_subset
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.timeout(240)]

RBMREC = str(Path(sys.executable).with_name("rbmrec"))
TRAIN_ARGS = ["--epochs", "3", "--hidden", "32", "--seed", "7", "--param", "search=false"]
NEW_USER = "e2e-new-user"
NEW_RATINGS = {"50": 5, "172": 5, "181": 4, "1": 4, "100": 2}


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database of this test (dropped afterwards)."""
    admin_url = make_url(
        os.environ.get(
            "RBMREC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        )
    ).set(drivername="postgresql+psycopg")
    admin = create_engine(
        admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        admin.dispose()
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    name = f"rbmrec_e2e_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = condition()
        except httpx.HTTPError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Env:
    """Runs ``rbmrec`` commands against one database and model directory."""

    def __init__(self, database_url: str, model_dir: Path, logs: Path) -> None:
        self.logs = logs
        self.env = dict(os.environ)
        self.env.update(
            RBMREC_DATABASE_URL=database_url,
            RBMREC_MODEL_DIR=str(model_dir),
            RBMREC_MODEL_POLL_SECONDS="0.5",
            RBMREC_PROMOTION_TOLERANCE="0.05",
            RBMREC_NDCG_TOLERANCE="0.05",
            RBMREC_RETRAIN_CRON="0 0 1 1 *",
            RBMREC_API_KEYS="",
            RBMREC_ADMIN_API_KEYS="",
            RBMREC_LOG_LEVEL="INFO",
        )

    def run(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(
            [RBMREC, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert result.returncode == 0, f"rbmrec {' '.join(args)}:\n{result.stdout}{result.stderr}"
        return result.stdout

    def retrain(self) -> dict[str, Any]:
        run: dict[str, Any] = json.loads(self.run("retrain", *TRAIN_ARGS, "--json"))
        return run

    @contextlib.contextmanager
    def process(self, name: str, *args: str) -> Iterator[subprocess.Popen[bytes]]:
        log = self.logs / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [RBMREC, *args], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)


def _recommendations(client: httpx.Client, user_id: str) -> dict[str, Any]:
    response = client.get(f"/users/{user_id}/recommendations", params={"n": 10})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _serves(client: httpx.Client, version: str) -> bool:
    body = _recommendations(client, NEW_USER)
    return body["model_version"] == version and body["strategy"] == "rbm"


def test_retrain_serve_swap_and_rollback(
    pg_database: str, movielens_dir: Path, tmp_path: Path
) -> None:
    started = time.monotonic()
    env = Env(pg_database, tmp_path / "models", tmp_path)
    (tmp_path / "models").mkdir()
    subset = write_subset(tmp_path / "ml-subset", movielens_dir, n_users=300)
    env.run("db", "upgrade")
    env.run("import", "movielens", str(subset), "--no-progress")

    first = env.retrain()
    assert first["status"] == "activated", first
    v1 = first["model_version_id"]

    port = _free_port()
    with (
        env.process("serve", "serve", "--host", "127.0.0.1", "--port", str(port)) as server,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client,
    ):
        _wait_for(lambda: client.get("/health/ready").status_code == 200, 60, "the API to be ready")
        assert server.poll() is None

        # a new user rates 5 items and gets rbm recommendations at once
        for item_id, rating in NEW_RATINGS.items():
            response = client.post(
                "/ratings", json={"user_id": NEW_USER, "item_id": item_id, "rating": rating}
            )
            assert response.status_code == 201, response.text
        body = _wait_for(lambda: _serves(client, v1) and _recommendations(client, NEW_USER), 20, v1)
        assert len(body["items"]) == 10
        assert not {item["item_id"] for item in body["items"]} & set(NEW_RATINGS)

        # retrain: the new ratings changed the store, the new version goes live
        second = env.retrain()
        assert second["status"] == "activated", second
        v2 = second["model_version_id"]
        assert v2 != v1
        assert second["n_ratings"] == first["n_ratings"] + len(NEW_RATINGS)
        _wait_for(lambda: _serves(client, v2), 20, f"the API to serve {v2}")

        listed = client.get("/models").json()
        assert listed["active_version"] == v2
        by_id = {v["id"]: v for v in listed["versions"]}
        assert by_id[v1]["status"] == "retired"
        # the curves of each part, from the model's own validation split, one per epoch
        curves = by_id[v2]["training_curves"]
        assert set(curves) == {"user_rbm", "item_rbm", "ranker"}
        user = curves["user_rbm"]
        assert len(user["validation_rmse"]) == len(user["epoch"]) >= 3

        # rollback with the CLI; the API follows without a restart
        assert f"active model version: {v1}" in env.run("models", "activate", v1)
        _wait_for(lambda: _serves(client, v1), 20, f"the API to roll back to {v1}")

        # a retrain asked through the API, run by the worker
        response = client.post("/admin/retrain")
        assert response.status_code == 202, response.text
        run_id = response.json()["id"]
        assert response.headers["location"] == f"/admin/retrain/{run_id}"
        assert client.get(f"/admin/retrain/{run_id}").json()["status"] == "queued"
        client.post(
            "/ratings", json={"user_id": NEW_USER, "item_id": "7", "rating": 3}
        ).raise_for_status()
        with env.process("worker", "worker", "--poll-seconds", "0.2", *TRAIN_ARGS):
            run = _wait_for(
                lambda: (r := client.get(f"/admin/retrain/{run_id}").json())["finished_at"] and r,
                60,
                "the worker to finish the queued run",
            )
        assert run["status"] == "activated", run
        assert run["trigger"] == "api"
        v3 = run["model_version_id"]
        _wait_for(lambda: _serves(client, v3), 20, f"the API to serve {v3}")
        assert server.poll() is None  # the same process all along

    assert time.monotonic() - started < 120
