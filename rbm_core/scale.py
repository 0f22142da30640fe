"""Rating scales: the ordered rating levels a model knows, and value <-> index maps."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import numpy as np
from numpy.typing import ArrayLike, NDArray


class RatingScaleError(ValueError):
    """A rating value or scale specification is not valid."""


MAX_LEVELS = 1000
"""Most levels a scale may have (a model holds one weight per item, level and hidden unit)."""


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise RatingScaleError(f"not a number: {text.strip()!r}") from None
    if not value.is_finite():
        raise RatingScaleError(f"not a finite number: {text.strip()!r}")
    return value


@dataclass(frozen=True)
class RatingScale:
    """The ordered, distinct rating levels, e.g. ``(1, 2, 3, 4, 5)``.

    Level *indices* ``0 .. K-1`` are what the model works with; *values* are what
    users send. ``K = n_levels`` follows from the scale; nothing assumes ``K = 5``.
    """

    levels: tuple[float, ...]

    def __post_init__(self) -> None:
        levels = tuple(float(v) for v in self.levels)
        if len(levels) < 2:
            raise RatingScaleError("a rating scale needs at least two levels")
        if len(levels) > MAX_LEVELS:
            raise RatingScaleError(f"a rating scale has at most {MAX_LEVELS} levels")
        if any(not np.isfinite(v) for v in levels):
            raise RatingScaleError("rating levels must be finite numbers")
        if any(b <= a for a, b in itertools.pairwise(levels)):
            raise RatingScaleError("rating levels must be strictly increasing")
        object.__setattr__(self, "levels", levels)

    # -- construction -------------------------------------------------------------
    @classmethod
    def parse(cls, spec: str) -> RatingScale:
        """Parse ``"1,2,3,4,5"`` or a range ``"0.5..5:0.5"`` (``lo..hi:step``)."""
        spec = spec.strip()
        if not spec:
            raise RatingScaleError("empty rating scale")
        if ".." in spec:
            bounds, _, step_text = spec.partition(":")
            lo_text, _, hi_text = bounds.partition("..")
            lo, hi = _decimal(lo_text), _decimal(hi_text)
            step = _decimal(step_text) if step_text else Decimal(1)
            if step <= 0 or hi <= lo:
                raise RatingScaleError(f"bad rating range {spec!r}: need lo < hi and step > 0")
            try:
                count = (hi - lo) / step
                whole = count == count.to_integral_value()
            except ArithmeticError:  # exponents beyond what Decimal computes
                raise RatingScaleError(f"bad rating range {spec!r}: numbers out of range") from None
            if not whole:
                raise RatingScaleError(f"bad rating range {spec!r}: step does not divide hi - lo")
            # checked before the levels are built: "0..1e12" must not exhaust memory
            if count >= MAX_LEVELS:
                raise RatingScaleError(f"bad rating range {spec!r}: more than {MAX_LEVELS} levels")
            return cls(tuple(float(lo + i * step) for i in range(int(count) + 1)))
        return cls(tuple(float(_decimal(part)) for part in spec.split(",") if part.strip()))

    @classmethod
    def from_values(cls, values: Iterable[float]) -> RatingScale:
        """The scale made of the distinct values seen in some data."""
        return cls(tuple(sorted({float(v) for v in values})))

    # -- properties ---------------------------------------------------------------
    @property
    def n_levels(self) -> int:
        """K, the number of rating levels."""
        return len(self.levels)

    @property
    def values(self) -> NDArray[np.float64]:
        """The levels as an array of shape (K,)."""
        return np.asarray(self.levels, dtype=np.float64)

    @property
    def min(self) -> float:
        return self.levels[0]

    @property
    def max(self) -> float:
        return self.levels[-1]

    @property
    def high_rating(self) -> float:
        """The lowest level in the upper quarter of the scale: a "high" rating by default.

        4 on 1..5 and on 0.5..5, 3.5 on 0.5..4, 8 on 1..10.
        """
        cut = self.min + 0.75 * (self.max - self.min)
        values = self.values
        return float(values[np.searchsorted(values, cut - 1e-9)])

    @property
    def low_rating(self) -> float:
        """The highest level below the middle of the scale: a "low" rating by default.

        2 on 1..5, 2.5 on 0.5..5, 2 on 0.5..4, 5 on 1..10, the lower level of a
        two-level scale.
        """
        middle = (self.min + self.max) / 2.0
        values = self.values
        return float(values[max(0, int(np.searchsorted(values, middle - 1e-9)) - 1)])

    def __str__(self) -> str:
        return ",".join(_fmt(v) for v in self.levels)

    def describe(self) -> str:
        """Human-readable list of allowed values, for error messages."""
        return ", ".join(_fmt(v) for v in self.levels)

    # -- conversion ---------------------------------------------------------------
    def contains(self, value: float) -> bool:
        try:
            self.index_of(value)
        except RatingScaleError:
            return False
        return True

    def index_of(self, value: float) -> int:
        """Level index of one rating value; raises :class:`RatingScaleError` off the scale."""
        return int(self.indices_of(np.asarray([value], dtype=np.float64))[0])

    def indices_of(self, values: ArrayLike) -> NDArray[np.int64]:
        """Level indices of an array of rating values (vectorised)."""
        arr = np.asarray(values, dtype=np.float64)
        levels = self.values
        pos = np.clip(np.searchsorted(levels, arr), 0, len(levels) - 1)
        # accept the nearer neighbour when it matches within floating-point noise
        lower = np.clip(pos - 1, 0, len(levels) - 1)
        pick = np.where(np.abs(levels[lower] - arr) < np.abs(levels[pos] - arr), lower, pos)
        ok = np.isclose(levels[pick], arr, rtol=0.0, atol=1e-9)
        if not np.all(ok):
            bad = arr[~ok]
            shown = ", ".join(_fmt(float(v)) for v in bad[:5])
            raise RatingScaleError(
                f"rating {shown} is not on the rating scale; allowed values: {self.describe()}"
            )
        return pick.astype(np.int64)

    def value_of(self, index: int) -> float:
        if not 0 <= index < self.n_levels:
            raise RatingScaleError(f"level index {index} out of range 0..{self.n_levels - 1}")
        return self.levels[index]

    def values_of(self, indices: Sequence[int] | NDArray[np.integer]) -> NDArray[np.float64]:
        return self.values[np.asarray(indices, dtype=np.int64)]


def _fmt(value: float) -> str:
    return f"{value:g}"


DEFAULT_SCALE = RatingScale((1.0, 2.0, 3.0, 4.0, 5.0))
