"""The retrain job and the worker, on SQLite and PostgreSQL, with real models and processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _registry_support import (
    SMALL_PARAMS,
    add_items,
    add_ratings,
    import_subset,
    invoke_cli,
    settings_for,
    write_subset,
)
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db.ratings import count_ratings
from app.db.retrain_lock import LockBusyError, RetrainLock
from app.db.snapshot import read_ratings_snapshot
from app.db.tables import ModelVersion, Rating, TrainingRun
from app.services import registry, retrain
from app.services.artifacts import STAGING_DIR
from app.services.retrain import (
    RetrainError,
    request_retrain,
    run_retrain,
    train_and_activate,
)
from app.settings import Settings
from app.worker import Worker
from rbm_core.artifact import save_model
from rbm_core.data import RatingMatrix
from rbm_core.model import SoftmaxRBM

RBMREC = str(Path(sys.executable).with_name("rbmrec"))


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    path = tmp_path / "models"
    path.mkdir()
    return path


@pytest.fixture
def settings(database_url: str, model_dir: Path) -> Settings:
    return settings_for(database_url, model_dir, keep_versions=5)


@pytest.fixture(scope="module")
def subset_dir(tmp_path_factory: pytest.TempPathFactory, movielens_dir: Path) -> Path:
    return write_subset(tmp_path_factory.mktemp("ml-subset"), movielens_dir, n_users=120)


@pytest.fixture
def store(session_factory: sessionmaker[Session], subset_dir: Path) -> int:
    """The store holding ML-100K users 1-120 (12,719 ratings)."""
    return import_subset(session_factory, subset_dir)


def _versions(session_factory: sessionmaker[Session]) -> dict[str, registry.ModelVersionInfo]:
    with session_factory() as session:
        return {v.id: v for v in registry.list_versions(session)}


def _active(session_factory: sessionmaker[Session]) -> registry.ModelVersionInfo | None:
    with session_factory() as session:
        return registry.get_active_version(session)


def _run(session_factory: sessionmaker[Session], run_id: str) -> retrain.TrainingRunInfo:
    with session_factory() as session:
        info = retrain.get_run(session, run_id)
    assert info is not None
    return info


def _wait_for(condition: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")


def _staging_leftovers(model_dir: Path) -> list[Path]:
    staging = model_dir / STAGING_DIR
    return list(staging.iterdir()) if staging.exists() else []


def _env(database_url: str, model_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        RBMREC_DATABASE_URL=database_url,
        RBMREC_MODEL_DIR=str(model_dir),
        RBMREC_RETRAIN_CRON="0 0 1 1 *",
        RBMREC_LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen([RBMREC, *args], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        # pytest shows this captured output when the test fails
        print(f"--- rbmrec {' '.join(args)} (exit {proc.returncode}):\n{log.read_text()}")


def _training_version(session_factory: sessionmaker[Session]) -> str | None:
    with session_factory() as session:
        return session.scalars(
            select(ModelVersion.id).where(ModelVersion.status == "training")
        ).first()


# -- the gated run ---------------------------------------------------------------------
def test_retrain_trains_compares_activates_and_skips_when_unchanged(
    session_factory: sessionmaker[Session], settings: Settings, store: int
) -> None:
    first = run_retrain(session_factory, settings, trigger="cli", params=SMALL_PARAMS)
    assert first.status == "activated", first
    # no active version to compare with, but the bias baseline always is one
    assert first.reason is not None
    assert first.reason.startswith("no active model yet; candidate RMSE")
    assert "vs bias_baseline" in first.reason
    assert first.metrics["candidate_rmse"] <= first.metrics["bias_baseline_rmse"]
    assert first.n_ratings == store
    assert first.n_users == 120
    assert first.n_train is not None
    assert first.n_validation is not None
    assert first.n_train + first.n_validation == store
    assert 0.05 * store < first.n_validation < 0.15 * store
    assert first.started_at is not None
    assert first.finished_at is not None
    assert first.finished_at >= first.started_at
    active = _active(session_factory)
    assert active is not None
    assert active.id == first.model_version_id
    assert active.artifact_path.is_dir()
    assert active.artifact_path.parent == settings.model_dir.resolve()
    assert active.n_ratings == store
    chosen = active.hyperparameters["chosen"]
    assert chosen["user_rbm"]["n_hidden"] == SMALL_PARAMS["user_rbm.n_hidden"]
    assert chosen["ranker"]["n_hidden"] == SMALL_PARAMS["ranker.n_hidden"]
    # curves per part and epoch, from the model's own validation split, saved with it
    curves = active.training_curves
    assert set(curves) == {"user_rbm", "item_rbm", "ranker"}
    user = curves["user_rbm"]
    assert len(user["validation_rmse"]) == len(user["epoch"]) >= SMALL_PARAMS["user_rbm.n_epochs"]
    assert len(user["free_energy_gap"]) == len(user["epoch"])
    assert all(np.isfinite(user["free_energy_gap"]))
    assert any(v is not None for v in curves["ranker"]["validation_ndcg"])
    assert 0.5 < active.metrics["validation_rmse"] < 1.5
    assert 0.0 < active.metrics["validation_ndcg_at_10"] < 1.0
    assert active.metrics["model_selection"]["mode"] == "validated"

    # nothing changed: skipped, with the reason
    second = run_retrain(session_factory, settings, trigger="schedule", params=SMALL_PARAMS)
    assert second.status == "skipped"
    assert second.reason is not None
    assert "no rating changed" in second.reason
    assert second.model_version_id is None

    # an update of one existing rating (count unchanged) is a change
    with session_factory.begin() as session:
        row = session.scalars(select(Rating).limit(1)).one()
        new_value = 1.0 if row.rating != 1.0 else 5.0
    add_ratings(session_factory, row.user_id, {row.item_id: new_value})
    third = run_retrain(session_factory, settings, trigger="cli", params=SMALL_PARAMS)
    assert third.status == "activated", third
    # candidate and active evaluated on the same held-out ratings
    assert third.metrics["active_version"] == first.model_version_id
    assert third.metrics["n_compared"] > 0
    assert abs(third.metrics["candidate_rmse"] - third.metrics["active_rmse"]) < 0.2
    assert third.metrics["active_ndcg_at_10"] is not None
    assert third.metrics["ndcg_tolerance"] == settings.ndcg_tolerance
    assert _active(session_factory).id == third.model_version_id  # type: ignore[union-attr]
    assert _versions(session_factory)[first.model_version_id].status == "retired"  # type: ignore[index]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_worse_candidate_is_rejected(
    session_factory: sessionmaker[Session], settings: Settings, store: int
) -> None:
    # The active model has seen the held-out ratings (trained on every rating, long
    # enough to memorise them), so any honest candidate is clearly worse on them.
    snapshot = read_ratings_snapshot(session_factory.kw["bind"])
    everything = RatingMatrix.from_arrays(
        snapshot.user_ids.astype(str),
        snapshot.item_ids.astype(str),
        snapshot.ratings,
        settings.rating_scale,
    )
    leaked = SoftmaxRBM(n_hidden=100, n_epochs=20, random_state=0).fit(everything)
    path = save_model(leaked, settings.model_dir / registry.new_version_id())
    with session_factory.begin() as session:
        active = registry.register_version(session, path, status="active")

    candidate = run_retrain(session_factory, settings, trigger="cli", params=SMALL_PARAMS)
    assert candidate.status == "rejected", candidate
    assert candidate.reason is not None
    assert "worse than the active version" in candidate.reason
    metrics = candidate.metrics
    assert metrics["active_version"] == active.id
    assert metrics["candidate_rmse"] > metrics["active_rmse"] + settings.promotion_tolerance
    assert metrics["n_compared"] > 1000
    versions = _versions(session_factory)
    assert versions[candidate.model_version_id].status == "rejected"  # type: ignore[index]
    assert versions[candidate.model_version_id].note == candidate.reason  # type: ignore[index]
    assert versions[candidate.model_version_id].artifact_available  # type: ignore[index]
    assert _active(session_factory).id == active.id  # type: ignore[union-attr]

    # a rejected version can still be activated by hand
    with session_factory.begin() as session:
        registry.activate_version(session, candidate.model_version_id)  # type: ignore[arg-type]
    assert _active(session_factory).id == candidate.model_version_id  # type: ignore[union-attr]


def test_empty_and_tiny_stores_give_a_recorded_outcome(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    empty = run_retrain(session_factory, settings, trigger="schedule", params=SMALL_PARAMS)
    assert empty.status == "skipped"
    assert empty.reason == "the ratings table is empty: nothing to train on"
    with pytest.raises(RetrainError, match="empty"):
        train_and_activate(session_factory, settings, params=SMALL_PARAMS)

    add_items(session_factory, ["1", "2", "3"])
    add_ratings(session_factory, "u1", {"1": 5.0, "2": 3.0, "3": 4.0})
    tiny = run_retrain(session_factory, settings, trigger="schedule", params=SMALL_PARAMS)
    assert tiny.status == "skipped"
    assert "only 3 rating(s)" in (tiny.reason or "")
    assert _versions(session_factory) == {}

    # the CLI reports the outcome, exit code 0 (nothing failed)
    result = invoke_cli(["retrain"], _env(settings.database_url, settings.model_dir))
    assert result.exit_code == 0, result.output
    assert "skipped: only 3 rating(s)" in result.output


def test_bad_settings_fail_fast_before_anything_is_recorded(
    session_factory: sessionmaker[Session], settings: Settings, store: int
) -> None:
    # checked before the lock, the snapshot and the split: nothing is recorded
    with pytest.raises(RetrainError, match=r"user_rbm.*n_hidden must be"):
        run_retrain(session_factory, settings, trigger="cli", params={"user_rbm.n_hidden": 0})
    with pytest.raises(RetrainError, match="unknown setting 'n_hiden'"):
        run_retrain(session_factory, settings, trigger="cli", params={"n_hiden": 3})
    with session_factory() as session:
        assert session.scalars(select(TrainingRun)).all() == []
    assert _versions(session_factory) == {}
    assert _active(session_factory) is None
    assert _staging_leftovers(settings.model_dir) == []
    assert not [p for p in settings.model_dir.iterdir() if not p.name.startswith(".")]


def test_ratings_written_during_a_retrain_are_in_the_next_snapshot(
    session_factory: sessionmaker[Session], settings: Settings, store: int
) -> None:
    writes = {"during-retrain": {"1": 5.0, "2": 4.0, "3": 1.0}}

    @contextlib.contextmanager
    def write_while_training() -> Iterator[None]:
        # Runs around model.fit: the snapshot is already taken; these writes commit
        # concurrently with the training.
        for user, ratings in writes.items():
            add_ratings(session_factory, user, ratings)
        with session_factory.begin() as session:
            row = session.scalars(select(Rating).where(Rating.user_id == "7").limit(1)).one()
            row.rating = 1.0 if row.rating != 1.0 else 2.0
            row.version += 1
        yield

    first = run_retrain(
        session_factory,
        settings,
        trigger="cli",
        params=SMALL_PARAMS,
        interrupt_guard=write_while_training,
    )
    assert first.status == "activated"
    assert first.n_ratings == store  # the snapshot predates the writes
    with session_factory() as session:
        assert count_ratings(session) == store + 3

    writes.clear()
    second = run_retrain(session_factory, settings, trigger="cli", params=SMALL_PARAMS)
    assert second.status == "activated", second  # not "skipped": the store changed
    assert second.n_ratings == store + 3
    assert second.n_users == 121
    assert _active(session_factory).n_ratings == store + 3  # type: ignore[union-attr]


def test_train_and_activate_neither_skips_nor_compares(
    session_factory: sessionmaker[Session], settings: Settings, store: int
) -> None:
    first = train_and_activate(session_factory, settings, params=SMALL_PARAMS)
    assert first.status == "active"
    assert first.n_ratings == store
    user_curves = first.training_curves["user_rbm"]
    assert len(user_curves["validation_rmse"]) >= SMALL_PARAMS["user_rbm.n_epochs"]
    # the store is unchanged: run_retrain would skip, train_and_activate trains
    second = train_and_activate(session_factory, settings, params=SMALL_PARAMS)
    assert second.status == "active"
    assert "active_rmse" not in second.metrics  # no comparison
    assert _versions(session_factory)[first.id].status == "retired"
    with session_factory() as session:
        runs = retrain.list_runs(session)
    assert [r.status for r in runs] == ["activated", "activated"]
    with RetrainLock(session_factory.kw["bind"], settings.model_dir), pytest.raises(LockBusyError):
        train_and_activate(session_factory, settings, params=SMALL_PARAMS)


def test_retention_keeps_the_newest_versions_on_disk(
    session_factory: sessionmaker[Session], database_url: str, model_dir: Path, store: int
) -> None:
    settings = settings_for(database_url, model_dir, keep_versions=2)
    produced = []
    for n in range(4):
        add_ratings(session_factory, f"retention-{n}", {"1": 4.0})
        info = run_retrain(session_factory, settings, trigger="cli", params=SMALL_PARAMS)
        assert info.status == "activated"
        produced.append(info.model_version_id)
    on_disk = sorted(p.name for p in model_dir.iterdir() if not p.name.startswith("."))
    assert on_disk == sorted(produced[-2:])
    versions = _versions(session_factory)
    assert [versions[v].artifact_available for v in produced] == [False, False, True, True]
    assert versions[produced[-1]].status == "active"


# -- the lock, a killed run, the worker --------------------------------------------------
def test_lock_is_exclusive(engine: Any, model_dir: Path) -> None:
    with RetrainLock(engine, model_dir) as held:
        held.check()
        with pytest.raises(LockBusyError):
            RetrainLock(engine, model_dir).acquire()
    # released: free again
    with RetrainLock(engine, model_dir):
        pass


def test_killed_retrain_leaves_the_previous_version_and_the_worker_recovers(
    session_factory: sessionmaker[Session],
    settings: Settings,
    database_url: str,
    model_dir: Path,
    store: int,
    tmp_path: Path,
) -> None:
    previous = run_retrain(session_factory, settings, trigger="cli", params=SMALL_PARAMS)
    assert previous.status == "activated"
    add_ratings(session_factory, "before-kill", {"1": 5.0})
    env = _env(database_url, model_dir)

    with _process(
        [
            "retrain",
            "--epochs",
            "1000000",
            "--hidden",
            "16",
            "--param",
            "user_rbm.n_iter_no_change=1000000",
        ],
        env,
        tmp_path / "retrain.log",
    ) as proc:
        training = _wait_for(
            lambda: _training_version(session_factory), what="the subprocess to start training"
        )
        with session_factory() as session:
            killed_run = session.scalars(
                select(TrainingRun.id).where(TrainingRun.status == "running")
            ).one()

        # at most one retrain at a time, across processes
        refused = run_retrain(session_factory, settings, trigger="cli", params=SMALL_PARAMS)
        assert refused.status == "skipped"
        assert "another retrain is in progress" in (refused.reason or "")
        with session_factory.begin() as session:
            queued, created = request_retrain(session)
        assert created
        still = run_retrain(
            session_factory, settings, trigger="api", run_id=queued.id, params=SMALL_PARAMS
        )
        assert still.status == "queued"
        with session_factory.begin() as session:  # a second request joins the queued run
            assert request_retrain(session) == (still, False)

        add_ratings(session_factory, "during-kill", {"2": 3.0, "3": 4.0})
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    # nothing half-published: the previous version still serves
    assert _active(session_factory).id == previous.model_version_id  # type: ignore[union-attr]
    assert _run(session_factory, killed_run).status == "running"  # abandoned, not yet known
    assert not (model_dir / training).exists()

    # the next worker start marks the abandoned run failed, then runs the queued one
    with _process(
        [
            "worker",
            "--poll-seconds",
            "0.2",
            "--epochs",
            "2",
            "--hidden",
            "16",
            "--param",
            "search=false",
        ],
        env,
        tmp_path / "worker.log",
    ) as worker:
        _wait_for(
            lambda: _run(session_factory, queued.id).finished, what="the worker to run the queue"
        )
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0, (tmp_path / "worker.log").read_text()

    dead = _run(session_factory, killed_run)
    assert dead.status == "failed"
    assert dead.error is not None
    assert dead.error.startswith("abandoned")
    assert _versions(session_factory)[training].status == "failed"
    done = _run(session_factory, queued.id)
    assert done.status == "activated", done
    assert done.trigger == "api"
    assert done.n_ratings == store + 3  # including the ratings written during the kill
    assert _active(session_factory).id == done.model_version_id  # type: ignore[union-attr]
    assert _staging_leftovers(model_dir) == []
    assert "worker stopped" in (tmp_path / "worker.log").read_text()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sigterm_interrupts_training_and_the_worker_exits_cleanly(
    session_factory: sessionmaker[Session],
    settings: Settings,
    database_url: str,
    model_dir: Path,
    store: int,
    tmp_path: Path,
) -> None:
    previous = run_retrain(session_factory, settings, trigger="cli", params=SMALL_PARAMS)
    add_ratings(session_factory, "x", {"1": 5.0})
    with session_factory.begin() as session:
        queued, _ = request_retrain(session)
    log = tmp_path / "worker.log"
    with _process(
        [
            "worker",
            "--poll-seconds",
            "0.2",
            "--epochs",
            "1000000",
            "--hidden",
            "16",
            "--param",
            "user_rbm.n_iter_no_change=1000000",
        ],
        _env(database_url, model_dir),
        log,
    ) as worker:
        training = _wait_for(lambda: _training_version(session_factory), what="training")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0, log.read_text()
    run = _run(session_factory, queued.id)
    assert run.status == "failed"
    assert run.error == "interrupted: received SIGTERM"
    assert _versions(session_factory)[training].status == "failed"
    assert _active(session_factory).id == previous.model_version_id  # type: ignore[union-attr]
    assert _staging_leftovers(model_dir) == []
    assert "Traceback" not in log.read_text()


def test_worker_runs_the_schedule_and_the_queue(
    session_factory: sessionmaker[Session], settings: Settings, store: int
) -> None:
    now = [datetime(2026, 1, 1, 2, 59, tzinfo=UTC)]
    worker = Worker(
        session_factory, settings, poll_seconds=0.1, params=SMALL_PARAMS, clock=lambda: now[0]
    )
    assert worker.next_fire == datetime(2026, 1, 1, 3, 0, tzinfo=UTC)  # default "0 3 * * *"
    assert worker.run_once() is None  # not due, nothing queued
    assert 0 < worker.sleep_seconds() <= 0.1

    now[0] += timedelta(minutes=2)
    scheduled = worker.run_once()
    assert scheduled is not None
    assert scheduled.trigger == "schedule"
    assert scheduled.status == "activated"
    assert worker.next_fire == datetime(2026, 1, 2, 3, 0, tzinfo=UTC)
    assert worker.run_once() is None

    with session_factory.begin() as session:
        queued, _ = request_retrain(session)
    ran = worker.run_once()
    assert ran is not None
    assert ran.id == queued.id
    assert ran.status == "skipped"  # nothing changed since the scheduled run
    assert _run(session_factory, queued.id).status == "skipped"


def test_invalid_cron_is_a_clear_error(database_url: str, model_dir: Path) -> None:
    result = invoke_cli(["worker"], _env(database_url, model_dir, RBMREC_RETRAIN_CRON="every day"))
    assert result.exit_code == 1
    assert "invalid cron expression 'every day'" in result.output
