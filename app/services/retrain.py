"""The retrain job: snapshot -> split -> train -> evaluate against the active model -> publish.

One run (:func:`run_retrain`), under the retrain lock (:mod:`app.services.locks`):

1. Finish off runs abandoned by a dead process (:func:`recover_abandoned`).
2. Skip when nothing changed: the store's fingerprint (count of ratings, sum of
   their row versions, newest write) equals the one recorded with the active
   version. The fingerprint is taken *before* the snapshot, so a write that lands
   in between makes the next run train again: it can cause an extra run, never a
   missed rating.
3. Read one consistent snapshot of all ratings (``read_ratings_snapshot``: COPY in a
   REPEATABLE READ transaction on PostgreSQL). Ratings written afterwards change the
   fingerprint, so the next run includes them.
4. Split: a rating is held out when a hash of its (user, item) falls in the lowest
   :data:`HOLDOUT_FRACTION` (about 10% of each user's ratings). The split is stable:
   a held-out rating is held out in every run, so the active model (trained by an
   earlier run) never trained on the ratings it is now evaluated on, and the
   candidate-vs-active comparison is fair.
5. Train the candidate on the rest, reserve its version row (``training``), and
   evaluate candidate and active model on the same held-out ratings (folding in
   each user's training ratings; ratings of items either model does not know are
   left out of both).
6. Save the artifact (``save_model`` writes to a temporary directory and renames it
   into place), verify it (SHA-256, loads), register the version, and activate it,
   in one transaction, unless its RMSE is worse than the active model's by more
   than ``RBMREC_PROMOTION_TOLERANCE``: then it is recorded ``rejected`` with the
   reason.
7. Retention: keep the files of the newest ``RBMREC_KEEP_VERSIONS`` versions and
   always the active one.

No refit on all ratings before publishing: the published model is exactly the
model that was evaluated, and the stable hold-out stays unseen by every model.
The held-out 10% are not lost for users: recommendations fold in *all* of a
user's current ratings at request time.

A run killed at any step leaves nothing half-published: the artifact becomes
visible only complete (atomic rename), a version is registered only after its
files verify, and activation is one transaction. The next run (or worker start)
marks the run and its version ``failed`` and deletes leftover files.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.db.ratings import store_fingerprint
from app.db.snapshot import RatingsSnapshot, read_ratings_snapshot
from app.db.tables import RUN_TRIGGERS, ModelVersion, TrainingRun
from app.jsonable import to_jsonable
from app.services import registry
from app.services.artifacts import check_artifact
from app.services.locks import LockBusyError, RetrainLock
from app.services.registry import ModelVersionInfo
from app.settings import Settings
from rbm_core.metrics import mae, rmse

logger = logging.getLogger(__name__)

__all__ = [
    "HOLDOUT_FRACTION",
    "MIN_TRAINING_RATINGS",
    "RetrainError",
    "TrainingRunInfo",
    "get_run",
    "holdout_mask",
    "list_runs",
    "next_queued_run",
    "recover_abandoned",
    "request_retrain",
    "run_retrain",
    "train_and_activate",
]

HOLDOUT_FRACTION: Final = 0.1
"""Share of ratings held out for validation (by a stable hash of user and item)."""

MIN_TRAINING_RATINGS: Final = 10
"""Fewer ratings than this: the run is skipped (nothing worth training)."""

STAGING_DIR: Final = ".staging"
"""Subdirectory of the model directory where runs write before publishing."""

_HASH_BUCKETS: Final = 1_000_000

InterruptGuard = Callable[[], AbstractContextManager[None]]
"""Wraps the phases that may be interrupted (training, evaluation); see app.worker."""


class RetrainError(RuntimeError):
    """A retrain did not produce an active model; ``run`` says why."""

    def __init__(self, message: str, run: TrainingRunInfo | None = None) -> None:
        super().__init__(message)
        self.run = run


@dataclass(frozen=True)
class TrainingRunInfo:
    """One retrain run as recorded in ``training_runs`` (a detached copy).

    Attributes
    ----------
    id : str
        Run id.
    trigger : str
        ``schedule``, ``api`` or ``cli``.
    status : str
        ``queued``, ``running``, ``activated``, ``rejected``, ``skipped`` or ``failed``.
    requested_at, started_at, finished_at : datetime
        Timings (UTC).
    owner : str or None
        ``host:pid`` of the process that ran it.
    n_users, n_items, n_ratings, n_train, n_validation : int or None
        Snapshot and split sizes.
    metrics : dict
        Candidate and active model metrics, the tolerance, the decision.
    model_version_id : str or None
        The version it produced.
    reason : str or None
        Why it was skipped or rejected.
    error : str or None
        Why it failed.
    """

    id: str
    trigger: str
    status: str
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    owner: str | None
    n_users: int | None
    n_items: int | None
    n_ratings: int | None
    n_train: int | None
    n_validation: int | None
    metrics: dict[str, Any]
    model_version_id: str | None
    reason: str | None
    error: str | None

    @property
    def duration_seconds(self) -> float | None:
        """Seconds from start to end, when both are known."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def finished(self) -> bool:
        """Whether the run has an outcome."""
        return self.status not in {"queued", "running"}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (times as ISO 8601 strings)."""
        out = asdict(self)
        for key in ("requested_at", "started_at", "finished_at"):
            value = out[key]
            out[key] = value.isoformat() if value is not None else None
        out["duration_seconds"] = self.duration_seconds
        return out


def _run_info(row: TrainingRun) -> TrainingRunInfo:
    return TrainingRunInfo(
        id=row.id,
        trigger=row.trigger,
        status=row.status,
        requested_at=row.requested_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        owner=row.owner,
        n_users=row.n_users,
        n_items=row.n_items,
        n_ratings=row.n_ratings,
        n_train=row.n_train,
        n_validation=row.n_validation,
        metrics=dict(row.metrics or {}),
        model_version_id=row.model_version_id,
        reason=row.reason,
        error=row.error,
    )


# -- queries and requests --------------------------------------------------------------
def new_run_id() -> str:
    """A new run id (sorts by time; unique across hosts)."""
    now = datetime.now(UTC)
    return f"run-{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{secrets.token_hex(4)}"


def get_run(session: Session, run_id: str) -> TrainingRunInfo | None:
    """One run by id, or ``None``."""
    row = session.get(TrainingRun, run_id, populate_existing=True)
    return _run_info(row) if row is not None else None


def list_runs(session: Session, *, limit: int = 20) -> list[TrainingRunInfo]:
    """The newest runs first."""
    stmt = (
        select(TrainingRun)
        .order_by(TrainingRun.requested_at.desc(), TrainingRun.id.desc())
        .limit(limit)
    )
    return [_run_info(row) for row in session.scalars(stmt)]


def next_queued_run(session: Session) -> str | None:
    """The id of the oldest queued run, if any."""
    stmt = (
        select(TrainingRun.id)
        .where(TrainingRun.status == "queued")
        .order_by(TrainingRun.requested_at, TrainingRun.id)
        .limit(1)
    )
    return session.scalars(stmt).first()


def request_retrain(session: Session, *, trigger: str = "api") -> tuple[TrainingRunInfo, bool]:
    """Queue a retrain for the worker (what ``POST /admin/retrain`` does).

    A run that is already queued and not started is returned instead of a second
    one: both requests are served by the same run.

    Parameters
    ----------
    session : Session
        The unit of work; not committed here.
    trigger : str, default "api"
        Recorded as the run's trigger.

    Returns
    -------
    tuple of (TrainingRunInfo, bool)
        The queued run, and whether it was created by this call.
    """
    existing = next_queued_run(session)
    if existing is not None:
        row = session.get(TrainingRun, existing, populate_existing=True)
        if row is not None:
            return _run_info(row), False
    row = TrainingRun(id=new_run_id(), trigger=trigger, status="queued", metrics={})
    session.add(row)
    session.flush()
    session.refresh(row)
    return _run_info(row), True


# -- the split -------------------------------------------------------------------------
def holdout_mask(
    user_ids: NDArray[Any], item_ids: NDArray[Any], fraction: float = HOLDOUT_FRACTION
) -> NDArray[np.bool_]:
    """Which ratings are held out: a stable hash of (user, item), same in every run.

    A user all of whose ratings hash into the hold-out keeps them for training
    (there would be nothing to fold in for them).

    Parameters
    ----------
    user_ids, item_ids : ndarray of str, shape (n_ratings,)
        Who rated what.
    fraction : float
        Share held out, in (0, 1).

    Returns
    -------
    ndarray of bool, shape (n_ratings,)
        ``True`` for held-out ratings.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    if len(user_ids) == 0:
        return np.zeros(0, dtype=bool)
    frame = pd.DataFrame({"user": user_ids, "item": item_ids}, copy=False)
    # pandas' hash is SipHash with a fixed key: the same on every run and host.
    hashes = pd.util.hash_pandas_object(frame, index=False, categorize=False).to_numpy()
    held: NDArray[np.bool_] = (hashes % _HASH_BUCKETS) < int(fraction * _HASH_BUCKETS)
    codes, _ = pd.factorize(user_ids)
    kept_per_user = np.bincount(codes, weights=(~held).astype(np.float64))
    held &= kept_per_user[codes] > 0
    return held


