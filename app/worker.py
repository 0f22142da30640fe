"""The retrain worker: ``rbmrec worker`` runs this loop for ever.

Each turn it runs the oldest retrain queued through ``POST /admin/retrain``, or the
scheduled retrain when ``RBMREC_RETRAIN_CRON`` (UTC) has come due, then sleeps up to
``poll_seconds``. Any number of workers may run on any hosts: the retrain lock lets
one run at a time, and a queued run is claimed by exactly one of them.

Start-up finishes off runs abandoned by a dead process (marks them ``failed``).

Signals: SIGTERM or SIGINT while idle stops the loop at once. During training or
evaluation the run is interrupted, recorded ``failed`` ("interrupted") and the
worker exits; while the artifact is being saved or published the worker finishes
that (a few seconds) first, so nothing is left half-published. A second signal
during that window is handled the same way (no hard exit).

Errors never crash the loop: a failing run is recorded and the next one comes at
its time; an unreachable database is retried with a growing pause.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from types import FrameType
from typing import Any, Final

from croniter import croniter
from sqlalchemy.orm import Session, sessionmaker

from app.db.engine import engine_of
from app.db.retrain_lock import LockBusyError, RetrainLock
from app.services.retrain import (
    TrainingRunInfo,
    next_queued_run,
    recover_abandoned,
    run_retrain,
)
from app.settings import Settings

logger = logging.getLogger(__name__)

__all__ = ["StopController", "StopRequested", "Worker", "next_fire_time", "validate_cron"]

MAX_ERROR_PAUSE_SECONDS: Final = 60.0


class StopRequested(BaseException):
    """Raised inside an interruptible section when a stop signal arrives.

    A ``BaseException``, so that ``except Exception`` in library code cannot swallow it.
    """


class StopController:
    """Turns SIGTERM/SIGINT into a stop flag, and into :class:`StopRequested` where safe.

    Only code inside :meth:`interruptible` (training, evaluation) is interrupted; the
    rest sees :attr:`stopping` at its next check.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._interruptible = 0
        self.signal_name: str | None = None

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested."""
        return self._event.is_set()

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask the loop to stop (thread-safe; does not interrupt anything)."""
        self.signal_name = self.signal_name or reason
        self._event.set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; ``True`` if a stop was requested."""
        return self._event.wait(max(0.0, seconds))

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """Code in this block may be stopped by a signal (raises :class:`StopRequested`)."""
        if self.stopping:
            raise StopRequested(self.signal_name or "stop requested")
        self._interruptible += 1
        try:
            yield
        finally:
            self._interruptible -= 1

    def handle_signal(self, signum: int, frame: FrameType | None) -> None:
        """Signal handler: set the flag; interrupt an interruptible section."""
        name = signal.Signals(signum).name
        logger.info("received %s: stopping", name)
        self.request_stop(f"interrupted: received {name}")
        if self._interruptible:
            # Raise once: the section unwinds, and cleanup code runs undisturbed.
            self._interruptible = 0
            raise StopRequested(f"interrupted: received {name}")

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Handle SIGTERM and SIGINT within the block (main thread only); restore after."""
        previous = {
            signum: signal.signal(signum, self.handle_signal)
            for signum in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def validate_cron(expression: str) -> str:
    """Check a cron expression (5 fields, UTC); returns it unchanged.

    Raises
    ------
    ValueError
        If croniter cannot parse it.
    """
    if not croniter.is_valid(expression):
        raise ValueError(
            f"invalid cron expression {expression!r} (RBMREC_RETRAIN_CRON): expected 5 "
            "fields 'minute hour day-of-month month day-of-week', e.g. '0 3 * * *'"
        )
    return expression


def next_fire_time(expression: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` that matches the cron expression (UTC)."""
    nxt = croniter(expression, after.astimezone(UTC)).get_next(datetime)
    assert isinstance(nxt, datetime)
    return nxt.astimezone(UTC) if nxt.tzinfo else nxt.replace(tzinfo=UTC)


class Worker:
    """The scheduler loop (see the module docstring).

    Parameters
    ----------
    session_factory : sessionmaker
        Sessions on the store.
    settings : Settings
        ``retrain_cron`` and everything the retrain job reads.
    poll_seconds : float
        Longest sleep between two looks at the queue.
    params : mapping, optional
        Hyperparameter overrides for every run.
    stop : StopController, optional
        Default: a new one (use :meth:`StopController.installed` to connect signals).
    clock : callable, optional
        Returns the current UTC time (tests pass a fake one).
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: Settings,
        *,
        poll_seconds: float = 5.0,
        params: Mapping[str, Any] | None = None,
        stop: StopController | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if poll_seconds <= 0:
            raise ValueError("poll_seconds must be positive")
        self.session_factory = session_factory
        self.settings = settings
        self.cron = validate_cron(settings.retrain_cron)
        self.poll_seconds = poll_seconds
        self.params = dict(params or {})
        self.stop = stop or StopController()
        self._clock = clock or (lambda: datetime.now(UTC))
        self.next_fire = next_fire_time(self.cron, self._clock())
        self.runs: list[TrainingRunInfo] = []

    def recover(self) -> list[str]:
        """Mark runs abandoned by dead processes failed (if no retrain is running now)."""
        lock = RetrainLock(engine_of(self.session_factory), self.settings.model_dir)
        try:
            lock.acquire()
        except LockBusyError:
            logger.info("a retrain is running elsewhere; its lock holder keeps the runs")
            return []
        try:
            return recover_abandoned(self.session_factory, self.settings.model_dir)
        finally:
            lock.release()

    def run_once(self) -> TrainingRunInfo | None:
        """One turn: a queued run, else the scheduled run if due; ``None`` if idle."""
        with self.session_factory() as session:
            queued = next_queued_run(session)
        if queued is not None:
            info = self._run(trigger="api", run_id=queued)
            if info.status == "queued":
                # Another process holds the lock; try again after a pause.
                self.stop.wait(self.poll_seconds)
            return info
        now = self._clock()
        if now >= self.next_fire:
            logger.info("scheduled retrain due (%s)", self.next_fire.isoformat())
            self.next_fire = next_fire_time(self.cron, now)
            return self._run(trigger="schedule", run_id=None)
        return None

    def _run(self, *, trigger: str, run_id: str | None) -> TrainingRunInfo:
        info = run_retrain(
            self.session_factory,
            self.settings,
            trigger=trigger,
            run_id=run_id,
            params=self.params,
            interrupt_guard=self.stop.interruptible,
        )
        self.runs.append(info)
        return info

    def sleep_seconds(self) -> float:
        """How long to sleep before the next turn."""
        until_fire = (self.next_fire - self._clock()).total_seconds()
        return max(0.0, min(self.poll_seconds, until_fire))

    def run_forever(self) -> None:
        """Loop until a stop is requested; never raises on a failing run or database."""
        logger.info(
            "worker started: schedule %r (UTC), next scheduled retrain at %s, polling "
            "the queue every %ss",
            self.cron,
            self.next_fire.isoformat(),
            self.poll_seconds,
        )
        pause = self.poll_seconds
        recovered = False
        while not self.stop.stopping:
            try:
                if not recovered:
                    self.recover()
                    recovered = True
                info = self.run_once()
                pause = self.poll_seconds
            except StopRequested:
                break
            except Exception:
                logger.exception("worker turn failed; retrying in %.0fs", pause)
                if self.stop.wait(pause):
                    break
                pause = min(pause * 2, MAX_ERROR_PAUSE_SECONDS)
                continue
            if info is None and self.stop.wait(self.sleep_seconds()):
                break
        logger.info("worker stopped (%s)", self.stop.signal_name or "done")
