"""The promotion gate: metrics, criteria, references and the decision, on a real hold-out."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from app.db.snapshot import RatingsSnapshot
from app.services.artifacts import artifact_digest
from app.services.registry import ModelVersionInfo
from app.services.retrain import gate
from app.services.retrain.gate import NDCG, RMSE, Criterion, Metric, Reference, Scored
from app.services.retrain.holdout import HoldOut, split_snapshot
from app.settings import Settings
from rbm_core.model import SoftmaxRBM
from rbm_core.scale import DEFAULT_SCALE


@pytest.fixture(scope="module")
def holdout(snapshot: RatingsSnapshot) -> HoldOut:
    return split_snapshot(snapshot, DEFAULT_SCALE)


def _scored(name: str, holdout: HoldOut, error: float, unknown: slice | None = None) -> Scored:
    """Predictions off the truth by ``error`` everywhere, NaN on ``unknown`` ratings."""
    predictions = holdout.ratings + error
    if unknown is not None:
        predictions[unknown] = np.nan
    return Scored(name, None, predictions)


def _active(scored: Scored) -> Reference:
    return Reference(
        scored,
        label="the active model",
        title="the active version v1",
        figures={"active_version": "v1"},
    )


RMSE_WITHIN = (Criterion(RMSE, 0.05, setting="promotion_tolerance"),)


def test_a_candidate_within_the_tolerance_is_activated(holdout: HoldOut) -> None:
    candidate = _scored("candidate", holdout, 0.53)
    decision = gate.decide(
        candidate, [_active(_scored("active", holdout, 0.5))], RMSE_WITHIN, holdout
    )
    assert decision.activate
    assert decision.verdict == "activate"
    n = holdout.n_held
    assert decision.reason == (
        f"candidate RMSE 0.5300 vs active 0.5000 on {n} held-out ratings (tolerance 0.05)"
    )
    assert decision.figures == {
        "active_version": "v1",
        "promotion_tolerance": 0.05,
        "candidate_rmse": pytest.approx(0.53),
        "candidate_mae": pytest.approx(0.53),
        "active_rmse": pytest.approx(0.5),
        "active_mae": pytest.approx(0.5),
        # neither ranks here: NDCG@10 is recorded as not measured
        "candidate_ndcg_at_10": None,
        "active_ndcg_at_10": None,
        "n_compared": n,
    }


def _ranked(scored: Scored, ndcg: float) -> Scored:
    return Scored(scored.name, None, scored.predictions, ndcg)


NDCG_WITHIN = (
    *RMSE_WITHIN,
    Criterion(NDCG, 0.01, setting="ndcg_tolerance"),
)


def test_a_candidate_that_ranks_worse_than_the_tolerance_is_rejected(holdout: HoldOut) -> None:
    candidate = _ranked(_scored("candidate", holdout, 0.5), 0.30)
    active = _active(_ranked(_scored("active", holdout, 0.5), 0.32))
    decision = gate.decide(candidate, [active], NDCG_WITHIN, holdout)
    assert not decision.activate
    assert "candidate NDCG@10 0.3000 is worse than the active version v1's 0.3200" in (
        decision.reason
    )
    assert decision.figures["candidate_ndcg_at_10"] == pytest.approx(0.30)
    assert decision.figures["active_ndcg_at_10"] == pytest.approx(0.32)
    assert decision.figures["ndcg_tolerance"] == 0.01
    # within the tolerance it passes
    close = _ranked(_scored("candidate", holdout, 0.5), 0.315)
    assert gate.decide(close, [active], NDCG_WITHIN, holdout).activate


def test_ndcg_not_measured_by_a_reference_is_not_held_against_the_candidate(
    holdout: HoldOut,
) -> None:
    candidate = _ranked(_scored("candidate", holdout, 0.5), 0.30)
    decision = gate.decide(
        candidate, [_active(_scored("active", holdout, 0.5))], NDCG_WITHIN, holdout
    )
    assert decision.activate
    assert "NDCG@10 not compared with the active version v1 (not measured)" in decision.reason


def test_a_candidate_worse_than_the_bias_baseline_is_rejected(holdout: HoldOut) -> None:
    baseline = Reference(
        _scored("bias_baseline", holdout, 0.50),
        label="the bias baseline",
        title="the bias baseline (mu + b_u + b_i)",
        checks=gate.BASELINE_CRITERIA,
    )
    # within the active version's tolerance, but worse than the baseline at all
    candidate = _scored("candidate", holdout, 0.51)
    decision = gate.decide(
        candidate, [_active(_scored("active", holdout, 0.5)), baseline], RMSE_WITHIN, holdout
    )
    assert not decision.activate
    assert decision.reason == (
        "candidate RMSE 0.5100 is worse than the bias baseline (mu + b_u + b_i)'s 0.5000 by "
        f"more than the tolerance 0.0 (on {holdout.n_held} held-out ratings)"
    )
    assert decision.figures["bias_baseline_rmse"] == pytest.approx(0.5)
    better = _scored("candidate", holdout, 0.49)
    assert gate.decide(better, [baseline], RMSE_WITHIN, holdout).activate


def test_a_candidate_worse_than_the_tolerance_is_rejected(holdout: HoldOut) -> None:
    candidate = _scored("candidate", holdout, 0.6)
    decision = gate.decide(
        candidate, [_active(_scored("active", holdout, 0.5))], RMSE_WITHIN, holdout
    )
    assert not decision.activate
    assert decision.verdict == "reject"
    assert decision.reason.startswith(
        "candidate RMSE 0.6000 is worse than the active version v1's 0.5000 by more than "
        "the tolerance 0.05"
    )


def test_models_are_compared_on_the_ratings_all_of_them_predict(holdout: HoldOut) -> None:
    # The candidate is exact where the active model predicts nothing, and off by 1
    # elsewhere: on all of its predictions it would beat an active model off by 0.9.
    half = slice(0, holdout.n_held // 2)
    predictions = holdout.ratings + 1.0
    predictions[half] = holdout.ratings[half]
    candidate = Scored("candidate", None, predictions)
    active = _scored("active", holdout, 0.9, unknown=half)
    decision = gate.decide(candidate, [_active(active)], RMSE_WITHIN, holdout)
    assert decision.figures["n_compared"] == holdout.n_held - holdout.n_held // 2
    assert decision.figures["candidate_rmse"] == pytest.approx(1.0)
    assert not decision.activate


def test_an_active_version_that_cannot_be_scored_is_replaced(holdout: HoldOut) -> None:
    missing = Reference(
        Scored("active", None, np.full(holdout.n_held, np.nan)),
        label="the active model",
        title="the active version v1",
        unavailable="the active version v1 cannot be loaded (gone)",
        replaceable=True,
        figures={"active_version": "v1"},
    )
    decision = gate.decide(_scored("candidate", holdout, 2.0), [missing], RMSE_WITHIN, holdout)
    assert decision.activate
    assert decision.reason == (
        "the active version v1 cannot be loaded (gone); the candidate replaces it"
    )
    assert "candidate_rmse" not in decision.figures


def test_a_reference_that_must_be_scored_rejects_when_it_cannot_be(holdout: HoldOut) -> None:
    baseline = Reference(
        Scored("bias", None, np.full(holdout.n_held, np.nan)),
        label="the bias baseline",
        title="the bias baseline",
        unavailable="the bias baseline could not be fitted",
    )
    active = _active(_scored("active", holdout, 0.5))
    decision = gate.decide(
        _scored("candidate", holdout, 0.1), [active, baseline], RMSE_WITHIN, holdout
    )
    assert not decision.activate
    assert decision.reason == "the bias baseline could not be fitted"


def test_without_common_predictions_the_candidate_is_rejected(holdout: HoldOut) -> None:
    first = slice(0, holdout.n_held // 2)
    second = slice(holdout.n_held // 2, None)
    candidate = _scored("candidate", holdout, 0.1, unknown=first)
    active = _scored("active", holdout, 0.1, unknown=second)
    decision = gate.decide(candidate, [_active(active)], RMSE_WITHIN, holdout)
    assert not decision.activate
    assert decision.reason == (
        "the candidate and the active model share no predictable held-out ratings"
    )
    nothing = _scored("candidate", holdout, 0.1, unknown=slice(None))
    decision = gate.decide(nothing, [_active(active)], RMSE_WITHIN, holdout)
    assert decision.reason == "no held-out ratings to compare the candidate with the active model"


def test_every_criterion_is_checked_against_every_reference(holdout: HoldOut) -> None:
    # A second metric where higher is better, with its own tolerance, and a second
    # reference: the shape of "NDCG@10 against the active version and the baseline".
    def share_exact(h: HoldOut, scored: Scored, compared: np.ndarray) -> float:
        return float(np.mean(np.abs(scored.predictions[compared] - h.ratings[compared]) < 0.25))

    exact = Metric("exact", "exact share", higher_is_better=True, compute=share_exact)
    checks = (*RMSE_WITHIN, Criterion(exact, 0.1, setting="exact_tolerance"))
    candidate = _scored("candidate", holdout, 0.3)  # exact share 0, RMSE 0.3
    active = _active(_scored("active", holdout, 0.5))  # exact share 0, RMSE 0.5
    baseline = Reference(
        _scored("bias", holdout, 0.0), label="the bias baseline", title="the bias baseline"
    )
    decision = gate.decide(candidate, [active, baseline], checks, holdout)
    assert not decision.activate
    # beaten on RMSE and on the exact share by the baseline, not by the active model
    assert decision.reason.count("is worse than the bias baseline's") == 2
    assert "active version" not in decision.reason
    assert decision.figures["exact_tolerance"] == 0.1
    assert decision.figures["bias_rmse"] == pytest.approx(0.0)
    assert decision.figures["bias_exact"] == pytest.approx(1.0)
    assert decision.figures["candidate_exact"] == pytest.approx(0.0)
    assert gate.decide(candidate, [active], checks, holdout).activate


def test_criterion_direction() -> None:
    lower = Criterion(RMSE, 0.01, setting="t")
    assert lower.passes(0.905, 0.9)
    assert not lower.passes(0.92, 0.9)
    higher = Criterion(Metric("ndcg", "NDCG", True, RMSE.compute), 0.01, setting="t")
    assert higher.passes(0.395, 0.4)
    assert not higher.passes(0.38, 0.4)


def test_the_criteria_come_from_the_settings() -> None:
    rmse_check, ndcg_check = gate.criteria(Settings(promotion_tolerance=0.02, ndcg_tolerance=0.03))
    assert rmse_check.metric is RMSE
    assert rmse_check.tolerance == 0.02
    assert rmse_check.setting == "promotion_tolerance"
    assert ndcg_check.metric is NDCG
    assert ndcg_check.tolerance == 0.03
    assert ndcg_check.setting == "ndcg_tolerance"


def test_a_model_is_scored_on_every_held_out_rating_in_order(
    holdout: HoldOut, fitted_model: SoftmaxRBM
) -> None:
    scored = gate.score("candidate", fitted_model, holdout)
    assert scored.predictions.shape == (holdout.n_held,)
    # each held-out rating predicted as the model predicts it for that user, folded in
    # from the user's training ratings
    for row in (0, holdout.n_held // 2, holdout.n_held - 1):
        user, item = holdout.held["user_id"][row], holdout.held["item_id"][row]
        alone = fitted_model.predict(holdout.train.user_ratings(user), item_ids=[item])
        assert scored.predictions[row] == pytest.approx(float(alone.expected[0]))
    figures = gate.own_figures(scored, holdout)
    assert figures["n_evaluated"] == holdout.n_held
    assert 0 < figures["validation_rmse"] < 2


def _version(path: Path, sha256: str) -> ModelVersionInfo:
    return ModelVersionInfo(
        id="v1",
        status="active",
        artifact_path=path,
        sha256=sha256,
        created_at=datetime.now(UTC),
        activated_at=None,
        n_users=0,
        n_items=0,
        n_ratings=0,
        snapshot_max_rated_at=None,
        hyperparameters={},
        metrics={},
        training_curves={},
    )


def test_the_active_version_is_loaded_from_its_verified_artifact(
    holdout: HoldOut, artifact: Path, tmp_path: Path
) -> None:
    reference = gate.active_reference(_version(artifact, artifact_digest(artifact)), holdout)
    assert reference.unavailable is None
    assert reference.scored.predicted.all()
    assert reference.figures == {"active_version": "v1"}

    tampered = tmp_path / "tampered"
    shutil.copytree(artifact, tampered)
    next(tampered.rglob("*.npy")).write_bytes(b"not an array")
    broken = gate.active_reference(_version(tampered, artifact_digest(artifact)), holdout)
    assert broken.replaceable
    assert broken.unavailable is not None
    assert broken.unavailable.startswith("the active version v1 cannot be loaded")
    assert not broken.scored.predicted.any()
