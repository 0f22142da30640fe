"""Helpers of the reliability tests: real server processes, a cuttable TCP proxy, load.

Imported by tests/reliability/conftest.py and the test modules (the test directory is
on ``sys.path`` in pytest's default import mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
from sqlalchemy import MetaData, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from app.db.engine import make_engine, make_sessionmaker
from app.services import registry
from app.services.importer import import_movielens
from rbm_core.scale import RatingScale

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCALE = RatingScale.parse("1,2,3,4,5")
SMALL_PARAMS: dict[str, Any] = {
    "search": False,
    "random_state": 0,
    **{f"{part}.n_hidden": 8 for part in ("user_rbm", "item_rbm", "ranker")},
    **{f"{part}.n_epochs": 2 for part in ("user_rbm", "item_rbm", "ranker")},
}
"""A quick model: no search, small parts trained for two epochs, a fixed seed (so two
runs on the same data train the same model)."""
"""Tiny hyperparameters: these tests check the machinery, not the model."""
PROBLEM = "application/problem+json"
SOAK_ENV = "RBMREC_TEST_SOAK"

T = TypeVar("T")


def soak_enabled() -> bool:
    """Whether the long, on-demand variants run (``RBMREC_TEST_SOAK=1``)."""
    return os.environ.get(SOAK_ENV, "") not in ("", "0", "false", "no")


def free_port() -> int:
    """A TCP port nothing listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rbmrec_command() -> list[str]:
    """The ``rbmrec`` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("rbmrec")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from app.cli import main; main()"]


def wait_for(condition: Callable[[], T], timeout: float, what: str, step: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(step)


def write_subset(directory: Path, movielens_dir: Path, n_users: int) -> Path:
    """An ML-100K-layout copy holding only the ratings of users ``1..n_users``."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = (movielens_dir / "u.data").read_text().splitlines()
    kept = [line for line in lines if int(line.split("\t", 1)[0]) <= n_users]
    (directory / "u.data").write_text("\n".join(kept) + "\n")
    for name in ("u.item", "u.genre"):
        shutil.copyfile(movielens_dir / name, directory / name)
    return directory


@dataclass(frozen=True)
class Store:
    """A migrated database holding the subset, with a model version active."""

    url: str
    session_factory: sessionmaker[Session]
    model_dir: Path
    version_id: str
    artifact: Path
    n_ratings: int


def seed_store(url: str, subset_dir: Path, artifact: Path, model_dir: Path) -> Store:
    """Import the subset into ``url`` and activate a copy of ``artifact`` there."""
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    report = import_movielens(engine, subset_dir, scale=SCALE)
    model_dir.mkdir(parents=True, exist_ok=True)
    copy = Path(shutil.copytree(artifact, model_dir / artifact.name))
    with factory.begin() as session:
        info = registry.register_version(session, copy, status="active")
    return Store(url, factory, model_dir, info.id, copy, int(report.ratings_read))


def empty_database(url: str) -> None:
    """Delete every row of every table but Alembic's, children first."""
    engine = create_engine(url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        with engine.begin() as conn:
            for table in reversed(meta.sorted_tables):
                if table.name != "alembic_version":
                    conn.execute(table.delete())
    finally:
        engine.dispose()


def count_rows(url: str, table: str) -> int:
    """Rows of one of our tables (a fixed name, never user input)."""
    assert table.isidentifier()
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())  # noqa: S608
    finally:
        engine.dispose()


def percentile_ms(latencies: list[float], q: float) -> float:
    """The ``q``-th percentile of latencies given in seconds, in milliseconds."""
    if not latencies:
        return float("nan")
    return round(float(np.percentile(np.asarray(latencies) * 1000.0, q)), 1)


