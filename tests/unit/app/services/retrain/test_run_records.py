"""Run records (app.services.retrain.runs) against real SQLite and PostgreSQL stores."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.services.retrain import runs


def test_a_request_joins_the_run_already_queued(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as session:
        first, created = runs.request_retrain(session)
    assert created
    assert (first.status, first.trigger) == ("queued", "api")
    assert first.started_at is None
    with session_factory.begin() as session:
        again, created = runs.request_retrain(session, trigger="cli")
    assert not created
    assert again == first
    with session_factory() as session:
        assert runs.next_queued_run(session) == first.id


def test_a_queued_run_is_claimed_once(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as session:
        queued, _ = runs.request_retrain(session)
    with session_factory.begin() as session:
        claimed = runs.start_run(session, trigger="api", run_id=queued.id)
    assert claimed is not None
    assert claimed.status == "running"
    assert claimed.started_at is not None
    assert claimed.owner == runs.run_owner()
    with session_factory.begin() as session:
        assert runs.start_run(session, trigger="api", run_id=queued.id) is None
        assert runs.next_queued_run(session) is None


def test_a_new_run_starts_running(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as session:
        run = runs.start_run(session, trigger="schedule", run_id=None)
    assert run is not None
    assert (run.status, run.trigger) == ("running", "schedule")
    assert run.requested_at == run.started_at
    assert not run.finished


def test_an_unknown_trigger_is_refused() -> None:
    with pytest.raises(ValueError, match="trigger must be one of schedule, api, cli"):
        runs.validate_trigger("cron")
    assert runs.validate_trigger("cli") == "cli"


def test_a_busy_lock_skips_a_new_run_and_leaves_a_queued_one(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory.begin() as session:
        skipped = runs.record_busy(session, trigger="cli", run_id=None, why="held by w1:42")
    assert skipped.status == "skipped"
    assert skipped.reason == "another retrain is in progress: held by w1:42"
    assert skipped.duration_seconds == 0
    with session_factory.begin() as session:
        queued, _ = runs.request_retrain(session)
        kept = runs.record_busy(session, trigger="api", run_id=queued.id, why="held")
    assert kept == queued
    with pytest.raises(LookupError), session_factory.begin() as session:
        runs.record_busy(session, trigger="api", run_id="run-missing", why="held")


def test_progress_and_outcome_are_recorded(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as session:
        run = runs.start_run(session, trigger="cli", run_id=None)
        assert run is not None
        runs.update_run(session, run.id, n_ratings=100, n_users=10, n_items=20)
    with session_factory.begin() as session:
        done = runs.finish_run(
            session,
            run.id,
            "activated",
            metrics={"validation_rmse": np.float64(0.9), "nan": float("nan")},
            reason="no active model yet",
        )
    assert done.finished
    assert done.duration_seconds is not None
    assert done.duration_seconds >= 0
    with session_factory() as session:
        stored = runs.get_run(session, run.id)
    assert stored == done
    assert stored is not None
    assert (stored.n_ratings, stored.n_users, stored.n_items) == (100, 10, 20)
    # numpy numbers and NaN are stored as plain JSON
    assert stored.metrics == {"validation_rmse": 0.9, "nan": None}
    assert type(stored.metrics["validation_rmse"]) is float
    as_json = stored.to_dict()
    assert as_json["requested_at"] == stored.requested_at.isoformat()
    assert as_json["duration_seconds"] == stored.duration_seconds


def test_only_a_running_run_can_fail(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as session:
        run = runs.start_run(session, trigger="cli", run_id=None)
        assert run is not None
        failed = runs.fail_run(session, run.id, "ValueError: bad")
    assert failed is not None
    assert (failed.status, failed.error) == ("failed", "ValueError: bad")
    with session_factory.begin() as session:
        # its outcome is recorded: a second failure changes nothing
        assert runs.fail_run(session, run.id, "later") is None
        assert runs.fail_run(session, "run-missing", "x") is None
        assert runs.get_run(session, run.id) == failed


def test_abandoned_runs_are_marked_failed_with_their_owner(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory.begin() as session:
        running = runs.start_run(session, trigger="cli", run_id=None)
        queued, _ = runs.request_retrain(session)
    assert running is not None
    with session_factory.begin() as session:
        abandoned = runs.abandon_running_runs(session)
    assert [r.id for r in abandoned] == [running.id]
    assert abandoned[0].status == "failed"
    assert abandoned[0].error is not None
    assert abandoned[0].error.startswith(f"abandoned: the process running it ({running.owner})")
    with session_factory() as session:
        assert runs.get_run(session, queued.id) == queued  # not running: untouched
        assert [r.id for r in runs.list_runs(session)] == [queued.id, running.id]
        assert [r.id for r in runs.list_runs(session, limit=1)] == [queued.id]
