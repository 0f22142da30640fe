"""The worker on an empty or tiny ratings table, and through a database outage.

A real ``rbmrec worker`` process polls the queue. Retrains requested through the
admin API on an empty, then a tiny table are each recorded once, ``skipped`` with a
clear reason; the worker neither exits nor loops on them. When its database goes
away (a proxy cut) it stays up, backs off, and runs the queued retrain once the
database is back; SIGTERM then stops it cleanly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _reliability_support import TcpProxy, rbmrec_command, wait_for
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from app.api.main import create_app
from app.db.engine import make_engine, make_sessionmaker
from app.db.items import ItemIn, upsert_items
from app.db.ratings import RatingIn, upsert_ratings
from app.services import retrain
from app.settings import Settings
from rbm_core.scale import DEFAULT_SCALE

# real server processes for seconds each: `make test` runs them, `make test-fast` not
pytestmark = [pytest.mark.postgres, pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def store(pg_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(pg_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def _runs(store: sessionmaker[Session]) -> list[retrain.TrainingRunInfo]:
    with store() as session:
        return retrain.list_runs(session, limit=100)


def _finished(store: sessionmaker[Session], run_id: str) -> retrain.TrainingRunInfo | None:
    with store() as session:
        info = retrain.get_run(session, run_id)
    return info if info is not None and info.finished else None


def test_the_worker_records_empty_and_tiny_stores_once_and_survives_an_outage(
    pg_url: str, store: sessionmaker[Session], tmp_path: Path
) -> None:
    target = make_url(pg_url)
    proxy = TcpProxy((target.host or "127.0.0.1", target.port or 5432))
    proxied = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    model_dir = tmp_path / "models"
    env = {
        **os.environ,
        "RBMREC_DATABASE_URL": proxied,
        "RBMREC_MODEL_DIR": str(model_dir),
        "RBMREC_RETRAIN_CRON": "0 0 1 1 *",
        "RBMREC_DB_TIMEOUT_SECONDS": "1",
        "RBMREC_LOG_LEVEL": "INFO",
    }
    api = TestClient(create_app(Settings(database_url=pg_url, model_dir=model_dir)))
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [
                *rbmrec_command(),
                "worker",
                "--poll-seconds",
                "0.2",
                "--epochs",
                "2",
                "--hidden",
                "8",
            ],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        with api:
            # an empty table
            queued = api.post("/admin/retrain").json()
            empty = wait_for(lambda: _finished(store, queued["id"]), 60, "the first run")
            assert empty.status == "skipped"
            assert empty.reason == "the ratings table is empty: nothing to train on"

            # a tiny one
            with store.begin() as session:
                upsert_items(session, [ItemIn(id=i) for i in ("1", "2", "3")])
                upsert_ratings(
                    session,
                    [RatingIn("u1", i, 4.0) for i in ("1", "2", "3")],
                    scale=DEFAULT_SCALE,
                )
            queued = api.post("/admin/retrain").json()
            tiny = wait_for(lambda: _finished(store, queued["id"]), 60, "the second run")
            assert tiny.status == "skipped"
            assert "only 3 rating(s)" in (tiny.reason or "")

            time.sleep(2.0)  # no crash loop: nothing else is run, the worker lives on
            assert [r.status for r in _runs(store)] == ["skipped", "skipped"]
            assert worker.poll() is None
            assert api.get(f"/admin/retrain/{queued['id']}").json()["status"] == "skipped"

            # the database goes away under the worker, a retrain is asked for meanwhile
            proxy.cut()
            queued = api.post("/admin/retrain").json()
            time.sleep(3.0)
            assert worker.poll() is None, "the worker died with its database"
            assert _finished(store, queued["id"]) is None
            proxy.restore()
            after = wait_for(lambda: _finished(store, queued["id"]), 60, "the run after the outage")
            assert after.status == "skipped"
            assert worker.poll() is None
    finally:
        proxy.close()
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=30)
        print(f"--- worker log:\n{log_path.read_text()[-10000:]}")
    assert code == 0
    log = log_path.read_text()
    assert "worker stopped (interrupted: received SIGTERM)" in log
    # it backed off while the database was away instead of spinning
    assert 1 <= log.count("worker turn failed") <= 8
