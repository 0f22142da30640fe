"""Checks of hyperparameters, arguments and training data, with errors that state the rule."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from rbm_core.data import RatingMatrix
from rbm_core.scale import RatingScaleError

__all__ = [
    "check_bool",
    "check_choice",
    "check_number",
    "check_positive_int",
    "check_random_state",
    "check_rating_matrix",
    "check_same_scale",
    "check_unit_interval_matrix",
]


def check_positive_int(name: str, value: object) -> int:
    """``value`` as an int; ``ValueError`` unless it is an integer >= 1 (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_number(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = True,
) -> float:
    """``value`` as a float; ``ValueError`` unless it is a finite number within the bounds.

    ``low`` is inclusive unless ``low_open``; ``high`` is exclusive unless
    ``high_open=False``. The message states the rule, e.g. "must be >= 0 and < 1".
    """
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = float(value)
    rules = []
    if low is not None:
        rules.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        rules.append(f"{'<' if high_open else '<='} {high:g}")
    outside = (
        not np.isfinite(number)
        or (low is not None and (number <= low if low_open else number < low))
        or (high is not None and (number >= high if high_open else number > high))
    )
    if outside:
        wanted = " ".join(["a finite number", " and ".join(rules)]).rstrip()
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
    return number


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``; otherwise a ``ValueError`` listing them."""
    if not isinstance(value, str) or value not in choices:
        quoted = [repr(c) for c in choices]
        options = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
        raise ValueError(f"{name} must be {options}, got {value!r}")
    return value


def check_bool(name: str, value: object) -> bool:
    """``value`` if it is True or False; otherwise a ``ValueError``."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_random_state(value: object) -> None:
    """``ValueError`` unless ``value`` is an int, a ``numpy.random.Generator`` or None."""
    if value is not None and not isinstance(value, int | np.integer | np.random.Generator):
        raise ValueError(f"random_state must be an int, a numpy Generator or None, got {value!r}")


def check_rating_matrix(matrix: object, what: str = "train") -> RatingMatrix:
    """``matrix`` if it is a :class:`RatingMatrix` (training data: with ratings).

    Raises
    ------
    TypeError
        Not a RatingMatrix.
    ValueError
        ``what == "train"`` and the matrix has no ratings.
    """
    if not isinstance(matrix, RatingMatrix):
        raise TypeError(f"{what} must be a RatingMatrix, got {type(matrix).__name__}")
    if what == "train" and (matrix.n_ratings == 0 or matrix.n_items == 0):
        raise ValueError("train has no ratings")
    return matrix


def check_same_scale(train: RatingMatrix, other: RatingMatrix, what: str = "validation") -> None:
    """``RatingScaleError`` if ``other`` uses another rating scale than ``train``."""
    if train.scale != other.scale:
        raise RatingScaleError(f"{what} uses rating scale {other.scale}, train {train.scale}")


def check_unit_interval_matrix(
    X: object,
    what: str = "X",
    *,
    n_features: int | None = None,
    min_rows: int = 1,
    dtype: type[np.floating] = np.float32,
) -> NDArray[np.floating] | sp.csr_matrix:
    """``X`` as a 2-D float array or a canonical CSR matrix of values in [0, 1].

    A dense input (ndarray, list, DataFrame) becomes a C-contiguous ``dtype`` array; a
    scipy.sparse matrix or array becomes a ``dtype`` CSR matrix without duplicate
    entries. Nothing is copied when ``X`` already has that form, and ``X`` itself is
    never modified; a sparse ``X`` is never made dense.

    Parameters
    ----------
    X : array-like or scipy.sparse matrix of shape (n_samples, n_features)
    what : str
        The argument's name in the messages.
    n_features : int, optional
        The number of columns ``X`` must have (a fitted model's).
    min_rows : int
        The fewest rows accepted.
    dtype : numpy floating type

    Raises
    ------
    TypeError
        ``X`` does not hold numbers.
    ValueError
        ``X`` is not 2-D, has too few rows, no or the wrong number of columns, a NaN
        or infinite value, or a value outside [0, 1].
    """
    if sp.issparse(X):
        matrix = sp.csr_matrix(X, dtype=dtype)
        if not matrix.has_canonical_format:
            # duplicate entries would count twice: sum them, on a copy (it may share
            # its arrays with X)
            matrix = matrix.copy()
            matrix.sum_duplicates()
        values: NDArray[np.floating] = matrix.data
        checked: NDArray[np.floating] | sp.csr_matrix = matrix
        shape = matrix.shape
    else:
        if isinstance(X, str | bytes) or X is None:
            raise TypeError(f"{what} must be an array of numbers, got {type(X).__name__}")
        try:
            raw = np.asarray(X)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{what} must be an array of numbers: {exc}") from None
        if raw.dtype.kind not in "biuf":
            got = (
                f"an array of dtype {raw.dtype}" if isinstance(X, np.ndarray) else type(X).__name__
            )
            raise TypeError(f"{what} must be an array of numbers, got {got}")
        if raw.ndim != 2:
            raise ValueError(
                f"{what} must be a 2-D array of shape (n_samples, n_features), got shape "
                f"{raw.shape}" + (" (use X.reshape(1, -1) for one sample)" if raw.ndim == 1 else "")
            )
        values = checked = np.ascontiguousarray(raw, dtype=dtype)
        shape = raw.shape
    n_rows, n_cols = shape
    if n_rows < min_rows:
        raise ValueError(f"{what} has {n_rows} rows; at least {min_rows} needed")
    if n_cols == 0:
        raise ValueError(f"{what} has no features (0 columns)")
    if n_features is not None and n_cols != n_features:
        raise ValueError(f"{what} has {n_cols} features, but the model has {n_features}")
    if values.size:
        low, high = float(values.min()), float(values.max())
        if not (np.isfinite(low) and np.isfinite(high)):
            raise ValueError(f"{what} contains NaN or infinite values")
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"{what} must hold values in [0, 1] (binary or probabilities); "
                f"found values from {low:g} to {high:g}"
            )
    return checked
