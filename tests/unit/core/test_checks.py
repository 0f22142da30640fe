"""rbm_core.checks: every check accepts what its rule allows and says the rule otherwise."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from rbm_core import DEFAULT_SCALE, RatingMatrix, RatingScale, RatingScaleError
from rbm_core.checks import (
    check_bool,
    check_choice,
    check_number,
    check_positive_int,
    check_random_state,
    check_rating_matrix,
    check_same_scale,
    check_unit_interval_matrix,
)


def test_positive_int() -> None:
    assert check_positive_int("n", 3) == 3
    assert check_positive_int("n", np.int64(2)) == 2
    for bad in (0, -1, 2.0, True, "3", None):
        with pytest.raises(ValueError, match=r"n must be a positive integer, got"):
            check_positive_int("n", bad)


@pytest.mark.parametrize(
    ("bounds", "good", "bad", "rule"),
    [
        ({"low": 0.0}, [0, 0.5, 1e9], [-0.1, float("inf")], "a finite number >= 0,"),
        ({"low": 0.0, "low_open": True}, [1e-9, 3], [0.0, -1], "a finite number > 0,"),
        ({"low": 0.0, "high": 1.0}, [0.0, 0.99], [1.0, -0.01], "a finite number >= 0 and < 1,"),
        (
            {"low": 0, "low_open": True, "high": 1},
            [0.5],
            [0.0, 1.0],
            "a finite number > 0 and < 1,",
        ),
        ({}, [-5.0, 7], [float("nan"), float("-inf")], "a finite number,"),
    ],
)
def test_number_bounds_are_stated(bounds: dict, good: list, bad: list, rule: str) -> None:
    for value in good:
        assert check_number("x", value, **bounds) == float(value)
    for value in bad:
        with pytest.raises(ValueError, match=f"^x must be {rule} got"):
            check_number("x", value, **bounds)
    for not_a_number in ("1", None, True):
        with pytest.raises(ValueError, match="x must be a number"):
            check_number("x", not_a_number, **bounds)


def test_choice_bool_and_random_state() -> None:
    assert check_choice("mode", "b", ("a", "b")) == "b"
    with pytest.raises(ValueError, match=r"mode must be 'a', 'b' or 'c', got 'd'"):
        check_choice("mode", "d", ("a", "b", "c"))
    with pytest.raises(ValueError, match=r"mode must be 'a' or 'b', got 1"):
        check_choice("mode", 1, ("a", "b"))
    assert check_bool("flag", False) is False
    with pytest.raises(ValueError, match="flag must be True or False"):
        check_bool("flag", 1)
    for ok in (None, 3, np.random.default_rng(0)):
        check_random_state(ok)
    with pytest.raises(ValueError, match="random_state must be an int, a numpy Generator or None"):
        check_random_state("seed")


def test_rating_matrix_checks() -> None:
    matrix = RatingMatrix.from_arrays(["u"], ["i"], [4.0], DEFAULT_SCALE)
    assert check_rating_matrix(matrix) is matrix
    with pytest.raises(TypeError, match="train must be a RatingMatrix, got list"):
        check_rating_matrix([[1]])
    empty = RatingMatrix.from_arrays([], [], [], DEFAULT_SCALE)
    with pytest.raises(ValueError, match="train has no ratings"):
        check_rating_matrix(empty)
    assert check_rating_matrix(empty, "validation") is empty
    half = RatingMatrix.from_arrays(["u"], ["i"], [4.5], RatingScale.parse("1..5:0.5"))
    check_same_scale(matrix, matrix)
    with pytest.raises(RatingScaleError, match="validation uses rating scale"):
        check_same_scale(matrix, half)


def test_unit_interval_matrix_converts_without_copying_what_is_ready() -> None:
    ready = np.zeros((2, 3), np.float32)
    assert check_unit_interval_matrix(ready) is ready
    converted = check_unit_interval_matrix([[0, 1], [1, 0]])
    assert isinstance(converted, np.ndarray)
    assert converted.dtype == np.float32
    assert converted.flags.c_contiguous
    assert check_unit_interval_matrix(np.ones((2, 2), bool)).dtype == np.float32
    csr = sp.csr_matrix(np.eye(3, dtype=np.float32))
    checked = check_unit_interval_matrix(csr)
    assert checked.data is csr.data or np.shares_memory(checked.data, csr.data)
    as_csr = check_unit_interval_matrix(sp.coo_array(np.eye(3)))
    assert sp.issparse(as_csr)
    assert as_csr.format == "csr"
    assert as_csr.dtype == np.float32


def test_unit_interval_matrix_sums_duplicates_on_a_copy() -> None:
    odd = sp.csr_matrix(
        (np.array([0.25, 0.5], np.float32), np.array([1, 1]), np.array([0, 2])), shape=(1, 3)
    )
    checked = check_unit_interval_matrix(odd)
    np.testing.assert_array_equal(checked.toarray(), [[0.0, 0.75, 0.0]])
    assert checked.nnz == 1
    np.testing.assert_array_equal(odd.data, [0.25, 0.5])
    # duplicates summing past 1 are out of range
    over = sp.csr_matrix((np.array([0.75, 0.5]), np.array([0, 0]), np.array([0, 2])), shape=(1, 2))
    with pytest.raises(ValueError, match=r"values in \[0, 1\].*to 1.25"):
        check_unit_interval_matrix(over)


def test_unit_interval_matrix_states_every_rule() -> None:
    with pytest.raises(ValueError, match="validation has 4 features, but the model has 3"):
        check_unit_interval_matrix(np.zeros((1, 4)), "validation", n_features=3)
    with pytest.raises(ValueError, match="X has 0 rows; at least 1 needed"):
        check_unit_interval_matrix(np.zeros((0, 4)))
    assert check_unit_interval_matrix(np.zeros((0, 4)), min_rows=0).shape == (0, 4)
    with pytest.raises(
        TypeError, match="must be an array of numbers, got an array of dtype complex128"
    ):
        check_unit_interval_matrix(np.zeros((1, 2), complex))
    with pytest.raises(TypeError, match="X must be an array of numbers, got dict"):
        check_unit_interval_matrix({"a": 1})
