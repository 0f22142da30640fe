"""``POST /ratings`` and ``POST /ratings/batch``: store ratings (upserts)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response, status

from app.api.deps import CatalogDep, SessionDep, SettingsDep, model_response, require_json
from app.api.errors import (
    TYPE_UNKNOWN_ITEM,
    ProblemError,
    field_error,
    problem_responses,
    validation_problem,
)
from app.api.security import require_write_key
from app.schemas.problems import ValidationProblem
from app.schemas.ratings import RatingBatch, RatingBatchResult, RatingCreate, RatingOut
from app.services import ratings as ratings_service
from app.services.ratings import RatingIn, RatingsRejected

router = APIRouter(tags=["ratings"], dependencies=[Depends(require_write_key)])


def rejection(exc: RatingsRejected, *, single: bool) -> ProblemError:
    """The problem answered for rejected ratings: 404 when the only fault is unknown
    items (a request valid by the schema, about things that do not exist), else 422."""
    if single and exc.unknown_items_only:
        return ProblemError(404, str(exc), title="Unknown item", type=TYPE_UNKNOWN_ITEM)
    errors = [field_error(["body", *p.loc], p.msg, p.type) for p in exc.problems]
    if exc.unknown_items_only:
        return ProblemError(
            404,
            f"{exc.total} of the ratings name unknown items; nothing was written",
            title="Unknown item",
            type=TYPE_UNKNOWN_ITEM,
            errors=errors,
        )
    if exc.total > len(exc.problems):
        detail = f"{exc.total} entries are invalid (the first {len(exc.problems)} are listed)"
    elif single:
        detail = str(exc)
    else:
        detail = f"{exc.total} of the ratings are invalid; nothing was written"
    return validation_problem(detail, errors)


@router.post(
    "/ratings",
    summary="Store a rating (insert or replace)",
    description="Stores the user's rating of an item, replacing an earlier one. Users "
    "need no registration; the item must exist unless RBMREC_AUTO_CREATE_ITEMS is set. "
    "The rating counts in the user's recommendations at once.",
    status_code=status.HTTP_201_CREATED,
    response_model=RatingOut,
    dependencies=[Depends(require_json)],
    responses={
        200: {"model": RatingOut, "description": "Replaced the user's earlier rating."},
        201: {"description": "Created a new rating."},
        **problem_responses(401, 403, 404, 413, 415, 422, 503),
    },
)
def post_rating(
    body: RatingCreate,
    session: SessionDep,
    settings: SettingsDep,
    catalog: CatalogDep,
) -> Response:
    """Upsert one rating: 201 when created, 200 when it replaced an earlier one."""
    entry = RatingIn(body.user_id, body.item_id, body.rating, body.rated_at)
    try:
        rating, created = ratings_service.write_rating(
            session,
            entry,
            scale=settings.rating_scale,
            auto_create_items=settings.auto_create_items,
        )
    except RatingsRejected as exc:
        raise rejection(exc, single=True) from None
    # Commit here, in this thread: the row stays locked until the commit, and the
    # dependency's own commit would come only after a hop through the event loop.
    session.commit()
    catalog.ratings_changed()
    status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return model_response(RatingOut.model_validate(rating), status_code)


@router.post(
    "/ratings/batch",
    summary="Store up to 10,000 ratings in one transaction",
    description="All or nothing: when any entry is invalid (off-scale value, unknown "
    "item, bad id) nothing is written and the 422 answer lists each wrong entry by "
    "its position (`errors[].loc` = `['body', 'ratings', <index>, <field>]`): 404 "
    "when unknown items are the only fault, else 422.",
    response_model=RatingBatchResult,
    dependencies=[Depends(require_json)],
    responses={
        404: {
            "model": ValidationProblem,
            "description": "Unknown items (and nothing else wrong): `errors` lists them.",
        },
        **problem_responses(401, 403, 413, 415, 422, 503),
    },
)
def post_ratings_batch(
    body: RatingBatch,
    session: SessionDep,
    settings: SettingsDep,
    catalog: CatalogDep,
) -> Response:
    """Upsert many ratings atomically."""
    entries = [RatingIn(r.user_id, r.item_id, r.rating, r.rated_at) for r in body.ratings]
    try:
        written = ratings_service.write_ratings(
            session,
            entries,
            scale=settings.rating_scale,
            auto_create_items=settings.auto_create_items,
        )
    except RatingsRejected as exc:
        raise rejection(exc, single=False) from None
    session.commit()  # as in post_rating: release the row locks at once
    catalog.ratings_changed()
    return model_response(RatingBatchResult(written=written))
