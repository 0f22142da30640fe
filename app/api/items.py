"""The item catalog (``/items``) and similar items."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from app.api.deps import (
    CatalogDep,
    ItemIdPath,
    ModelHolderDep,
    ReadSessionDep,
    SessionDep,
    model_response,
    require_json,
)
from app.api.errors import TYPE_NO_MODEL, TYPE_UNKNOWN_ITEM, ProblemError, problem_responses
from app.api.security import require_write_key
from app.db.items import ItemOrder
from app.schemas.fields import MAX_N, NO_NUL_PATTERN
from app.schemas.items import ItemOut, ItemPage, ItemUpsert, SimilarItems
from app.services import items as items_service
from app.services import recommend as recommend_service
from app.services.recommend import ItemNotInModelError, NoModelError

router = APIRouter(prefix="/items", tags=["items"])


def _unknown_item(item_id: str) -> ProblemError:
    return ProblemError(
        404, f"unknown item id {item_id!r}", title="Unknown item", type=TYPE_UNKNOWN_ITEM
    )


@router.put(
    "/{item_id}",
    summary="Create or replace an item",
    response_model=ItemOut,
    status_code=status.HTTP_200_OK,
    dependencies=[Depends(require_write_key), Depends(require_json)],
    responses={
        201: {"model": ItemOut, "description": "Created the item."},
        200: {"description": "Replaced the item's metadata."},
        **problem_responses(401, 403, 413, 415, 422, 503),
    },
)
def put_item(
    item_id: ItemIdPath,
    body: ItemUpsert,
    session: SessionDep,
    catalog: CatalogDep,
) -> Response:
    """Store an item's title, genres and attributes: 201 when created, 200 when replaced."""
    item, created = items_service.save_item(
        session, item_id, title=body.title, genres=body.genres, attributes=body.attributes
    )
    catalog.items_changed()
    status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return model_response(ItemOut.model_validate(item), status_code)


@router.get(
    "/{item_id}",
    summary="One item",
    response_model=ItemOut,
    responses=problem_responses(404, 422, 503),
)
def get_item(item_id: ItemIdPath, session: ReadSessionDep) -> Response:
    """The item, or 404."""
    item = items_service.find_item(session, item_id)
    if item is None:
        raise _unknown_item(item_id)
    return model_response(ItemOut.model_validate(item))


@router.get(
    "",
    summary="Search the catalog",
    description="A page of the items whose title contains `q` (case-insensitive) and "
    "that list `genre`, with how many match. Ordered by `sort`: `id` (numeric ids in "
    "numeric order: 1, 2, ..., 10), `title`, or `popularity` (most rated first); ties "
    "by id. A genre no item lists is a 404 naming the catalog's genres.",
    response_model=ItemPage,
    responses=problem_responses(404, 422, 503),
)
def list_items(
    session: ReadSessionDep,
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="Items to skip.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 100,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            pattern=NO_NUL_PATTERN,
            description="Text the title contains (case-insensitive).",
            examples=["star wars"],
        ),
    ] = None,
    genre: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=64,
            pattern=NO_NUL_PATTERN,
            description="Only items of this genre (case-insensitive).",
            examples=["Comedy"],
        ),
    ] = None,
    sort: Annotated[ItemOrder, Query(description="The order of the page.")] = "id",
) -> Response:
    """A page of matching items and how many match."""
    try:
        items, total = items_service.item_page(
            session, offset=offset, limit=limit, q=q, genre=genre, order=sort
        )
    except items_service.UnknownGenreError as exc:
        raise ProblemError(404, str(exc), title="Unknown genre") from None
    page = ItemPage(
        total=total,
        offset=offset,
        limit=limit,
        items=[ItemOut.model_validate(i) for i in items],
    )
    return model_response(page)


@router.get(
    "/{item_id}/similar",
    summary="Items similar to an item",
    description="The items whose learned model weights are closest (cosine) to the "
    "item's. 404 when the item does not exist, the model was trained without it, or "
    "no model has been trained yet.",
    response_model=SimilarItems,
    responses=problem_responses(404, 422, 503),
)
def get_similar_items(
    item_id: ItemIdPath,
    session: ReadSessionDep,
    holder: ModelHolderDep,
    catalog: CatalogDep,
    n: Annotated[int, Query(ge=1, le=MAX_N, description="How many items.")] = 10,
) -> Response:
    """Nearest items in the active model."""
    loaded = holder.current
    try:
        similar = recommend_service.similar_items(session, loaded, catalog, item_id, n)
    except NoModelError as exc:
        raise ProblemError(404, str(exc), title="No model", type=TYPE_NO_MODEL) from None
    except ItemNotInModelError as exc:
        if not exc.in_store:
            raise _unknown_item(item_id) from None
        raise ProblemError(
            404, str(exc), title="Item not in the model", type=TYPE_NO_MODEL
        ) from None
    assert loaded is not None
    body = SimilarItems(
        item_id=item_id,
        model_version=loaded.version.id,
        items=similar,
    )
    return model_response(body)
