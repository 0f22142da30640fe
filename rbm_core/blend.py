"""Blending rating predictors, as pure functions: weights fitted on held-out ratings.

A blend predicts ``r_hat = w_0 + sum_p w_p r_hat_p`` from the parts' predictions
``r_hat_p`` (feature-weighted, Sill et al. 2009: each weight may also vary linearly with
a few meta-features of the (user, item) pair, here the log numbers of ratings of the
user and of the item). The weights are the ridge solution on ratings the parts did not
train on. The blended distribution over rating levels is the parts' mean distribution
*tilted* to the blended expectation: of all distributions with that mean, the one
closest to the parts' mean in Kullback-Leibler divergence,
``p_k ∝ q_k exp(t v_k)``, with ``t`` found by Newton's method (Csiszár's I-projection).
So the expected rating of the distribution served is exactly the blended rating.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from rbm_core.functional import FloatArray

__all__ = ["blend_features", "fit_blend", "tilt_to_mean"]


def blend_features(
    predictions: NDArray[np.floating],
    user_counts: NDArray[np.floating],
    item_counts: NDArray[np.floating],
) -> NDArray[np.float64]:
    """The blend's design matrix: ``[r_hat_p, 1] x [1, log1p(n_u) - 4, log1p(n_i) - 4]``.

    Parameters
    ----------
    predictions : ndarray of shape (n, P)
        Each part's predicted rating.
    user_counts, item_counts : ndarray of shape (n,)
        Number of ratings of the user (as folded in) and of the item (in training).

    Returns
    -------
    ndarray of shape (n, 3 * (P + 1))
    """
    base = np.column_stack([np.asarray(predictions, dtype=np.float64), np.ones(len(predictions))])
    # centred near ML-100K's typical counts so the plain weights stay interpretable
    lu = np.log1p(np.asarray(user_counts, dtype=np.float64)) - 4.0
    li = np.log1p(np.asarray(item_counts, dtype=np.float64)) - 4.0
    return np.hstack([base, base * lu[:, None], base * li[:, None]])


def fit_blend(
    features: NDArray[np.floating], targets: NDArray[np.floating], ridge: float
) -> NDArray[np.float64]:
    """Ridge regression weights ``(A^T A + ridge I)^{-1} A^T y``.

    Parameters
    ----------
    features : ndarray of shape (n, d)
        From :func:`blend_features`.
    targets : ndarray of shape (n,)
        The held-out ratings.
    ridge : float
        L2 penalty (>= 0).

    Returns
    -------
    ndarray of shape (d,)
    """
    a = np.asarray(features, dtype=np.float64)
    gram = a.T @ a
    gram[np.diag_indices_from(gram)] += ridge
    weights = np.linalg.solve(gram, a.T @ np.asarray(targets, np.float64))
    return np.asarray(weights, dtype=np.float64)


def tilt_to_mean(
    distribution: FloatArray,
    values: NDArray[np.floating],
    target: NDArray[np.floating],
    *,
    n_iter: int = 30,
) -> FloatArray:
    """The distribution ``p ∝ q exp(t v)`` closest to ``q`` whose mean is ``target``.

    The mean of ``p`` grows monotonically with ``t`` (its derivative is the variance),
    so ``t`` is found per row by Newton steps kept inside a shrinking bracket
    (bisection when a step would leave it).

    Parameters
    ----------
    distribution : ndarray of shape (n, K)
        ``q``, rows summing to one.
    values : ndarray of shape (K,)
        The rating value of each level, increasing.
    target : ndarray of shape (n,)
        The required means; clipped to just inside ``(values[0], values[-1])``.
    n_iter : int
        Newton / bisection steps.

    Returns
    -------
    ndarray of shape (n, K)
        Rows summing to one whose means equal ``target`` to about 1e-5.
    """
    dtype = distribution.dtype
    v = np.asarray(values, dtype=np.float64)
    spread = v[-1] - v[0]
    # standardised units: z in [0, 1], so one bracket suits every scale
    z = (v - v[0]) / spread
    goal = np.clip((np.asarray(target, dtype=np.float64) - v[0]) / spread, 1e-3, 1.0 - 1e-3)
    log_q = np.log(np.maximum(np.asarray(distribution, dtype=np.float64), 1e-30))

    def tilted(t: NDArray[np.float64]) -> NDArray[np.float64]:
        logits = log_q + t[:, None] * z
        logits -= logits.max(axis=1, keepdims=True)
        p: NDArray[np.float64] = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        return p

    n = len(log_q)
    t = np.zeros(n)
    lo, hi = np.full(n, -80.0), np.full(n, 80.0)
    for _ in range(n_iter):
        p = tilted(t)
        mean = p @ z
        if np.all(np.abs(mean - goal) < 1e-7):
            return p.astype(dtype)
        low = mean < goal
        lo = np.where(low, t, lo)
        hi = np.where(low, hi, t)
        var = p @ (z * z) - mean * mean
        step = t + (goal - mean) / np.maximum(var, 1e-12)
        inside = (step > lo) & (step < hi)
        t = np.where(inside, step, 0.5 * (lo + hi))
    return tilted(t).astype(dtype)
