"""Request and response bodies of the HTTP API (pydantic), separate from the ORM models.

Every model carries an example for the OpenAPI documentation. Request models
forbid unknown fields, ids are checked against :data:`app.domain.ID_PATTERN`, and
ratings must be finite JSON numbers (strings, booleans, NaN and infinities are
refused); whether a rating is on the configured scale is checked by the service,
which knows the scale.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
)

from app.domain import ID_MAX_LENGTH, ID_PATTERN

__all__ = [
    "MAX_BATCH",
    "MAX_N",
    "FieldError",
    "IdStr",
    "ItemOut",
    "ItemPage",
    "ItemPrediction",
    "ItemUpsert",
    "Liveness",
    "ModelInfo",
    "NotReady",
    "Predictions",
    "Problem",
    "RatingBatch",
    "RatingBatchResult",
    "RatingCreate",
    "RatingOut",
    "RatingPage",
    "Readiness",
    "Recommendations",
    "RecommendedItem",
    "SimilarItem",
    "SimilarItems",
    "ValidationProblem",
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

NO_NUL_PATTERN: Final = r"^[^\x00]*$"
"""Free text holds no NUL character (PostgreSQL cannot store one; SQLite would)."""

Genre = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=64, pattern=NO_NUL_PATTERN)
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


_EXAMPLE_TIME = "2026-11-29T10:15:00Z"


# -- problems --------------------------------------------------------------------------
class Problem(BaseModel):
    """RFC 9457 problem details: the body of every error response."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:rbmrec:problem:unknown-item",
                    "title": "Unknown item",
                    "status": 404,
                    "detail": "unknown item id '99999'",
                    "instance": "/ratings",
                }
            ]
        }
    )

    type: str = Field(default="about:blank", description="URI of the problem type.")
    title: str = Field(description="Short summary of the problem type.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong with this request.")
    instance: str | None = Field(default=None, description="The request path.")


class FieldError(BaseModel):
    """One wrong field of a request."""

    loc: list[str | int] = Field(description="Where: e.g. ['body', 'ratings', 3, 'rating'].")
    msg: str = Field(description="What is wrong with it.")
    type: str = Field(description="Machine-readable error kind.")


class ValidationProblem(Problem):
    """A 422 problem: the request is invalid; ``errors`` names each wrong field."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:rbmrec:problem:validation-error",
                    "title": "Invalid request",
                    "status": 422,
                    "detail": "the request is invalid: body.rating: rating 6 is not on "
                    "the rating scale; allowed values: 1, 2, 3, 4, 5",
                    "instance": "/ratings",
                    "errors": [
                        {
                            "loc": ["body", "rating"],
                            "msg": "rating 6 is not on the rating scale; "
                            "allowed values: 1, 2, 3, 4, 5",
                            "type": "rating_scale",
                        }
                    ],
                }
            ]
        }
    )

    errors: list[FieldError] = Field(default_factory=list)


# -- ratings ---------------------------------------------------------------------------
class RatingCreate(BaseModel):
    """A rating to store; it replaces the user's earlier rating of the item, if any."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"user_id": "196", "item_id": "242", "rating": 4},
                {"user_id": "alice", "item_id": "50", "rating": 5, "rated_at": _EXAMPLE_TIME},
            ]
        },
    )

    user_id: IdStr = Field(description="The user (no registration needed).")
    item_id: IdStr = Field(description="A known item (or any, with RBMREC_AUTO_CREATE_ITEMS).")
    rating: RatingValue = Field(description="A value of the rating scale (default 1-5).")
    rated_at: datetime | None = Field(
        default=None, description="When it was given (ISO 8601; naive = UTC); default: now."
    )