# -- recovery ----------------------------------------------------------------------------
def recover_abandoned(session_factory: sessionmaker[Session], model_dir: Path) -> list[str]:
    """Mark runs left ``running`` by a dead process ``failed``; delete their leftovers.

    Call only while holding the retrain lock: then no run is in progress anywhere,
    so every ``running`` run and every ``training`` version was abandoned.

    Returns
    -------
    list of str
        Ids of the runs marked failed.
    """
    now = datetime.now(UTC)
    with session_factory.begin() as session:
        runs = list(session.scalars(select(TrainingRun).where(TrainingRun.status == "running")))
        for run in runs:
            run.status = "failed"
            run.finished_at = now
            run.error = (
                f"abandoned: the process running it ({run.owner or 'unknown'}) stopped "
                "before the run finished; nothing it produced was published"
            )
        versions = list(
            session.scalars(select(ModelVersion).where(ModelVersion.status == "training"))
        )
        for version in versions:
            version.status = "failed"
            version.note = "abandoned: its training run stopped before the artifact was complete"
            shutil.rmtree(version.artifact_path, ignore_errors=True)
    for run in runs:
        logger.warning("marked abandoned run %s (owner %s) failed", run.id, run.owner)
    _clean_model_dir(session_factory, Path(model_dir))
    return [run.id for run in runs]


