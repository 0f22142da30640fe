"""rbm_core.baselines: known answers on synthetic matrices and ML-100K (the contract is in
test_estimator_contract.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rbm_core import RatingMatrix, RatingScale
from rbm_core.baselines import BiasBaseline, GlobalMean, Popularity
from rbm_core.movielens import read_ratings

SCALE = RatingScale((1.0, 2.0, 3.0, 4.0, 5.0))

# r(u, i) = 3 + b_u + b_i exactly, with b_u, b_i in {-1, 0, 1}
USER_BIAS = {"a": -1.0, "b": 0.0, "c": 1.0}
ITEM_BIAS = {"x": -1.0, "y": 0.0, "z": 1.0}


def _additive(drop: tuple[str, str] | None = None) -> RatingMatrix:
    rows = [
        (u, i, 3.0 + bu + bi)
        for u, bu in USER_BIAS.items()
        for i, bi in ITEM_BIAS.items()
        if (u, i) != drop
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])
    return RatingMatrix.from_frame(frame, SCALE)


def test_unregularised_biases_recover_an_additive_matrix_and_its_missing_cell() -> None:
    train = _additive(drop=("a", "x"))
    model = BiasBaseline(reg_user=0.0, reg_item=0.0, n_iter=200).fit(train)
    for user in USER_BIAS:
        pred = model.predict(train.user_ratings(user) if user in train.user_ids else {})
        want = [3.0 + USER_BIAS[user] + ITEM_BIAS[i] for i in pred.item_ids]
        assert pred.expected == pytest.approx(np.clip(want, 1, 5), abs=1e-3)
    # the held-out cell a/x = 3 - 1 - 1 = 1
    folded = model.predict(train.user_ratings("a"), ["x"])
    assert folded.expected == pytest.approx([1.0], abs=1e-3)


def test_regularised_fit_solves_the_normal_equations() -> None:
    rng = np.random.default_rng(0)
    users = np.repeat([f"u{n}" for n in range(30)], 8)
    items = np.concatenate([rng.choice(20, 8, replace=False) for _ in range(30)]).astype(str)
    ratings = rng.integers(1, 6, size=users.size).astype(float)
    train = RatingMatrix.from_arrays(users, items, ratings, SCALE)
    model = BiasBaseline(reg_user=3.0, reg_item=5.0, n_iter=300).fit(train)
    rows, cols, levels = train.triples()
    resid = SCALE.values[levels] - model.global_mean_ - model.user_bias_[rows]
    resid -= model.item_bias_[cols]
    # gradient of sum resid^2 + reg * b^2 vanishes at the optimum
    grad_u = -np.bincount(rows, resid, train.n_users) + 3.0 * model.user_bias_
    grad_i = -np.bincount(cols, resid, train.n_items) + 5.0 * model.item_bias_
    assert np.abs(grad_u).max() < 1e-6
    assert np.abs(grad_i).max() < 1e-6


def test_fold_in_of_training_ratings_reproduces_the_fitted_user_bias() -> None:
    rng = np.random.default_rng(1)
    users = np.repeat([f"u{n}" for n in range(10)], 5)
    items = np.concatenate([rng.choice(12, 5, replace=False) for _ in range(10)]).astype(str)
    train = RatingMatrix.from_arrays(users, items, rng.integers(1, 6, users.size), SCALE)
    model = BiasBaseline().fit(train)
    for row, user in enumerate(train.user_ids):
        pred = model.predict(train.user_ratings(str(user)), ["0"])
        raw = model.global_mean_ + model.user_bias_[row] + model.item_bias_[0]
        assert pred.expected[0] == pytest.approx(np.clip(raw, 1, 5))


def test_predictions_are_clipped_to_the_scale_but_ranking_is_not() -> None:
    train = _additive()
    model = BiasBaseline(reg_user=0.0, reg_item=0.0, n_iter=100).fit(train)
    generous = {"x": 5.0, "y": 5.0}  # b_u = +2: z would be 6 before clipping
    pred = model.predict(generous, ["z"])
    assert pred.expected[0] == pytest.approx(5.0)
    recs = model.recommend({"x": 5.0}, n=2)
    assert [r.item_id for r in recs] == ["z", "y"]
    assert recs[0].score > 5.0
    assert recs[0].predicted_rating == pytest.approx(5.0)


def test_global_mean_predicts_the_mean_and_reports_unknown_ids() -> None:
    train = _additive()
    model = GlobalMean().fit(train)
    assert model.global_mean_ == pytest.approx(3.0)
    pred = model.predict({"x": 2.0, "nope": 4.0}, ["y", "missing", "z"])
    assert pred.item_ids == ["y", "z"]
    assert pred.expected.tolist() == [3.0, 3.0]
    assert pred.unknown_items == ["missing"]
    assert pred.ignored_ratings == ["nope"]
    assert len(model.predict({}).expected) == 3


def _popularity_data() -> RatingMatrix:
    # item counts: p 4, q 2, r 2, s 1; mean ratings: p 2, q 5, r 4, s 5
    rows = [
        ("u1", "p", 2.0),
        ("u2", "p", 2.0),
        ("u3", "p", 2.0),
        ("u4", "p", 2.0),
        ("u1", "q", 5.0),
        ("u2", "q", 5.0),
        ("u3", "r", 4.0),
        ("u4", "r", 4.0),
        ("u4", "s", 5.0),
    ]
    return RatingMatrix.from_frame(
        pd.DataFrame(rows, columns=["user_id", "item_id", "rating"]), SCALE
    )


def test_popularity_by_count_ranks_by_number_of_ratings_with_ties_by_item_order() -> None:
    model = Popularity().fit(_popularity_data())
    assert model.item_score_.tolist() == [4.0, 2.0, 2.0, 1.0]
    assert [r.item_id for r in model.recommend({}, n=4)] == ["p", "q", "r", "s"]
    # rated items and excluded items are never returned
    assert [r.item_id for r in model.recommend({"p": 1.0}, n=4, exclude=["r"])] == ["q", "s"]


def test_popularity_by_damped_mean_shrinks_rare_items_towards_the_global_mean() -> None:
    model = Popularity(by="damped_mean", damping=2.0).fit(_popularity_data())
    mu = (8 + 10 + 8 + 5) / 9
    want = [(8 + 2 * mu) / 6, (10 + 2 * mu) / 4, (8 + 2 * mu) / 4, (5 + 2 * mu) / 3]
    assert model.item_score_ == pytest.approx(want)
    assert [r.item_id for r in model.recommend({}, n=4)] == ["q", "s", "r", "p"]


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (BiasBaseline(reg_user=-1.0), "reg_user"),
        (BiasBaseline(reg_item=float("nan")), "reg_item"),
        (BiasBaseline(n_iter=0), "n_iter"),
        (Popularity(by="stars"), "by"),  # type: ignore[arg-type]
        (Popularity(damping=-2.0), "damping"),
    ],
)
def test_bad_hyperparameters_are_refused_at_fit(
    model: BiasBaseline | Popularity, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        model.fit(_additive())


def test_bad_recommend_arguments() -> None:
    model = Popularity().fit(_additive())
    with pytest.raises(ValueError, match="positive"):
        model.recommend({}, n=0)
    with pytest.raises(TypeError, match="single string"):
        model.recommend({}, exclude="x")
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        model.set_params(colour="red")


def test_bias_baseline_on_movielens_fold_1(movielens_dir: Path) -> None:
    train_frame = read_ratings(movielens_dir / "u1.base")
    test_frame = read_ratings(movielens_dir / "u1.test")
    train = RatingMatrix.from_frame(train_frame, SCALE)
    model = BiasBaseline().fit(train)
    known = test_frame[test_frame["item_id"].isin(train.item_ids)]
    rows = np.searchsorted(train.user_ids, known["user_id"].to_numpy().astype(str))
    cols = np.searchsorted(train.item_ids, known["item_id"].to_numpy().astype(str))
    pred = np.clip(model.global_mean_ + model.user_bias_[rows] + model.item_bias_[cols], 1, 5)
    rmse = float(np.sqrt(np.mean((pred - known["rating"].to_numpy()) ** 2)))
    mean_rmse = float(np.sqrt(np.mean((model.global_mean_ - known["rating"].to_numpy()) ** 2)))
    # u1 is the hardest fold: about 0.96 for the bias baseline, 1.15 for the mean
    assert 0.95 < rmse < 0.97
    assert mean_rmse > 1.1