class RatingOut(BaseModel):
    """A stored rating."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "user_id": "196",
                    "item_id": "242",
                    "rating": 4.0,
                    "rated_at": _EXAMPLE_TIME,
                    "updated_at": _EXAMPLE_TIME,
                }
            ]
        },
    )

    user_id: str
    item_id: str
    rating: float
    rated_at: datetime
    updated_at: datetime = Field(description="When the store last changed this rating.")


class RatingBatch(BaseModel):
    """Up to 10,000 ratings, written in one transaction: all or nothing."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "ratings": [
                        {"user_id": "alice", "item_id": "50", "rating": 5},
                        {"user_id": "alice", "item_id": "181", "rating": 4},
                    ]
                }
            ]
        },
    )

    ratings: list[RatingCreate] = Field(min_length=1, max_length=MAX_BATCH)


class RatingBatchResult(BaseModel):
    """What a batch wrote."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"written": 2}]})

    written: int = Field(
        description="Distinct (user, item) pairs written (a pair repeated in the batch "
        "counts once; its last entry wins)."
    )


class RatingPage(BaseModel):
    """One page of a user's ratings, newest first."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "196",
                    "total": 1,
                    "offset": 0,
                    "limit": 100,
                    "items": [
                        {
                            "user_id": "196",
                            "item_id": "242",
                            "rating": 3.0,
                            "rated_at": _EXAMPLE_TIME,
                            "updated_at": _EXAMPLE_TIME,
                        }
                    ],
                }
            ]
        }
    )

    user_id: str
    total: int = Field(description="All ratings of the user.")
    offset: int
    limit: int
    items: list[RatingOut]


# -- recommendations -----------------------------------------------------------------
class RecommendedItem(BaseModel):
    """One recommended item."""

    item_id: str
    title: str | None = Field(description="The item's title (null if the item is gone).")
    score: float = Field(
        description="Ranking score: the model's (strategy rbm) or the number of "
        "ratings (strategy popular)."
    )
    predicted_rating: float | None = Field(
        description="Expected rating (rbm), or the item's mean rating (popular)."
    )


class Recommendations(BaseModel):
    """Top items for a user, never one the user has rated."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "196",
                    "strategy": "rbm",
                    "model_version": "20261129T030000123Z-9f2c1a",
                    "offset": 0,
                    "n": 2,
                    "items": [
                        {
                            "item_id": "50",
                            "title": "Star Wars (1977)",
                            "score": 512.3,
                            "predicted_rating": 4.41,
                        },
                        {
                            "item_id": "100",
                            "title": "Fargo (1996)",
                            "score": 431.9,
                            "predicted_rating": 4.2,
                        },
                    ],
                }
            ]
        }
    )

    user_id: str
    strategy: Literal["rbm", "popular"] = Field(
        description="rbm: the model folded in the user's current ratings; popular: "
        "the most rated items (the user has no ratings the model knows, or no model "
        "has been trained yet)."
    )
    model_version: str | None = Field(description="The model version used (null: none).")
    offset: int
    n: int = Field(description="The page size asked for; fewer items when the catalog runs out.")
    items: list[RecommendedItem]


class ItemPrediction(BaseModel):
    """The predicted rating of one item and the distribution over the rating levels."""

    item_id: str
    predicted_rating: float = Field(description="Expected rating under the distribution.")
    distribution: list[float] = Field(
        description="Probability of each rating level (in the order of ``levels``)."
    )


class Predictions(BaseModel):
    """A user's predicted ratings for some items."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": "196",
                    "model_version": "20261129T030000123Z-9f2c1a",
                    "levels": [1, 2, 3, 4, 5],
                    "items": [
                        {
                            "item_id": "50",
                            "predicted_rating": 4.38,
                            "distribution": [0.01, 0.03, 0.09, 0.3, 0.57],
                        }
                    ],
                    "unknown_items": ["99999"],
                }
            ]
        }
    )

    user_id: str
    model_version: str | None = Field(description="The model used (null: no model yet).")
    levels: list[float] = Field(description="The rating levels of the distributions.")
    items: list[ItemPrediction]
    unknown_items: list[str] = Field(
        description="Items asked for that the model does not know (no prediction)."
    )