def _clean_model_dir(session_factory: sessionmaker[Session], model_dir: Path) -> None:
    """Delete staging leftovers and unregistered version directories."""
    staging = model_dir / STAGING_DIR
    if staging.exists():
        shutil.rmtree(staging, ignore_errors=True)
    if not model_dir.is_dir():
        return
    with session_factory() as session:
        rows = session.execute(
            select(ModelVersion.artifact_path, ModelVersion.status, ModelVersion.id)
        ).all()
    keep = {
        Path(path).resolve() for path, status, _ in rows if status in registry.ACTIVATABLE_STATUSES
    }
    for entry in model_dir.iterdir():
        if not entry.is_dir() or entry.resolve() in keep:
            continue
        # Only directories that look like ours: a version id, or save_model's
        # temporary sibling of one. Anything else an operator put here is left alone.
        name = entry.name.lstrip(".")
        if _looks_like_version(name):
            logger.warning("deleting unregistered model directory %s", entry)
            shutil.rmtree(entry, ignore_errors=True)


def _looks_like_version(name: str) -> bool:
    head = name[:19]
    return len(head) == 19 and head[8] == "T" and head[18] == "Z" and head[:8].isdigit()


# -- the run ---------------------------------------------------------------------------
@dataclass
class _Context:
    session_factory: sessionmaker[Session]
    settings: Settings
    run_id: str
    lock: RetrainLock
    params: dict[str, Any]
    guard: InterruptGuard
    gated: bool


