"""Per-user softmax regression on fixed item features: how an item-based RBM folds in a user.

In an item-based softmax RBM every item is a training case and every user a visible
softmax unit with weights ``W_u`` (K x F) and biases ``b_u`` (K,). Given the item's
hidden features ``h_i = p(h | item i's ratings)``, the model's rating distribution is

    ``p(r_ui = k) = softmax_k(b_u^k + B_i^k + sum_j W_uj^k h_ij)``,

with ``B_i`` the item's conditional visible bias. A user unknown to the trained
weights (new, or with ratings posted since training) is folded in by fitting
``(W_u, b_u)`` to that user's ratings: the maximum a posteriori estimate under a
Gaussian prior centred on the population's weights,

    ``min_{W, b}  -sum_{i rated} log p(r_ui | h_i; W, b)
                 + l2 / 2 ||W - W_0||^2 + bias_l2 / 2 ||b - b_0||^2``,

a convex problem (multinomial logistic regression). It is solved by majorise-minimise
steps with Böhning's bound on the Hessian of the softmax log-loss
(``diag(p) - p p^T <= I / 2``; Böhning, "Multinomial logistic regression algorithm",
1992): with ``x_i = [h_i, 1]`` and ``G = sum_i x_i x_i^T``, each step is

    ``theta <- theta - g (G / 2 + Lambda)^{-1}``,

for the gradient ``g`` (K x (F + 1)) and ``Lambda = diag(l2, ..., l2, bias_l2)``. The
matrix is the same for every step, so it is factorised once per user. The steps are
those of a gradient method preconditioned by the bound, accelerated with Nesterov's
momentum: ten of them come within a small fraction of the optimum's objective, which
is all a prediction needs (docs/model.md). Users are solved together, in chunks padded
to the longest rating list of the chunk (no Python loop over users or ratings); a
request's single user has a two-dimensional path of its own.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.linalg
from numpy.typing import NDArray

from rbm_core.functional import FloatArray, softmax

__all__ = ["fit_softmax_regression", "softmax_regression_distribution"]

_CHUNK_ELEMENTS = 8 * 2**20
"""Bound on the padded (users x ratings x features) block solved at once."""


def softmax_regression_distribution(
    features: FloatArray,
    item_bias: FloatArray,
    weights: FloatArray,
    bias: FloatArray,
) -> FloatArray:
    """``p(r = k) = softmax_k(b^k + B_i^k + W^k . h_i)`` for one user and several items.

    Parameters
    ----------
    features : ndarray of shape (n_items, F)
        ``h_i`` of each item.
    item_bias : ndarray of shape (n_items, K)
        ``B_i``, the items' conditional visible biases.
    weights : ndarray of shape (K, F)
        The user's ``W_u``.
    bias : ndarray of shape (K,)
        The user's ``b_u``.

    Returns
    -------
    ndarray of shape (n_items, K)
    """
    logits = features @ weights.T
    logits += item_bias
    logits += bias
    return softmax(logits, axis=-1)


def fit_softmax_regression(
    features: FloatArray,
    item_bias: FloatArray,
    levels: NDArray[np.integer],
    indptr: NDArray[np.integer],
    prior_weights: FloatArray,
    prior_bias: FloatArray,
    *,
    l2: float,
    bias_l2: float,
    n_iter: int,
) -> tuple[FloatArray, FloatArray]:
    """Fit ``(W_u, b_u)`` of each user by MAP softmax regression (see the module docstring).

    Parameters
    ----------
    features : ndarray of shape (n_ratings, F)
        ``h_i`` of the item of each rating, ratings grouped by user (CSR order).
    item_bias : ndarray of shape (n_ratings, K)
        ``B_i`` of the item of each rating.
    levels : ndarray of int, shape (n_ratings,)
        The rating level index ``k`` of each rating.
    indptr : ndarray of int, shape (n_users + 1,)
        User ``u``'s ratings are ``indptr[u]:indptr[u + 1]``.
    prior_weights : ndarray of shape (K, F)
        ``W_0``, the mean of the prior (and the answer for a user with no ratings).
    prior_bias : ndarray of shape (K,)
        ``b_0``.
    l2, bias_l2 : float
        Precision of the prior on the weights and on the biases (> 0).
    n_iter : int
        Majorise-minimise steps.

    Returns
    -------
    weights : ndarray of shape (n_users, K, F)
    bias : ndarray of shape (n_users, K)
    """
    dtype = features.dtype
    n_users = len(indptr) - 1
    k, f = prior_weights.shape
    counts = np.diff(indptr).astype(np.int64)
    theta = np.empty((n_users, k, f + 1), dtype=dtype)
    theta[:, :, :f] = prior_weights
    theta[:, :, f] = prior_bias
    if n_users == 0 or len(levels) == 0:
        return theta[:, :, :f], theta[:, :, f]
    if n_users == 1:
        # a request folds in one user: two-dimensional arrays, no padding
        theta[0] = _solve_one(
            features,
            item_bias,
            levels,
            theta[0],
            l2=float(l2),
            bias_l2=float(bias_l2),
            n_iter=int(n_iter),
        )
        return theta[:, :, :f], theta[:, :, f]
    # users in order of their number of ratings, so each chunk pads little
    order = np.argsort(counts, kind="stable")
    sorted_counts = np.maximum(counts[order], 1)
    start = 0
    while start < n_users:
        # the most users whose padded block (users x longest list x features) fits
        sizes = np.arange(1, n_users - start + 1)
        fits = sizes * sorted_counts[start:] * (f + 1) <= _CHUNK_ELEMENTS
        stop = start + max(1, int(np.count_nonzero(fits)))
        chunk = order[start:stop]
        theta[chunk] = _solve_chunk(
            features,
            item_bias,
            levels,
            indptr,
            chunk,
            theta[chunk],
            l2=float(l2),
            bias_l2=float(bias_l2),
            n_iter=int(n_iter),
        )
        start = stop
    return theta[:, :, :f], theta[:, :, f]


def _solve_one(
    features: FloatArray,
    item_bias: FloatArray,
    levels: NDArray[np.integer],
    theta: FloatArray,
    *,
    l2: float,
    bias_l2: float,
    n_iter: int,
) -> FloatArray:
    """The steps of :func:`_solve_chunk` for a single user (the request path)."""
    dtype = features.dtype
    n, f = features.shape
    x = np.empty((n, f + 1), dtype=dtype)
    x[:, :f] = features
    x[:, f] = 1.0
    targets = np.zeros(item_bias.shape, dtype=dtype)
    targets[np.arange(n), levels] = 1.0
    penalty = np.full(f + 1, l2, dtype=dtype)
    penalty[-1] = bias_l2
    inv_penalty = (1.0 / penalty).astype(dtype)
    xs = x * inv_penalty
    xt = x.T
    # (G / 2 + Lambda)^{-1} as in _solve_chunk (Woodbury when the user rated fewer items
    # than there are features), through a Cholesky factor: cheaper than an inverse
    if n <= f + 1:
        inner = xs @ xt
        inner[np.diag_indices(n)] += 2.0
        factor = scipy.linalg.cho_factor(inner, lower=True, overwrite_a=True, check_finite=False)[0]
        potrs = _potrs(factor)

        def solve(grad: FloatArray) -> FloatArray:
            scaled = grad * inv_penalty
            inside = potrs(factor, (scaled @ xt).T, lower=1)[0]
            step: FloatArray = scaled - inside.T @ xs
            return step

    else:
        bound = 0.5 * (xt @ x)
        bound[np.diag_indices(f + 1)] += penalty
        factor = scipy.linalg.cho_factor(bound, lower=True, overwrite_a=True, check_finite=False)[0]
        potrs = _potrs(factor)

        def solve(grad: FloatArray) -> FloatArray:
            step: FloatArray = potrs(factor, grad.T, lower=1)[0].T
            return step

    prior = theta.copy()
    previous = theta
    for step in range(n_iter):
        point = theta + (step / (step + 3.0)) * (theta - previous) if step else theta
        logits = x @ point.T
        logits += item_bias
        logits -= logits.max(axis=1, keepdims=True)
        residual = np.exp(logits)
        residual /= residual.sum(axis=1, keepdims=True)
        residual -= targets
        grad = residual.T @ x
        grad += (point - prior) * penalty
        previous, theta = theta, point - solve(grad)
    return theta


def _potrs(factor: FloatArray) -> Callable[..., tuple[FloatArray, int]]:
    """LAPACK's ``?potrs`` (solve with a Cholesky factor) for ``factor``'s dtype.

    Called directly: ``scipy.linalg.cho_solve`` checks and converts its arguments on
    every call, which at a request's sizes costs more than the solve itself.
    """
    potrs: Callable[..., tuple[FloatArray, int]] = scipy.linalg.get_lapack_funcs(
        ("potrs",), (factor,)
    )[0]
    return potrs


def _solve_chunk(
    features: FloatArray,
    item_bias: FloatArray,
    levels: NDArray[np.integer],
    indptr: NDArray[np.integer],
    users: NDArray[np.int64],
    theta: FloatArray,
    *,
    l2: float,
    bias_l2: float,
    n_iter: int,
) -> FloatArray:
    """MM steps for the users of one chunk, their ratings padded to the longest list."""
    dtype = features.dtype
    n, k, f1 = theta.shape
    counts = (indptr[users + 1] - indptr[users]).astype(np.int64)
    width = max(int(counts.max()), 1)
    # (n, width) index of each padded slot's rating; padded slots are masked out
    slot = np.arange(width)[None, :]
    present = slot < counts[:, None]
    index = np.where(present, indptr[users][:, None] + slot, 0)
    mask = present.astype(dtype)
    x = np.empty((n, width, f1), dtype=dtype)
    x[:, :, :-1] = features[index]
    x[:, :, -1] = 1.0
    x *= mask[:, :, None]
    offsets = item_bias[index]
    targets = np.zeros((n, width, k), dtype=dtype)
    np.put_along_axis(targets, levels[index][:, :, None].astype(np.int64), 1.0, axis=2)
    targets *= mask[:, :, None]
    prior = theta.copy()
    penalty = np.full(f1, l2, dtype=dtype)
    penalty[-1] = bias_l2
    inv_penalty = (1.0 / penalty).astype(dtype)
    xt = x.transpose(0, 2, 1)
    if width <= f1:
        # (G / 2 + Lambda)^{-1} by the Woodbury identity, in the space of the user's
        # ratings: Lambda^-1 - Lambda^-1 X^T (2 I + X Lambda^-1 X^T)^-1 X Lambda^-1
        xs = x * inv_penalty  # X Lambda^-1, (n, width, F + 1)
        inner = np.matmul(xs, xt)
        inner[:, np.arange(width), np.arange(width)] += 2.0
        inner_inv = np.linalg.inv(inner.astype(np.float64)).astype(dtype)

        def solve(grad: FloatArray) -> FloatArray:
            """``grad (G / 2 + Lambda)^{-1}`` for each user, shape (n, K, F + 1)."""
            scaled = grad * inv_penalty
            step: FloatArray = scaled - np.matmul(np.matmul(np.matmul(scaled, xt), inner_inv), xs)
            return step

    else:
        bound = 0.5 * np.matmul(xt, x).astype(np.float64)
        bound[:, np.arange(f1), np.arange(f1)] += penalty
        bound_inv = np.linalg.inv(bound).astype(dtype)

        def solve(grad: FloatArray) -> FloatArray:
            """``grad (G / 2 + Lambda)^{-1}`` for each user, shape (n, K, F + 1)."""
            step: FloatArray = np.matmul(grad, bound_inv)
            return step

    # Nesterov's momentum on the majorise-minimise steps (the steps are those of a
    # gradient method preconditioned by the bound): the same answer in fewer steps
    previous = theta
    for step in range(n_iter):
        point = theta + (step / (step + 3.0)) * (theta - previous) if step else theta
        logits = np.matmul(x, point.transpose(0, 2, 1))
        logits += offsets
        residual = softmax(logits, axis=-1)
        residual -= targets
        residual *= mask[:, :, None]
        grad = np.matmul(residual.transpose(0, 2, 1), x)
        grad += (point - prior) * penalty
        previous, theta = theta, point - solve(grad)
    return theta
