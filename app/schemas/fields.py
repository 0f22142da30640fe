"""Field types and limits shared by the request and response bodies."""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import BeforeValidator, Field, StringConstraints

from app.domain import ID_MAX_LENGTH, ID_PATTERN

__all__ = [
    "EXAMPLE_TIME",
    "MAX_BATCH",
    "MAX_N",
    "NO_NUL_PATTERN",
    "Genre",
    "IdStr",
    "JsonInteger",
    "RatingValue",
]


MAX_BATCH: Final = 10_000
"""Most ratings in one ``POST /ratings/batch``."""

MAX_N: Final = 100
"""Most items in one page of recommendations or similar items."""

IdStr = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN),
]
"""A user or item id: 1-64 letters, digits or ``_.:-``, not ``.`` or ``..``."""

RatingValue = Annotated[float, Field(strict=True, allow_inf_nan=False)]
"""A rating: a finite JSON number (its scale is checked by the service)."""


def _not_a_boolean(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")
    return value


JsonInteger = Annotated[int, BeforeValidator(_not_a_boolean)]
"""A JSON integer as JSON Schema reads one: ``90`` and ``90.0``, never ``true`` or ``90.5``
(pydantic's lax ``int`` would take a boolean, its strict one would refuse ``90.0``)."""

NO_NUL_PATTERN: Final = r"^[^\x00]*$"
"""Free text holds no NUL character (PostgreSQL cannot store one; SQLite would)."""

Genre = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=64, pattern=NO_NUL_PATTERN)
]

EXAMPLE_TIME: Final = "2026-11-29T10:15:00Z"
"""The time used in the OpenAPI examples."""