def run_retrain(
    session_factory: sessionmaker[Session],
    settings: Settings,
    *,
    trigger: str,
    run_id: str | None = None,
    params: Mapping[str, Any] | None = None,
    interrupt_guard: InterruptGuard | None = None,
) -> TrainingRunInfo:
    """Run one gated retrain now and record it (see the module docstring).

    Parameters
    ----------
    session_factory : sessionmaker
        Sessions on the store.
    settings : Settings
        ``model_dir``, ``promotion_tolerance``, ``keep_versions``, ``rating_scale``.
    trigger : {"schedule", "api", "cli"}
        What started the run.
    run_id : str, optional
        A queued run to execute (from ``POST /admin/retrain``). Default: a new run.
    params : mapping, optional
        Overrides of :class:`rbm_core.model.SoftmaxRBM` hyperparameters.
    interrupt_guard : callable, optional
        Context manager factory wrapped around training and evaluation, where a
        stop request may raise (the worker's SIGTERM handling).

    Returns
    -------
    TrainingRunInfo
        The recorded run: ``activated``, ``rejected``, ``skipped`` or ``failed``.
        When another retrain holds the lock, a new run is recorded ``skipped``;
        a queued ``run_id`` is left queued for a later attempt.
    """
    return _run(
        session_factory,
        settings,
        trigger=trigger,
        run_id=run_id,
        params=params,
        interrupt_guard=interrupt_guard,
        gated=True,
    )


def train_and_activate(
    session_factory: sessionmaker[Session],
    settings: Settings,
    *,
    trigger: str = "cli",
    params: Mapping[str, Any] | None = None,
) -> ModelVersionInfo:
    """Train on all ratings in the store and activate the result, without gating.

    What ``rbmrec train`` and ``make demo`` run. Same steps and records as
    :func:`run_retrain` (the validation ratings give the version its metrics and
    curves), but it never skips an unchanged store and never compares with the
    active model.

    Returns
    -------
    ModelVersionInfo
        The new, active version.

    Raises
    ------
    LockBusyError
        Another retrain is running.
    RetrainError
        Training was not possible (e.g. too few ratings) or failed; the message says
        why, and the run is recorded.
    """
    info = _run(
        session_factory,
        settings,
        trigger=trigger,
        run_id=None,
        params=params,
        interrupt_guard=None,
        gated=False,
    )
    if info.status == "skipped" and info.reason and "another retrain" in info.reason:
        raise LockBusyError(info.reason)
    if info.status != "activated" or info.model_version_id is None:
        raise RetrainError(
            f"training {info.status}: {info.error or info.reason or 'no model produced'}", info
        )
    with session_factory() as session:
        version = registry.get_version(session, info.model_version_id)
    if version is None:  # pragma: no cover - the row was just written
        raise RetrainError(f"version {info.model_version_id} vanished", info)
    return version


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _run(
    session_factory: sessionmaker[Session],
    settings: Settings,
    *,
    trigger: str,
    run_id: str | None,
    params: Mapping[str, Any] | None,
    interrupt_guard: InterruptGuard | None,
    gated: bool,
) -> TrainingRunInfo:
    if trigger not in RUN_TRIGGERS:
        raise ValueError(f"trigger must be one of {', '.join(RUN_TRIGGERS)}, got {trigger!r}")
    engine = _engine_of(session_factory)
    model_dir = Path(settings.model_dir).resolve()
    model_dir.mkdir(parents=True, exist_ok=True)
    lock = RetrainLock(engine, model_dir)
    try:
        lock.acquire()
    except LockBusyError as busy:
        return _record_busy(session_factory, trigger, run_id, str(busy))
    try:
        recover_abandoned(session_factory, model_dir)
        claimed = _claim(session_factory, trigger, run_id)
        if claimed is None or claimed.status != "running":
            assert run_id is not None
            with session_factory() as session:
                current = get_run(session, run_id)
            if current is None:
                raise LookupError(f"no training run {run_id!r}")
            return current
        ctx = _Context(
            session_factory=session_factory,
            settings=settings,
            run_id=claimed.id,
            lock=lock,
            params=dict(params or {}),
            guard=interrupt_guard or contextlib.nullcontext,
            gated=gated,
        )
        staging = model_dir / STAGING_DIR / claimed.id
        try:
            return _execute(ctx, staging)
        except BaseException as exc:
            _record_failure(ctx, exc)
            if not isinstance(exc, Exception):
                raise
            with session_factory() as session:
                info = get_run(session, claimed.id)
            assert info is not None
            return info
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        lock.release()


