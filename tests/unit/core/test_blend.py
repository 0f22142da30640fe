"""Blending rating predictors: ridge weights and the tilted distribution."""

from __future__ import annotations

import numpy as np
import pytest

from rbm_core.blend import blend_features, fit_blend, tilt_to_mean


def test_blend_weights_recover_an_exact_linear_combination() -> None:
    rng = np.random.default_rng(0)
    predictions = rng.uniform(1, 5, (500, 3))
    users, items = rng.integers(1, 300, 500), rng.integers(1, 500, 500)
    features = blend_features(predictions, users, items)
    truth = rng.normal(0, 0.3, features.shape[1])
    weights = fit_blend(features, features @ truth, ridge=0.0)
    np.testing.assert_allclose(weights, truth, atol=1e-8)


def test_ridge_shrinks_the_weights() -> None:
    rng = np.random.default_rng(1)
    features = blend_features(
        rng.uniform(1, 5, (200, 2)), rng.integers(1, 50, 200), rng.integers(1, 50, 200)
    )
    targets = rng.uniform(1, 5, 200)
    free = fit_blend(features, targets, ridge=0.0)
    shrunk = fit_blend(features, targets, ridge=1e4)
    assert np.linalg.norm(shrunk) < np.linalg.norm(free)


def test_the_features_interact_with_log_counts() -> None:
    features = blend_features(np.array([[3.0, 4.0]]), np.array([np.e**4 - 1]), np.array([0.0]))
    # log1p(n_u) - 4 = 0 for the user, -4 for an item without ratings
    np.testing.assert_allclose(features[0], [3, 4, 1, 0, 0, 0, -12, -16, -4])


def test_the_tilted_distribution_has_the_target_mean() -> None:
    rng = np.random.default_rng(2)
    q = rng.dirichlet(np.ones(5), size=100)
    values = np.arange(1.0, 6.0)
    target = rng.uniform(1.2, 4.8, 100)
    p = tilt_to_mean(q, values, target)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(p @ values, target, atol=1e-5)
    # an exponential tilt of q: log(p / q) is linear in the rating value
    log_ratio = np.log(p / q)
    slopes = np.diff(log_ratio, axis=1) / np.diff(values)
    np.testing.assert_allclose(slopes, slopes[:, :1].repeat(4, axis=1), atol=1e-6)


def test_a_distribution_already_at_the_target_is_unchanged() -> None:
    q = np.array([[0.1, 0.2, 0.3, 0.25, 0.15]])
    values = np.arange(1.0, 6.0)
    p = tilt_to_mean(q, values, q @ values)
    np.testing.assert_allclose(p, q, atol=1e-9)


@pytest.mark.parametrize("target", [0.0, 1.0, 5.0, 9.0])
def test_targets_outside_the_scale_are_clipped_inside_it(target: float) -> None:
    q = np.full((1, 5), 0.2)
    values = np.arange(1.0, 6.0)
    p = tilt_to_mean(q, values, np.array([target]))
    assert np.all(np.isfinite(p))
    assert np.all(p > 0)
    assert 1.0 < float(p[0] @ values) < 5.0


def test_float32_in_float32_out() -> None:
    q = np.full((3, 4), 0.25, dtype=np.float32)
    p = tilt_to_mean(q, np.array([0.5, 1.0, 1.5, 2.0]), np.array([0.8, 1.25, 1.9]))
    assert p.dtype == np.float32
