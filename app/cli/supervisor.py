"""``rbmrec serve --workers N``: worker processes with a listening socket each.

uvicorn's own supervisor binds one socket and shares it: every worker waits on it,
the first to wake accepts whatever is queued, and keep-alive connections stay with
the worker that accepted them. A client or proxy that opens its connections in a
burst then often lands all of them on one worker, which serves everything while the
others idle (measured: 2 of 5 two-worker runs of ``benchmarks/serve_latency.py`` put
all 16 connections on one worker, halving the throughput). Here every worker binds
its own socket to the same address with ``SO_REUSEPORT``, and the kernel spreads new
connections over them by a hash of the client's address and port.

The supervisor (the ``rbmrec serve`` process) starts the workers, restarts one that
dies, stops them all on ``SIGINT``/``SIGTERM`` (each finishes its requests in
flight, as uvicorn does), forwards ``SIGHUP`` (each worker then re-reads the model
registry) and gives up, with exit status 1, when a worker fails to start (a broken
configuration, or the port held by another program): restarting it would only fail
again. ``SO_REUSEPORT`` would also let a second ``rbmrec serve`` of the same user
bind the same port and silently take half the connections, so the supervisor holds a
lock named after the port for as long as it runs, and a second one refuses to start.
The lock file is opened without following a symlink and checked through its
descriptor (a regular file of this user, writable by no one else): in the shared
temporary directory, a planted symlink could otherwise make it create or lock a
file elsewhere.
Platforms without a load-balancing ``SO_REUSEPORT`` (it exists on Linux) use
uvicorn's supervisor instead (:func:`supports_reuse_port`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import multiprocessing
import os
import signal
import socket
import stat
import sys
import tempfile
import threading
import time
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Final

import uvicorn
from uvicorn.config import STARTUP_FAILURE

logger = logging.getLogger("uvicorn.error")

__all__ = [
    "WorkerSupervisor",
    "listening_sockets",
    "port_lock_path",
    "reuse_port_socket",
    "supports_reuse_port",
]

_spawn = multiprocessing.get_context("spawn")

CHECK_SECONDS: Final = 0.5
"""How often the supervisor looks for dead workers and queued signals."""

STOP_MARGIN_SECONDS: Final = 5.0
"""How long past uvicorn's graceful-shutdown timeout a worker may take to exit."""


