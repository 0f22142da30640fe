"""A real training on MovieLens 100K fold u1 with the default hyperparameters.

Guards the quality bar from regressions: the RBM must beat the bias baseline on
rating prediction and the popularity ranking on top-10 precision.
"""

from __future__ import annotations

import numpy as np
import pytest

from rbm_core import RatingMatrix, SoftmaxRBM
from rbm_core.baselines import BiasBaseline


@pytest.fixture(scope="module")
def fitted(ml100k_u1: tuple[RatingMatrix, RatingMatrix]) -> SoftmaxRBM:
    train, _ = ml100k_u1
    return SoftmaxRBM(random_state=0).fit(train)


def _test_pairs(
    train: RatingMatrix, test: RatingMatrix
) -> list[tuple[dict[str, float], list[str], np.ndarray]]:
    """Per test user: training ratings (the fold-in input), test items, test ratings."""
    out = []
    known_items = set(train.item_ids.tolist())
    test_frame = test.to_frame()
    test_frame = test_frame[test_frame["item_id"].isin(known_items)]
    for user, group in test_frame.groupby("user_id"):
        out.append(
            (train.user_ratings(str(user)), group["item_id"].tolist(), group["rating"].to_numpy())
        )
    return out


def test_default_rbm_beats_the_bias_baseline_rmse(
    ml100k_u1: tuple[RatingMatrix, RatingMatrix], fitted: SoftmaxRBM
) -> None:
    train, test = ml100k_u1
    model = fitted
    bias = BiasBaseline().fit(train)
    rbm_err, bias_err = [], []
    for ratings, items, truth in _test_pairs(train, test):
        pred = model.predict(ratings, items)
        assert pred.item_ids == items
        assert not pred.unknown_items
        rbm_err.append(pred.expected - truth)
        bias_err.append(bias.predict(ratings, items).expected - truth)
    rbm_rmse = float(np.sqrt(np.mean(np.concatenate(rbm_err) ** 2)))
    bias_rmse = float(np.sqrt(np.mean(np.concatenate(bias_err) ** 2)))
    # measured: RBM about 0.937, bias baseline about 0.96 on u1
    assert rbm_rmse < bias_rmse - 0.01, (rbm_rmse, bias_rmse)
    assert rbm_rmse < 0.95


def test_default_ranking_beats_popularity(
    ml100k_u1: tuple[RatingMatrix, RatingMatrix], fitted: SoftmaxRBM
) -> None:
    train, test = ml100k_u1
    model = fitted
    frame = test.to_frame()
    liked = frame[frame["rating"] >= 4.0].groupby("user_id")["item_id"].apply(set)
    users = [str(u) for u in liked.index]
    histories = [train.user_ratings(u) for u in users]
    recs = model.recommend(histories, n=10)
    popular = np.argsort(-train.codes.getnnz(axis=0), kind="stable")
    rbm_hits, pop_hits = 0, 0
    for user, history, top in zip(users, histories, recs, strict=True):
        relevant = liked[user]
        assert not {r.item_id for r in top} & set(history)
        rbm_hits += sum(r.item_id in relevant for r in top)
        unseen = [str(train.item_ids[i]) for i in popular if str(train.item_ids[i]) not in history]
        pop_hits += sum(i in relevant for i in unseen[:10])
    # precision@10 on u1: RBM about 0.245, popularity about 0.213
    assert rbm_hits > pop_hits * 1.05, (rbm_hits, pop_hits)
