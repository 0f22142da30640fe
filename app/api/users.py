"""A user's ratings, recommendations and predictions (``/users/{user_id}/...``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from app.api.deps import (
    CatalogDep,
    ItemIdPath,
    ReadSessionDep,
    RecommenderDep,
    SessionDep,
    SettingsDep,
    UserIdPath,
    model_response,
)
from app.api.errors import ProblemError, problem_responses
from app.api.middleware import MAX_URL_BYTES
from app.api.security import require_read_key, require_write_key
from app.domain import ID_MAX_LENGTH, ID_PATTERN
from app.schemas.fields import MAX_N
from app.schemas.ratings import RatingOut, RatingPage
from app.schemas.recommendations import ItemPrediction, Predictions, Recommendations
from app.services import ratings as ratings_service
from app.services import recommend as recommend_service

router = APIRouter(prefix="/users", tags=["users"])

MAX_OFFSET = 10_000
"""Deepest recommendation page (``offset``); deeper ranks are not useful."""

GENRE_MAX_LENGTH = 64
"""Longest ``genre`` filter (characters)."""


def _longest_recommendations_url(n_exclude: int) -> int:
    """Bytes of the longest valid ``/recommendations`` URL with ``n_exclude`` exclusions.

    Each id at its longest and at its worst encoding (all ``:``, which clients send as
    ``%3A``), the genre of four-byte UTF-8 characters, each percent-encoded, and every
    other parameter at its longest.
    """
    worst_id = 3 * ID_MAX_LENGTH
    path = len("/users/") + worst_id + len("/recommendations")
    query = (
        len(f"?n={MAX_N}&offset={MAX_OFFSET}&explain=false")
        + len("&genre=")
        + 12 * GENRE_MAX_LENGTH
        + n_exclude * len(f"&exclude={'x' * worst_id}")
    )
    return path + query


MAX_EXCLUDE = next(
    n for n in range(1000, -1, -1) if _longest_recommendations_url(n) <= MAX_URL_BYTES
)
"""Most ``exclude`` ids: as many as fit in the longest valid URL under
:data:`app.api.middleware.MAX_URL_BYTES`, so that no valid request is refused with 414."""

ItemIdQuery = Annotated[str, Query(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)]


@router.get(
    "/{user_id}/ratings",
    summary="A user's ratings, newest first",
    dependencies=[Depends(require_read_key)],
    response_model=RatingPage,
    responses=problem_responses(422, 503),
)
def get_user_ratings(
    user_id: UserIdPath,
    session: ReadSessionDep,
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="Ratings to skip.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 100,
) -> Response:
    """Page through the ratings the store holds for a user (empty for an unknown user)."""
    page, total = ratings_service.list_ratings(session, user_id, offset=offset, limit=limit)
    body = RatingPage(
        user_id=user_id,
        total=total,
        offset=offset,
        limit=limit,
        items=[RatingOut.model_validate(r) for r in page],
    )
    return model_response(body)


@router.delete(
    "/{user_id}/ratings/{item_id}",
    summary="Delete a rating",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    dependencies=[Depends(require_write_key)],
    responses=problem_responses(401, 403, 404, 422, 503),
)
def delete_user_rating(
    user_id: UserIdPath,
    item_id: ItemIdPath,
    session: SessionDep,
    catalog: CatalogDep,
) -> Response:
    """Delete the user's rating of the item: 204, or 404 if there was none."""
    if not ratings_service.delete_rating(session, user_id, item_id):
        raise ProblemError(404, f"user {user_id!r} has no rating of item {item_id!r}")
    catalog.ratings_changed()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{user_id}/recommendations",
    summary="Recommend items to a user",
    description="Folds the user's current ratings (read from the store now) into the "
    "active model and ranks the items the user has not rated. Strategy `popular` "
    "(most-rated items) when the user has no rating the model knows or no model has "
    "been trained yet; an unknown user is not an error.",
    dependencies=[Depends(require_read_key)],
    response_model=Recommendations,
    responses=problem_responses(422, 503),
)
async def get_recommendations(
    user_id: UserIdPath,
    recommender: RecommenderDep,
    n: Annotated[int, Query(ge=1, le=MAX_N, description="How many items.")] = 10,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Ranks to skip.")] = 0,
    genre: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=GENRE_MAX_LENGTH,
            description="Only items of this genre (case-insensitive).",
            examples=["Comedy"],
        ),
    ] = None,
    exclude: Annotated[
        list[ItemIdQuery],
        Query(
            max_length=MAX_EXCLUDE,
            description="Item ids never to return (repeat the parameter; at most "
            f"{MAX_EXCLUDE}, so that any valid URL stays under {MAX_URL_BYTES} bytes).",
        ),
    ] = [],  # noqa: B006 (FastAPI copies defaults per request)
    explain: Annotated[
        bool,
        Query(
            description="Add to each item the user's own ratings that most support it, "
            "with their contribution to its score, and a reason in words."
        ),
    ] = False,
) -> Response:
    """Top-``n`` items for the user, never one the user has rated."""
    loaded = recommender.holder.current  # one reference for the request: swaps cannot tear it

    def work() -> Response:
        # A connection, not a session: no unit of work to commit (autocommit on
        # PostgreSQL), and it goes back to the pool in this thread, before the answer.
        with recommender.read_engine.connect() as connection:
            result = recommend_service.recommend(
                connection,
                loaded,
                recommender.catalog,
                user_id,
                n=n,
                offset=offset,
                genre=genre,
                exclude=exclude,
                explain=explain,
            )
        recommender.metrics.recommendations.labels(strategy=result.strategy).inc()
        body = Recommendations(
            user_id=user_id,
            strategy=result.strategy,
            model_version=result.model_version,
            offset=offset,
            n=n,
            items=result.items,
        )
        return model_response(body, exclude_unset=True)

    return await recommender.score(work)


@router.get(
    "/{user_id}/predictions",
    summary="Predict a user's ratings of some items",
    description="The expected rating and the probability of each rating level, from "
    "the user's current ratings. Items the model does not know are listed in "
    "`unknown_items` (all of them when no model has been trained yet).",
    dependencies=[Depends(require_read_key)],
    response_model=Predictions,
    responses=problem_responses(422, 503),
)
async def get_predictions(
    user_id: UserIdPath,
    recommender: RecommenderDep,
    settings: SettingsDep,
    item_id: Annotated[
        list[ItemIdQuery],
        Query(min_length=1, max_length=MAX_N, description="Items to predict (repeat it)."),
    ],
) -> Response:
    """Predicted ratings and distributions for the items asked for."""
    loaded = recommender.holder.current  # one reference for the request: swaps cannot tear it
    levels = [float(v) for v in settings.rating_scale.values]

    def work() -> Response:
        # as for recommendations: a connection and one hop to the scoring threads
        with recommender.read_engine.connect() as connection:
            result = recommend_service.predict(connection, loaded, user_id, item_id, levels=levels)
        expected = result.expected.tolist()
        distribution = result.distribution.tolist()
        body = Predictions(
            user_id=user_id,
            model_version=result.model_version,
            levels=list(result.levels),
            items=[
                ItemPrediction(
                    item_id=item, predicted_rating=expected[i], distribution=distribution[i]
                )
                for i, item in enumerate(result.item_ids)
            ],
            unknown_items=result.unknown_items,
        )
        return model_response(body)

    return await recommender.score(work)
