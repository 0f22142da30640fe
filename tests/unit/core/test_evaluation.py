"""rbm_core.evaluation: the protocol on hand-made splits, and on a slice of ML-100K."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from _core_support import write_fold

from rbm_core import RatingMatrix, RatingScale, SoftmaxRBM
from rbm_core.baselines import BiasBaseline, GlobalMean, Popularity
from rbm_core.datasets import RatingSplit, load_ml100k_folds, load_train_test
from rbm_core.evaluation import (
    EvaluationError,
    evaluate,
    evaluate_split,
    metric_names,
)
from rbm_core.lineup import LineupError, default_models

SCALE = RatingScale((1.0, 2.0, 3.0, 4.0, 5.0))


def _frame(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])


# Train: p rated twice, q twice, r once. Test: u1 likes r (rankable) and s (not in the
# training catalog: a miss); u2 likes nothing (skipped for top-N); u4 is new and likes p.
TRAIN = _frame(
    [("u1", "p", 5.0), ("u1", "q", 3.0), ("u2", "p", 4.0), ("u2", "r", 2.0), ("u3", "q", 4.0)]
)
TEST = _frame([("u1", "r", 5.0), ("u1", "s", 4.0), ("u2", "q", 1.0), ("u4", "p", 4.0)])


def test_top_n_protocol_by_hand() -> None:
    train = RatingMatrix.from_frame(TRAIN, SCALE)
    results, params = evaluate_split(train, TEST, {"popularity": Popularity}, k=2)
    row = results["popularity"]
    # u1 ranks [r] (p, q rated): hit, and s is a missed relevant item -> 1 of 2 relevant
    # u4 ranks [p, q] (tie on count broken by item order): hit at rank 1, 1 relevant
    ndcg_u1 = 1.0 / (1.0 + 1.0 / math.log2(3))
    assert row["n_ranked_users"] == 2
    assert row["precision_at_2"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert row["recall_at_2"] == pytest.approx((1 / 2 + 1 / 1) / 2)
    assert row["ndcg_at_2"] == pytest.approx((ndcg_u1 + 1.0) / 2)
    assert row["map_at_2"] == pytest.approx((1 / 2 + 1.0) / 2)
    assert row["coverage_at_2"] == pytest.approx(3 / 3)
    assert row["rmse"] is None
    assert row["mae"] is None
    assert params["popularity"] == Popularity().get_params()

    at_1, _ = evaluate_split(train, TEST, {"popularity": Popularity}, k=1)
    assert at_1["popularity"]["coverage_at_1"] == pytest.approx(2 / 3)
    assert set(at_1["popularity"]) == {"fold", *metric_names(1)}


def test_rating_metrics_cover_every_test_rating_with_the_fallback_for_new_items() -> None:
    train = RatingMatrix.from_frame(TRAIN, SCALE)
    fitted: list[Any] = []

    def bias() -> BiasBaseline:
        fitted.append(BiasBaseline(reg_user=1.0, reg_item=1.0))
        return fitted[-1]

    results, _ = evaluate_split(train, TEST, {"bias": bias, "global_mean": GlobalMean})
    mu = 18.0 / 5.0
    truth = np.array([5.0, 4.0, 1.0, 4.0])
    mean_err = truth - mu
    assert results["global_mean"]["rmse"] == pytest.approx(np.sqrt(np.mean(mean_err**2)))
    assert results["global_mean"]["mae"] == pytest.approx(np.mean(np.abs(mean_err)))
    assert results["global_mean"][f"ndcg_at_{10}"] is None
    model = fitted[0]
    expected = [
        model.predict(train.user_ratings("u1"), ["r"]).expected[0],
        mu,  # item s is not in the training data: the fallback
        model.predict(train.user_ratings("u2"), ["q"]).expected[0],
        model.predict({}, ["p"]).expected[0],  # u4: folded in from no ratings
    ]
    assert results["bias"]["rmse"] == pytest.approx(np.sqrt(np.mean((truth - expected) ** 2)))
    for row in results.values():
        assert row["n_test_new_user"] == 1
        assert row["n_test_new_item"] == 1
        assert row["n_train"] == 5
        assert row["n_test"] == 4
        assert row["fit_seconds"] >= 0.0


def test_users_without_relevant_items_leave_the_top_n_figures_empty() -> None:
    train = RatingMatrix.from_frame(TRAIN, SCALE)
    low = _frame([("u1", "r", 2.0)])
    results, _ = evaluate_split(train, low, {"popularity": Popularity})
    assert results["popularity"]["n_ranked_users"] == 0
    assert results["popularity"]["ndcg_at_10"] is None


def test_default_models_refuses_unknown_names_and_parameters() -> None:
    assert list(default_models()) == [
        "rbm",
        "ease",
        "item_quality",
        "bias",
        "popularity",
        "global_mean",
    ]
    assert list(default_models(names=["bias"])) == ["bias"]
    with pytest.raises(LineupError, match="unknown model 'svd'"):
        default_models(names=["svd"])
    with pytest.raises(LineupError, match="bad RBM settings"):
        default_models({"n_hiden": 3})
    with pytest.raises(LineupError, match="bad RBM settings: user_rbm: unknown setting"):
        default_models({"user_rbm_params": {"n_hiden": 3}})
    with pytest.raises(LineupError, match="list rbm before it"):
        default_models(names=["ranker", "rbm"])


def test_off_scale_ratings_and_failing_fits_are_evaluation_errors() -> None:
    split = RatingSplit(1, TRAIN, _frame([("u1", "r", 4.5)]), "mem")
    with pytest.raises(EvaluationError, match=r"fold 1 \(mem\).*4\.5"):
        evaluate([split], {"global_mean": GlobalMean}, scale=SCALE)
    split = RatingSplit(1, TRAIN, TEST, "mem")
    with pytest.raises(LineupError, match="bad RBM settings: user_rbm: n_hidden must be"):
        default_models({"user_rbm_params": {"n_hidden": -1}}, names=["rbm"])
    # a model whose training fails says which model, which fold and why
    diverging = {
        "search": False,
        "user_rbm_params": {"learning_rate": 1e30, "momentum": 0.9, "n_epochs": 5},
    }
    with pytest.raises(EvaluationError, match=r"rbm: fitting failed on fold 1: .*non-finite"):
        evaluate([split], default_models(diverging, names=["rbm"]))
    with pytest.raises(EvaluationError, match="no folds"):
        evaluate([], default_models())


def test_report_means_and_json_shape(tmp_path: Path) -> None:
    a = RatingSplit(1, TRAIN, TEST)
    b = RatingSplit(2, TRAIN, _frame([("u1", "r", 5.0), ("u2", "q", 2.0)]))
    report = evaluate([a, b], {"global_mean": GlobalMean, "popularity": Popularity})
    result = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert set(result) == {"models", "hyperparameters", "protocol"}
    gm = result["models"]["global_mean"]
    assert [row["fold"] for row in gm["folds"]] == [1, 2]
    assert gm["mean"]["rmse"] == pytest.approx(np.mean([r["rmse"] for r in gm["folds"]]))
    assert gm["mean"]["n_test"] == pytest.approx(3.0)
    assert gm["mean"]["precision_at_10"] is None
    assert "fold" not in gm["mean"]
    assert result["models"]["popularity"]["mean"]["rmse"] is None
    assert result["hyperparameters"]["popularity"] == {"by": "count", "damping": 10.0}
    assert result["protocol"]["rating_scale"] == "1,2,3,4,5"
    assert result["protocol"]["folds"] == [1, 2]


# -- ML-100K slice: the RBM beside the baselines, and independent recomputations ----------
@pytest.fixture(scope="module")
def ml_slice(movielens_dir: Path) -> RatingSplit:
    split = load_ml100k_folds(movielens_dir, [1])[0]
    keep_train = split.train["user_id"].astype(int) <= 250
    keep_test = split.test["user_id"].astype(int) <= 250
    return RatingSplit(1, split.train[keep_train], split.test[keep_test], split.source)


def test_ml100k_slice_side_by_side(ml_slice: RatingSplit) -> None:
    fitted: dict[str, Any] = {}

    def keep(name: str, make: Any) -> Any:
        def factory() -> Any:
            fitted[name] = make()
            return fitted[name]

        return factory

    models = {
        "rbm": keep("rbm", lambda: SoftmaxRBM(n_hidden=30, n_epochs=4, random_state=0)),
        "bias": keep("bias", BiasBaseline),
        "global_mean": GlobalMean,
        "popularity": keep("popularity", Popularity),
    }
    report = evaluate([ml_slice], models)
    rows = {name: folds[0] for name, folds in report.folds.items()}
    assert rows["rbm"]["rmse"] < rows["global_mean"]["rmse"]
    assert rows["bias"]["rmse"] < rows["global_mean"]["rmse"]
    assert rows["popularity"]["ndcg_at_10"] > 0.1
    assert report.hyperparameters["rbm"]["n_hidden"] == 30

    train = RatingMatrix.from_frame(ml_slice.train, SCALE)
    test = ml_slice.test
    mu = float(train.values.data.mean())

    # RMSE of the RBM, recomputed user by user from full-catalog predictions
    rbm = fitted["rbm"]
    squared = []
    for user, group in test.groupby("user_id"):
        pred = rbm.predict(train.user_ratings(str(user)))
        by_item = dict(zip(pred.item_ids, pred.expected.tolist(), strict=True))
        squared += [
            (by_item.get(i, mu) - r) ** 2
            for i, r in zip(group["item_id"], group["rating"], strict=True)
        ]
    assert rows["rbm"]["rmse"] == pytest.approx(math.sqrt(np.mean(squared)), rel=1e-5)

    # Top-N of popularity, recomputed with plain Python sorting
    counts = fitted["popularity"].item_popularity_
    catalog = train.item_ids.tolist()
    precisions, ndcgs = [], []
    for user, group in test.groupby("user_id"):
        relevant = set(group.loc[group["rating"] >= 4.0, "item_id"])
        if not relevant:
            continue
        rated = set(train.user_ratings(str(user)))
        ranked = sorted(
            (c for c in range(len(catalog)) if catalog[c] not in rated),
            key=lambda c: (-counts[c], c),
        )
        top = [catalog[c] for c in ranked[:10]]
        gains = [1.0 if item in relevant else 0.0 for item in top]
        precisions.append(sum(gains) / 10)
        dcg = sum(g / math.log2(r + 2) for r, g in enumerate(gains))
        idcg = sum(1 / math.log2(r + 2) for r in range(min(len(relevant), 10)))
        ndcgs.append(dcg / idcg)
    assert rows["popularity"]["n_ranked_users"] == len(precisions)
    assert rows["popularity"]["precision_at_10"] == pytest.approx(np.mean(precisions))
    assert rows["popularity"]["ndcg_at_10"] == pytest.approx(np.mean(ndcgs))


def test_load_train_test_is_fold_one(tmp_path: Path) -> None:
    write_fold(tmp_path, 3, TRAIN, TEST)
    split = load_train_test(tmp_path / "u3.base", tmp_path / "u3.test")
    assert split.fold == 1
    report = evaluate([split], {"bias": BiasBaseline})
    assert report.folds["bias"][0]["fold"] == 1