def supports_reuse_port() -> bool:
    """Whether the kernel balances connections over sockets sharing a port (Linux)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` with ``SO_REUSEPORT`` (not yet listening).

    Raises
    ------
    OSError
        The address cannot be resolved or bound (for example, another program that
        did not set ``SO_REUSEPORT`` holds the port).
    """
    family, kind, proto, _name, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def listening_sockets(port: int) -> int:
    """How many TCP sockets listen on ``port`` on this host (Linux ``/proc/net``; else 0).

    A worker's socket joins the kernel's balancing only once it listens, which it
    does after the app's start-up: until then, new connections all go to the
    workers already listening.
    """
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            listening = len(fields) > 3 and fields[3] == "0A"
            if listening and int(fields[1].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def _port_lock(port: int) -> int | None:
    """Hold the per-user lock of ``port``; ``None`` when another process holds it.

    Raises
    ------
    OSError
        The lock file cannot be created (an unwritable temporary directory).
    """
    import fcntl  # POSIX only, like SO_REUSEPORT balancing

    path = port_lock_path(port)
    # In the shared temporary directory another user may have planted a symlink under
    # this name: never follow one (nor create a file where it points), and check what
    # was opened through the descriptor itself.
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(exc.errno, f"{path} is a symlink; refusing to use it") from exc
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, f"{path} is not a regular file")
        if info.st_uid != os.getuid():
            raise OSError(errno.EPERM, f"{path} belongs to another user (uid {info.st_uid})")
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise OSError(errno.EPERM, f"{path} is writable by other users")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def port_lock_path(port: int) -> Path:
    """The lock file of ``port``: per user, in the system temporary directory."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"rbmrec-{uid}-serve-port-{port}.lock"


def _run_worker(config: uvicorn.Config) -> None:
    """The body of one worker process: bind its own socket and serve."""
    config.configure_logging()
    try:
        sock = reuse_port_socket(config.host, config.port)
    except OSError as exc:
        logger.error("cannot listen on %s:%d: %s", config.host, config.port, exc)
        sys.exit(STARTUP_FAILURE)
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


class WorkerSupervisor:
    """Run ``workers`` uvicorn servers of ``config``, each on its own ``SO_REUSEPORT`` socket.

    Parameters
    ----------
    config : uvicorn.Config
        The server configuration (an import string or factory, so each worker
        process builds its own app).
    workers : int
        Number of worker processes.
    """

    def __init__(self, config: uvicorn.Config, workers: int) -> None:
        self.config = config
        self.workers = workers
        self.processes: list[SpawnProcess] = []
        self._should_exit = threading.Event()
        self._pending: list[int] = []
        self.exit_code = 0

    def run(self) -> int:
        """Serve until told to stop; returns the exit status for the ``serve`` command."""
        try:
            lock = _port_lock(self.config.port)
        except OSError as exc:
            logger.error("cannot take the lock of port %d: %s", self.config.port, exc)
            return 1
        if lock is None:
            logger.error(
                "cannot listen on port %d: another `rbmrec serve` of this user serves it",
                self.config.port,
            )
            return 1
        try:
            return self._supervise()
        finally:
            os.close(lock)

    # -- internals ---------------------------------------------------------------------
    def _supervise(self) -> int:
        # Fail at once, in this process, if another program holds the port.
        try:
            reuse_port_socket(self.config.host, self.config.port).close()
        except OSError as exc:
            logger.error("cannot listen on %s:%d: %s", self.config.host, self.config.port, exc)
            return 1
        previous = {sig: signal.signal(sig, self._queue_signal) for sig in self._signals()}
        try:
            logger.info(
                "started supervisor [%d] of %d workers, each with its own socket",
                os.getpid(),
                self.workers,
            )
            self.processes = [self._start() for _ in range(self.workers)]
            all_listening = False
            while not self._should_exit.wait(CHECK_SECONDS):
                self._handle_signals()
                self._replace_dead_workers()
                if not all_listening and listening_sockets(self.config.port) >= self.workers:
                    all_listening = True
                    logger.info("all %d workers listen on port %d", self.workers, self.config.port)
            self._stop_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        logger.info("stopped supervisor [%d]", os.getpid())
        return self.exit_code

    @staticmethod
    def _signals() -> list[signal.Signals]:
        names = ("SIGINT", "SIGTERM", "SIGHUP")
        return [getattr(signal, name) for name in names if hasattr(signal, name)]

    def _queue_signal(self, sig: int, _frame: object) -> None:
        # Only note it here: the loop acts on it outside the signal handler.
        self._pending.append(sig)
        if sig != getattr(signal, "SIGHUP", None):
            self._should_exit.set()

    def _start(self) -> SpawnProcess:
        process = _spawn.Process(target=_run_worker, args=(self.config,), name="rbmrec-worker")
        process.start()
        logger.info("started worker [%s]", process.pid)
        return process

    def _handle_signals(self) -> None:
        while self._pending:
            sig = self._pending.pop(0)
            if sig == getattr(signal, "SIGHUP", None):
                logger.info("SIGHUP: asking every worker to re-read the model registry")
                for process in self.processes:
                    if process.pid is not None and process.is_alive():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(process.pid, sig)

    def _replace_dead_workers(self) -> None:
        for index, process in enumerate(self.processes):
            if process.is_alive() or self._should_exit.is_set():
                continue
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                logger.error("worker [%s] failed to start: stopping", process.pid)
                self.exit_code = 1
                self._should_exit.set()
                return
            logger.warning(
                "worker [%s] exited with status %s: starting a new one",
                process.pid,
                process.exitcode,
            )
            self.processes[index] = self._start()

    def _stop_all(self) -> None:
        for process in self.processes:
            if process.pid is not None and process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        # one deadline for all: the workers shut down at the same time, not in turn
        deadline = (
            time.monotonic() + (self.config.timeout_graceful_shutdown or 0) + STOP_MARGIN_SECONDS
        )
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                logger.warning("worker [%s] did not stop in time: killing it", process.pid)
                process.kill()
                process.join()
