"""The retrain lock: at most one retrain at a time, across processes and hosts.

PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) taken on a
dedicated connection that is held, in autocommit mode, for the whole run. The
server releases it when that connection ends, so a killed worker (even SIGKILL, or
a lost host once TCP gives up) never leaves the lock behind. Advisory locks are
scoped to the database, so separate deployments on one server do not interfere.

SQLite: an exclusive ``flock`` on a lock file beside the database file
(``<database>.retrain-lock``). The kernel releases it when the process dies. SQLite
lives on one host, so this covers every process that can reach the database. (A
``:memory:`` database is private to one process; its lock file lives in the model
directory.)
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from types import TracebackType
from typing import Final

from sqlalchemy import Connection, Engine, text

logger = logging.getLogger(__name__)

__all__ = ["RETRAIN_LOCK_KEY", "LockBusyError", "LockLostError", "RetrainLock"]

RETRAIN_LOCK_KEY: Final = 0x72626D72_65747261
"""Advisory lock key of the retrain job (a positive 64-bit integer; "rbmretra")."""


class LockBusyError(RuntimeError):
    """Another process holds the retrain lock."""


class LockLostError(RuntimeError):
    """The retrain lock was lost while held (e.g. the database connection dropped)."""


class RetrainLock:
    """The retrain lock of one database; use :meth:`acquire` or ``with``.

    Parameters
    ----------
    engine : Engine
        The store's engine.
    model_dir : Path
        Where the lock file goes when the database is an in-memory SQLite one.

    Examples
    --------
    >>> with RetrainLock(engine, model_dir):  # doctest: +SKIP
    ...     train()
    """

    def __init__(self, engine: Engine, model_dir: Path) -> None:
        self._engine = engine
        self._model_dir = Path(model_dir)
        self._conn: Connection | None = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._conn is not None or self._fd is not None

    def lock_file(self) -> Path:
        """The SQLite lock file (beside the database file)."""
        database = self._engine.url.database
        if not database or database == ":memory:" or database.startswith("file:"):
            return self._model_dir / ".retrain-lock"
        return Path(database).resolve().with_name(Path(database).name + ".retrain-lock")

    def acquire(self) -> None:
        """Take the lock without waiting.

        Raises
        ------
        LockBusyError
            Another process (or another ``RetrainLock``) holds it.
        """
        if self.held:
            raise RuntimeError("this RetrainLock is already held")
        if self._engine.dialect.name == "postgresql":
            self._acquire_postgres()
        else:
            self._acquire_file()

    def _acquire_postgres(self) -> None:
        conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            got = conn.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": RETRAIN_LOCK_KEY}
            ).scalar_one()
        except BaseException:
            conn.close()
            raise
        if not got:
            conn.close()
            raise LockBusyError("another retrain holds the lock (PostgreSQL advisory lock)")
        self._conn = conn

    def _acquire_file(self) -> None:
        path = self.lock_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockBusyError(f"another retrain holds the lock file {path}") from None
        except BaseException:
            os.close(fd)
            raise
        # Who holds it, for an operator looking at the file.
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.uname().nodename}:{os.getpid()}\n".encode())
        self._fd = fd

    def check(self) -> None:
        """Make sure the lock is still held; call before publishing anything.

        Raises
        ------
        LockLostError
            The lock's database connection is gone (the server released the lock,
            so another run may have started).
        """
        if self._conn is not None:
            try:
                held = self._conn.execute(
                    text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                        "AND pid = pg_backend_pid() AND granted AND objsubid = 1 "
                        "AND classid::bigint = :high AND objid::bigint = :low"
                    ),
                    {"high": RETRAIN_LOCK_KEY >> 32, "low": RETRAIN_LOCK_KEY & 0xFFFFFFFF},
                ).scalar_one()
            except Exception as exc:
                raise LockLostError(f"lost the retrain lock's connection: {exc}") from exc
            if not held:
                raise LockLostError("the retrain lock is no longer held")
        elif self._fd is None:
            raise LockLostError("the retrain lock is not held")

    def release(self) -> None:
        """Release the lock (idempotent)."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": RETRAIN_LOCK_KEY})
            except Exception:
                # Closing the connection releases the lock on the server anyway.
                logger.warning("could not unlock the retrain lock cleanly", exc_info=True)
                conn.invalidate()
            finally:
                conn.close()
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self) -> RetrainLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