def _engine_of(session_factory: sessionmaker[Session]) -> Engine:
    bind = session_factory.kw.get("bind")
    if not isinstance(bind, Engine):
        raise TypeError("the session factory must be bound to an Engine")
    return bind


def _record_busy(
    session_factory: sessionmaker[Session], trigger: str, run_id: str | None, why: str
) -> TrainingRunInfo:
    with session_factory.begin() as session:
        if run_id is not None:
            row = session.get(TrainingRun, run_id)
            if row is None:
                raise LookupError(f"no training run {run_id!r}")
            logger.info("run %s stays queued: %s", run_id, why)
            return _run_info(row)
        now = datetime.now(UTC)
        row = TrainingRun(
            id=new_run_id(),
            trigger=trigger,
            status="skipped",
            requested_at=now,
            started_at=now,
            finished_at=now,
            owner=_owner(),
            metrics={},
            reason=f"another retrain is in progress: {why}",
        )
        session.add(row)
        session.flush()
        session.refresh(row)
        logger.info("retrain skipped: %s", why)
        return _run_info(row)


def _claim(
    session_factory: sessionmaker[Session], trigger: str, run_id: str | None
) -> TrainingRunInfo | None:
    now = datetime.now(UTC)
    with session_factory.begin() as session:
        if run_id is None:
            row = TrainingRun(
                id=new_run_id(),
                trigger=trigger,
                status="running",
                requested_at=now,
                started_at=now,
                owner=_owner(),
                metrics={},
            )
            session.add(row)
            session.flush()
            session.refresh(row)
            return _run_info(row)
        result = session.execute(
            update(TrainingRun)
            .where(TrainingRun.id == run_id, TrainingRun.status == "queued")
            .values(status="running", started_at=now, owner=_owner())
            .execution_options(synchronize_session=False)
        )
        if not getattr(result, "rowcount", 0):
            return None
        return get_run(session, run_id)


def _update_run(ctx: _Context, **values: Any) -> TrainingRunInfo:
    with ctx.session_factory.begin() as session:
        row = session.get(TrainingRun, ctx.run_id, with_for_update=True, populate_existing=True)
        assert row is not None
        for key, value in values.items():
            setattr(row, key, value)
        session.flush()
        return _run_info(row)


def _finish(ctx: _Context, status: str, **values: Any) -> TrainingRunInfo:
    info = _update_run(ctx, status=status, finished_at=datetime.now(UTC), **values)
    logger.info(
        "retrain run %s %s%s",
        ctx.run_id,
        status,
        f": {info.reason or info.error}" if info.reason or info.error else "",
    )
    return info


def _record_failure(ctx: _Context, exc: BaseException) -> None:
    message = _describe(exc)
    # A traceback only for the unexpected: bad data, bad parameters, a full disk or a
    # diverged model are explained by their message.
    expected = isinstance(exc, ValueError | ArithmeticError | OSError | RetrainError)
    if not isinstance(exc, Exception) or expected or type(exc).__name__ == "ArtifactError":
        logger.error("retrain run %s failed: %s", ctx.run_id, message)
    else:
        logger.error("retrain run %s failed: %s", ctx.run_id, message, exc_info=exc)
    try:
        with ctx.session_factory.begin() as session:
            run = session.get(TrainingRun, ctx.run_id, with_for_update=True)
            # A run whose outcome is already committed keeps it (e.g. retention or a
            # final read failed after the activation).
            if run is not None and run.status == "running":
                run.status = "failed"
                run.finished_at = datetime.now(UTC)
                run.error = message
                version_id = run.model_version_id
                if version_id is not None:
                    version = session.get(ModelVersion, version_id, with_for_update=True)
                    if version is not None and version.status in {"training", "candidate"}:
                        version.status = "failed"
                        version.note = f"its run failed: {message}"
                        if version.artifact_path:
                            shutil.rmtree(version.artifact_path, ignore_errors=True)
    except Exception:
        # The database is gone too: the next run's recovery marks this run failed.
        logger.exception("could not record the failure of run %s", ctx.run_id)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if not isinstance(exc, Exception) and str(exc):
        return str(exc)
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:2000]


