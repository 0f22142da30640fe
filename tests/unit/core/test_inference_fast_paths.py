"""The single-user inference path (the API's hot path) against the general one.

``softmax`` runs its reductions as elementwise operations over the levels, and
``SoftmaxRBM`` encodes one user's ratings without a sparse matrix; both must give
what the textbook formula and the batch encoding give.
"""

from __future__ import annotations

import numpy as np
import pytest

from rbm_core import SoftmaxRBM
from rbm_core import functional as fn
from rbm_core.scale import RatingScaleError


def _textbook_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    out: np.ndarray = e / e.sum(axis=axis, keepdims=True)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2])
def test_softmax_matches_the_formula_along_any_axis(dtype: type, axis: int) -> None:
    logits = (np.random.default_rng(3).normal(size=(4, 7, 5)) * 20).astype(dtype)
    out = fn.softmax(logits, axis=axis)
    assert out.dtype == dtype
    assert out.shape == logits.shape
    rtol = 1e-5 if dtype is np.float32 else 1e-12
    np.testing.assert_allclose(out, _textbook_softmax(logits, axis), rtol=rtol, atol=1e-30)
    np.testing.assert_allclose(out.sum(axis=axis), 1.0, rtol=rtol)


def test_softmax_of_one_vector_and_of_no_items() -> None:
    np.testing.assert_allclose(
        fn.softmax(np.array([1.0, 2.0, 3.0])), _textbook_softmax(np.array([1.0, 2.0, 3.0]), 0)
    )
    assert fn.softmax(np.zeros((2, 0, 5))).shape == (2, 0, 5)
    logits = np.array([[3.0, np.nan, 1.0]])
    assert np.isnan(fn.softmax(logits)).all()  # NaN spreads instead of vanishing


def test_softmax_leaves_its_input_alone() -> None:
    logits = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    before = logits.copy()
    fn.softmax(logits)
    np.testing.assert_array_equal(logits, before)


def test_one_user_is_encoded_as_a_row_of_the_batch(small_model: SoftmaxRBM) -> None:
    ids = small_model.item_ids_.tolist()
    user = {
        ids[9]: 5.0,
        ids[2]: 1,  # an int
        "ghost": 4.0,  # unknown to the model
        ids[5]: np.float32(3.0),
        ids[0]: 2.0 + 1e-12,  # float noise, still on the scale
    }
    items, levels, ignored = small_model._encode_one(user)
    codes = small_model._encode([user]).codes
    np.testing.assert_array_equal(items, codes.indices)
    np.testing.assert_array_equal(levels, codes.data.astype(np.int64) - 1)
    assert items.tolist() == sorted(items.tolist())
    assert levels.tolist() == [1, 0, 2, 4]  # ids[0], ids[2], ids[5], ids[9]
    assert ignored == ["ghost"]


def test_scores_do_not_depend_on_the_order_of_the_ratings(small_model: SoftmaxRBM) -> None:
    ids = small_model.item_ids_.tolist()
    user = {item: float(1 + i % 5) for i, item in enumerate(ids[:15])}
    backwards = dict(reversed(list(user.items())))
    np.testing.assert_array_equal(
        small_model.score_items(user).score, small_model.score_items(backwards).score
    )
    batch, _ = small_model.score_batch([user])
    np.testing.assert_allclose(small_model.score_items(user).score, batch[0], rtol=1e-5)


def test_every_value_off_the_scale_is_named(small_model: SoftmaxRBM) -> None:
    ids = small_model.item_ids_.tolist()
    with pytest.raises(RatingScaleError, match=r"rating 7, 0\.5 is not on the rating scale"):
        small_model.score_items({ids[0]: 7.0, ids[1]: 4.0, ids[2]: 0.5})
