"""rbm_core.training: schedules, the momentum step, held-out ratings and the epoch loop.

The loop is generic; besides the SoftmaxRBM (tests in test_model.py) it is driven here
by a least-squares fit of a mean, whose right answer and every history figure are known.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from rbm_core import DEFAULT_SCALE, RatingMatrix, training
from rbm_core.training import EarlyStopping, TrainingDivergedError, run_epochs


# -- schedules ------------------------------------------------------------------------------
def test_cd_schedule_and_steps_at() -> None:
    assert training.cd_schedule(3) == [(0, 3)]
    schedule = training.cd_schedule([[0, 1], [20, 3], [30, 5]])
    assert [training.steps_at(schedule, e) for e in (0, 19, 20, 29, 30, 99)] == [1, 1, 3, 3, 5, 5]


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (0, ">= 1"),
        (True, "an int or"),
        ("many", "an int or"),
        ([], "start at epoch 0"),
        ([[1, 2]], "start at epoch 0"),
        ([[0, 1], [0, 2]], "increase"),
        ([[0, 0]], "steps be >= 1"),
    ],
)
def test_bad_cd_schedules_say_the_rule(steps: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        training.cd_schedule(steps)


def test_learning_rate_decay() -> None:
    assert training.decayed_learning_rate(0.2, 0.0, 7) == 0.2
    assert training.decayed_learning_rate(0.2, 0.5, 2) == pytest.approx(0.1)


# -- the momentum step ----------------------------------------------------------------------
def test_momentum_step_matches_its_formula() -> None:
    # v <- m v + lr (g - decay W); W <- W + v, the gradient on some rows only
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3)).astype(np.float32)
    v = rng.normal(size=(4, 3)).astype(np.float32)
    g = rng.normal(size=(2, 3)).astype(np.float32)
    rows = np.array([1, 3])
    want_v = 0.5 * v - 0.1 * 0.2 * w
    want_v[rows] += 0.1 * g
    want_w = w + want_v
    buffer = np.empty_like(w)
    training.momentum_step(w, v, g, 0.1, 0.5, rows=rows, weight_decay=0.2, buffer=buffer)
    np.testing.assert_allclose(v, want_v, rtol=1e-6)
    np.testing.assert_allclose(w, want_w, rtol=1e-6)
    assert w.dtype == v.dtype == np.float32
    # no gradient: the velocity still carries the parameter on
    before = w.copy()
    training.momentum_step(w, v, None, 0.1, 0.5)
    np.testing.assert_allclose(w, before + 0.5 * want_v, rtol=1e-6)


@pytest.mark.parametrize("weight_decay", [0.0, 0.2])
def test_momentum_step_without_momentum_is_a_plain_gradient_step(weight_decay: float) -> None:
    # m = 0: v <- lr (g - decay W), whatever v held before; W <- W + v
    rng = np.random.default_rng(1)
    w, v, g = (rng.normal(size=(3, 2)).astype(np.float32) for _ in range(3))
    want_v = 0.1 * (g - weight_decay * w)
    want_w = w + want_v
    g_before = g.copy()
    training.momentum_step(w, v, g, 0.1, 0.0, weight_decay=weight_decay)
    np.testing.assert_allclose(v, want_v, rtol=1e-6)
    np.testing.assert_allclose(w, want_w, rtol=1e-6)
    np.testing.assert_array_equal(g, g_before)


# -- held-out ratings -----------------------------------------------------------------------
def test_held_out_ratings_are_aligned_with_the_training_ratings(small_matrix) -> None:
    # the training side of the free-energy gap uses as many training ratings per
    # validation user as that user has held out, drawn from the user's own ratings
    train, val = small_matrix.split(0.3, random_state=2)
    held = training.held_out_ratings(train, val, train.item_ids, np.random.default_rng(0))
    counts = np.diff(val.codes.indptr)
    available = np.diff(held.inputs.indptr)
    np.testing.assert_array_equal(np.diff(held.train_probe.indptr), np.minimum(counts, available))
    probe, inputs = held.train_probe.toarray(), held.inputs.toarray()
    assert np.all((probe == 0) | (probe == inputs))
    rows = training.aligned_rows(train, val.user_ids).toarray()
    own = train.codes[np.searchsorted(train.user_ids, val.user_ids)].toarray()
    np.testing.assert_array_equal(rows, own)
    assert held.targets.tolist() == DEFAULT_SCALE.values[val.triples()[2]].tolist()


def test_held_out_users_missing_from_training_get_empty_inputs() -> None:
    train = RatingMatrix.from_arrays(["a", "b"], ["x", "y"], [5.0, 1.0], DEFAULT_SCALE)
    val = RatingMatrix.from_arrays(["a", "new"], ["y", "x"], [4.0, 2.0], DEFAULT_SCALE)
    held = training.held_out_ratings(train, val, train.item_ids)
    assert held.inputs.getnnz(axis=1).tolist() == [1, 0]
    assert held.targets.tolist() == [4.0, 2.0]


# -- the loop, on a model whose answer is known ---------------------------------------------
@dataclass
class MeanFit:
    """Least squares for one number: ``theta <- theta + lr * mean(x - theta)`` per batch.

    ``validation`` scripts the validation figure of each epoch.
    """

    learning_rate: float = 0.5
    validation: list[float] = field(default_factory=list)
    theta_: np.ndarray = field(default_factory=lambda: np.zeros(1))
    n_epochs_: int = 0
    history_: list[dict[str, Any]] = field(default_factory=list)
    batches: list[np.ndarray] = field(default_factory=list)
    _trained_arrays: tuple[str, ...] = ("theta_",)

    def _epoch_settings(self, epoch: int) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate}

    def _train_batch(self, data: np.ndarray, rows: np.ndarray, epoch: int) -> tuple[float, int]:
        self.batches.append(rows)
        err = data[rows] - self.theta_[0]
        self.theta_ = self.theta_ + self.learning_rate * err.mean()
        return float(np.sum(err**2)), len(rows)

    def _epoch_figures(self, data: np.ndarray) -> dict[str, Any]:
        score = self.validation[self.n_epochs_ - 1] if self.validation else None
        return {"validation_rmse": score}

    def _reset_caches(self) -> None:
        pass


def test_every_case_is_visited_once_per_epoch_in_sorted_batches() -> None:
    data = np.arange(10, dtype=float)
    model = MeanFit()
    run_epochs(model, data, n_cases=10, n_epochs=3, batch_size=4, rng=np.random.default_rng(0))
    assert [len(b) for b in model.batches] == [4, 4, 2] * 3
    for epoch in range(3):
        seen = np.concatenate(model.batches[3 * epoch : 3 * epoch + 3])
        assert sorted(seen.tolist()) == list(range(10))
    assert all(np.all(np.diff(b) > 0) for b in model.batches)
    assert model.n_epochs_ == 3
    assert model.theta_[0] == pytest.approx(4.5, abs=0.5)


def test_history_records_settings_error_figures_and_time() -> None:
    data = np.array([1.0, 3.0])
    model = MeanFit(learning_rate=1.0)
    run_epochs(model, data, n_cases=2, n_epochs=2, batch_size=2, rng=np.random.default_rng(0))
    first, second = model.history_
    assert list(first) == ["epoch", "learning_rate", "train_rmse", "validation_rmse", "seconds"]
    assert (first["epoch"], second["epoch"]) == (1, 2)
    # epoch 1 starts at theta 0 (errors 1 and 3), epoch 2 at the mean 2 (errors -1 and 1)
    assert first["train_rmse"] == pytest.approx(np.sqrt((1 + 9) / 2))
    assert second["train_rmse"] == pytest.approx(1.0)
    assert first["seconds"] >= 0.0


def test_an_epoch_that_measured_no_error_has_no_train_rmse() -> None:
    class Silent(MeanFit):
        def _train_batch(self, data: np.ndarray, rows: np.ndarray, epoch: int) -> tuple[float, int]:
            super()._train_batch(data, rows, epoch)
            return 0.0, 0

    model = Silent()
    run_epochs(model, np.ones(4), n_cases=4, n_epochs=1, batch_size=2, rng=np.random.default_rng(0))
    assert model.history_[0]["train_rmse"] is None


@pytest.mark.parametrize("higher_is_better", [False, True])
def test_early_stopping_keeps_the_best_epoch(higher_is_better: bool) -> None:
    scores = [5.0, 3.0, 4.0, 2.0, 2.5, 2.6, 1.0]
    if higher_is_better:
        scores = [-s for s in scores]
    model = MeanFit(validation=scores)
    kept: list[float] = []

    class Spy(MeanFit):
        def _epoch_figures(self, data: np.ndarray) -> dict[str, Any]:
            kept.append(float(self.theta_[0]))
            return super()._epoch_figures(data)

    spy = Spy(validation=scores)
    stop = EarlyStopping(patience=2, higher_is_better=higher_is_better)
    data = np.linspace(0, 1, 8)
    run_epochs(spy, data, n_cases=8, n_epochs=7, batch_size=3, rng=np.random.default_rng(1))
    assert spy.n_epochs_ == 7  # no early stopping asked for
    run_epochs(
        model,
        data,
        n_cases=8,
        n_epochs=7,
        batch_size=3,
        rng=np.random.default_rng(1),
        early_stopping=stop,
    )
    # best at epoch 4, then two epochs without improvement
    assert model.n_epochs_ == 6
    assert model.theta_[0] == kept[3]


def test_divergence_is_a_named_error() -> None:
    model = MeanFit(learning_rate=float("nan"))
    with pytest.raises(TrainingDivergedError, match="non-finite weights after epoch 1"):
        run_epochs(
            model, np.ones(4), n_cases=4, n_epochs=3, batch_size=2, rng=np.random.default_rng(0)
        )
    assert model.n_epochs_ == 0


def test_verbose_logs_each_epoch(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="rbm_core.training"):
        run_epochs(
            MeanFit(),
            np.ones(4),
            n_cases=4,
            n_epochs=2,
            batch_size=2,
            rng=np.random.default_rng(0),
            verbose=True,
        )
    assert sum(r.getMessage().startswith("epoch") for r in caplog.records) == 2