# -- items -------------------------------------------------------------------------------
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
    attributes: Annotated[dict[str, JsonValue], AfterValidator(_storable_json)] = Field(
        default_factory=dict, max_length=100, description="Free-form JSON metadata."
    )


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
                    "created_at": _EXAMPLE_TIME,
                    "updated_at": _EXAMPLE_TIME,
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
    """One page of the catalog, ordered by id."""

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
                            "created_at": _EXAMPLE_TIME,
                            "updated_at": _EXAMPLE_TIME,
                        }
                    ],
                }
            ]
        }
    )

    total: int
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


# -- model and health ---------------------------------------------------------------
class ModelInfo(BaseModel):
    """The model version this process serves."""

    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "version": "20261129T030000123Z-9f2c1a",
                    "status": "active",
                    "trained_at": _EXAMPLE_TIME,
                    "activated_at": _EXAMPLE_TIME,
                    "loaded_at": _EXAMPLE_TIME,
                    "n_users": 943,
                    "n_items": 1682,
                    "n_ratings": 100000,
                    "hyperparameters": {"n_hidden": 100, "n_epochs": 30},
                    "metrics": {"validation_rmse": 0.93, "validation_mae": 0.73},
                }
            ]
        },
    )

    version: str
    status: str = Field(description="Registry status when it was loaded.")
    trained_at: datetime
    activated_at: datetime | None
    loaded_at: datetime = Field(description="When this process loaded it.")
    n_users: int
    n_items: int
    n_ratings: int
    hyperparameters: dict[str, Any]
    metrics: dict[str, Any] = Field(description="Evaluation on held-out ratings.")


class Liveness(BaseModel):
    """The process is up."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "alive"}]})

    status: Literal["alive"] = "alive"


class DatabaseStatus(BaseModel):
    """Whether the ratings store answers."""

    ok: bool
    error: str | None = None


class ModelStatus(BaseModel):
    """Which model is loaded, and why not, if it could not be."""

    model_config = ConfigDict(protected_namespaces=())

    loaded: bool
    version: str | None = Field(description="The version served (null: none).")
    active_version: str | None = Field(
        description="The version the registry marks active, as last seen."
    )
    last_check: datetime | None = Field(description="When the registry was last read.")
    error: str | None = Field(
        description="Why the active version is not the one served (load failure, "
        "corrupt artifact), if so."
    )


class Readiness(BaseModel):
    """Whether the service can answer requests (503 while the database is down)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "ready",
                    "database": {"ok": True, "error": None},
                    "model": {
                        "loaded": True,
                        "version": "20261129T030000123Z-9f2c1a",
                        "active_version": "20261129T030000123Z-9f2c1a",
                        "last_check": _EXAMPLE_TIME,
                        "error": None,
                    },
                    "strategy": "rbm",
                    "replica": "3f2a9c1d7e4b",
                }
            ]
        }
    )

    status: Literal["ready", "unavailable"]
    database: DatabaseStatus
    model: ModelStatus
    strategy: Literal["rbm", "popular"] = Field(
        description="What recommendations use now: rbm with a model, else popular."
    )
    replica: str = Field(
        description="The replica that answered (its host name; also the Rbmrec-Replica "
        "header of every response).",
        examples=["3f2a9c1d7e4b"],
    )


class NotReady(Problem):
    """The 503 answer of ``/health/ready``: a problem document with the readiness fields."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:rbmrec:problem:not-ready",
                    "title": "Not ready",
                    "status": 503,
                    "detail": "the ratings database does not answer; the service recovers "
                    "by itself when it is back",
                    "instance": "/health/ready",
                    "database": {"ok": False, "error": "the database does not answer"},
                    "model": {
                        "loaded": True,
                        "version": "20261129T030000123Z-9f2c1a",
                        "active_version": "20261129T030000123Z-9f2c1a",
                        "last_check": _EXAMPLE_TIME,
                        "error": "cannot read the model registry: connection refused",
                    },
                    "strategy": "rbm",
                    "replica": "3f2a9c1d7e4b",
                }
            ]
        }
    )

    type: str = "urn:rbmrec:problem:not-ready"
    database: DatabaseStatus
    model: ModelStatus
    strategy: Literal["rbm", "popular"]
    replica: str
