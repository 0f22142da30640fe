"""Bodies of ``GET /users/{id}/recommendations`` and ``GET /users/{id}/predictions``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.fields import MAX_N, Genre, IdStr, JsonInteger, RatingValue

MAX_GIVEN_RATINGS = 1000
"""Most ratings in one ``POST /recommendations``."""

__all__ = [
    "Explanation",
    "GivenRating",
    "ItemPrediction",
    "Predictions",
    "RatingsRecommendationRequest",
    "RatingsRecommendations",
    "Recommendations",
    "RecommendedItem",
]


class Explanation(BaseModel):
    """One of the user's own ratings that supports a recommended item."""

    item_id: str = Field(description="An item the user rated.")
    title: str | None = Field(description="Its title (null if the item is gone).")
    rating: float = Field(description="The user's rating of it.")
    contribution: float = Field(
        description="How much the recommended item's score drops when this rating is left "
        "out of the user's ratings (the model refolded without it); positive: it supports "
        "the recommendation."
    )


class RecommendedItem(BaseModel):
    """One recommended item."""

    item_id: str
    title: str | None = Field(description="The item's title (null if the item is gone).")
    score: float = Field(
        description="Ranking score, higher first. Strategy rbm: the model's log-odds-like "
        "score `beta * b_i + sum_j W_ij p(h_j | rated items) + omega * log P(rating >= "
        "high)`, an unbounded real number comparable only within one answer. Strategy "
        "popular: the item's number of ratings."
    )
    predicted_rating: float | None = Field(
        description="Expected rating (rbm), or the item's mean rating (popular)."
    )
    explanations: list[Explanation] | None = Field(
        default=None,
        description="With `explain=true`: the user's ratings that most support the item, "
        "strongest first (empty when none does, or the served model version cannot "
        "explain); absent otherwise.",
    )
    reason: str | None = Field(
        default=None,
        description="With `explain=true`: the strongest support in words, e.g. "
        '"because you rated Toy Story (1995) 5".',
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


class GivenRating(BaseModel):
    """One rating passed in the request (not stored)."""

    model_config = ConfigDict(extra="forbid")

    item_id: IdStr
    rating: RatingValue = Field(description="A value of the rating scale (default 1-5).")


class RatingsRecommendationRequest(BaseModel):
    """Ratings to recommend from, and the options of ``GET /users/{id}/recommendations``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "ratings": [
                        {"item_id": "1", "rating": 5},
                        {"item_id": "50", "rating": 4},
                    ],
                    "n": 5,
                    "explain": True,
                }
            ]
        },
    )

    ratings: list[GivenRating] = Field(
        max_length=MAX_GIVEN_RATINGS,
        description="The ratings; items the model does not know are ignored. An item given "
        "twice counts with its last rating, as a second `POST /ratings` would replace the "
        "first.",
    )
    n: JsonInteger = Field(default=10, ge=1, le=MAX_N, description="How many items.")
    offset: JsonInteger = Field(default=0, ge=0, le=10_000, description="Ranks to skip.")
    genre: Genre | None = Field(
        default=None, description="Only items of this genre (case-insensitive)."
    )
    exclude: list[IdStr] = Field(
        default_factory=list, max_length=1000, description="Item ids never to return."
    )
    explain: bool = Field(
        default=False,
        strict=True,
        description="Add to each item the given ratings that most support it, with their "
        "contribution to its score, and a reason in words.",
    )


class RatingsRecommendations(BaseModel):
    """Top items for the ratings given, never one of the rated items."""

    strategy: Literal["rbm", "popular"] = Field(
        description="rbm: the model folded in the ratings; popular: the most rated items "
        "(the model knows none of the rated items, or no model has been trained yet)."
    )
    model_version: str | None = Field(description="The model version used (null: none).")
    offset: int
    n: int
    items: list[RecommendedItem]
