"""The mathematics of the softmax-visible RBM as pure functions (arrays in, arrays out).

Notation (Salakhutdinov, Mnih and Hinton, ICML 2007): ``M`` items, ``K`` rating
levels, ``F`` binary hidden units. ``W`` has shape (M, K, F), the visible biases ``b``
(M, K), the hidden biases ``c`` (F,). A user's visible vector ``V`` is one K-way
one-hot per *rated* item; unrated items are absent (not zero). In matrices, user
rows are one-hot over the flattened ``M * K`` axis, column ``m * K + k``, so that
``W.reshape(M * K, F)`` multiplies them with sparse BLAS-like kernels.

Every array is kept in the dtype of the weights (the model uses float32).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import DTypeLike, NDArray
from scipy.special import expit

FloatArray = NDArray[np.floating]

_GATHER_CHUNK_BYTES = 32 * 2**20
"""Working-set cap for the gathered ``W[items]`` blocks of the sparse logits path."""


# -- building visible matrices ----------------------------------------------------------
def one_hot_visible(
    codes: sp.csr_matrix, n_levels: int, dtype: DTypeLike = np.float32
) -> sp.csr_matrix:
    """One-hot visible matrix of a CSR of level codes.

    Parameters
    ----------
    codes : scipy.sparse.csr_matrix, shape (n_users, n_items)
        Level index + 1 per rating (0 = missing), sorted indices.
    n_levels : int
        K.

    Returns
    -------
    scipy.sparse.csr_matrix of shape (n_users, n_items * K)
        ``1`` at column ``m * K + k`` for each rating of item ``m`` at level ``k``.
    """
    cols = codes.indices.astype(np.int64) * n_levels + (codes.data.astype(np.int64) - 1)
    data = np.ones(codes.nnz, dtype=dtype)
    return sp.csr_matrix(
        (data, cols, codes.indptr.astype(np.int64)),
        shape=(codes.shape[0], codes.shape[1] * n_levels),
    )


def block_visible(codes: sp.csr_matrix, values: FloatArray) -> sp.csr_matrix:
    """Visible matrix with a full K-vector (e.g. probabilities) for every rated item.

    Parameters
    ----------
    codes : scipy.sparse.csr_matrix, shape (n_users, n_items)
        Rated pattern (sorted indices); only its structure is used.
    values : ndarray of shape (n_ratings, K)
        One row per rating in CSR order.

    Returns
    -------
    scipy.sparse.csr_matrix of shape (n_users, n_items * K)
    """
    k = values.shape[1]
    cols = (codes.indices.astype(np.int64)[:, None] * k + np.arange(k)).ravel()
    return sp.csr_matrix(
        (values.ravel(), cols, codes.indptr.astype(np.int64) * k),
        shape=(codes.shape[0], codes.shape[1] * k),
    )


def rows_of(codes: sp.csr_matrix) -> NDArray[np.int64]:
    """Row index of every stored entry of a CSR, in storage order."""
    return np.repeat(np.arange(codes.shape[0], dtype=np.int64), np.diff(codes.indptr))


# -- elementary functions ------------------------------------------------------------
def softplus(x: FloatArray) -> FloatArray:
    """``log(1 + exp(x))`` computed without overflow, same dtype as ``x``."""
    return np.logaddexp(np.zeros((), dtype=x.dtype), x)


def log_softmax(logits: FloatArray, axis: int = -1) -> FloatArray:
    """Log-softmax along ``axis`` (log-sum-exp shifted by the maximum)."""
    shifted = logits - logits.max(axis=axis, keepdims=True)
    out: FloatArray = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    return out


def softmax(logits: FloatArray, axis: int = -1) -> FloatArray:
    """Softmax along ``axis``, stable for large logits."""
    # The max and the sum run as elementwise operations over the slices along
    # ``axis`` (the K rating levels): numpy's reductions along a short innermost axis
    # are about three times slower, and this is the hot spot of scoring all items.
    # softmax(x) = exp(x - max_k x) / sum_k exp(x - max_k x)
    axis = axis % logits.ndim
    head = (slice(None),) * axis

    def level(k: int) -> tuple[slice | int, ...]:
        return (*head, k)

    widen = (*head, np.newaxis)
    n_levels = logits.shape[axis]
    top = np.array(logits[level(0)])  # a copy (also for 1-D input)
    for k in range(1, n_levels):
        np.maximum(top, logits[level(k)], out=top)
    out: FloatArray = np.exp(logits - top[widen])
    total = np.array(out[level(0)])
    for k in range(1, n_levels):
        total += out[level(k)]
    out /= total[widen]
    return out


# -- conditionals --------------------------------------------------------------------
def hidden_input(
    visible: sp.csr_matrix, weights: FloatArray, hidden_bias: FloatArray
) -> FloatArray:
    """Total input to the hidden units, ``x_j = c_j + sum_{i,k} v_i^k W_ij^k``.

    Parameters
    ----------
    visible : scipy.sparse.csr_matrix, shape (n_users, M * K)
        One-hot (or probability) visible rows.
    weights : ndarray of shape (M, K, F)
    hidden_bias : ndarray of shape (F,)

    Returns
    -------
    ndarray of shape (n_users, F)
    """
    m, k, f = weights.shape
    x: FloatArray = np.asarray(visible @ weights.reshape(m * k, f))
    x += hidden_bias
    return x


def hidden_probabilities(
    visible: sp.csr_matrix, weights: FloatArray, hidden_bias: FloatArray
) -> FloatArray:
    """``p(h_j = 1 | V) = sigmoid(x_j)``, shape (n_users, F)."""
    p: FloatArray = expit(hidden_input(visible, weights, hidden_bias))
    return p


def visible_logits_at(
    hidden: FloatArray,
    weights: FloatArray,
    visible_bias: FloatArray,
    rows: NDArray[np.integer],
    items: NDArray[np.integer],
    user_bias: FloatArray | None = None,
) -> FloatArray:
    """Softmax logits ``b_m^k + u^k + sum_j h_j W_mj^k`` for selected (user, item) pairs.

    Parameters
    ----------
    hidden : ndarray of shape (n_users, F)
        Hidden states or probabilities.
    weights : ndarray of shape (M, K, F)
    visible_bias : ndarray of shape (M, K)
    rows, items : ndarray of int, shape (n_pairs,)
        User row and item index of each pair.
    user_bias : ndarray of shape (n_users, K), optional
        Per-user term ``u^k`` added to every visible logit of that user (the
        conditional visible bias of a conditional RBM).

    Returns
    -------
    ndarray of shape (n_pairs, K)

    Notes
    -----
    Two equivalent evaluations: when the pairs cover a large share of the users x items
    grid, one dense matrix product ``hidden @ W.T`` followed by a gather is cheapest
    (BLAS); otherwise the rows of ``W`` of each pair are gathered in chunks.
    """
    m, k, f = weights.shape
    n_users = hidden.shape[0]
    n_pairs = len(rows)
    out = np.empty((n_pairs, k), dtype=weights.dtype)
    if n_pairs == 0:
        return out
    # Dense BLAS costs n_users * M * K * F flops, at ~20x the speed of the memory-bound
    # gather, which costs n_pairs * K * F: switch at a density of about 1/20.
    if 20 * n_pairs >= n_users * m:
        dense = hidden @ weights.reshape(m * k, f).T
        dense = dense.reshape(n_users, m, k)
        out[:] = dense[rows, items]
    else:
        chunk = max(1, _GATHER_CHUNK_BYTES // (k * f * weights.dtype.itemsize))
        for lo in range(0, n_pairs, chunk):
            hi = min(lo + chunk, n_pairs)
            out[lo:hi] = np.einsum("pkf,pf->pk", weights[items[lo:hi]], hidden[rows[lo:hi]])
    out += visible_bias[items]
    if user_bias is not None:
        out += user_bias[rows]
    return out


def mean_field_distribution(
    hidden_prob: FloatArray,
    weights: FloatArray,
    visible_bias: FloatArray,
    user_bias: FloatArray | None = None,
) -> FloatArray:
    """Mean-field ``p(v_q^k = 1 | V) = softmax_k(b_q^k + sum_j p_j W_qj^k)`` for the given items.

    Parameters
    ----------
    hidden_prob : ndarray of shape (n_users, F)
        ``p(h | V)``.
    weights : ndarray of shape (Q, K, F)
        The weights of the query items (``W[q]``).
    visible_bias : ndarray of shape (Q, K)
    user_bias : ndarray of shape (n_users, K), optional
        Per-user term added to every logit of that user.

    Returns
    -------
    ndarray of shape (n_users, Q, K)
    """
    q, k, f = weights.shape
    # explicit row count: with no query items (q == 0) "-1" cannot be inferred
    logits = (hidden_prob @ weights.reshape(q * k, f).T).reshape(hidden_prob.shape[0], q, k)
    logits += visible_bias
    if user_bias is not None:
        logits += user_bias[:, None, :]
    return softmax(logits, axis=-1)


def exact_marginal_distribution(
    hidden_in: FloatArray,
    weights: FloatArray,
    visible_bias: FloatArray,
    user_bias: FloatArray | None = None,
) -> FloatArray:
    """Exact ``p(v_q = k | V)``, summing over all ``2^F`` hidden states analytically.

    ``p(v_q = k | V)`` is proportional to ``exp(b_q^k) * prod_j (1 + exp(x_j + W_qj^k))``
    where ``x`` is the hidden input given ``V`` (:func:`hidden_input`).

    Parameters
    ----------
    hidden_in : ndarray of shape (n_users, F)
        Hidden inputs ``x`` (not probabilities).
    weights : ndarray of shape (Q, K, F)
    visible_bias : ndarray of shape (Q, K)
    user_bias : ndarray of shape (n_users, K), optional
        Per-user term added to every logit of that user.

    Returns
    -------
    ndarray of shape (n_users, Q, K)
    """
    n, f = hidden_in.shape
    q, k, _ = weights.shape
    out = np.empty((n, q, k), dtype=weights.dtype)
    # bound the (rows, Q, K, F) temporary
    per_user = max(1, q * k * f * weights.dtype.itemsize)
    step = max(1, _GATHER_CHUNK_BYTES // per_user)
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        logits = softplus(hidden_in[lo:hi, None, None, :] + weights[None]).sum(axis=-1)
        logits += visible_bias
        if user_bias is not None:
            logits += user_bias[lo:hi, None, :]
        out[lo:hi] = softmax(logits, axis=-1)
    return out


# -- energies ------------------------------------------------------------------------
def level_totals(visible: sp.csr_matrix, n_levels: int) -> FloatArray:
    """Per-user sum of the visible values at each level, shape (n_users, K)."""
    n_cols = visible.shape[1]
    cols = np.arange(n_cols, dtype=np.int64)
    select = sp.csr_matrix(
        (np.ones(n_cols, dtype=visible.dtype), (cols, cols % n_levels)), shape=(n_cols, n_levels)
    )
    out: FloatArray = np.asarray((visible @ select).todense())
    return out


def free_energy(
    visible: sp.csr_matrix,
    weights: FloatArray,
    visible_bias: FloatArray,
    hidden_bias: FloatArray,
    user_bias: FloatArray | None = None,
) -> FloatArray:
    """Free energy ``F(V) = -sum_{i,k} v_i^k (b_i^k + u^k) - sum_j log(1 + exp(x_j))``.

    ``p(V)`` is proportional to ``exp(-F(V))`` (over the rated items of ``V``).

    Parameters
    ----------
    visible : scipy.sparse.csr_matrix, shape (n_users, M * K)
    weights : ndarray of shape (M, K, F)
    visible_bias : ndarray of shape (M, K)
    hidden_bias : ndarray of shape (F,)
    user_bias : ndarray of shape (n_users, K), optional
        Conditional visible bias ``u`` of each user.

    Returns
    -------
    ndarray of shape (n_users,)
    """
    x = hidden_input(visible, weights, hidden_bias)
    vb = np.asarray(visible @ visible_bias.reshape(-1)).ravel()
    if user_bias is not None:
        vb = vb + (level_totals(visible, weights.shape[1]) * user_bias).sum(axis=1)
    result: FloatArray = -vb - softplus(x).sum(axis=1)
    return result


def energy(
    visible: sp.csr_matrix,
    hidden: FloatArray,
    weights: FloatArray,
    visible_bias: FloatArray,
    hidden_bias: FloatArray,
    user_bias: FloatArray | None = None,
) -> FloatArray:
    """Joint energy ``E(V, h) = -sum v W h - sum v (b + u) - sum h c`` for each row.

    Parameters
    ----------
    visible : scipy.sparse.csr_matrix, shape (n_users, M * K)
    hidden : ndarray of shape (n_users, F)
        Binary hidden states.

    Returns
    -------
    ndarray of shape (n_users,)
    """
    m, k, f = weights.shape
    vw = np.asarray(visible @ weights.reshape(m * k, f))
    vb = np.asarray(visible @ visible_bias.reshape(-1)).ravel()
    if user_bias is not None:
        vb = vb + (level_totals(visible, k) * user_bias).sum(axis=1)
    result: FloatArray = -(vw * hidden).sum(axis=1) - vb - hidden @ hidden_bias
    return result


# -- sampling ------------------------------------------------------------------------
def sample_bernoulli(prob: FloatArray, rng: np.random.Generator) -> FloatArray:
    """Binary states with ``P(1) = prob``, same shape and dtype."""
    draw = rng.random(prob.shape, dtype=np.float32 if prob.dtype == np.float32 else np.float64)
    result: FloatArray = (draw < prob).astype(prob.dtype)
    return result


def sample_categorical(prob: FloatArray, rng: np.random.Generator) -> NDArray[np.int64]:
    """One level index per row of ``prob`` (shape (n, K), rows summing to one)."""
    cum = np.cumsum(prob, axis=1)
    draw = rng.random((prob.shape[0], 1)) * cum[:, -1:]
    idx: NDArray[np.int64] = np.minimum((cum < draw).sum(axis=1), prob.shape[1] - 1)
    return idx.astype(np.int64)


# -- contrastive divergence ------------------------------------------------------------
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
    return CDStatistics(
        items=active.astype(np.int64),
        d_weights=d_w.reshape(len(active), k, f),
        d_visible_bias=d_vb,
        d_hidden_bias=d_hb,
        d_user_bias=d_ub,
        squared_error=squared_error,
        n_ratings=len(items),
    )


# -- prediction at (user, item) pairs ----------------------------------------------------
def mean_field_at(
    hidden_prob: FloatArray,
    weights: FloatArray,
    visible_bias: FloatArray,
    rows: NDArray[np.integer],
    items: NDArray[np.integer],
    user_bias: FloatArray | None = None,
) -> FloatArray:
    """Mean-field distributions for (user, item) pairs, shape (n_pairs, K).

    ``softmax_k(b_q^k + u^k + sum_j p_j W_qj^k)`` with ``p = hidden_prob[rows]``.
    """
    return softmax(visible_logits_at(hidden_prob, weights, visible_bias, rows, items, user_bias))


def exact_marginal_at(
    hidden_in: FloatArray,
    weights: FloatArray,
    visible_bias: FloatArray,
    rows: NDArray[np.integer],
    items: NDArray[np.integer],
    user_bias: FloatArray | None = None,
) -> FloatArray:
    """Exact marginal distributions for (user, item) pairs, shape (n_pairs, K).

    See :func:`exact_marginal_distribution`; ``hidden_in`` holds the hidden inputs
    ``x`` of the users, shape (n_users, F).
    """
    _, k, f = weights.shape
    n_pairs = len(rows)
    out = np.empty((n_pairs, k), dtype=weights.dtype)
    chunk = max(1, _GATHER_CHUNK_BYTES // (k * f * weights.dtype.itemsize))
    for lo in range(0, n_pairs, chunk):
        hi = min(lo + chunk, n_pairs)
        logits = softplus(hidden_in[rows[lo:hi], None, :] + weights[items[lo:hi]]).sum(axis=-1)
        logits += visible_bias[items[lo:hi]]
        if user_bias is not None:
            logits += user_bias[rows[lo:hi]]
        out[lo:hi] = softmax(logits, axis=-1)
    return out
