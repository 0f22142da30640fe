"""The retrain job: snapshot -> split -> train -> gate -> publish, one unit of work per step.

One run (:func:`run_retrain`), under the retrain lock (:mod:`app.db.retrain_lock`):

1. Finish off runs abandoned by a dead process (:mod:`.recovery`), and record the
   start of this run (:mod:`.runs`).
2. Skip when nothing changed: the store's fingerprint (count of ratings, sum of
   their row versions, newest write) equals the one recorded with the active
   version. The fingerprint is taken *before* the snapshot, so a write that lands
   in between makes the next run train again: it can cause an extra run, never a
   missed rating.
3. Read one consistent snapshot of all ratings (:mod:`app.db.snapshot`: COPY in a
   REPEATABLE READ transaction on PostgreSQL), and record its size. Ratings
   written afterwards change the fingerprint, so the next run includes them.
4. Split off the stable hold-out (:mod:`.holdout`), reserve the version row
   (``training``) and record the split, in one transaction.
5. Train the candidate (an :class:`~rbm_core.recommender.RBMRecommender`: it carves
   its own validation split out of the training ratings to choose its settings and
   weights) on the rest; score it, the active version and the bias baseline on the
   same held-out ratings and let the gate decide (:mod:`.gate`).
6. Save the artifact (``save_model`` writes to a temporary directory and renames it
   into place) and verify it (SHA-256, loads); then register the version, activate
   or reject it, and record the run's outcome, in one transaction.
7. Retention: keep the files of the newest ``RBMREC_KEEP_VERSIONS`` versions and
   always the active one (its own transaction: a failure there leaves the outcome).

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
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import pandas as pd
from sqlalchemy.orm import Session, sessionmaker

from app.db.engine import engine_of
from app.db.ratings import store_fingerprint
from app.db.retrain_lock import LockBusyError, RetrainLock
from app.db.snapshot import RatingsSnapshot, read_ratings_snapshot
from app.jsonable import to_jsonable
from app.services import registry
from app.services.artifacts import STAGING_DIR, check_artifact, remove_artifact
from app.services.registry import ModelVersionInfo
from app.services.retrain import gate, runs
from app.services.retrain.holdout import HOLDOUT_FRACTION, HoldOut, split_snapshot
from app.services.retrain.recovery import recover_abandoned
from app.services.retrain.runs import TrainingRunInfo
from app.settings import Settings
from rbm_core.artifact import ArtifactError, save_model
from rbm_core.recommender import RBMRecommender, recommender_settings

logger = logging.getLogger(__name__)

__all__ = [
    "MIN_TRAINING_RATINGS",
    "InterruptGuard",
    "RetrainError",
    "candidate_model",
    "run_retrain",
    "train_and_activate",
    "training_curves",
]

MIN_TRAINING_RATINGS: Final = 10
"""Fewer ratings than this: the run is skipped (nothing worth training)."""

InterruptGuard = Callable[[], AbstractContextManager[None]]
"""Wraps the phases that may be interrupted (training, evaluation); see app.worker."""


class RetrainError(RuntimeError):
    """A retrain did not produce an active model; ``run`` says why."""

    def __init__(self, message: str, run: TrainingRunInfo | None = None) -> None:
        super().__init__(message)
        self.run = run


@dataclass(frozen=True)
class _Context:
    """What every step of one run needs."""

    session_factory: sessionmaker[Session]
    settings: Settings
    run_id: str
    lock: RetrainLock
    params: dict[str, Any]
    guard: InterruptGuard
    gated: bool


# -- entry points ------------------------------------------------------------------------
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
        Settings of the :class:`rbm_core.recommender.RBMRecommender`, its parts'
        addressed as ``PART.NAME`` (see :func:`~rbm_core.recommender.recommender_settings`).
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
    runs.validate_trigger(trigger)
    # settings are checked before anything is locked, read or recorded
    candidate_settings = candidate_model(params).get_params()
    model_dir = Path(settings.model_dir).resolve()
    model_dir.mkdir(parents=True, exist_ok=True)
    lock = RetrainLock(engine_of(session_factory), model_dir)
    try:
        lock.acquire()
    except LockBusyError as busy:
        with session_factory.begin() as session:
            return runs.record_busy(session, trigger=trigger, run_id=run_id, why=str(busy))
    try:
        recover_abandoned(session_factory, model_dir)
        with session_factory.begin() as session:
            started = runs.start_run(session, trigger=trigger, run_id=run_id)
            if started is None:  # the queued run was taken or finished meanwhile
                assert run_id is not None
                current = runs.get_run(session, run_id)
                if current is None:
                    raise LookupError(f"no training run {run_id!r}")
                return current
        ctx = _Context(
            session_factory=session_factory,
            settings=settings,
            run_id=started.id,
            lock=lock,
            params=candidate_settings,
            guard=interrupt_guard or contextlib.nullcontext,
            gated=gated,
        )
        staging = model_dir / STAGING_DIR / started.id
        try:
            return _execute(ctx, staging)
        except BaseException as exc:
            failed = _record_failure(ctx, exc)
            if not isinstance(exc, Exception):
                raise
            if failed is not None:
                return failed
            with session_factory() as session:
                current = runs.get_run(session, started.id)
            assert current is not None
            return current
        finally:
            remove_artifact(staging, model_dir)
    finally:
        lock.release()


# -- the steps of one run ------------------------------------------------------------------
def _execute(ctx: _Context, staging: Path) -> TrainingRunInfo:
    # Has anything changed since the active version's snapshot?
    with ctx.session_factory() as session:
        fingerprint = store_fingerprint(session)
        active = registry.get_active_version(session)
    if ctx.gated and active is not None and active.data_fingerprint == fingerprint:
        reason = (
            f"no rating changed since the snapshot of the active version {active.id} "
            f"({fingerprint})"
        )
        with ctx.session_factory.begin() as session:
            return runs.finish_run(session, ctx.run_id, "skipped", reason=reason)

    started = time.perf_counter()
    snapshot = read_ratings_snapshot(engine_of(ctx.session_factory))
    read_seconds = time.perf_counter() - started
    skip = _too_few_ratings(snapshot)
    with ctx.session_factory.begin() as session:
        runs.update_run(session, ctx.run_id, **_snapshot_sizes(snapshot))
        if skip is not None:
            return runs.finish_run(session, ctx.run_id, "skipped", reason=skip)

    holdout = split_snapshot(snapshot, ctx.settings.rating_scale)
    model = RBMRecommender(**ctx.params)
    if model.random_state is None:
        model.set_params(random_state=secrets.randbelow(2**31))
    version_id = registry.new_version_id()
    final_dir = Path(ctx.settings.model_dir).resolve() / version_id
    with ctx.session_factory.begin() as session:
        registry.reserve_version(
            session, version_id, final_dir, hyperparameters=_hyperparameters(model)
        )
        runs.update_run(
            session,
            ctx.run_id,
            n_train=holdout.train.n_ratings,
            n_validation=holdout.n_held,
            model_version_id=version_id,
        )

    with ctx.guard():
        decision, figures = _train_and_judge(ctx, model, holdout, active)
    metrics: dict[str, Any] = {
        **figures,
        "snapshot_seconds": round(read_seconds, 3),
        "holdout_fraction": HOLDOUT_FRACTION,
        **decision.figures,
        "decision": decision.verdict,
    }
    trained = _Trained(
        version_id=version_id,
        model=model,
        holdout=holdout,
        snapshot=snapshot,
        fingerprint=fingerprint,
        metrics=metrics,
        curves={part: training_curves(history) for part, history in model.curves_.items()},
        decision=decision,
    )

    # Publish: the artifact appears complete (atomic rename) or not at all.
    _save_artifact(ctx, trained, staging)
    ctx.lock.check()
    os.replace(staging, final_dir)
    ctx.lock.check()
    with ctx.session_factory.begin() as session:
        info = _publish(session, ctx, trained, final_dir)
    _retain(ctx)
    return info


def _train_and_judge(
    ctx: _Context, model: RBMRecommender, holdout: HoldOut, active: ModelVersionInfo | None
) -> tuple[gate.Decision, dict[str, Any]]:
    """Fit the candidate, score it and the references on the hold-out, let the gate decide.

    Returns the decision and the candidate's own figures (validation RMSE/MAE on
    every held-out rating it predicts, epochs, fit time).
    """
    started = time.perf_counter()
    model.fit(holdout.train)
    fit_seconds = time.perf_counter() - started
    candidate = gate.score("candidate", model, holdout)
    references = _references(ctx, holdout, active)
    if references:
        decision = gate.decide(candidate, references, gate.criteria(ctx.settings), holdout)
        if active is None and decision.activate:
            decision = gate.Decision(
                True, f"no active model yet; {decision.reason}", decision.figures
            )
    else:
        decision = gate.Decision(activate=True, reason="ungated training", figures={})
    own = gate.own_figures(candidate, holdout)
    figures = {
        "validation_rmse": own["validation_rmse"],
        "validation_mae": own["validation_mae"],
        "validation_ndcg_at_10": candidate.ndcg,
        "n_validation": holdout.n_held,
        "n_evaluated": own["n_evaluated"],
        "fit_seconds": round(fit_seconds, 3),
        "search_seconds": model.search_["seconds"],
        "model_selection": model.validation_,
    }
    return decision, figures


def _references(
    ctx: _Context, holdout: HoldOut, active: ModelVersionInfo | None
) -> list[gate.Reference]:
    """What a gated candidate must not be worse than: the active version, if any, and
    always the bias baseline."""
    if not ctx.gated:
        return []
    references = [gate.baseline_reference(holdout)]
    if active is not None:
        references.insert(0, gate.active_reference(active, holdout))
    return references


@dataclass(frozen=True)
class _Trained:
    """A candidate trained and judged, ready to be published."""

    version_id: str
    model: RBMRecommender
    holdout: HoldOut
    snapshot: RatingsSnapshot
    fingerprint: str
    metrics: dict[str, Any]
    curves: dict[str, Any]
    decision: gate.Decision


def _too_few_ratings(snapshot: RatingsSnapshot) -> str | None:
    """Why the snapshot is not worth training on, if it is not."""
    if snapshot.n_ratings == 0:
        return "the ratings table is empty: nothing to train on"
    if snapshot.n_ratings < MIN_TRAINING_RATINGS:
        return (
            f"only {snapshot.n_ratings} rating(s) in the store; at least "
            f"{MIN_TRAINING_RATINGS} are needed to train a model"
        )
    return None


def _snapshot_sizes(snapshot: RatingsSnapshot) -> dict[str, int]:
    if not snapshot.n_ratings:
        return {"n_ratings": 0, "n_users": 0, "n_items": 0}
    return {
        "n_ratings": snapshot.n_ratings,
        "n_users": int(pd.unique(snapshot.user_ids).size),
        "n_items": int(pd.unique(snapshot.item_ids).size),
    }


def _save_artifact(ctx: _Context, trained: _Trained, staging: Path) -> None:
    """Write the candidate's artifact to the staging directory and verify it."""
    staging.parent.mkdir(parents=True, exist_ok=True)
    save_model(
        trained.model,
        staging,
        metadata={
            "version_id": trained.version_id,
            "run_id": ctx.run_id,
            "n_users": trained.holdout.train.n_users,
            "n_items": trained.holdout.train.n_items,
            "n_ratings": trained.snapshot.n_ratings,
            "snapshot_max_rated_at": _iso(trained.snapshot.max_rated_at),
            "data_fingerprint": trained.fingerprint,
            "metrics": to_jsonable(trained.metrics),
            "training_curves": to_jsonable(trained.curves),
        },
    )
    check_artifact(staging)


