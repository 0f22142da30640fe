"""Domain rules shared by the store, the import and the API: ids and rating values.

User and item ids are opaque strings (real systems use UUIDs), 1-64 characters of
letters, digits and ``_.:-``, except ``.`` and ``..``: those are path segments that
HTTP clients and proxies remove from URLs, so ``/items/.`` could never be read back.
MovieLens ids are stored as their decimal strings.
Ratings must be one of the levels of the configured :class:`RatingScale`.
"""

from __future__ import annotations

import math
import re
from typing import Final

from rbm_core.scale import RatingScale, RatingScaleError

ID_MAX_LENGTH: Final = 64
"""Longest user or item id accepted (the width of the id columns)."""

_ID_CHAR: Final = r"[A-Za-z0-9_.:\-]"
_NOT_DOT: Final = r"[A-Za-z0-9_:\-]"

ID_PATTERN: Final = (
    rf"^(?:{_NOT_DOT}{_ID_CHAR}{{0,63}}"  # starts with a character other than '.'
    rf"|\.{_NOT_DOT}{_ID_CHAR}{{0,62}}"  # '.' and then such a character
    rf"|\.\.{_ID_CHAR}{{1,62}})$"  # '..' and at least one more
)
"""Regular expression every user and item id must match in full: 1-64 characters of
``[A-Za-z0-9_.:-]``, not ``.`` or ``..``. Written without look-around, which the
validators of pydantic (Rust regex) do not support, and without nested repetition,
so matching takes linear time."""

ID_RULE: Final = (
    f"1-{ID_MAX_LENGTH} characters from letters, digits and '_', '.', ':', '-' (not '.' or '..')"
)
""":data:`ID_PATTERN` in words, for error messages."""

_ID_RE: Final = re.compile(ID_PATTERN)


class InvalidIdError(ValueError):
    """A user or item id is not a 1-64 character string of letters, digits and ``_.:-``
    (or is ``.`` or ``..``)."""


class InvalidRatingError(RatingScaleError):
    """A rating value is not a number on the configured rating scale."""


class ItemsNotInStoreError(LookupError):
    """Ratings refer to items that are not in the store (``item_ids`` lists them).

    Not :class:`rbm_core.model.UnknownItemError`, which says that a *model* does not
    know an item (the service reports that as
    :class:`app.services.recommend.ItemNotInModelError`).
    """

    def __init__(self, item_ids: list[str]) -> None:
        self.item_ids = item_ids
        shown = ", ".join(repr(i) for i in item_ids[:5])
        more = f" (and {len(item_ids) - 5} more)" if len(item_ids) > 5 else ""
        super().__init__(f"unknown item id {shown}{more}")


def is_valid_id(value: object) -> bool:
    """Whether ``value`` is a string that satisfies :data:`ID_PATTERN`."""
    # fullmatch, because a bare '$' would also accept a trailing newline
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def validate_id(value: str, what: str = "id") -> str:
    """Check a user or item id and return it unchanged.

    Parameters
    ----------
    value : str
        The id to check.
    what : str, default "id"
        How the id is named in the error message, e.g. ``"user id"``.

    Returns
    -------
    str
        ``value``, unchanged.

    Raises
    ------
    InvalidIdError
        If ``value`` is not a string of 1-64 letters, digits or ``_.:-``, or is
        ``.`` or ``..``.
    """
    if not isinstance(value, str):
        raise InvalidIdError(f"{what} must be a string, got {type(value).__name__}")
    if not is_valid_id(value):
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise InvalidIdError(f"invalid {what} {shown!r}: use {ID_RULE}")
    return value


def validate_rating(value: float, scale: RatingScale) -> float:
    """Check a rating value against a rating scale and return the level it denotes.

    Parameters
    ----------
    value : float
        The rating sent by a user or read from a file.
    scale : RatingScale
        The allowed levels (``Settings.rating_scale``, passed down by the caller).

    Returns
    -------
    float
        The scale level equal to ``value`` (floating-point noise removed).

    Raises
    ------
    InvalidRatingError
        If ``value`` is not a finite number equal to one of the levels; the message
        lists the allowed values.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRatingError(
            f"rating must be a number, got {type(value).__name__}; "
            f"allowed values: {scale.describe()}"
        )
    if not math.isfinite(value):
        raise InvalidRatingError(
            f"rating {value} is not on the rating scale; allowed values: {scale.describe()}"
        )
    try:
        return scale.value_of(scale.index_of(float(value)))
    except RatingScaleError as exc:
        raise InvalidRatingError(str(exc)) from None
