"""The Bernoulli RBM's formulas, checked by enumerating every state of tiny models.

With M = 4 visible and F = 3 hidden units there are 16 x 8 joint states: the exact
distribution ``p(v, h) = exp(-E(v, h)) / Z`` is computed from the energy alone and
every conditional, the free energy, the pseudo-likelihood, the CD statistics' means
and the Gibbs chains are checked against it.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import expit, logsumexp

from rbm_core import bernoulli_functional as bf
from rbm_core import functional as fn

M, F = 4, 3
VISIBLE = np.array(list(itertools.product([0.0, 1.0], repeat=M)))  # (16, M)
HIDDEN = np.array(list(itertools.product([0.0, 1.0], repeat=F)))  # (8, F)


def tiny_model(seed: int = 0, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.normal(0.0, scale, size=(M, F))
    b = rng.normal(0.0, 0.5, size=M)
    c = rng.normal(0.0, 0.5, size=F)
    return w, b, c


def joint_log_probabilities(w, b, c) -> np.ndarray:
    """``log p(v, h)`` of every state, shape (16, 8), from ``E(v, h)`` by brute force."""
    energies = np.array(
        [[-(v @ w @ h) - b @ v - c @ h for h in HIDDEN] for v in VISIBLE]
    )  # E(v, h) written out
    return -energies - logsumexp(-energies)


def state_index(v: np.ndarray) -> int:
    return int(v @ (2 ** np.arange(M - 1, -1, -1)))


def test_energy_is_the_definition() -> None:
    w, b, c = tiny_model()
    v = VISIBLE[[3, 9, 14]]
    h = HIDDEN[[1, 7, 4]]
    want = [-(v[n] @ w @ h[n]) - b @ v[n] - c @ h[n] for n in range(3)]
    np.testing.assert_allclose(fn.energy(v, h, w, b, c), want, rtol=1e-12)


def test_free_energy_gives_the_exact_log_likelihood() -> None:
    # log p(v) = -F(v) - log sum_v' exp(-F(v')), against the joint summed over h
    w, b, c = tiny_model()
    log_p = logsumexp(joint_log_probabilities(w, b, c), axis=1)
    free = fn.free_energy(VISIBLE, w, b, c)
    np.testing.assert_allclose(-free - logsumexp(-free), log_p, rtol=1e-10)
    # F(v) = -log sum_h exp(-E(v, h)) holds for values in [0, 1] too
    v = np.array([[0.2, 1.0, 0.0, 0.7]])
    energies = [fn.energy(v, h[None, :], w, b, c)[0] for h in HIDDEN]
    assert fn.free_energy(v, w, b, c)[0] == pytest.approx(-logsumexp(-np.asarray(energies)))


def test_conditionals_match_enumeration() -> None:
    w, b, c = tiny_model(1)
    joint = np.exp(joint_log_probabilities(w, b, c))
    # p(h_j = 1 | v) = sum_h h_j p(v, h) / p(v)
    want_h = (joint @ HIDDEN) / joint.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(fn.hidden_probabilities(VISIBLE, w, c), want_h, rtol=1e-10)
    # p(v_i = 1 | h) = sum_v v_i p(v, h) / p(h)
    want_v = (joint.T @ VISIBLE) / joint.sum(axis=0)[:, None]
    np.testing.assert_allclose(bf.visible_probabilities(HIDDEN, w, b), want_v, rtol=1e-10)


def test_pseudo_log_likelihood_matches_enumeration() -> None:
    # M log p(v_i | v_-i), with p(v_i | v_-i) = p(v) / (p(v) + p(v with v_i flipped))
    w, b, c = tiny_model(2, scale=2.0)
    log_p = logsumexp(joint_log_probabilities(w, b, c), axis=1)
    for i in range(M):
        flipped = VISIBLE.copy()
        flipped[:, i] = 1.0 - flipped[:, i]
        other = log_p[[state_index(v) for v in flipped]]
        want = M * (log_p - np.logaddexp(log_p, other))
        features = np.full(len(VISIBLE), i)
        got = bf.pseudo_log_likelihood(VISIBLE, w, b, c, features)
        np.testing.assert_allclose(got, want, rtol=1e-10)
        sparse = bf.pseudo_log_likelihood(sp.csr_matrix(VISIBLE), w, b, c, features)
        np.testing.assert_allclose(sparse, want, rtol=1e-10)


def test_sparse_and_dense_rows_give_the_same_answers() -> None:
    w, b, c = tiny_model(3)
    dense = np.array([[0.0, 1.0, 0.5, 0.0], [1.0, 0.0, 0.0, 0.25], [0.0, 0.0, 0.0, 0.0]])
    sparse = sp.csr_matrix(dense)
    np.testing.assert_allclose(
        fn.hidden_probabilities(sparse, w, c), fn.hidden_probabilities(dense, w, c), rtol=1e-12
    )
    np.testing.assert_allclose(fn.free_energy(sparse, w, b, c), fn.free_energy(dense, w, b, c))
    recon = bf.visible_probabilities(fn.hidden_probabilities(dense, w, c), w, b)
    assert bf.squared_error(sparse, recon) == pytest.approx(np.sum((dense - recon) ** 2))
    assert bf.squared_error(dense, recon) == pytest.approx(np.sum((dense - recon) ** 2))


def test_initial_visible_bias_is_the_log_odds_of_the_smoothed_means() -> None:
    sums = np.array([0.0, 5.0, 10.0], dtype=np.float32)
    bias = bf.initial_visible_bias(sums, 10)
    assert bias.dtype == np.float32
    assert np.all(np.isfinite(bias))
    np.testing.assert_allclose(expit(bias), (sums + 0.5) / 11, rtol=1e-6)
    assert bias[1] == pytest.approx(0.0, abs=1e-7)


# -- contrastive divergence -------------------------------------------------------------------
def exact_cd1_expectation(data: np.ndarray, w, b, c) -> tuple[np.ndarray, ...]:
    """E[CD-1 statistics] with Hinton's choices, averaging over h_0 ~ p(h | v) exactly.

    Positive: v p(h | v). Negative: r = p(v | h_0), then r p(h | r), with h_0 binary.
    """
    d_w, d_b, d_c = np.zeros_like(w), np.zeros_like(b), np.zeros_like(c)
    for v in data:
        p_h = expit(c + v @ w)
        d_w += np.outer(v, p_h)
        d_b += v
        d_c += p_h
        for h0 in HIDDEN:
            weight = np.prod(np.where(h0 == 1.0, p_h, 1.0 - p_h))
            r = expit(b + w @ h0)
            p_r = expit(c + r @ w)
            d_w -= weight * np.outer(r, p_r)
            d_b -= weight * r
            d_c -= weight * p_r
    n = len(data)
    return d_w / n, d_b / n, d_c / n


def test_cd1_statistics_average_to_their_exact_expectation() -> None:
    w, b, c = tiny_model(4)
    patterns = VISIBLE[[5, 10, 15]]
    batch = np.repeat(patterns, 20000, axis=0)
    stats = bf.cd_statistics(batch, w, b, c, 1, np.random.default_rng(0))
    want_w, want_b, want_c = exact_cd1_expectation(patterns, w, b, c)
    np.testing.assert_allclose(stats.d_weights, want_w, atol=0.01)
    np.testing.assert_allclose(stats.d_visible_bias, want_b, atol=0.01)
    np.testing.assert_allclose(stats.d_hidden_bias, want_c, atol=0.01)
    assert stats.chains is None
    assert stats.n_values == batch.size
    # the reconstruction error is the first reconstruction's, p(v | h_0)
    assert 0.0 < stats.squared_error < batch.size


def test_pcd_statistics_follow_the_chains_not_the_data() -> None:
    # negative phase: v ~ p(v | h_chain) sampled, statistics v p(h | v); exact by enumerating v
    w, b, c = tiny_model(5)
    data = VISIBLE[[6]]
    h_chain = HIDDEN[[5]]
    n = 40000
    stats = bf.cd_statistics(
        np.repeat(data, 10, axis=0), w, b, c, 1, np.random.default_rng(1), np.repeat(h_chain, n, 0)
    )
    p_v = expit(b + w @ h_chain[0])
    weights = np.prod(np.where(VISIBLE == 1.0, p_v, 1.0 - p_v), axis=1)  # p(v | h_chain)
    p_h = expit(c + VISIBLE @ w)
    model_vh = (VISIBLE * weights[:, None]).T @ p_h
    np.testing.assert_allclose(
        stats.d_weights, np.outer(data[0], expit(c + data[0] @ w)) - model_vh, atol=0.01
    )
    np.testing.assert_allclose(stats.d_visible_bias, data[0] - weights @ VISIBLE, atol=0.01)
    assert stats.chains is not None
    assert stats.chains.shape == (n, F)
    # the chains continue from h ~ p(h | v): binary, with the mean of p(h | v) under p(v | h)
    assert set(np.unique(stats.chains)) <= {0.0, 1.0}
    np.testing.assert_allclose(stats.chains.mean(axis=0), weights @ p_h, atol=0.01)
    assert (stats.squared_error, stats.n_values) == (0.0, 0)


def test_cd_gradients_point_uphill_on_the_exact_likelihood() -> None:
    # data the model finds unlikely: the exact gradient <vh>_data - <vh>_model, and the
    # CD estimates, must agree in sign where it is clearly non-zero, and a small step
    # along each CD estimate must raise the exact log-likelihood
    w, b, c = tiny_model(6, scale=0.3)
    data = VISIBLE[[3, 12, 15]]  # 0011, 1100, 1111

    def log_likelihood(w_, b_, c_) -> float:
        free = fn.free_energy(data, w_, b_, c_)
        return float(np.mean(-free) - logsumexp(-fn.free_energy(VISIBLE, w_, b_, c_)))

    joint = np.exp(joint_log_probabilities(w, b, c))
    p_v, p_h_given_v = joint.sum(axis=1), fn.hidden_probabilities(VISIBLE, w, c)
    exact_w = data.T @ expit(c + data @ w) / len(data) - (VISIBLE * p_v[:, None]).T @ p_h_given_v
    exact_b = data.mean(axis=0) - p_v @ VISIBLE
    batch = np.repeat(data, 20000, axis=0)
    rng = np.random.default_rng(7)
    for steps in (1, 5):
        stats = bf.cd_statistics(batch, w, b, c, steps, rng)
        clear = np.abs(exact_w) > 0.05
        assert clear.sum() >= 4
        np.testing.assert_array_equal(np.sign(stats.d_weights[clear]), np.sign(exact_w[clear]))
        clear_b = np.abs(exact_b) > 0.05
        np.testing.assert_array_equal(
            np.sign(stats.d_visible_bias[clear_b]), np.sign(exact_b[clear_b])
        )
        lr = 0.05
        stepped = log_likelihood(
            w + lr * stats.d_weights, b + lr * stats.d_visible_bias, c + lr * stats.d_hidden_bias
        )
        assert stepped > log_likelihood(w, b, c) + 1e-4


def test_cd_statistics_keep_float32_and_accept_sparse_batches() -> None:
    w, b, c = (a.astype(np.float32) for a in tiny_model(8))
    batch = VISIBLE[[1, 2, 7]].astype(np.float32)
    dense = bf.cd_statistics(batch, w, b, c, 2, np.random.default_rng(3))
    sparse = bf.cd_statistics(sp.csr_matrix(batch), w, b, c, 2, np.random.default_rng(3))
    for got in (dense, sparse):
        assert got.d_weights.dtype == got.d_visible_bias.dtype == np.float32
        assert got.d_hidden_bias.dtype == np.float32
    np.testing.assert_allclose(sparse.d_weights, dense.d_weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sparse.d_visible_bias, dense.d_visible_bias, rtol=1e-5)
    assert sparse.squared_error == pytest.approx(dense.squared_error, rel=1e-5)


# -- Gibbs chains -----------------------------------------------------------------------------
def test_gibbs_chains_sample_the_model_distribution() -> None:
    w, b, c = tiny_model(9, scale=1.5)
    p_v = np.exp(logsumexp(joint_log_probabilities(w, b, c), axis=1))
    start = np.zeros((30000, M))
    states, means = bf.gibbs_chain(start, w, b, c, 30, np.random.default_rng(4))
    assert set(np.unique(states)) <= {0.0, 1.0}
    assert np.all((means >= 0.0) & (means <= 1.0))
    frequencies = np.bincount([state_index(v) for v in states], minlength=len(VISIBLE))
    total_variation = 0.5 * np.abs(frequencies / len(states) - p_v).sum()
    assert total_variation < 0.02
    # the mean of the last step's p(v | h) is the model's mean too
    np.testing.assert_allclose(means.mean(axis=0), p_v @ VISIBLE, atol=0.01)