def _publish(
    session: Session, ctx: _Context, trained: _Trained, final_dir: Path
) -> TrainingRunInfo:
    """Register the version, activate or reject it, and record the run's outcome."""
    decision = trained.decision
    version = registry.register_version(
        session,
        final_dir,
        status="active" if decision.activate else "rejected",
        version_id=trained.version_id,
        n_users=trained.holdout.train.n_users,
        n_items=trained.holdout.train.n_items,
        n_ratings=trained.snapshot.n_ratings,
        snapshot_max_rated_at=trained.snapshot.max_rated_at,
        data_fingerprint=trained.fingerprint,
        hyperparameters=_hyperparameters(trained.model),
        metrics=trained.metrics,
        training_curves=trained.curves,
        note=None if decision.activate else decision.reason,
    )
    status = "activated" if decision.activate else "rejected"
    info = runs.finish_run(
        session, ctx.run_id, status, metrics=trained.metrics, reason=decision.reason
    )
    logger.info("retrain run %s %s version %s: %s", ctx.run_id, status, version.id, decision.reason)
    return info


def _retain(ctx: _Context) -> None:
    """Delete the files of old versions; the run's outcome stands whatever happens."""
    try:
        with ctx.session_factory.begin() as session:
            registry.prune_artifacts(session, ctx.settings.keep_versions, ctx.settings.model_dir)
    except Exception as exc:
        # The next run prunes again.
        logger.warning("retention after run %s failed: %s", ctx.run_id, _describe(exc))


