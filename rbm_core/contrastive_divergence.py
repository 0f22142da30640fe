"""Contrastive divergence: one CD-k gradient estimate of the softmax RBM, as pure functions.

Notation as in :mod:`rbm_core.functional` (``M`` items, ``K`` levels, ``F`` hidden
units; ``W`` (M, K, F), ``b`` (M, K), ``c`` (F,)). Each user's chain involves only the
items that user rated; the estimate covers the rows of ``W`` of the items rated in
the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from rbm_core.functional import (
    FloatArray,
    block_visible,
    hidden_probabilities,
    one_hot_visible,
    rows_of,
    sample_bernoulli,
    sample_categorical,
    softmax,
    visible_logits_at,
)

__all__ = ["CDStatistics", "cd_statistics", "offset_weights_gradient"]


@dataclass(frozen=True)
class CDStatistics:
    """Gradient estimates of one CD-k step on a batch (averaged over the batch's users).

    Only the items rated in the batch have a non-zero gradient, so the weight and
    visible-bias gradients are given for those rows only (``items``).

    Attributes
    ----------
    items : ndarray of int, shape (A,)
        The distinct items rated in the batch, sorted.
    d_weights : ndarray of shape (A, K, F)
        ``<v h>_data - <v h>_recon`` for the rows ``W[items]``.
    d_visible_bias : ndarray of shape (A, K)
    d_hidden_bias : ndarray of shape (F,)
    d_user_bias : ndarray of shape (n_users, K)
        Per user, ``sum_items (v_data - v_recon)`` at each level: the gradient with
        respect to that user's conditional visible bias (not averaged).
    d_implicit_weights : ndarray of shape (A, F) or None
        ``<r h>_data - <r h>_recon`` for the rows ``D[items]`` of the implicit-input
        weights (None when the step had none).
    squared_error : float
        Sum of squared differences between the input ratings and the expected
        ratings of the first mean-field reconstruction (value units).
    n_ratings : int
    """

    items: NDArray[np.int64]
    d_weights: FloatArray
    d_visible_bias: FloatArray
    d_hidden_bias: FloatArray
    d_user_bias: FloatArray
    squared_error: float
    n_ratings: int
    d_implicit_weights: FloatArray | None = None

    def dense_weights(self, n_items: int) -> FloatArray:
        """``d_weights`` scattered into an (n_items, K, F) array (for inspection)."""
        out = np.zeros((n_items, *self.d_weights.shape[1:]), dtype=self.d_weights.dtype)
        out[self.items] = self.d_weights
        return out


def _user_sums(indptr: NDArray[np.integer], values: FloatArray) -> FloatArray:
    """Sum of the rows of ``values`` (one per rating, CSR order) for each user."""
    n_users = len(indptr) - 1
    summing = sp.csr_matrix(
        (np.ones(len(values), dtype=values.dtype), np.arange(len(values)), indptr),
        shape=(n_users, len(values)),
    )
    out: FloatArray = np.asarray(summing @ values)
    return out


def cd_statistics(
    codes: sp.csr_matrix,
    weights: FloatArray,
    visible_bias: FloatArray,
    hidden_bias: FloatArray,
    level_values: FloatArray,
    n_steps: int,
    rng: np.random.Generator,
    dropout: float = 0.0,
    user_bias: FloatArray | None = None,
    implicit_weights: FloatArray | None = None,
) -> CDStatistics:
    """One contrastive-divergence (CD-``n_steps``) gradient estimate on a batch of users.

    Each user's chain only involves the items that user rated. The chain samples binary
    hidden states and visible ratings; the last visible reconstruction and the last
    hidden layer use probabilities (less sampling noise, same expectation).

    Parameters
    ----------
    codes : scipy.sparse.csr_matrix, shape (n_users, M)
        Level codes of the batch (level index + 1), sorted indices.
    weights : ndarray of shape (M, K, F)
    visible_bias : ndarray of shape (M, K)
    hidden_bias : ndarray of shape (F,)
    level_values : ndarray of shape (K,)
        Rating values, for the reconstruction error.
    n_steps : int
        Number of Gibbs steps ``T`` (>= 1).
    rng : numpy.random.Generator
    dropout : float
        Probability of dropping each hidden unit for a user for the whole step
        (Srivastava et al., 2014): dropped units are clamped to zero in both phases.
    user_bias : ndarray of shape (n_users, K), optional
        Conditional visible bias of each user of the batch.
    implicit_weights : ndarray of shape (M, F), optional
        ``D`` of the conditional RBM (Salakhutdinov, Mnih and Hinton, section 4): the
        binary "rated" vector ``r`` of each user adds ``sum_i r_i D_i`` to the input of
        the hidden units in both phases (it is conditioned on, never reconstructed).

    Returns
    -------
    CDStatistics
    """
    _, k, f = weights.shape
    dtype = weights.dtype
    n_users = codes.shape[0]
    rows = rows_of(codes)
    items = codes.indices.astype(np.int64)
    levels = codes.data.astype(np.int64) - 1
    indptr = codes.indptr.astype(np.int64)
    # work on the rows of the items rated in the batch only (compact column space);
    # "local" is monotone in the item index, so each row stays sorted
    active, local = np.unique(items, return_inverse=True)
    w = weights[active]
    b = visible_bias[active]
    local_codes = sp.csr_matrix((codes.data, local, indptr), shape=(n_users, len(active)))

    v_data = one_hot_visible(local_codes, k, dtype)
    rated: sp.csr_matrix | None = None
    if implicit_weights is not None:
        # c_j + sum_i r_i D_ij: a per-user hidden bias, the same in both phases
        rated = sp.csr_matrix(
            (np.ones(len(items), dtype=dtype), local, indptr), shape=(n_users, len(active))
        )
        hidden_bias = hidden_bias + np.asarray(rated @ implicit_weights[active])
    # positive phase: p(h | V_data)
    h_data = hidden_probabilities(v_data, w, hidden_bias)
    keep: FloatArray | None = None
    if dropout > 0.0:
        keep = sample_bernoulli(np.full(h_data.shape, 1.0 - dropout, dtype=dtype), rng)
        h_data *= keep
    h = sample_bernoulli(h_data, rng)
    squared_error = 0.0
    v_model: sp.csr_matrix
    p_v: FloatArray = np.empty((0, k), dtype=dtype)
    h_model: FloatArray = h_data
    for step in range(n_steps):
        p_v = softmax(visible_logits_at(h, w, b, rows, local, user_bias))
        if step == 0:
            expected = p_v @ level_values.astype(dtype)
            squared_error = float(np.sum((expected - level_values[levels]) ** 2))
        if step < n_steps - 1:
            sampled = sample_categorical(p_v, rng)
            v_model = sp.csr_matrix(
                (np.ones(len(items), dtype=dtype), local * k + sampled, indptr),
                shape=v_data.shape,
            )
            h = sample_bernoulli(hidden_probabilities(v_model, w, hidden_bias), rng)
            if keep is not None:
                h *= keep
        else:
            p_v = p_v.astype(dtype, copy=False)
            v_model = block_visible(local_codes, p_v)
            h_model = hidden_probabilities(v_model, w, hidden_bias)
            if keep is not None:
                h_model *= keep

    scale = dtype.type(1.0 / max(n_users, 1))
    # <v h>_data - <v h>_recon, accumulated in place to avoid (A*K, F) temporaries
    d_w = np.asarray(v_data.T @ h_data)
    d_w -= np.asarray(v_model.T @ h_model)
    d_w *= scale
    one_hot = np.zeros((len(items), k), dtype=dtype)
    one_hot[np.arange(len(items)), levels] = 1.0
    diff = one_hot - p_v
    by_item = sp.csr_matrix(
        (np.ones(len(items), dtype=dtype), (local, np.arange(len(items)))),
        shape=(len(active), len(items)),
    )
    d_vb = np.asarray(by_item @ diff) * scale
    d_hb = (h_data.sum(axis=0) - h_model.sum(axis=0)) * scale
    d_ub = _user_sums(indptr, diff)
    d_d = None
    if rated is not None:
        d_d = np.asarray(rated.T @ (h_data - h_model)) * scale
    return CDStatistics(
        items=active.astype(np.int64),
        d_weights=d_w.reshape(len(active), k, f),
        d_visible_bias=d_vb,
        d_hidden_bias=d_hb,
        d_user_bias=d_ub,
        squared_error=squared_error,
        n_ratings=len(items),
        d_implicit_weights=d_d,
    )


def offset_weights_gradient(offsets: FloatArray, d_user_bias: FloatArray) -> FloatArray:
    """Gradient of the offset weights ``a``, averaged over the users like the others.

    The conditional visible bias of user ``u`` is ``a_k z_u``, so
    ``d a_k = (1/n_users) sum_u z_u d u_k(u)``, with ``d u(u)`` from
    :attr:`CDStatistics.d_user_bias`.

    Parameters
    ----------
    offsets : ndarray of shape (n_users,)
        ``z_u`` of each user of the batch.
    d_user_bias : ndarray of shape (n_users, K)
        Per-user gradient of the conditional visible bias (not averaged).

    Returns
    -------
    ndarray of shape (K,)
    """
    grad: FloatArray = (offsets[:, None] * d_user_bias).sum(axis=0) / max(len(offsets), 1)
    return grad
