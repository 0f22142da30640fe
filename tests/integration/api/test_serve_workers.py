"""``rbmrec serve --workers 2``: one listening socket per worker, supervised."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from _api_support import free_port, rbmrec_command

from app.cli.supervisor import listening_sockets, supports_reuse_port

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not supports_reuse_port(), reason="SO_REUSEPORT balancing is Linux only"),
]


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text()

    def workers(self) -> list[int]:
        """Pids of the live worker processes (not multiprocessing's resource tracker)."""
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        found = []
        for child in children:
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"resource_tracker" not in cmdline:
                found.append(int(child))
        return found


def _env(sqlite_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "RBMREC_DATABASE_URL": sqlite_url,
        "RBMREC_MODEL_DIR": str(tmp_path / "models"),
        "RBMREC_LOG_LEVEL": "INFO",
    }


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def served(sqlite_url: str, tmp_path: Path) -> Iterator[Served]:
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*rbmrec_command(), "serve", "--port", str(port), "--workers", "2"],
            env=_env(sqlite_url, tmp_path),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Served(process, port, log)
    try:
        _wait(lambda: process.poll() is None and _ready(server.base), 60, "the workers")
        _wait(lambda: listening_sockets(port) == 2, 30, "both workers to listen")
        _wait(lambda: "all 2 workers listen on port" in server.output(), 10, "the supervisor")
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def _sockets(pid: int) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd).startswith("socket:"):
                count += 1
        except OSError:
            continue
    return count


def _settled_sockets(pids: list[int]) -> dict[int, int]:
    """Open sockets per process, once connections closed a moment ago are gone."""
    previous = {pid: _sockets(pid) for pid in pids}
    for _ in range(50):
        time.sleep(0.1)
        current = {pid: _sockets(pid) for pid in pids}
        if current == previous:
            return current
        previous = current
    return previous


def test_connections_are_spread_over_the_workers(served: Served) -> None:
    workers = served.workers()
    assert len(workers) == 2
    before = _settled_sockets(workers)
    # 32 keep-alive connections opened in one burst, as a proxy or load generator does
    clients = [httpx.Client(base_url=served.base, timeout=10) for _ in range(32)]
    try:
        for client in clients:
            assert client.get("/health/live").status_code == 200
        after = _settled_sockets(workers)
        accepted = {pid: after[pid] - before[pid] for pid in workers}
    finally:
        for client in clients:
            client.close()
    assert sum(accepted.values()) == 32, accepted
    # with one shared socket, a burst often lands on one worker; with a socket each,
    # the kernel spreads them (all on one: probability 2**-31)
    assert all(n > 0 for n in accepted.values()), accepted


def test_a_dead_worker_is_replaced_and_signals_reach_every_worker(served: Served) -> None:
    first, second = served.workers()
    os.kill(first, signal.SIGKILL)
    _wait(lambda: len(served.workers()) == 2 and first not in served.workers(), 30, "a new worker")
    _wait(lambda: served.output().count("Application startup complete") == 3, 30, "its start")
    assert second in served.workers()
    for _ in range(20):  # whichever worker answers
        assert httpx.get(f"{served.base}/health/ready", timeout=5).status_code == 200
    assert "exited with status -9: starting a new one" in served.output()

    served.process.send_signal(signal.SIGHUP)
    _wait(
        lambda: served.output().count("SIGHUP: checking the registry") == 2,
        10,
        "both workers to re-read the registry",
    )
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=30) == 0
    output = served.output()
    assert output.count("Finished server process") == 2  # the live ones; the killed one never
    assert "Traceback" not in output


def _serve_until_exit(port: int, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``rbmrec serve --workers 2`` expected to give up: its exit status and output."""
    return subprocess.run(
        [*rbmrec_command(), "serve", "--port", str(port), "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_second_server_on_the_same_port_is_refused(
    served: Served, sqlite_url: str, tmp_path: Path
) -> None:
    result = _serve_until_exit(served.port, _env(sqlite_url, tmp_path))
    assert result.returncode == 1
    assert "another `rbmrec serve` of this user serves it" in result.stderr
    assert "Traceback" not in result.stderr
    assert _ready(served.base)


def test_a_port_held_by_another_program_is_a_clear_error(sqlite_url: str, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = _serve_until_exit(port, _env(sqlite_url, tmp_path))
    assert result.returncode == 1
    assert "address already in use" in result.stderr.lower()
    assert "Traceback" not in result.stderr
    assert "started worker" not in result.stderr


def test_a_lock_file_that_cannot_be_opened_is_a_clear_error(
    sqlite_url: str, tmp_path: Path
) -> None:
    port = free_port()
    temp = tmp_path / "tmp"
    (temp / f"rbmrec-{os.getuid()}-serve-port-{port}.lock").mkdir(parents=True)  # not a file
    result = _serve_until_exit(port, {**_env(sqlite_url, tmp_path), "TMPDIR": str(temp)})
    assert result.returncode == 1
    assert "cannot take the lock of port" in result.stderr
    assert "Traceback" not in result.stderr
    assert "started worker" not in result.stderr
