"""``rbmrec serve`` as a real process, and the idempotent ``make demo`` preparation."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from _api_support import Subset, free_port, rbmrec_command

from app.db.engine import make_engine, make_sessionmaker
from app.db.ratings import count_ratings
from app.services import registry
from app.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def wait_until_ready(process: subprocess.Popen[str], base: str, *, seconds: float) -> None:
    """Wait for ``/health/ready`` of the server ``process`` started; fail if it exits."""
    deadline = time.monotonic() + seconds
    while True:
        assert process.poll() is None, process.communicate()[0]
        try:
            if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{base} did not become ready in {seconds} s"
        time.sleep(0.2)


@pytest.mark.e2e
def test_rbmrec_serve_runs_the_api_and_stops_cleanly(sqlite_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "RBMREC_DATABASE_URL": sqlite_url,
        "RBMREC_MODEL_DIR": str(tmp_path / "models"),
        "RBMREC_LOG_LEVEL": "INFO",
    }
    process = subprocess.Popen(
        [*rbmrec_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, base, seconds=60)
        body = httpx.get(f"{base}/users/someone/recommendations", timeout=5).json()
        assert body["strategy"] == "popular"
        assert httpx.get(f"{base}/docs", timeout=5).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    # uvicorn re-raises SIGTERM after its graceful shutdown
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Finished server process" in output
    assert "Application startup complete" in output
    assert "auth: OPEN" in output  # the banner
    assert "auth: open" in output  # the app's warning at start
    assert 'GET /users/someone/recommendations HTTP/1.1" 200' in output


@pytest.mark.e2e
def test_rbmrec_serve_on_a_busy_port_is_a_clear_error(sqlite_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "RBMREC_DATABASE_URL": sqlite_url, "RBMREC_MODEL_DIR": str(tmp_path)}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = subprocess.run(
            [*rbmrec_command(), "serve", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode != 0
    assert "address already in use" in result.stderr.lower()
    assert "Traceback" not in result.stderr


def load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "rbmrec_demo", PROJECT_ROOT / "scripts" / "demo.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_preparation_is_idempotent(
    ml_subset: Subset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    demo = load_demo()
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'demo.db'}",
        model_dir=tmp_path / "models",
        movielens_dir=ml_subset.directory,
    )
    demo.prepare(settings)
    first = capsys.readouterr().out
    assert "importing MovieLens 100K" in first
    assert "trained and activated model version" in first

    started = time.monotonic()
    demo.prepare(settings)
    second = capsys.readouterr().out
    assert time.monotonic() - started < 10
    assert "skipping the import" in second
    assert "skipping training" in second

    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine)() as session:
            assert count_ratings(session) == len(ml_subset.ratings)
            active = registry.get_active_version(session)
            assert active is not None
            assert len(registry.list_versions(session)) == 1
    finally:
        engine.dispose()
    text = demo.examples(settings)
    assert "curl -s 'http://127.0.0.1:8000/users/196/recommendations?n=5'" in text
    assert "Authorization" not in text


@pytest.mark.e2e
def test_demo_serves_the_api_and_runs_the_worker(ml_subset: Subset, tmp_path: Path) -> None:
    """``make demo`` (scripts/demo.py): a retrain asked for through the API is carried out."""
    port = free_port()
    env = {
        **os.environ,
        "RBMREC_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}",
        "RBMREC_MODEL_DIR": str(tmp_path / "models"),
        "RBMREC_MOVIELENS_DIR": str(ml_subset.directory),
        "RBMREC_PORT": str(port),
    }
    process = subprocess.Popen(
        [sys.executable, str(PROJECT_ROOT / "scripts" / "demo.py")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        wait_until_ready(process, base, seconds=240)
        assert httpx.get(f"{base}/dashboard", timeout=5).status_code == 200
        queued = httpx.post(f"{base}/admin/retrain", timeout=5)
        assert queued.status_code == 202
        run_id = queued.json()["id"]
        while True:
            run = httpx.get(f"{base}/admin/retrain/{run_id}", timeout=5).json()
            if run["status"] not in {"queued", "running"}:
                break
            assert time.monotonic() < deadline, f"the worker never finished the run: {run}"
            time.sleep(0.5)
        # nothing changed since the demo trained: the worker says so and stops there
        assert run["status"] == "skipped", run
        assert run["owner"]
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert f"Dashboard: http://127.0.0.1:{port}/dashboard" in output
    assert "Traceback" not in output
