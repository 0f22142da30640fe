"""SoftmaxRBM (rbm_core.model): hyperparameters, training, reproducibility and bad input."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest

from rbm_core import (
    DEFAULT_SCALE,
    DTYPE,
    RatingMatrix,
    RatingScaleError,
    SoftmaxRBM,
    TrainingDivergedError,
    training,
)
from rbm_core.contrastive_divergence import cd_statistics


def fit_small(matrix: RatingMatrix, **params) -> SoftmaxRBM:
    defaults = {"n_hidden": 8, "n_epochs": 3, "batch_size": 16, "random_state": 0}
    return SoftmaxRBM(**{**defaults, **params}).fit(matrix)


def test_same_seed_gives_identical_weights(small_matrix: RatingMatrix) -> None:
    a = fit_small(small_matrix, random_state=7, cd_steps=[[0, 1], [2, 2]])
    b = fit_small(small_matrix, random_state=7, cd_steps=[[0, 1], [2, 2]])
    c = fit_small(small_matrix, random_state=8, cd_steps=[[0, 1], [2, 2]])
    for name in ("weights_", "visible_bias_", "hidden_bias_", "offset_weights_"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.weights_, c.weights_)


def test_fit_and_partial_fit_return_self(small_matrix: RatingMatrix) -> None:
    model = SoftmaxRBM(n_hidden=4, n_epochs=1, random_state=0)
    assert model.fit(small_matrix) is model
    assert model.partial_fit(small_matrix) is model
    assert model.n_epochs_ == 2
    fresh = SoftmaxRBM(n_hidden=4, random_state=0)
    assert fresh.partial_fit(small_matrix) is fresh
    assert fresh.n_epochs_ == 1


def test_fit_does_not_mutate_its_input(small_matrix: RatingMatrix) -> None:
    before = copy.deepcopy(small_matrix)
    fit_small(small_matrix)
    np.testing.assert_array_equal(before.codes.toarray(), small_matrix.codes.toarray())
    np.testing.assert_array_equal(before.user_ids, small_matrix.user_ids)
    assert before.fingerprint() == small_matrix.fingerprint()


def test_learned_attributes(small_matrix: RatingMatrix, small_model: SoftmaxRBM) -> None:
    m = small_model
    assert m.weights_.shape == (small_matrix.n_items, 5, 8)
    assert m.weights_.dtype == DTYPE
    assert m.visible_bias_.shape == (small_matrix.n_items, 5)
    assert m.hidden_bias_.shape == (8,)
    np.testing.assert_array_equal(m.item_ids_, small_matrix.item_ids)
    assert m.scale_ == DEFAULT_SCALE
    assert (m.n_items_, m.n_users_) == (small_matrix.n_items, small_matrix.n_users)
    assert m.training_fingerprint_ == small_matrix.fingerprint()
    np.testing.assert_array_equal(m.item_popularity_, small_matrix.codes.getnnz(axis=0))
    assert [h["epoch"] for h in m.history_] == [1, 2, 3, 4, 5]
    for entry in m.history_:
        assert entry["validation_rmse"] is None
        assert np.isfinite(entry["train_rmse"])
        assert np.isfinite(entry["train_free_energy"])


def test_history_with_validation_and_cd_schedule(small_matrix: RatingMatrix) -> None:
    train, val = small_matrix.split(0.2, random_state=1)
    model = SoftmaxRBM(
        n_hidden=6, n_epochs=4, batch_size=20, cd_steps=[[0, 1], [2, 3]], random_state=0
    ).fit(train, val)
    assert [h["cd_steps"] for h in model.history_] == [1, 1, 3, 3]
    for entry in model.history_:
        assert 0 < entry["validation_mae"] <= entry["validation_rmse"] < 4
        assert np.isfinite(entry["validation_free_energy"])


def test_visible_biases_start_at_log_rating_frequencies() -> None:
    # one item rated 5 by everybody, one rated 1 by everybody: before training, the
    # model already predicts each item's usual rating
    users = [f"u{i}" for i in range(40)]
    matrix = RatingMatrix.from_arrays(
        users + users, ["hit"] * 40 + ["flop"] * 40, [5.0] * 40 + [1.0] * 40, DEFAULT_SCALE
    )
    model = SoftmaxRBM(n_hidden=4, n_epochs=1, learning_rate=1e-6, random_state=0)
    model.fit(matrix)
    pred = model.predict({}, ["hit", "flop"])
    assert pred.expected[0] > 4.5
    assert pred.expected[1] < 1.5


def test_early_stopping_keeps_the_best_epoch(make_matrix) -> None:
    matrix = make_matrix(n_users=80, n_items=20, density=0.5, seed=3)
    train, val = matrix.split(0.25, random_state=0)
    model = SoftmaxRBM(
        n_hidden=30,
        n_epochs=40,
        learning_rate=1.0,
        momentum=0.9,
        weight_decay=0.0,
        batch_size=10,
        early_stopping=True,
        n_iter_no_change=3,
        random_state=0,
    ).fit(train, val)
    scores = [h["validation_rmse"] for h in model.history_]
    assert len(scores) < 40  # random ratings: validation stops improving quickly
    best = int(np.argmin(scores))
    assert len(scores) - 1 - best == 3
    # the kept weights are the best epoch's: recompute its validation RMSE
    held_out = training.held_out_ratings(train, val, model.item_ids_)
    assert model._validation_scores(held_out)[0] == pytest.approx(scores[best], rel=1e-5)


def test_early_stopping_without_validation_carves_one(small_matrix: RatingMatrix) -> None:
    model = fit_small(small_matrix, early_stopping=True, n_epochs=3)
    assert all(h["validation_rmse"] is not None for h in model.history_)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_hidden": 0}, "n_hidden"),
        ({"n_hidden": 2.5}, "n_hidden"),
        ({"batch_size": True}, "batch_size"),
        ({"n_epochs": -1}, "n_epochs"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"momentum": 1.0}, "momentum"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"hidden_dropout": 1.0}, "hidden_dropout"),
        ({"cd_steps": 0}, "cd_steps"),
        ({"cd_steps": [[1, 2]]}, "start at epoch 0"),
        ({"cd_steps": [[0, 1], [0, 2]]}, "increase"),
        ({"cd_steps": "many"}, "cd_steps"),
        ({"prediction": "guess"}, "prediction"),
        ({"ranking": "random"}, "ranking"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"user_offset": "yes"}, "user_offset"),
        ({"random_state": "seed"}, "random_state"),
        ({"blas_threads": 0}, "blas_threads"),
    ],
)
def test_bad_hyperparameters_are_rejected(small_matrix: RatingMatrix, params, message) -> None:
    with pytest.raises(ValueError, match=message):
        SoftmaxRBM(**params).fit(small_matrix)


def test_set_params_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        SoftmaxRBM().set_params(n_hiden=3)
    assert SoftmaxRBM().set_params(n_hidden=3).get_params()["n_hidden"] == 3


def test_bad_training_data_is_rejected(small_matrix: RatingMatrix) -> None:
    with pytest.raises(TypeError, match="RatingMatrix"):
        SoftmaxRBM().fit([[1, 2]])  # type: ignore[arg-type]
    empty = RatingMatrix.from_arrays([], [], [], DEFAULT_SCALE)
    with pytest.raises(ValueError, match="no ratings"):
        SoftmaxRBM().fit(empty)
    other = RatingMatrix.from_arrays(["u"], ["i0"], [4.5], DEFAULT_SCALE.parse("1..5:0.5"))
    with pytest.raises(RatingScaleError, match="scale"):
        SoftmaxRBM(n_epochs=1).fit(small_matrix, other)


def test_partial_fit_aligns_new_data_with_the_model_items(small_matrix: RatingMatrix) -> None:
    model = fit_small(small_matrix)
    extra = RatingMatrix.from_arrays(
        ["new1", "new1", "new2"],
        [str(small_matrix.item_ids[0]), "brand-new-item", str(small_matrix.item_ids[1])],
        [5.0, 4.0, 1.0],
        DEFAULT_SCALE,
    )
    before = model.weights_.copy()
    model.partial_fit(extra)
    assert model.n_items_ == small_matrix.n_items
    assert not np.array_equal(before, model.weights_)
    with pytest.raises(RatingScaleError):
        model.partial_fit(
            RatingMatrix.from_arrays(["u"], ["i0"], [4.5], DEFAULT_SCALE.parse("1..5:0.5"))
        )


def test_divergence_raises_a_named_error(small_matrix: RatingMatrix) -> None:
    with pytest.raises(TrainingDivergedError, match="non-finite"):
        SoftmaxRBM(n_hidden=8, learning_rate=1e30, momentum=0.9, n_epochs=5, random_state=0).fit(
            small_matrix
        )


def test_verbose_training_logs_each_epoch(small_matrix: RatingMatrix, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="rbm_core.training"):
        fit_small(small_matrix, verbose=True, n_epochs=2)
    assert sum("epoch" in r.getMessage() for r in caplog.records) == 2


def test_blas_thread_limit_applies_during_fit_only(small_matrix: RatingMatrix) -> None:
    from threadpoolctl import threadpool_info

    def blas_threads() -> list[int]:
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    before = blas_threads()
    seen: list[list[int]] = []

    class Spy(SoftmaxRBM):
        def _apply_update(self, *args, **kwargs) -> None:
            seen.append(blas_threads())
            super()._apply_update(*args, **kwargs)

    Spy(n_hidden=4, n_epochs=1, batch_size=30, blas_threads=1, random_state=0).fit(small_matrix)
    assert seen
    assert all(threads == [1] * len(before) for threads in seen)
    assert blas_threads() == before


def test_offset_weights_gradient_is_averaged_per_user_like_the_others(small_matrix) -> None:
    # every gradient of a CD step is a mean over the batch's users; the offset weights'
    # too: d a_k = (1/n_users) sum_u z_u sum_i (v_data - v_recon)_uik
    model = fit_small(small_matrix, momentum=0.0, weight_decay=0.0)
    codes = small_matrix.codes[:20]
    offsets = model._user_offsets(codes)
    stats = cd_statistics(
        codes,
        model.weights_,
        model.visible_bias_,
        model.hidden_bias_,
        DEFAULT_SCALE.values.astype(DTYPE),
        1,
        np.random.default_rng(0),
        user_bias=model._user_bias(offsets),
    )
    a_before, c_before = model.offset_weights_.copy(), model.hidden_bias_.copy()
    model._apply_update(stats, offsets, 0.1)
    per_user = (offsets[:, None] * stats.d_user_bias).sum(axis=0) / codes.shape[0]
    assert stats.n_ratings > 2 * codes.shape[0]  # per rating would be far smaller
    np.testing.assert_allclose((model.offset_weights_ - a_before) / 0.1, per_user, rtol=1e-3)
    np.testing.assert_allclose(
        (model.hidden_bias_ - c_before) / 0.1, stats.d_hidden_bias, rtol=1e-3, atol=1e-6
    )