# -- a cuttable TCP proxy ------------------------------------------------------------------
class TcpProxy:
    """An asyncio TCP forwarder (in its own thread) that a test can break and restore.

    Modes:

    * ``cut()``: stop listening and reset every open connection, as a crashed
      database server or a refused port looks to a client;
    * ``blackhole()``: keep accepting connections but forward nothing in either
      direction, as a network partition looks (no reset, no answer);
    * ``restore()``: forward again.

    Parameters
    ----------
    target : tuple of (str, int)
        The real server.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing: asyncio.Event | None = None
        self._thread.start()
        self._call(self._init())
        self.restore()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _init(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()

    # -- control (from the test's thread) -------------------------------------------
    def restore(self) -> None:
        """Listen (if not already) and forward traffic."""
        self._call(self._restore())

    def cut(self) -> None:
        """Close the port and reset every connection through it."""
        self._call(self._cut())

    def blackhole(self) -> None:
        """Accept connections but let no byte through, either way."""
        self._call(self._blackhole())

    def close(self) -> None:
        """Cut everything and stop the proxy's thread."""
        with contextlib.suppress(Exception):
            self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    # -- the loop's side --------------------------------------------------------------
    async def _restore(self) -> None:
        assert self._flowing is not None
        self._flowing.set()
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, "127.0.0.1", self.port, reuse_address=True
            )

    async def _blackhole(self) -> None:
        assert self._flowing is not None
        self._flowing.clear()
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, "127.0.0.1", self.port, reuse_address=True
            )

    async def _cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()  # RST, not a polite close
        self._writers.clear()
        if server is not None:
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        self._writers.add(writer)
        await self._flowing.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            self._writers.discard(writer)
            return
        self._writers.add(up_writer)
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        try:
            while data := await reader.read(65536):
                # In a blackhole the bytes wait and arrive once it heals, as TCP's
                # retransmissions would deliver them after a partition.
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()


# -- a network partition --------------------------------------------------------------------
def can_drop_packets() -> str | None:
    """Why :func:`dropped_port` cannot work here, or ``None`` if it can."""
    if os.geteuid() != 0:
        return "dropping packets needs root (iptables)"
    if shutil.which("iptables") is None:
        return "iptables is not installed"
    probe = subprocess.run(["iptables", "-S", "INPUT"], capture_output=True, check=False)
    if probe.returncode != 0:
        return f"iptables does not work here: {probe.stderr.decode(errors='replace').strip()}"
    return None


@contextlib.contextmanager
def dropped_port(port: int) -> Iterator[None]:
    """Silently drop every TCP packet to or from a local ``port`` (a real partition).

    Unlike a proxy that stops forwarding, nothing acknowledges what the client sends,
    as when a database host vanishes. The rules name only this (ephemeral) port and
    are removed on exit, whatever happens.
    """
    rules = [
        ["INPUT", "-p", "tcp", "--dport", str(port), "-j", "DROP"],
        ["INPUT", "-p", "tcp", "--sport", str(port), "-j", "DROP"],
    ]
    added: list[list[str]] = []
    try:
        for rule in rules:
            subprocess.run(["iptables", "-I", *rule], check=True, capture_output=True)
            added.append(rule)
        yield
    finally:
        for rule in added:
            subprocess.run(["iptables", "-D", *rule], check=False, capture_output=True)


# -- a real server process -----------------------------------------------------------------
@dataclass
class ApiServer:
    """``rbmrec serve`` (uvicorn) as a separate process, configured by environment.

    Parameters
    ----------
    env : mapping of str to str
        ``RBMREC_*`` settings (the test's database, model directory, ...).
    workdir : Path
        Its working directory (also holds its log); no stray ``.env`` is read.
    """

    env: Mapping[str, str]
    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"server-{self.port}.log"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 60.0) -> ApiServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "RBMREC_LOG_LEVEL": "INFO", **self.env}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*rbmrec_command(), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=env,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def up() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited early:\n{self.log_text()}")
            try:
                return httpx.get(f"{self.url}/health/live", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, timeout, "the API server to answer", step=0.1)
        return self

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it does not stop in 20 s; returns the exit code."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        return process.returncode

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def api_server(env: Mapping[str, str], workdir: Path) -> Iterator[ApiServer]:
    """Run an :class:`ApiServer` for the duration of the block; its log on failure."""
    server = ApiServer(env, workdir)
    try:
        yield server.start()
    finally:
        server.stop()
        # pytest shows captured output of failed tests only
        print(f"--- server log ({server.log_path.name}):\n{server.log_text()[-20000:]}")
