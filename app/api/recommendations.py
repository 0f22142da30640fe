"""``POST /recommendations``: recommendations for ratings passed in the request.

For a visitor who has rated a few items in a page (the dashboard's "Try it") and is
not (yet) a user of the store: the ratings are folded in exactly as a stored user's
would be, and nothing is written.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from app.api.deps import RecommenderDep, SettingsDep, model_response, require_json
from app.api.errors import field_error, problem_responses, validation_problem
from app.domain import InvalidRatingError, validate_rating
from app.schemas.recommendations import RatingsRecommendationRequest, RatingsRecommendations
from app.services import recommend as recommend_service

router = APIRouter(tags=["users"])


@router.post(
    "/recommendations",
    summary="Recommend items for ratings given in the request",
    description="Folds the ratings of the body into the active model, as "
    "`GET /users/{id}/recommendations` does with a stored user's, and ranks the items "
    "not rated. Nothing is stored. Strategy `popular` when the model knows none of the "
    "rated items or no model has been trained yet. An item given twice counts with its "
    "last rating; a value off the rating scale is a 422.",
    response_model=RatingsRecommendations,
    dependencies=[Depends(require_json)],
    responses=problem_responses(413, 415, 422, 503),
)
async def recommend_for_ratings(
    body: RatingsRecommendationRequest,
    recommender: RecommenderDep,
    settings: SettingsDep,
) -> Response:
    """Top-``n`` items for the ratings given."""
    ratings: dict[str, float] = {}
    errors = []
    for position, given in enumerate(body.ratings):
        loc: list[str | int] = ["body", "ratings", position]
        try:
            ratings[given.item_id] = validate_rating(given.rating, settings.rating_scale)
        except InvalidRatingError as exc:
            errors.append(field_error([*loc, "rating"], str(exc), "rating_scale"))
    if errors:
        raise validation_problem(f"{len(errors)} of the ratings are invalid", errors[:20])
    loaded = recommender.holder.current

    def work() -> Response:
        with recommender.read_engine.connect() as connection:
            result = recommend_service.recommend_from_ratings(
                connection,
                loaded,
                recommender.catalog,
                ratings,
                n=body.n,
                offset=body.offset,
                genre=body.genre,
                exclude=body.exclude,
                explain=body.explain,
            )
        recommender.metrics.recommendations.labels(strategy=result.strategy).inc()
        answer = RatingsRecommendations(
            strategy=result.strategy,
            model_version=result.model_version,
            offset=body.offset,
            n=body.n,
            items=result.items,
        )
        return model_response(answer, exclude_unset=True)

    return await recommender.score(work)
