"""The mathematics of the Bernoulli-visible RBM as pure functions (arrays in, arrays out).

Notation (Hinton, "A Practical Guide to Training Restricted Boltzmann Machines", UTML
TR 2010-003): ``M`` visible units ``v_i`` (binary, or probabilities in [0, 1]), ``F``
binary hidden units ``h_j``, weights ``W`` (M, F), visible biases ``b`` (M,), hidden
biases ``c`` (F,)::

    E(v, h)        = -v.W.h - b.v - c.h
    F(v)           = -log sum_h exp(-E(v, h)) = -b.v - sum_j softplus(c_j + v.W_j)
    p(h_j = 1 | v) = sigmoid(c_j + v.W_j)
    p(v_i = 1 | h) = sigmoid(b_i + W_i.h)

The hidden side, ``p(h | v)``, ``F(v)`` and ``E(v, h)``, is the same formula as for the
softmax RBM and lives in :mod:`rbm_core.functional` (``hidden_probabilities``,
``free_energy``, ``energy``, with ``W`` of shape (M, F)); this module adds the visible
side, Gibbs chains, one CD-k gradient estimate and the pseudo-likelihood. Visible rows
are a dense ndarray or a CSR matrix (only the rows passed in are ever made dense);
every array keeps the dtype of the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.special import logit

from rbm_core.functional import (
    FloatArray,
    hidden_input,
    hidden_probabilities,
    rows_of,
    sample_bernoulli,
    sigmoid,
    softplus,
)

__all__ = [
    "BernoulliCDStatistics",
    "cd_statistics",
    "gibbs_chain",
    "initial_visible_bias",
    "pseudo_log_likelihood",
    "squared_error",
    "visible_probabilities",
]


def visible_probabilities(
    hidden: FloatArray, weights: FloatArray, visible_bias: FloatArray
) -> FloatArray:
    """``p(v_i = 1 | h) = sigmoid(b_i + sum_j W_ij h_j)``.

    Parameters
    ----------
    hidden : ndarray of shape (n, F)
        Hidden states or probabilities.
    weights : ndarray of shape (M, F)
    visible_bias : ndarray of shape (M,)

    Returns
    -------
    ndarray of shape (n, M)
    """
    x: FloatArray = hidden @ weights.T
    x += visible_bias
    return sigmoid(x, out=x)


def initial_visible_bias(feature_sums: FloatArray, n_samples: int) -> FloatArray:
    """``b_i = log(p_i / (1 - p_i))`` of each feature's mean ``p_i`` (Hinton's guide, 8.1).

    The means are smoothed with half a pseudo-count on each side,
    ``p_i = (sum_i + 1/2) / (n_samples + 1)``, so a feature that is always off (a
    corner pixel) or always on still gets a finite bias.

    Parameters
    ----------
    feature_sums : ndarray of shape (M,)
        Sum of each feature over the training samples.
    n_samples : int

    Returns
    -------
    ndarray of shape (M,), in the dtype of ``feature_sums``
    """
    p = (np.asarray(feature_sums, dtype=np.float64) + 0.5) / (n_samples + 1.0)
    bias: FloatArray = logit(p).astype(feature_sums.dtype)
    return bias


def gibbs_chain(
    visible: FloatArray | sp.csr_matrix,
    weights: FloatArray,
    visible_bias: FloatArray,
    hidden_bias: FloatArray,
    n_steps: int,
    rng: np.random.Generator,
) -> tuple[FloatArray, FloatArray]:
    """``n_steps`` steps of block Gibbs sampling, ``h ~ p(h | v)`` then ``v ~ p(v | h)``.

    Parameters
    ----------
    visible : ndarray or scipy.sparse.csr_matrix of shape (n_chains, M)
        The chains' starting visible states.
    weights : ndarray of shape (M, F)
    visible_bias : ndarray of shape (M,)
    hidden_bias : ndarray of shape (F,)
    n_steps : int
        Steps (>= 1).
    rng : numpy.random.Generator

    Returns
    -------
    states, probabilities : ndarray of shape (n_chains, M)
        The binary visible states after the last step and ``p(v | h)`` they were drawn
        from (the chains' expected images, less noisy to look at).
    """
    v = visible
    p_v: FloatArray = np.empty((visible.shape[0], weights.shape[0]), dtype=weights.dtype)
    for _ in range(n_steps):
        h = sample_bernoulli(hidden_probabilities(v, weights, hidden_bias), rng)
        p_v = visible_probabilities(h, weights, visible_bias)
        v = sample_bernoulli(p_v, rng)
    return v, p_v


def squared_error(visible: FloatArray | sp.csr_matrix, reconstruction: FloatArray) -> float:
    """``sum_{n,i} (v_ni - r_ni)^2``, summed in float64; a CSR ``visible`` stays sparse.

    Parameters
    ----------
    visible : ndarray or scipy.sparse.csr_matrix of shape (n, M)
        Without duplicate entries (canonical CSR).
    reconstruction : ndarray of shape (n, M)
    """
    if isinstance(visible, np.ndarray):
        diff = reconstruction - visible
    else:
        diff = np.array(reconstruction)
        diff[rows_of(visible), visible.indices] -= visible.data
    diff *= diff
    return float(diff.sum(dtype=np.float64))


@dataclass(frozen=True)
class BernoulliCDStatistics:
    """One CD-k (or PCD-k) gradient estimate of a Bernoulli RBM on a batch.

    The data statistics are averaged over the batch, the model statistics over the
    negative chains (the same rows for CD; the persistent chains for PCD).

    Attributes
    ----------
    d_weights : ndarray of shape (M, F)
        ``<v h>_data - <v h>_model``.
    d_visible_bias : ndarray of shape (M,)
        ``<v>_data - <v>_model``.
    d_hidden_bias : ndarray of shape (F,)
        ``<h>_data - <h>_model``.
    squared_error : float
        ``sum (v - p(v | h_0))^2`` over the batch: the error of the first
        reconstruction (CD only; 0 for PCD, whose chains do not start at the data).
    n_values : int
        Number of visible values ``squared_error`` covers (0 for PCD).
    chains : ndarray of shape (n_chains, F) or None
        PCD: the persistent chains' binary hidden states after this step; CD: None.
    """

    d_weights: FloatArray
    d_visible_bias: FloatArray
    d_hidden_bias: FloatArray
    squared_error: float
    n_values: int
    chains: FloatArray | None


def cd_statistics(
    visible: FloatArray | sp.csr_matrix,
    weights: FloatArray,
    visible_bias: FloatArray,
    hidden_bias: FloatArray,
    n_steps: int,
    rng: np.random.Generator,
    chains: FloatArray | None = None,
) -> BernoulliCDStatistics:
    """One contrastive-divergence gradient estimate: CD-``n_steps``, or PCD with ``chains``.

    Samples and probabilities, as in Hinton's guide (section 3):

    - positive phase: the statistics use ``p(h | v_data)``; the chain is driven by a
      binary sample of it (CD) or starts from the persistent hidden states (PCD);
    - every intermediate visible and hidden layer of the chain is sampled;
    - CD: the last visible layer is ``p(v | h)`` itself (probabilities, less sampling
      noise) and the last hidden layer ``p(h | v)`` of it;
    - PCD (Tieleman 2008): the chains must remain samples of the model, so the last
      visible layer is sampled too; the statistics use ``p(h | v)`` of it, and the
      chains continue from a sample of that for the next estimate.

    Parameters
    ----------
    visible : ndarray or scipy.sparse.csr_matrix of shape (n, M)
        The batch, values in [0, 1].
    weights : ndarray of shape (M, F)
    visible_bias : ndarray of shape (M,)
    hidden_bias : ndarray of shape (F,)
    n_steps : int
        Gibbs steps ``k`` of the negative phase (>= 1).
    rng : numpy.random.Generator
    chains : ndarray of shape (n_chains, F), optional
        The persistent chains' binary hidden states: persistent CD. None: CD-k.

    Returns
    -------
    BernoulliCDStatistics
    """
    persistent = chains is not None
    # positive phase: p(h | v_data)
    h_data = hidden_probabilities(visible, weights, hidden_bias)
    h = chains if chains is not None else sample_bernoulli(h_data, rng)
    error = 0.0
    v_model: FloatArray = np.empty((0, weights.shape[0]), dtype=weights.dtype)
    h_model: FloatArray = h_data
    for step in range(n_steps):
        last = step == n_steps - 1
        p_v = visible_probabilities(h, weights, visible_bias)
        if step == 0 and not persistent:
            error = squared_error(visible, p_v)
        v_model = p_v if last and not persistent else sample_bernoulli(p_v, rng)
        h_model = hidden_probabilities(v_model, weights, hidden_bias)
        if not last:
            h = sample_bernoulli(h_model, rng)
    n_data, n_model = visible.shape[0], v_model.shape[0]
    # <v h>_data - <v h>_model, <v>_data - <v>_model and <h>_data - <h>_model: the
    # data sums rescaled to the number of chains, less the chains' sums, over n_model
    d_w: FloatArray = np.asarray(visible.T @ h_data)
    d_vb: FloatArray = np.asarray(visible.sum(axis=0), dtype=weights.dtype).reshape(-1)
    d_hb: FloatArray = h_data.sum(axis=0)
    dtype = weights.dtype.type
    for total, model_total in (
        (d_w, v_model.T @ h_model),
        (d_vb, v_model.sum(axis=0)),
        (d_hb, h_model.sum(axis=0)),
    ):
        if n_model != n_data:
            total *= dtype(n_model / n_data)
        total -= model_total
        total *= dtype(1.0 / n_model)
    return BernoulliCDStatistics(
        d_weights=d_w,
        d_visible_bias=d_vb,
        d_hidden_bias=d_hb,
        squared_error=error,
        n_values=0 if persistent else n_data * weights.shape[0],
        chains=sample_bernoulli(h_model, rng) if persistent else None,
    )


def pseudo_log_likelihood(
    visible: FloatArray | sp.csr_matrix,
    weights: FloatArray,
    visible_bias: FloatArray,
    hidden_bias: FloatArray,
    features: NDArray[np.integer],
) -> FloatArray:
    """``M log p(v_i | v_-i)`` for one feature ``i = features[n]`` of each row ``n``.

    scikit-learn's pseudo-likelihood (``BernoulliRBM.score_samples``): an unbiased
    estimate of ``sum_i log p(v_i | v_-i)`` when ``i`` is drawn uniformly. With
    ``v'`` equal to ``v`` but ``v'_i = 1 - v_i``,
    ``p(v_i | v_-i) = sigmoid(F(v') - F(v))`` for binary ``v``. Flipping unit ``i``
    moves the hidden input ``x = c + vW`` by ``d W_i``, ``d = 1 - 2 v_i``, so
    ``F(v') - F(v) = -d b_i - sum_j (softplus(x_j + d W_ij) - softplus(x_j))``: one
    (n, F) pass instead of a second free energy over all units.

    Parameters
    ----------
    visible : ndarray or scipy.sparse.csr_matrix of shape (n, M)
    weights : ndarray of shape (M, F)
    visible_bias : ndarray of shape (M,)
    hidden_bias : ndarray of shape (F,)
    features : ndarray of int, shape (n,)
        The unit flipped in each row.

    Returns
    -------
    ndarray of shape (n,)
    """
    n, m = visible.shape
    x = hidden_input(visible, weights, hidden_bias)
    value = np.asarray(visible[np.arange(n), features], dtype=weights.dtype).ravel()
    flip = weights.dtype.type(1.0) - weights.dtype.type(2.0) * value
    shifted = x + flip[:, None] * weights[features]
    # F(v') - F(v)
    gap = (softplus(x) - softplus(shifted)).sum(axis=1) - flip * visible_bias[features]
    # log sigmoid(gap) = -softplus(-gap)
    result: FloatArray = -m * softplus(-gap)
    return result
