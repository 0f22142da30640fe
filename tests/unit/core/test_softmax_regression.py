"""The item RBM's user fold-in: MAP softmax regression by Böhning's bound."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import log_softmax

from rbm_core.softmax_regression import (
    fit_softmax_regression,
    softmax_regression_distribution,
)


def _problem(seed: int, counts: list[int], f: int = 6, k: int = 4):
    rng = np.random.default_rng(seed)
    n = sum(counts)
    features = rng.random((n, f)).astype(np.float64)
    item_bias = rng.normal(0.0, 0.5, (n, k))
    levels = rng.integers(0, k, n)
    indptr = np.concatenate(([0], np.cumsum(counts)))
    prior_w = rng.normal(0.0, 0.3, (k, f))
    prior_b = rng.normal(0.0, 0.3, k)
    return features, item_bias, levels, indptr, prior_w, prior_b


def _objective(theta, x, offsets, y, prior_w, prior_b, l2, bias_l2):
    k, f = prior_w.shape
    w, b = theta[: k * f].reshape(k, f), theta[k * f :]
    logp = log_softmax(x @ w.T + b + offsets, axis=1)
    value = -logp[np.arange(len(y)), y].sum()
    value += 0.5 * l2 * ((w - prior_w) ** 2).sum() + 0.5 * bias_l2 * ((b - prior_b) ** 2).sum()
    return value


def test_the_solution_is_the_map_estimate_of_a_generic_optimiser() -> None:
    features, item_bias, levels, indptr, prior_w, prior_b = _problem(0, [7, 30, 1])
    weights, bias = fit_softmax_regression(
        features, item_bias, levels, indptr, prior_w, prior_b, l2=2.0, bias_l2=0.5, n_iter=200
    )
    for u in range(3):
        sl = slice(indptr[u], indptr[u + 1])
        args = (features[sl], item_bias[sl], levels[sl], prior_w, prior_b, 2.0, 0.5)
        start = np.concatenate([prior_w.ravel(), prior_b])
        reference = minimize(_objective, start, args=args, method="BFGS", tol=1e-10).x
        ours = np.concatenate([weights[u].ravel(), bias[u]])
        assert _objective(ours, *args) <= _objective(reference, *args) + 1e-6
        np.testing.assert_allclose(ours, reference, atol=1e-3)


def test_the_steps_converge_to_the_optimum() -> None:
    features, item_bias, levels, indptr, prior_w, prior_b = _problem(1, [25])
    args = (features, item_bias, levels, prior_w, prior_b, 1.0, 1.0)
    values = []
    for n_iter in (0, 2, 5, 10, 20, 60):
        w, b = fit_softmax_regression(
            features,
            item_bias,
            levels,
            indptr,
            prior_w,
            prior_b,
            l2=1.0,
            bias_l2=1.0,
            n_iter=n_iter,
        )
        values.append(_objective(np.concatenate([w[0].ravel(), b[0]]), *args))
    start = np.concatenate([prior_w.ravel(), prior_b])
    best = minimize(_objective, start, args=args, method="BFGS", tol=1e-10).fun
    assert values[0] > values[1] > values[2]
    assert values[3] - best < 1e-2 * (values[0] - best)  # ten steps: within 1 %
    assert values[-1] == pytest.approx(best, abs=1e-6)


def test_a_user_without_ratings_gets_the_prior() -> None:
    features, item_bias, levels, indptr, prior_w, prior_b = _problem(2, [0, 5, 0])
    weights, bias = fit_softmax_regression(
        features, item_bias, levels, indptr, prior_w, prior_b, l2=1.0, bias_l2=1.0, n_iter=5
    )
    for u in (0, 2):
        np.testing.assert_array_equal(weights[u], prior_w)
        np.testing.assert_array_equal(bias[u], prior_b)
    assert not np.allclose(weights[1], prior_w)


def test_users_solved_together_equal_users_solved_alone() -> None:
    # more ratings for one user than features: the direct solve rather than Woodbury
    counts = [3, 12, 1, 9]
    features, item_bias, levels, indptr, prior_w, prior_b = _problem(3, counts, f=5)
    together = fit_softmax_regression(
        features, item_bias, levels, indptr, prior_w, prior_b, l2=3.0, bias_l2=1.0, n_iter=15
    )
    for u in range(len(counts)):
        sl = slice(indptr[u], indptr[u + 1])
        alone = fit_softmax_regression(
            features[sl],
            item_bias[sl],
            levels[sl],
            np.array([0, counts[u]]),
            prior_w,
            prior_b,
            l2=3.0,
            bias_l2=1.0,
            n_iter=15,
        )
        np.testing.assert_allclose(together[0][u], alone[0][0], rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(together[1][u], alone[1][0], rtol=1e-6, atol=1e-8)


def test_ratings_pull_the_distribution_towards_the_levels_given() -> None:
    features, item_bias, _, indptr, prior_w, prior_b = _problem(4, [40])
    top = np.full(40, 3)
    w, b = fit_softmax_regression(
        features, item_bias, top, indptr, prior_w, prior_b, l2=1.0, bias_l2=1.0, n_iter=30
    )
    before = softmax_regression_distribution(features, item_bias, prior_w, prior_b)
    after = softmax_regression_distribution(features, item_bias, w[0], b[0])
    assert after[:, 3].mean() > before[:, 3].mean() + 0.2
    np.testing.assert_allclose(after.sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_dtype_is_kept(dtype) -> None:
    features, item_bias, levels, indptr, prior_w, prior_b = _problem(5, [4, 6])
    w, b = fit_softmax_regression(
        features.astype(dtype),
        item_bias.astype(dtype),
        levels,
        indptr,
        prior_w.astype(dtype),
        prior_b.astype(dtype),
        l2=1.0,
        bias_l2=1.0,
        n_iter=3,
    )
    assert w.dtype == dtype
    assert b.dtype == dtype
