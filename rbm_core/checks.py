"""Checks of hyperparameters, arguments and training data, with errors that state the rule."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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
