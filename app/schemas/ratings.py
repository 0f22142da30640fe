"""Bodies of ``POST /ratings``, ``POST /ratings/batch`` and ``GET /users/{id}/ratings``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from app.schemas.fields import EXAMPLE_TIME, MAX_BATCH, IdStr, RatingValue

__all__ = ["RatingBatch", "RatingBatchResult", "RatingCreate", "RatingOut", "RatingPage"]


def _date_time_text(value: object) -> object:
    # pydantic would also take a number (Unix time), which the documented
    # ``format: date-time`` does not allow: one form only.
    if value is not None and not isinstance(value, str):
        raise ValueError("rated_at must be an ISO 8601 date-time string")
    return value


RatedAt = Annotated[datetime | None, BeforeValidator(_date_time_text)]


class RatingCreate(BaseModel):
    """A rating to store; it replaces the user's earlier rating of the item, if any."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"user_id": "196", "item_id": "242", "rating": 4},
                {"user_id": "alice", "item_id": "50", "rating": 5, "rated_at": EXAMPLE_TIME},
            ]
        },
    )

    user_id: IdStr = Field(description="The user (no registration needed).")
    item_id: IdStr = Field(description="A known item (or any, with RBMREC_AUTO_CREATE_ITEMS).")
    rating: RatingValue = Field(description="A value of the rating scale (default 1-5).")
    rated_at: RatedAt = Field(
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
                    "rated_at": EXAMPLE_TIME,
                    "updated_at": EXAMPLE_TIME,
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
                            "rated_at": EXAMPLE_TIME,
                            "updated_at": EXAMPLE_TIME,
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
