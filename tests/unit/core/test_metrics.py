"""rbm_core.metrics: hand-computed cases, brute-force references and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rbm_core import metrics


# -- rating accuracy -----------------------------------------------------------------------
def test_rmse_and_mae_by_hand() -> None:
    truth = [1.0, 2.0, 3.0, 4.0]
    pred = [2.0, 2.0, 5.0, 3.5]
    # errors 1, 0, 2, -0.5
    assert metrics.rmse(truth, pred) == pytest.approx(math.sqrt((1 + 0 + 4 + 0.25) / 4))
    assert metrics.mae(truth, pred) == pytest.approx((1 + 0 + 2 + 0.5) / 4)


def test_perfect_predictions_have_zero_error() -> None:
    values = np.array([1.0, 3.0, 5.0])
    assert metrics.rmse(values, values) == 0.0
    assert metrics.mae(values, values) == 0.0


@pytest.mark.parametrize(
    ("truth", "pred", "message"),
    [
        ([], [], "no ratings"),
        ([1.0, 2.0], [1.0], "differ in length"),
        ([1.0, np.nan], [1.0, 2.0], "finite"),
        ([1.0, 2.0], [1.0, np.inf], "finite"),
        ([[1.0]], [[1.0]], "one-dimensional"),
    ],
)
def test_rating_metrics_refuse_bad_input(truth: object, pred: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        metrics.rmse(truth, pred)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        metrics.mae(truth, pred)  # type: ignore[arg-type]


@given(
    hnp.arrays(np.float64, st.integers(1, 50), elements=st.floats(-10, 10)),
    hnp.arrays(np.float64, 50, elements=st.floats(-10, 10)),
)
def test_mae_never_exceeds_rmse(truth: np.ndarray, noise: np.ndarray) -> None:
    pred = truth + noise[: truth.size]
    assert metrics.mae(truth, pred) <= metrics.rmse(truth, pred) + 1e-12
    assert metrics.rmse(truth, pred) == pytest.approx(metrics.rmse(pred, truth))


# -- hit matrix and top-k ------------------------------------------------------------------
def test_hit_matrix_by_hand() -> None:
    recommended = np.array([[0, 2, -1], [1, 0, 3]])
    relevant = sp.csr_matrix(np.array([[0, 0, 1, 0], [0, 1, 0, 1]]))
    hits = metrics.hit_matrix(recommended, relevant)
    assert hits.tolist() == [[False, True, False], [True, False, True]]


def test_hit_matrix_padding_never_hits_the_previous_users_last_item() -> None:
    # -1 in row 1 must not be mistaken for (row 0, last item)
    recommended = np.array([[0, 1], [-1, -1]])
    relevant = sp.csr_matrix(np.array([[0, 1], [0, 0]]))
    assert metrics.hit_matrix(recommended, relevant).tolist() == [[False, True], [False, False]]


def test_hit_matrix_refuses_mismatched_shapes() -> None:
    relevant = sp.csr_matrix((2, 3))
    with pytest.raises(ValueError, match="rows"):
        metrics.hit_matrix(np.zeros((3, 1), dtype=int), relevant)
    with pytest.raises(ValueError, match="indices"):
        metrics.hit_matrix(np.array([[3], [0]]), relevant)


def test_top_k_ranks_excludes_breaks_ties_by_index_and_pads() -> None:
    scores = np.array([[1.0, 3.0, 3.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    assert metrics.top_k(scores, 2).tolist() == [[1, 2], [0, 1]]
    exclude = sp.csr_matrix(np.array([[0, 1, 0, 0, 0], [1, 1, 1, 0, 1]]))
    assert metrics.top_k(scores, 3, exclude=exclude).tolist() == [[2, 3, 0], [3, -1, -1]]
    assert metrics.top_k(scores, 7).tolist()[0] == [1, 2, 3, 0, 4, -1, -1]


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        st.tuples(st.integers(1, 6), st.integers(1, 12)),
        elements=st.sampled_from([0.0, 1.0, 2.0, 2.5, -np.inf]),
    ),
    st.integers(1, 14),
)
def test_top_k_matches_a_stable_full_sort(scores: np.ndarray, k: int) -> None:
    top = metrics.top_k(scores, k)
    for row, s in zip(top, scores, strict=True):
        ranked = [int(i) for i in np.argsort(-s, kind="stable") if np.isfinite(s[i])][:k]
        assert row.tolist() == ranked + [-1] * (k - len(ranked))


# -- ranking metrics by hand ---------------------------------------------------------------
def test_ranking_metrics_by_hand() -> None:
    hits = np.array([[False, True, False, True], [True, False, True, False]])
    n_relevant = np.array([2, 3])
    assert metrics.precision_at_k(hits) == pytest.approx(0.5)
    assert metrics.precision_at_k(hits, k=1) == pytest.approx(0.5)
    assert metrics.recall_at_k(hits, n_relevant) == pytest.approx((2 / 2 + 2 / 3) / 2)
    # user 0: DCG = 1/log2(3) + 1/log2(5), IDCG = 1 + 1/log2(3)
    ndcg0 = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    # user 1: DCG = 1 + 1/log2(4), IDCG = 1 + 1/log2(3) + 1/log2(4)
    ndcg1 = (1 + 0.5) / (1 + 1 / math.log2(3) + 0.5)
    assert metrics.ndcg_at_k(hits, n_relevant) == pytest.approx((ndcg0 + ndcg1) / 2)
    # AP: user 0 (1/2 + 2/4) / min(2, 4); user 1 (1/1 + 2/3) / min(3, 4)
    ap = metrics.average_precision_at_k(hits, n_relevant)
    assert ap == pytest.approx([(0.5 + 0.5) / 2, (1 + 2 / 3) / 3])
    assert metrics.map_at_k(hits, n_relevant) == pytest.approx(ap.mean())
    # at k = 2: user 0 has one hit at rank 2, user 1 one at rank 1
    assert metrics.ndcg_at_k(hits, n_relevant, k=2) == pytest.approx(
        ((1 / math.log2(3)) / (1 + 1 / math.log2(3)) + 1 / (1 + 1 / math.log2(3))) / 2
    )
    assert metrics.map_at_k(hits, n_relevant, k=2) == pytest.approx((0.5 / 2 + 1 / 2) / 2)


def test_catalog_coverage_by_hand() -> None:
    recommended = np.array([[0, 1], [1, 2], [-1, -1]])
    assert metrics.catalog_coverage(recommended, 10) == pytest.approx(0.3)
    assert metrics.catalog_coverage(recommended, 10, k=1) == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("hits", "n_relevant", "k", "message"),
    [
        (np.zeros((0, 3), dtype=bool), np.zeros(0), None, "no users"),
        (np.array([[True]]), np.array([0]), None, "at least one relevant"),
        (np.array([[True, True]]), np.array([1]), None, "more hits"),
        (np.array([[True]]), np.array([1, 2]), None, "shape"),
        (np.array([[True]]), np.array([1]), 2, "exceeds"),
        (np.array([[True]]), np.array([1]), 0, "positive"),
        (np.array([[2]]), np.array([1]), None, "0/1"),
    ],
)
def test_ranking_metrics_refuse_bad_input(
    hits: np.ndarray, n_relevant: np.ndarray, k: int | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        metrics.ndcg_at_k(hits, n_relevant, k)
    with pytest.raises(ValueError, match=message):
        metrics.map_at_k(hits, n_relevant, k)


# -- properties ------------------------------------------------------------------------------
@st.composite
def _hits_and_counts(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n_users = draw(st.integers(1, 8))
    depth = draw(st.integers(1, 12))
    hits = draw(hnp.arrays(np.bool_, (n_users, depth)))
    extra = draw(hnp.arrays(np.int64, n_users, elements=st.integers(0, 5)))
    counts = np.maximum(hits.sum(axis=1) + extra, 1)
    return hits, counts


@given(_hits_and_counts())
def test_ranking_metrics_lie_in_the_unit_interval(case: tuple[np.ndarray, np.ndarray]) -> None:
    hits, counts = case
    for value in (
        metrics.precision_at_k(hits),
        metrics.recall_at_k(hits, counts),
        metrics.ndcg_at_k(hits, counts),
        metrics.map_at_k(hits, counts),
    ):
        assert 0.0 <= value <= 1.0 + 1e-12


@given(st.integers(1, 20), st.integers(1, 20))
def test_a_perfect_ranking_scores_one(n_relevant: int, k: int) -> None:
    found = min(n_relevant, k)
    hits = np.zeros((1, k), dtype=bool)
    hits[0, :found] = True
    counts = np.array([n_relevant])
    assert metrics.ndcg_at_k(hits, counts) == pytest.approx(1.0)
    assert metrics.map_at_k(hits, counts) == pytest.approx(1.0)
    assert metrics.recall_at_k(hits, counts) == pytest.approx(found / n_relevant)
    assert metrics.precision_at_k(hits) == pytest.approx(found / k)


@given(_hits_and_counts())
def test_no_hits_scores_zero_and_moving_a_hit_up_never_hurts(
    case: tuple[np.ndarray, np.ndarray],
) -> None:
    hits, counts = case
    none = np.zeros_like(hits)
    assert metrics.ndcg_at_k(none, counts) == 0.0
    assert metrics.map_at_k(none, counts) == 0.0
    # swap the first (miss, hit) pair of a row with the hit coming later: the hit moves up
    better = hits.copy()
    for row in better:
        misses = np.flatnonzero(~row)
        for miss in misses:
            later = np.flatnonzero(row[miss + 1 :])
            if later.size:
                row[miss], row[miss + 1 + later[0]] = True, False
                break
    assert metrics.ndcg_at_k(better, counts) >= metrics.ndcg_at_k(hits, counts) - 1e-12
    assert metrics.map_at_k(better, counts) >= metrics.map_at_k(hits, counts) - 1e-12
    assert metrics.precision_at_k(better) == pytest.approx(metrics.precision_at_k(hits))


def _brute_force_ndcg_ap(ranked: list[int], relevant: set[int], k: int) -> tuple[float, float]:
    dcg = sum(1 / math.log2(r + 2) for r, item in enumerate(ranked[:k]) if item in relevant)
    idcg = sum(1 / math.log2(r + 2) for r in range(min(len(relevant), k)))
    found, total = 0, 0.0
    for r, item in enumerate(ranked[:k]):
        if item in relevant:
            found += 1
            total += found / (r + 1)
    return dcg / idcg, total / min(len(relevant), k)


@settings(max_examples=50)
@given(st.data())
def test_metrics_from_item_lists_match_a_brute_force_loop(data: st.DataObject) -> None:
    n_items = data.draw(st.integers(3, 15))
    k = data.draw(st.integers(1, n_items))
    n_users = data.draw(st.integers(1, 5))
    rows, relevant_sets = [], []
    for _ in range(n_users):
        ranked = data.draw(st.permutations(range(n_items)))[:k]
        relevant = data.draw(st.sets(st.integers(0, n_items - 1), min_size=1))
        rows.append(ranked)
        relevant_sets.append(relevant)
    recommended = np.array(rows)
    dense = np.zeros((n_users, n_items))
    for u, rel in enumerate(relevant_sets):
        dense[u, sorted(rel)] = 1
    hits = metrics.hit_matrix(recommended, sp.csr_matrix(dense))
    counts = np.array([len(r) for r in relevant_sets])
    expected = [_brute_force_ndcg_ap(r, s, k) for r, s in zip(rows, relevant_sets, strict=True)]
    assert metrics.ndcg_at_k(hits, counts) == pytest.approx(np.mean([e[0] for e in expected]))
    assert metrics.map_at_k(hits, counts) == pytest.approx(np.mean([e[1] for e in expected]))
    coverage = len({i for r in rows for i in r}) / n_items
    assert metrics.catalog_coverage(recommended, n_items) == pytest.approx(coverage)