def _record_failure(ctx: _Context, exc: BaseException) -> TrainingRunInfo | None:
    """Mark the run and its unpublished version ``failed``; delete the version's files."""
    message = _describe(exc)
    # A traceback only for the unexpected: bad data, bad parameters, a full disk or a
    # diverged model are explained by their message.
    expected = isinstance(
        exc, ValueError | ArithmeticError | OSError | RetrainError | ArtifactError
    )
    if not isinstance(exc, Exception) or expected:
        logger.error("retrain run %s failed: %s", ctx.run_id, message)
    else:
        logger.error("retrain run %s failed: %s", ctx.run_id, message, exc_info=exc)
    try:
        with ctx.session_factory.begin() as session:
            failed = runs.fail_run(session, ctx.run_id, message)
            version_id = failed.model_version_id if failed is not None else None
            version = registry.get_version(session, version_id) if version_id else None
            if version is not None and version.status in {"training", "candidate"}:
                registry.set_version_status(
                    session, version.id, "failed", note=f"its run failed: {message}"
                )
                remove_artifact(version.artifact_path, ctx.settings.model_dir)
            return failed
    except Exception:
        # The database is gone too: the next run's recovery marks this run failed.
        logger.exception("could not record the failure of run %s", ctx.run_id)
        return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if not isinstance(exc, Exception) and str(exc):
        return str(exc)
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:2000]


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
    jsonable: dict[str, Any] = to_jsonable(curves)
    return jsonable


def candidate_model(params: Mapping[str, Any] | None) -> RBMRecommender:
    """The model a run trains, from flat settings (``PART.NAME`` for a part's).

    Raises
    ------
    RetrainError
        A setting is unknown or breaks its rule (the message says which and why).
    """
    try:
        model = RBMRecommender(**recommender_settings(dict(params or {})))
        model._validate_params()
    except (TypeError, ValueError) as exc:
        raise RetrainError(f"bad model settings: {exc}") from None
    return model


def _hyperparameters(model: RBMRecommender) -> dict[str, Any]:
    """The settings asked for and, once fitted, what the search chose for each part."""
    params: dict[str, Any] = to_jsonable(model.get_params())
    search = getattr(model, "search_", None)
    if search is not None:
        params["chosen"] = to_jsonable(search["chosen"])
    return params


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
