"""The RBM formulas of rbm_core.functional, checked against brute force on tiny models."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from _core_support import F, K, M, codes_of, tiny_params
from scipy.special import expit, logsumexp

from rbm_core import functional as fn


@pytest.fixture
def params() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tiny_params()


def all_hidden_states() -> np.ndarray:
    return np.array(list(itertools.product([0.0, 1.0], repeat=F)))


def brute_energy(v: dict[int, int], h: np.ndarray, w, b, c, u=None) -> float:
    """E(V, h) straight from the definition, with loops."""
    e = 0.0
    for item, level in v.items():
        e -= b[item, level] + (0.0 if u is None else u[level])
        for j in range(F):
            e -= w[item, level, j] * h[j]
    return e - float(h @ c)


def test_energy_matches_definition(params) -> None:
    w, b, c = params
    v = {0: 2, 2: 1}
    u = np.array([0.3, -0.1, 0.7])
    visible = fn.one_hot_visible(codes_of([v]), K, np.float64)
    for h in all_hidden_states():
        got = fn.energy(visible, h[None, :], w, b, c, u[None, :])[0]
        assert got == pytest.approx(brute_energy(v, h, w, b, c, u))


@pytest.mark.parametrize("with_user_bias", [False, True])
def test_free_energy_is_log_sum_over_hidden_states(params, with_user_bias: bool) -> None:
    w, b, c = params
    u = np.array([[0.5, 0.0, -0.4], [0.1, 0.2, 0.3]]) if with_user_bias else None
    users = [{0: 2, 1: 0}, {2: 1}]
    visible = fn.one_hot_visible(codes_of(users), K, np.float64)
    got = fn.free_energy(visible, w, b, c, u)
    for i, v in enumerate(users):
        ui = None if u is None else u[i]
        energies = [brute_energy(v, h, w, b, c, ui) for h in all_hidden_states()]
        # F(V) = -log sum_h exp(-E(V, h))
        assert got[i] == pytest.approx(-logsumexp(-np.asarray(energies)))


def test_hidden_probabilities_match_enumeration(params) -> None:
    w, b, c = params
    v = {0: 1, 1: 2}
    visible = fn.one_hot_visible(codes_of([v]), K, np.float64)
    got = fn.hidden_probabilities(visible, w, c)[0]
    states = all_hidden_states()
    logp = -np.array([brute_energy(v, h, w, b, c) for h in states])
    p = np.exp(logp - logsumexp(logp))
    np.testing.assert_allclose(got, p @ states, rtol=1e-10)


@pytest.mark.parametrize("with_user_bias", [False, True])
def test_exact_marginal_matches_enumeration(params, with_user_bias: bool) -> None:
    w, b, c = params
    u = np.array([0.2, -0.3, 0.6]) if with_user_bias else None
    v = {0: 2, 1: 0}
    query = 2
    visible = fn.one_hot_visible(codes_of([v]), K, np.float64)
    x = fn.hidden_input(visible, w, c)
    got = fn.exact_marginal_distribution(
        x, w[[query]], b[[query]], None if u is None else u[None, :]
    )[0, 0]
    # p(v_q = k | V) from the joint over (v_q, h), summing out all 2^F hidden states
    joint = np.array(
        [
            logsumexp([-brute_energy({**v, query: k}, h, w, b, c, u) for h in all_hidden_states()])
            for k in range(K)
        ]
    )
    expected = np.exp(joint - logsumexp(joint))
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    at_pairs = fn.exact_marginal_at(
        x, w, b, np.array([0]), np.array([query]), None if u is None else u[None, :]
    )
    np.testing.assert_allclose(at_pairs[0], expected, rtol=1e-10)


def test_mean_field_is_softmax_of_expected_hidden_input(params) -> None:
    w, b, _ = params
    p = np.array([[0.1, 0.9, 0.5, 0.3]])
    u = np.array([[0.0, 1.0, -1.0]])
    got = fn.mean_field_distribution(p, w, b, u)[0]
    for q in range(M):
        logits = b[q] + u[0] + w[q] @ p[0]
        np.testing.assert_allclose(got[q], np.exp(logits) / np.exp(logits).sum(), rtol=1e-12)
    at_pairs = fn.mean_field_at(p, w, b, np.zeros(M, dtype=np.int64), np.arange(M), u)
    np.testing.assert_allclose(at_pairs, got, rtol=1e-12)


def test_conditionals_are_normalised(params) -> None:
    w, b, _ = params
    rng = np.random.default_rng(0)
    x = rng.normal(0, 3, size=(5, F))
    for dist in (
        fn.exact_marginal_distribution(x, w, b),
        fn.mean_field_distribution(expit(x), w, b),
    ):
        assert dist.shape == (5, M, K)
        assert np.all(dist >= 0)
        np.testing.assert_allclose(dist.sum(axis=-1), 1.0, rtol=1e-12)


def test_softmax_and_softplus_are_stable_for_extreme_inputs() -> None:
    logits = np.array([[1000.0, 0.0, -1000.0], [-1e4, -1e4, -1e4]])
    out = fn.softmax(logits)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    np.testing.assert_allclose(np.exp(fn.log_softmax(logits)), out, atol=1e-300)
    sp_ = fn.softplus(np.array([-1000.0, 0.0, 1000.0]))
    np.testing.assert_allclose(sp_, [0.0, np.log(2.0), 1000.0])
    assert fn.softplus(np.array([1.0], dtype=np.float32)).dtype == np.float32
    sig = fn.sigmoid(np.array([-1000.0, 0.0, 1000.0]))
    np.testing.assert_array_equal(sig, [0.0, 0.5, 1.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softplus_and_sigmoid_match_their_definitions(dtype: type) -> None:
    x = np.linspace(-60.0, 60.0, 24001).astype(dtype)
    ulp = np.finfo(dtype).eps
    np.testing.assert_allclose(fn.softplus(x), np.logaddexp(0.0, x), rtol=4 * ulp, atol=0)
    np.testing.assert_allclose(fn.sigmoid(x), expit(x), rtol=0, atol=2 * ulp)
    assert fn.softplus(x).dtype == fn.sigmoid(x).dtype == dtype
    out = x.copy()
    assert fn.sigmoid(out, out=out) is out
    np.testing.assert_array_equal(out, fn.sigmoid(x))


@pytest.mark.parametrize("density", [0.05, 0.9])
def test_visible_logits_dense_and_gather_paths_agree(density: float) -> None:
    # the two evaluation strategies switch on the density of the pairs
    rng = np.random.default_rng(3)
    n_users, m, k, f = 40, 30, 4, 6
    w = rng.normal(size=(m, k, f))
    b = rng.normal(size=(m, k))
    h = rng.random((n_users, f))
    u = rng.normal(size=(n_users, k))
    mask = rng.random((n_users, m)) < density
    rows, items = np.nonzero(mask)
    got = fn.visible_logits_at(h, w, b, rows, items, u)
    expected = np.einsum("pf,pkf->pk", h[rows], w[items]) + b[items] + u[rows]
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_one_hot_and_block_visible_layouts() -> None:
    codes = codes_of([{0: 2, 2: 0}, {}])
    one_hot = fn.one_hot_visible(codes, K).toarray()
    expected = np.zeros((2, M * K))
    expected[0, 0 * K + 2] = 1.0
    expected[0, 2 * K + 0] = 1.0
    np.testing.assert_array_equal(one_hot, expected)
    values = np.array([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]])
    block = fn.block_visible(codes, values).toarray()
    np.testing.assert_allclose(block[0, 0:3], values[0])
    np.testing.assert_allclose(block[0, 6:9], values[1])
    assert block[1].sum() == 0
    np.testing.assert_allclose(
        fn.level_totals(fn.block_visible(codes, values), K)[0], values.sum(0)
    )


def test_mean_of_many_bernoulli_samples_approaches_probabilities() -> None:
    rng = np.random.default_rng(1)
    p = np.array([[0.05, 0.5, 0.93]], dtype=np.float32)
    draws = fn.sample_bernoulli(np.repeat(p, 20000, axis=0), rng)
    assert set(np.unique(draws)) <= {0.0, 1.0}
    np.testing.assert_allclose(draws.mean(axis=0), p[0], atol=0.015)


def test_frequencies_of_many_categorical_samples_approach_probabilities() -> None:
    rng = np.random.default_rng(2)
    p = np.array([0.1, 0.6, 0.05, 0.25])
    draws = fn.sample_categorical(np.tile(p, (40000, 1)), rng)
    assert draws.min() >= 0
    assert draws.max() < len(p)
    np.testing.assert_allclose(np.bincount(draws, minlength=4) / len(draws), p, atol=0.01)


def test_mean_of_gibbs_hidden_samples_approaches_mean_field(params) -> None:
    # sampling h from p(h | V) many times: the average is p(h | V)
    w, _, c = params
    visible = fn.one_hot_visible(codes_of([{0: 1, 2: 2}]), K, np.float64)
    p = fn.hidden_probabilities(visible, w, c)
    rng = np.random.default_rng(5)
    draws = fn.sample_bernoulli(np.repeat(p, 30000, axis=0), rng)
    np.testing.assert_allclose(draws.mean(axis=0), p[0], atol=0.012)


def test_gibbs_sampling_steps_follow_their_conditionals(params) -> None:
    # many chains in the same state: sample frequencies approach p(h | V) and p(v | h)
    w, b, c = params
    levels = np.tile([[2, 0, 1]], (40000, 1))
    rng = np.random.default_rng(11)
    hidden = fn.sample_hiddens(levels, w, c, rng)
    p_h = expit(c + w[0, 2] + w[1, 0] + w[2, 1])
    np.testing.assert_allclose(hidden.mean(axis=0), p_h, atol=0.01)
    h = np.tile((np.arange(F) % 2).astype(float), (40000, 1))
    drawn = fn.sample_visibles(h, w, b, rng)
    assert drawn.shape == (40000, M)
    for q in range(M):
        logits = b[q] + w[q] @ h[0]
        p_v = np.exp(logits - logsumexp(logits))
        np.testing.assert_allclose(np.bincount(drawn[:, q], minlength=K) / 40000, p_v, atol=0.01)


def test_user_offsets_match_their_definition() -> None:
    # z_u = sum_i (r_ui - mean_i) / (n_u + lambda), and u_k = a_k z_u
    values = np.array([1.0, 2.0, 3.0])
    means = np.array([2.5, 1.0, 2.0])
    codes = codes_of([{0: 2, 1: 0}, {}, {2: 1}])
    z = fn.user_offsets(codes, values, means, 2.0)
    np.testing.assert_allclose(z, [((3 - 2.5) + (1 - 1.0)) / 4, 0.0, (2 - 2.0) / 3])
    assert fn.shrunk_mean(6.0, 2, 1.0) == pytest.approx(2.0)
    a = np.array([-1.0, 0.0, 2.0])
    np.testing.assert_allclose(fn.offset_bias(z, a), np.outer(z, a))


def test_a_mean_of_nothing_without_shrinkage_is_zero() -> None:
    np.testing.assert_array_equal(fn.shrunk_mean(np.zeros(2), np.array([0, 2]), 0.0), [0.0, 0.0])
    codes = codes_of([{}, {0: 2}])
    z = fn.user_offsets(codes, np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 2.0]), 0.0)
    np.testing.assert_array_equal(z, [0.0, 1.0])


def test_exact_marginal_under_dropout_is_the_geometric_mean_over_masks(params) -> None:
    # each hidden unit is kept with probability `keep`; per mask m the exact p(v_q | V, m)
    # sums over the kept units' states only. The prediction is the normalised geometric
    # mean of those distributions, weighted by the masks' probabilities
    w, b, c = params
    u = np.array([0.2, -0.3, 0.6])
    v = {0: 2, 1: 0}
    query, keep = 2, 0.6
    log_mean = np.zeros(K)
    for mask in itertools.product([0.0, 1.0], repeat=F):
        m = np.array(mask)
        p_mask = np.prod(np.where(m == 1.0, keep, 1.0 - keep))
        states = [h for h in all_hidden_states() if np.all(h <= m)]
        joint = np.array(
            [
                logsumexp([-brute_energy({**v, query: k}, h, w, b, c, u) for h in states])
                for k in range(K)
            ]
        )
        log_mean += p_mask * (joint - logsumexp(joint))
    expected = np.exp(log_mean - logsumexp(log_mean))
    x = fn.hidden_input(fn.one_hot_visible(codes_of([v]), K, np.float64), w, c)
    got = fn.exact_marginal_distribution(x, w[[query]], b[[query]], u[None, :], keep=keep)
    np.testing.assert_allclose(got[0, 0], expected, rtol=1e-10)
    at_pairs = fn.exact_marginal_at(
        x, w, b, np.array([0]), np.array([query]), u[None, :], keep=keep
    )
    np.testing.assert_allclose(at_pairs[0], expected, rtol=1e-10)
