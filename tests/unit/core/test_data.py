"""RatingMatrix: construction, validation, alignment, splits and fingerprints."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rbm_core import DEFAULT_SCALE, RatingDataError, RatingMatrix, RatingScale, RatingScaleError
from rbm_core.data import find_sorted

HALF_STARS = RatingScale.parse("0.5..5:0.5")


def test_from_arrays_builds_sorted_ids_and_level_codes() -> None:
    m = RatingMatrix.from_arrays(["b", "a", "b"], ["x", "y", "y"], [5, 1, 3.0], DEFAULT_SCALE)
    assert m.user_ids.tolist() == ["a", "b"]
    assert m.item_ids.tolist() == ["x", "y"]
    assert (m.n_users, m.n_items, m.n_ratings, m.n_levels) == (2, 2, 3, 5)
    np.testing.assert_array_equal(m.codes.toarray(), [[0, 1], [5, 3]])
    np.testing.assert_array_equal(m.values.toarray(), [[0.0, 1.0], [5.0, 3.0]])
    assert m.user_ratings("b") == {"x": 5.0, "y": 3.0}
    assert m.n_dropped == 0


def test_half_star_scale_uses_ten_levels() -> None:
    m = RatingMatrix.from_arrays(["u", "u"], ["i", "j"], [0.5, 4.5], HALF_STARS)
    assert m.n_levels == 10
    np.testing.assert_array_equal(m.codes.data, [1, 9])


@pytest.mark.parametrize("bad", [0.0, 6.0, 3.5, float("nan"), float("inf")])
def test_off_scale_rating_is_rejected(bad: float) -> None:
    with pytest.raises(RatingScaleError, match="not on the rating scale"):
        RatingMatrix.from_arrays(["u", "v"], ["i", "i"], [3.0, bad], DEFAULT_SCALE)


def test_non_numeric_rating_is_rejected() -> None:
    with pytest.raises(RatingDataError, match="numbers"):
        RatingMatrix.from_arrays(["u"], ["i"], ["five"], DEFAULT_SCALE)


def test_duplicate_pair_is_rejected() -> None:
    with pytest.raises(RatingDataError, match="duplicate rating for user 'u' and item 'i'"):
        RatingMatrix.from_arrays(["u", "v", "u"], ["i", "i", "i"], [3, 4, 5], DEFAULT_SCALE)


def test_length_mismatch_is_rejected() -> None:
    with pytest.raises(RatingDataError, match="differ in length"):
        RatingMatrix.from_arrays(["u", "v"], ["i"], [3, 4], DEFAULT_SCALE)


def test_non_string_ids_are_rejected() -> None:
    with pytest.raises(RatingDataError, match="strings"):
        RatingMatrix.from_arrays(np.array([1, 2]), ["i", "j"], [3, 4], DEFAULT_SCALE)
    with pytest.raises(RatingDataError, match="one-dimensional"):
        RatingMatrix.from_arrays(np.array([["a"]]), ["i"], [3], DEFAULT_SCALE)


def test_item_catalog_fixes_column_order_and_drops_unknown_items() -> None:
    m = RatingMatrix.from_arrays(
        ["u", "u", "v"], ["x", "zz", "y"], [1, 2, 3], DEFAULT_SCALE, item_catalog=["y", "w", "x"]
    )
    assert m.item_ids.tolist() == ["y", "w", "x"]
    assert m.n_dropped == 1
    np.testing.assert_array_equal(m.codes.toarray(), [[0, 0, 1], [3, 0, 0]])
    with pytest.raises(RatingDataError, match="duplicate"):
        RatingMatrix.from_arrays(["u"], ["x"], [1], DEFAULT_SCALE, item_catalog=["x", "x"])


def test_with_item_catalog_aligns_another_matrix() -> None:
    train = RatingMatrix.from_arrays(["u", "v"], ["a", "b"], [1, 2], DEFAULT_SCALE)
    test = RatingMatrix.from_arrays(["u", "w"], ["b", "c"], [4, 5], DEFAULT_SCALE)
    aligned = test.with_item_catalog(train.item_ids)
    assert aligned.item_ids.tolist() == ["a", "b"]
    assert aligned.user_ids.tolist() == ["u"]  # w only rated the unknown item c
    assert aligned.n_dropped == 1
    assert aligned.user_ratings("u") == {"b": 4.0}


def test_from_frame_converts_ids_to_strings() -> None:
    df = pd.DataFrame({"user_id": [1, 2], "item_id": [10, 10], "rating": [4.0, 2.0]})
    m = RatingMatrix.from_frame(df, DEFAULT_SCALE)
    assert m.user_ids.tolist() == ["1", "2"]
    back = m.to_frame()
    assert back.to_dict("list") == {
        "user_id": ["1", "2"],
        "item_id": ["10", "10"],
        "rating": [4.0, 2.0],
    }
    with pytest.raises(RatingDataError, match="missing column"):
        RatingMatrix.from_frame(df.drop(columns="rating"), DEFAULT_SCALE)


def test_from_user_ratings_keeps_row_order_and_empty_rows() -> None:
    m = RatingMatrix.from_user_ratings(
        [{"b": 5.0}, {}, {"a": 1.0, "nope": 3.0}], DEFAULT_SCALE, ["a", "b"]
    )
    assert m.n_users == 3
    assert m.n_dropped == 1
    np.testing.assert_array_equal(m.codes.toarray(), [[0, 5], [0, 0], [1, 0]])


def test_user_lookup_of_an_absent_user_raises_key_error() -> None:
    m = RatingMatrix.from_arrays(["u"], ["i"], [3], DEFAULT_SCALE)
    with pytest.raises(KeyError):
        m.user_ratings("nobody")


def test_level_counts() -> None:
    m = RatingMatrix.from_arrays(["u", "v", "w"], ["i", "i", "j"], [5, 5, 1], DEFAULT_SCALE)
    np.testing.assert_array_equal(m.level_counts(), [[0, 0, 0, 0, 2], [1, 0, 0, 0, 0]])


def test_fingerprint_is_stable_and_sensitive() -> None:
    args = (["u", "v"], ["i", "j"], [3.0, 4.0])
    a = RatingMatrix.from_arrays(*args, DEFAULT_SCALE)
    b = RatingMatrix.from_arrays(["v", "u"], ["j", "i"], [4.0, 3.0], DEFAULT_SCALE)
    assert a.fingerprint() == b.fingerprint()  # order of the input does not matter
    assert len(a.fingerprint()) == 64
    changed = RatingMatrix.from_arrays(["u", "v"], ["i", "j"], [3.0, 5.0], DEFAULT_SCALE)
    assert changed.fingerprint() != a.fingerprint()
    renamed = RatingMatrix.from_arrays(["u", "x"], ["i", "j"], [3.0, 4.0], DEFAULT_SCALE)
    assert renamed.fingerprint() != a.fingerprint()
    other_scale = RatingMatrix.from_arrays(*args, RatingScale.parse("1..5:0.5"))
    assert other_scale.fingerprint() != a.fingerprint()


def test_split_holds_out_a_share_of_each_users_ratings(small_matrix: RatingMatrix) -> None:
    kept, held = small_matrix.split(0.25, random_state=0)
    assert kept.n_ratings + held.n_ratings == small_matrix.n_ratings
    assert kept.n_users == small_matrix.n_users
    assert np.array_equal(kept.item_ids, small_matrix.item_ids)
    assert np.all(np.diff(kept.codes.indptr) >= 1)  # everyone keeps a rating
    # disjoint, and together the original matrix
    together = kept.codes.toarray()
    held_rows = np.searchsorted(small_matrix.user_ids, held.user_ids)
    assert not np.any((together[held_rows] > 0) & (held.codes.toarray() > 0))
    together[held_rows] += held.codes.toarray()
    np.testing.assert_array_equal(together, small_matrix.codes.toarray())
    again, _ = small_matrix.split(0.25, random_state=0)
    np.testing.assert_array_equal(again.codes.toarray(), kept.codes.toarray())
    with pytest.raises(ValueError, match="fraction"):
        small_matrix.split(1.5)


def test_the_matrix_does_not_share_the_callers_arrays() -> None:
    users = np.array(["u", "v"])
    items = np.array(["i", "j"])
    catalog = np.array(["i", "j", "k"])
    m = RatingMatrix.from_arrays(users, items, [1.0, 2.0], DEFAULT_SCALE, item_catalog=catalog)
    users[0], items[0], catalog[0] = "x", "y", "z"
    assert m.user_ids.tolist() == ["u", "v"]
    assert m.item_ids.tolist() == ["i", "j", "k"]
    assert m.user_ratings("u") == {"i": 1.0}


def test_find_sorted_says_where_each_key_stands() -> None:
    ids = np.array(["a", "c", "e"])
    pos, found = find_sorted(ids, np.array(["e", "b", "a", "z", "c"]))
    assert found.tolist() == [True, False, True, False, True]
    assert pos[found].tolist() == [2, 0, 1]
    assert np.all((pos >= 0) & (pos < 3))
    pos, found = find_sorted(np.array([], dtype=str), np.array(["a"]))
    assert found.tolist() == [False]
