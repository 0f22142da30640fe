"""rbm_core.contrastive_divergence: CD-k statistics against their definition and the likelihood."""

from __future__ import annotations

import numpy as np
import pytest
from _core_support import F, K, M, codes_of, tiny_params
from scipy.special import expit, logsumexp

from rbm_core import functional as fn
from rbm_core.contrastive_divergence import CDStatistics, cd_statistics, offset_weights_gradient


@pytest.fixture
def params() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tiny_params()


def test_cd_statistics_shapes_and_invariants(params) -> None:
    w, b, c = (a.astype(np.float32) for a in params)
    codes = codes_of([{0: 2, 1: 0}, {1: 1}, {0: 0}])
    values = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    stats = cd_statistics(codes, w, b, c, values, 2, np.random.default_rng(0))
    # only the rated items (0 and 1) carry a gradient
    np.testing.assert_array_equal(stats.items, [0, 1])
    assert stats.d_weights.shape == (2, K, F)
    assert stats.d_weights.dtype == np.float32
    assert stats.d_visible_bias.shape == (2, K)
    assert stats.n_ratings == 4
    dense = stats.dense_weights(M)
    assert not dense[2].any()
    np.testing.assert_array_equal(dense[:2], stats.d_weights)
    # softmax: data and reconstruction both put total mass one on each rated item
    np.testing.assert_allclose(stats.d_visible_bias.sum(axis=1), 0.0, atol=1e-6)
    np.testing.assert_allclose(stats.d_user_bias.sum(axis=1), 0.0, atol=1e-6)
    assert stats.squared_error >= 0.0


def test_cd1_statistics_match_their_definition(params) -> None:
    # CD-1 with probabilities in the last step: <v h>_data - <p_v p_h'>_recon, where the
    # reconstruction p_v uses a hidden sample h ~ p(h | V); recompute it from the same draws
    w, b, c = (a.astype(np.float64) for a in params)
    users = [{0: 2, 1: 0}, {1: 1, 2: 2}]
    codes = codes_of(users)
    values = np.array([1.0, 2.0, 3.0])
    stats = cd_statistics(codes, w, b, c, values, 1, np.random.default_rng(4))
    rng = np.random.default_rng(4)
    expected_w = np.zeros_like(w)
    expected_c = np.zeros_like(c)
    for v in users:
        x = c + sum(w[i, lv] for i, lv in v.items())
        p_data = expit(x)
        h = (rng.random(F) < p_data).astype(float)
        x_recon = c.copy()
        recon = {}
        for i in v:
            logits = b[i] + w[i] @ h
            recon[i] = np.exp(logits - logsumexp(logits))
            x_recon += recon[i] @ w[i]
        p_recon = expit(x_recon)
        for i, lv in v.items():
            expected_w[i, lv] += p_data
            expected_w[i] -= np.outer(recon[i], p_recon)
        expected_c += p_data - p_recon
    # the batch draws its hidden samples for all users at once, in row order
    np.testing.assert_allclose(stats.dense_weights(M), expected_w / 2, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(stats.d_hidden_bias, expected_c / 2, rtol=1e-8, atol=1e-12)


def test_cd_statistics_is_reproducible_with_the_same_generator(params) -> None:
    w, b, c = (a.astype(np.float32) for a in params)
    codes = codes_of([{0: 2, 1: 0}, {1: 1, 2: 2}])
    values = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    a = cd_statistics(codes, w, b, c, values, 3, np.random.default_rng(9), dropout=0.3)
    bb = cd_statistics(codes, w, b, c, values, 3, np.random.default_rng(9), dropout=0.3)
    np.testing.assert_array_equal(a.d_weights, bb.d_weights)
    np.testing.assert_array_equal(a.items, bb.items)
    np.testing.assert_array_equal(a.d_hidden_bias, bb.d_hidden_bias)


def _dense_vb(stats: CDStatistics, n_items: int) -> np.ndarray:
    out = np.zeros((n_items, stats.d_visible_bias.shape[1]), dtype=stats.d_visible_bias.dtype)
    out[stats.items] = stats.d_visible_bias
    return out


def test_cd_gradient_points_uphill_on_the_data_likelihood() -> None:
    # one user who always rates item 0 at level 2: a step along the CD gradient must make
    # that rating more likely under the model's own conditional
    rng = np.random.default_rng(0)
    w = (rng.normal(size=(2, 3, 5)) * 0.01).astype(np.float32)
    b = np.zeros((2, 3), dtype=np.float32)
    c = np.zeros(5, dtype=np.float32)
    codes = codes_of([{0: 2, 1: 0}] * 50, n_items=2)
    values = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    visible = fn.one_hot_visible(codes[:1], 3)
    before = fn.exact_marginal_distribution(fn.hidden_input(visible, w, c), w[:1], b[:1])[0, 0, 2]
    for _ in range(20):
        s = cd_statistics(codes, w, b, c, values, 1, rng)
        w = w + 0.5 * s.dense_weights(2)
        b = b + 0.5 * _dense_vb(s, 2)
        c = c + 0.5 * s.d_hidden_bias
    after = fn.exact_marginal_distribution(fn.hidden_input(visible, w, c), w[:1], b[:1])[0, 0, 2]
    assert after > before + 0.3


def test_offset_weights_gradient_is_a_mean_over_users() -> None:
    offsets = np.array([0.5, -1.0, 0.0, 2.0])
    d_user_bias = np.arange(12, dtype=float).reshape(4, 3) - 5.0
    want = sum(z * d for z, d in zip(offsets, d_user_bias, strict=True)) / 4
    np.testing.assert_allclose(offset_weights_gradient(offsets, d_user_bias), want)