def _execute(ctx: _Context, staging: Path) -> TrainingRunInfo:
    settings = ctx.settings
    with ctx.session_factory() as session:
        fingerprint = store_fingerprint(session)
        active = registry.get_active_version(session)
    if ctx.gated and active is not None and active.data_fingerprint == fingerprint:
        return _finish(
            ctx,
            "skipped",
            reason=(
                f"no rating changed since the snapshot of the active version {active.id} "
                f"({fingerprint})"
            ),
        )

    started = time.perf_counter()
    snapshot = read_ratings_snapshot(_engine_of(ctx.session_factory))
    read_seconds = time.perf_counter() - started
    n_users = int(pd.unique(snapshot.user_ids).size) if snapshot.n_ratings else 0
    n_items = int(pd.unique(snapshot.item_ids).size) if snapshot.n_ratings else 0
    _update_run(ctx, n_ratings=snapshot.n_ratings, n_users=n_users, n_items=n_items)
    if snapshot.n_ratings == 0:
        return _finish(ctx, "skipped", reason="the ratings table is empty: nothing to train on")
    if snapshot.n_ratings < MIN_TRAINING_RATINGS:
        return _finish(
            ctx,
            "skipped",
            reason=(
                f"only {snapshot.n_ratings} rating(s) in the store; at least "
                f"{MIN_TRAINING_RATINGS} are needed to train a model"
            ),
        )

    data = _split(snapshot, settings)
    _update_run(ctx, n_train=data.train.n_ratings, n_validation=data.n_validation)

    from rbm_core.artifact import save_model
    from rbm_core.model import SoftmaxRBM

    params = {"random_state": secrets.randbelow(2**31), **ctx.params}
    model = SoftmaxRBM()
    model.set_params(**params)
    version_id = registry.new_version_id()
    final_dir = Path(settings.model_dir).resolve() / version_id
    with ctx.session_factory.begin() as session:
        registry.reserve_version(
            session, version_id, final_dir, hyperparameters=_hyperparameters(model)
        )
        run = session.get(TrainingRun, ctx.run_id)
        assert run is not None
        run.model_version_id = version_id

    fit_started = time.perf_counter()
    with ctx.guard():
        model.fit(data.train, data.validation)
        fit_seconds = time.perf_counter() - fit_started
        candidate_scores = _evaluate(model, data)
        active_scores, active_note = (
            _evaluate_active(active, data) if ctx.gated and active else (None, None)
        )

    metrics: dict[str, Any] = {
        "validation_rmse": candidate_scores.rmse if candidate_scores else None,
        "validation_mae": candidate_scores.mae if candidate_scores else None,
        "n_validation": data.n_validation,
        "n_evaluated": candidate_scores.n if candidate_scores else 0,
        "epochs": int(getattr(model, "n_epochs_", 0)),
        "fit_seconds": round(fit_seconds, 3),
        "snapshot_seconds": round(read_seconds, 3),
        "holdout_fraction": HOLDOUT_FRACTION,
    }
    decision, reason = "activate", "no active model yet" if active is None else "ungated training"
    if ctx.gated and active is not None:
        decision, reason, comparison = _decide(
            candidate_scores,
            active_scores,
            active_note,
            active,
            data.held_ratings,
            settings.promotion_tolerance,
        )
        metrics.update(comparison)
    metrics["decision"] = decision
    curves = training_curves(getattr(model, "history_", []))

    # Publish: the artifact appears complete (atomic rename) or not at all.
    staging.parent.mkdir(parents=True, exist_ok=True)
    save_model(
        model,
        staging,
        metadata={
            "version_id": version_id,
            "run_id": ctx.run_id,
            "n_users": data.train.n_users,
            "n_items": data.train.n_items,
            "n_ratings": snapshot.n_ratings,
            "snapshot_max_rated_at": _iso(snapshot.max_rated_at),
            "data_fingerprint": fingerprint,
            "metrics": to_jsonable(metrics),
            "training_curves": to_jsonable(curves),
        },
    )
    check_artifact(staging)
    ctx.lock.check()
    os.replace(staging, final_dir)

    with ctx.session_factory.begin() as session:
        version = registry.register_version(
            session,
            final_dir,
            status="candidate",
            version_id=version_id,
            n_users=data.train.n_users,
            n_items=data.train.n_items,
            n_ratings=snapshot.n_ratings,
            snapshot_max_rated_at=snapshot.max_rated_at,
            data_fingerprint=fingerprint,
            hyperparameters=_hyperparameters(model),
            metrics=metrics,
            training_curves=curves,
        )
    ctx.lock.check()
    with ctx.session_factory.begin() as session:
        if decision == "activate":
            version = registry.activate_version(session, version_id)
            status = "activated"
        else:
            version = registry.set_version_status(session, version_id, "rejected", note=reason)
            status = "rejected"
        run = session.get(TrainingRun, ctx.run_id, with_for_update=True)
        assert run is not None
        run.status = status
        run.finished_at = datetime.now(UTC)
        run.metrics = to_jsonable(metrics)
        run.reason = reason
    logger.info("retrain run %s %s version %s: %s", ctx.run_id, status, version.id, reason)

    try:
        with ctx.session_factory.begin() as session:
            registry.prune_artifacts(session, settings.keep_versions)
    except Exception as exc:
        # The run's outcome stands; the next run prunes again.
        logger.warning("retention after run %s failed: %s", ctx.run_id, _describe(exc))
    with ctx.session_factory() as session:
        info = get_run(session, ctx.run_id)
    assert info is not None
    return info


