"""Rating data sets for evaluation: rating files, the ML-100K folds, train / test pairs.

Reads the files (through the MovieLens readers of :mod:`rbm_core.movielens`) into
pandas frames with columns ``user_id``, ``item_id``, ``rating``, pairs them into
:class:`RatingSplit` folds, and infers a rating scale from the values found
(:func:`infer_scale`). :mod:`rbm_core.evaluation` runs the protocol on the splits.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from rbm_core.movielens import DataFormatError, read_ratings
from rbm_core.scale import RatingScale, RatingScaleError

__all__ = [
    "ML100K_FOLDS",
    "DatasetError",
    "RatingSplit",
    "infer_scale",
    "load_ml100k_folds",
    "load_train_test",
    "read_rating_file",
]

ML100K_FOLDS = (1, 2, 3, 4, 5)
_MAX_GRID_LEVELS = 100


class DatasetError(ValueError):
    """A data set cannot be loaded: a fold that does not exist, a file without ratings."""


@dataclass(frozen=True)
class RatingSplit:
    """One training / test pair of rating sets.

    Attributes
    ----------
    fold : int
        The fold number (1 for a single pair).
    train, test : pandas.DataFrame
        Columns ``user_id`` (str), ``item_id`` (str), ``rating`` (float).
    source : str
        Where the data came from, for messages.
    """

    fold: int
    train: pd.DataFrame
    test: pd.DataFrame
    source: str = ""


_CSV_HEADER_START = "userid,movieid,rating"


def read_rating_file(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a ratings file: ML-100K tab format, or MovieLens CSV with a header (``*.csv``).

    Parameters
    ----------
    path : str or Path
        The file.

    Returns
    -------
    pandas.DataFrame
        Columns ``user_id`` (str), ``item_id`` (str), ``rating`` (float64).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    DataFormatError
        If a line is malformed, a (user, item) pair repeats, or a CSV file does not
        end in ``.csv`` (the layout is chosen by the name).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix.lower() != ".csv":
        with path.open("rb") as handle:
            first = handle.readline(200).decode("utf-8", errors="replace")
        if first.lstrip("\ufeff").strip().lower().startswith(_CSV_HEADER_START):
            raise DataFormatError(
                "this looks like a MovieLens CSV file (header userId,movieId,...): "
                "give it a .csv name so it is read as CSV",
                path=path,
                line=1,
            )
    frame = read_ratings(path)
    return frame[["user_id", "item_id", "rating"]]


def load_ml100k_folds(
    directory: str | os.PathLike[str], folds: Iterable[int] = ML100K_FOLDS
) -> list[RatingSplit]:
    """Read the canonical ML-100K folds ``u{n}.base`` / ``u{n}.test``.

    Parameters
    ----------
    directory : str or Path
        The unpacked ML-100K directory.
    folds : iterable of int
        Fold numbers, each in 1..5, no repeats.

    Returns
    -------
    list of RatingSplit

    Raises
    ------
    FileNotFoundError
        If the directory or a fold's file is missing.
    DatasetError
        If a fold number is invalid or a file has no ratings.
    DataFormatError
        If a file is malformed.
    """
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory")
    chosen = list(folds)
    if not chosen:
        raise DatasetError("no folds to evaluate")
    for fold in chosen:
        if isinstance(fold, bool) or not isinstance(fold, int) or fold not in ML100K_FOLDS:
            raise DatasetError(f"fold {fold!r} does not exist: ML-100K has folds 1..5")
    if len(set(chosen)) != len(chosen):
        raise DatasetError("a fold is listed twice")
    splits = []
    for fold in chosen:
        base, test = root / f"u{fold}.base", root / f"u{fold}.test"
        for path in (base, test):
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such file (is {root} the ML-100K directory?)")
        splits.append(
            _split(fold, read_rating_file(base), read_rating_file(test), f"{base.name}/{test.name}")
        )
    return splits


def load_train_test(
    train_path: str | os.PathLike[str], test_path: str | os.PathLike[str]
) -> RatingSplit:
    """Read one training / test pair (fold 1); see :func:`read_rating_file` for formats."""
    train, test = Path(train_path), Path(test_path)
    return _split(1, read_rating_file(train), read_rating_file(test), f"{train.name}/{test.name}")


def _split(fold: int, train: pd.DataFrame, test: pd.DataFrame, source: str) -> RatingSplit:
    if len(train) == 0:
        raise DatasetError(f"fold {fold} ({source}): the training file has no ratings")
    if len(test) == 0:
        raise DatasetError(f"fold {fold} ({source}): the test file has no ratings")
    return RatingSplit(fold, train, test, source)


def infer_scale(values: Iterable[float] | NDArray[np.floating]) -> RatingScale:
    """The rating scale suggested by some rating values.

    When the distinct values sit on an evenly spaced grid (step: the greatest common
    divisor of their gaps, at most 100 levels), the scale is the whole grid from the
    lowest to the highest value, so a level nobody happened to use is not lost
    (``{1, 2, 4, 5}`` gives ``1..5``, ``{0.5, 1.5, 5}`` gives ``0.5..5:0.5``).
    Otherwise it is the distinct values themselves.

    Parameters
    ----------
    values : iterable of float
        Ratings.

    Returns
    -------
    RatingScale

    Raises
    ------
    RatingScaleError
        If there are fewer than two distinct values or a value is not finite.
    """
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values)
    arr = np.unique(arr.astype(np.float64))
    if not np.isfinite(arr).all():
        raise RatingScaleError("ratings must be finite numbers")
    if arr.size < 2:
        raise RatingScaleError(
            "cannot detect a rating scale from fewer than two distinct rating values; "
            "give it explicitly (e.g. --rating-scale 1..5)"
        )
    gaps = [Fraction(float(g)).limit_denominator(1000) for g in np.diff(arr)]
    step = functools.reduce(_gcd, gaps)
    lo, hi = float(arr[0]), float(arr[-1])
    n_steps = round((hi - lo) / float(step))
    grid = lo + np.arange(n_steps + 1) * float(step)
    if n_steps < _MAX_GRID_LEVELS and np.isin(np.round(arr, 9), np.round(grid, 9)).all():
        return RatingScale(tuple(float(v) for v in np.round(grid, 9)))
    return RatingScale(tuple(float(v) for v in arr))


def _gcd(a: Fraction, b: Fraction) -> Fraction:
    """Greatest common divisor of two positive fractions."""
    return Fraction(
        math.gcd(a.numerator * b.denominator, b.numerator * a.denominator),
        a.denominator * b.denominator,
    )
