"""Bodies of the catalog routes (``/items``) and of similar items."""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, WithJsonSchema

from app.schemas.fields import EXAMPLE_TIME, NO_NUL_PATTERN, Genre

__all__ = [
    "STORABLE_JSON_SCHEMA",
    "ItemOut",
    "ItemPage",
    "ItemUpsert",
    "SimilarItem",
    "SimilarItems",
]


_UNSTORABLE_TEXT: Final = re.compile("[\x00\ud800-\udfff]")


def _storable_json(value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    """Refuse JSON that the stores would keep differently, or not at all.

    NaN and infinities are not JSON (PostgreSQL refuses them, SQLite turned them into
    null); NUL characters and unpaired surrogates cannot be stored as text. The walk
    is iterative: deeply nested documents must not exhaust the stack.
    """
    stack: list[object] = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            raise ValueError("numbers must be finite (no NaN or infinity)")
        if isinstance(node, str) and _UNSTORABLE_TEXT.search(node):
            raise ValueError("text must not contain NUL characters or unpaired surrogates")
        if isinstance(node, dict):
            if any(_UNSTORABLE_TEXT.search(key) for key in node):
                raise ValueError("keys must not contain NUL characters or unpaired surrogates")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return value


STORABLE_TEXT_PATTERN: Final = NO_NUL_PATTERN
"""Texts and keys of ``attributes`` hold no NUL. (Nor an unpaired surrogate, which the
pattern cannot name: UTF-8 cannot carry one, and validators that compile patterns as
Unicode scalar values, Rust's among them, cannot spell one.)"""

STORABLE_JSON_SCHEMA: Final[dict[str, Any]] = {
    "description": "Any JSON value whose texts and keys hold no NUL character and no "
    "unpaired surrogate (neither store can keep them).",
    "anyOf": [
        {"type": "string", "pattern": STORABLE_TEXT_PATTERN},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
        {"type": "array", "items": {"$ref": "#/components/schemas/StorableJson"}},
        {
            "type": "object",
            "propertyNames": {"pattern": STORABLE_TEXT_PATTERN},
            "additionalProperties": {"$ref": "#/components/schemas/StorableJson"},
        },
    ],
}
"""``components.schemas.StorableJson`` of the OpenAPI document (recursive, so it is
added there by :func:`app.api.contract.document_contract`): what ``_storable_json``
accepts."""

_ATTRIBUTES_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "maxProperties": 100,
    "propertyNames": {"pattern": STORABLE_TEXT_PATTERN},
    "additionalProperties": {"$ref": "#/components/schemas/StorableJson"},
    "description": "Free-form JSON metadata.",
}


class ItemUpsert(BaseModel):
    """An item's display metadata (``PUT`` replaces all of it)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "title": "Toy Story (1995)",
                    "genres": ["Animation", "Children's", "Comedy"],
                    "attributes": {"year": 1995},
                }
            ]
        },
    )

    title: str = Field(default="", max_length=500, pattern=NO_NUL_PATTERN)
    genres: list[Genre] = Field(default_factory=list, max_length=50)
    attributes: Annotated[
        dict[str, JsonValue],
        AfterValidator(_storable_json),
        WithJsonSchema(_ATTRIBUTES_SCHEMA, mode="validation"),
    ] = Field(default_factory=dict, max_length=100, description="Free-form JSON metadata.")


class ItemOut(BaseModel):
    """An item."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "1",
                    "title": "Toy Story (1995)",
                    "genres": ["Animation", "Children's", "Comedy"],
                    "attributes": {"year": 1995},
                    "created_at": EXAMPLE_TIME,
                    "updated_at": EXAMPLE_TIME,
                }
            ]
        },
    )

    id: str
    title: str
    genres: list[str]
    attributes: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class ItemPage(BaseModel):
    """One page of the catalog (or of a search of it)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "total": 1682,
                    "offset": 0,
                    "limit": 1,
                    "items": [
                        {
                            "id": "1",
                            "title": "Toy Story (1995)",
                            "genres": ["Animation", "Children's", "Comedy"],
                            "attributes": {},
                            "created_at": EXAMPLE_TIME,
                            "updated_at": EXAMPLE_TIME,
                        }
                    ],
                }
            ]
        }
    )

    total: int = Field(description="How many items match (the whole catalog without a search).")
    offset: int
    limit: int
    items: list[ItemOut]


class SimilarItem(BaseModel):
    """An item similar to another one."""

    item_id: str
    title: str | None
    similarity: float = Field(description="Cosine similarity of the items' model weights.")


class SimilarItems(BaseModel):
    """The items whose learned weights are closest to an item's."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "item_id": "50",
                    "model_version": "20261129T030000123Z-9f2c1a",
                    "items": [
                        {
                            "item_id": "181",
                            "title": "Return of the Jedi (1983)",
                            "similarity": 0.93,
                        }
                    ],
                }
            ]
        }
    )

    item_id: str
    model_version: str
    items: list[SimilarItem]