# -- data, evaluation, decision --------------------------------------------------------------
@dataclass
class _Split:
    train: Any  # RatingMatrix
    validation: Any  # RatingMatrix | None
    n_validation: int
    # held-out ratings, and each validation user's training ratings (for fold-in)
    held_users: NDArray[Any]
    held_items: NDArray[Any]
    held_ratings: NDArray[np.float64]
    train_by_user: dict[str, dict[str, float]]


def _split(snapshot: RatingsSnapshot, settings: Settings) -> _Split:
    from rbm_core.data import RatingMatrix

    held = holdout_mask(snapshot.user_ids, snapshot.item_ids)
    kept = ~held
    train = RatingMatrix.from_arrays(
        snapshot.user_ids[kept].astype(str),
        snapshot.item_ids[kept].astype(str),
        snapshot.ratings[kept],
        settings.rating_scale,
    )
    held_users = snapshot.user_ids[held].astype(str)
    held_items = snapshot.item_ids[held].astype(str)
    held_ratings = snapshot.ratings[held]
    validation = None
    if held.any():
        validation = RatingMatrix.from_arrays(
            held_users, held_items, held_ratings, settings.rating_scale, item_catalog=train.item_ids
        )
        if validation.n_ratings == 0:
            validation = None
    wanted = set(held_users.tolist())
    train_by_user: dict[str, dict[str, float]] = {}
    users = snapshot.user_ids[kept]
    items = snapshot.item_ids[kept]
    values = snapshot.ratings[kept]
    select = np.fromiter((u in wanted for u in users), dtype=bool, count=len(users))
    for user, item, value in zip(
        users[select].tolist(), items[select].tolist(), values[select].tolist(), strict=True
    ):
        train_by_user.setdefault(user, {})[item] = value
    return _Split(
        train=train,
        validation=validation,
        n_validation=int(held.sum()),
        held_users=held_users,
        held_items=held_items,
        held_ratings=held_ratings,
        train_by_user=train_by_user,
    )


@dataclass(frozen=True)
class _Scores:
    rmse: float
    mae: float
    n: int
    predictions: NDArray[np.float64]  # NaN where the model does not know the item


def _predict_held_out(model: Any, data: _Split) -> NDArray[np.float64]:
    out = np.full(len(data.held_ratings), np.nan)
    if len(out) == 0:
        return out
    order = np.argsort(data.held_users, kind="stable")
    users = data.held_users[order]
    bounds = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True])
    for lo, hi in itertools.pairwise(bounds):
        idx = order[lo:hi]
        items = data.held_items[idx].tolist()
        prediction = model.predict(data.train_by_user.get(str(users[lo]), {}), item_ids=items)
        by_item = dict(
            zip(prediction.item_ids, np.asarray(prediction.expected).tolist(), strict=True)
        )
        out[idx] = [by_item.get(item, np.nan) for item in items]
    return out


def _scores(
    predictions: NDArray[np.float64], truth: NDArray[np.float64], mask: NDArray[np.bool_]
) -> _Scores | None:
    if not mask.any():
        return None
    return _Scores(
        rmse=rmse(truth[mask], predictions[mask]),
        mae=mae(truth[mask], predictions[mask]),
        n=int(mask.sum()),
        predictions=predictions,
    )


def _evaluate(model: Any, data: _Split) -> _Scores | None:
    predictions = _predict_held_out(model, data)
    return _scores(predictions, data.held_ratings, ~np.isnan(predictions))


def _evaluate_active(active: ModelVersionInfo, data: _Split) -> tuple[_Scores | None, str | None]:
    from rbm_core.artifact import load_model

    try:
        check_artifact(active.artifact_path, active.sha256)
        model = load_model(active.artifact_path, mmap=True)
    except Exception as exc:
        return None, f"the active version {active.id} cannot be loaded ({exc})"
    try:
        predictions = _predict_held_out(model, data)
    except Exception as exc:  # e.g. a different rating scale
        return None, f"the active version {active.id} cannot be evaluated ({exc})"
    return _scores(predictions, data.held_ratings, ~np.isnan(predictions)), None


def _decide(
    candidate: _Scores | None,
    active: _Scores | None,
    active_note: str | None,
    active_version: ModelVersionInfo,
    truth: NDArray[np.float64],
    tolerance: float,
) -> tuple[str, str, dict[str, Any]]:
    comparison: dict[str, Any] = {
        "active_version": active_version.id,
        "promotion_tolerance": tolerance,
    }
    if active_note is not None:
        return "activate", f"{active_note}; the candidate replaces it", comparison
    if candidate is None or active is None:
        return (
            "reject",
            "no held-out ratings to compare the candidate with the active model",
            comparison,
        )
    # Both models on exactly the same ratings: those both can predict.
    both = ~np.isnan(candidate.predictions) & ~np.isnan(active.predictions)
    cand = _scores(candidate.predictions, truth, both)
    act = _scores(active.predictions, truth, both)
    if cand is None or act is None:
        return (
            "reject",
            "the candidate and the active model share no predictable held-out ratings",
            comparison,
        )
    comparison.update(
        {
            "candidate_rmse": cand.rmse,
            "candidate_mae": cand.mae,
            "active_rmse": act.rmse,
            "active_mae": act.mae,
            "n_compared": cand.n,
        }
    )
    if cand.rmse <= act.rmse + tolerance:
        return (
            "activate",
            f"candidate RMSE {cand.rmse:.4f} vs active {act.rmse:.4f} on {cand.n} held-out "
            f"ratings (tolerance {tolerance})",
            comparison,
        )
    return (
        "reject",
        f"candidate RMSE {cand.rmse:.4f} is worse than the active version "
        f"{active_version.id}'s {act.rmse:.4f} by more than the tolerance {tolerance} "
        f"(on {cand.n} held-out ratings)",
        comparison,
    )


def training_curves(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-epoch curves from a model's ``history_``, as lists keyed by name.

    Adds ``free_energy_gap`` (mean validation free energy minus mean training free
    energy, per epoch): when it grows, the model is overfitting.
    """
    curves: dict[str, list[Any]] = {}
    for entry in history:
        for key, value in entry.items():
            curves.setdefault(key, []).append(value)
    train_fe = curves.get("train_free_energy")
    val_fe = curves.get("validation_free_energy")
    if train_fe is not None and val_fe is not None:
        curves["free_energy_gap"] = [
            (v - t) if v is not None and t is not None else None
            for t, v in zip(train_fe, val_fe, strict=True)
        ]
    return to_jsonable(curves)  # type: ignore[no-any-return]


def _hyperparameters(model: Any) -> dict[str, Any]:
    params = model.get_params() if hasattr(model, "get_params") else {}
    return to_jsonable(params)  # type: ignore[no-any-return]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
