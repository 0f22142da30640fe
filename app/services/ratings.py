"""Writing and reading ratings for the API: scale checks, unknown items, batches.

Plain functions over a session that never commit (the caller owns the
transaction), on top of :mod:`app.db.ratings` and :mod:`app.db.items`. Validation problems are
reported as :class:`RatingsRejected`, which lists every wrong entry with where it
is (``("ratings", 3, "rating")``) and why, so a rejected batch says which entries
are wrong; nothing is written then.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from sqlalchemy.orm import Session

from app.db import ratings as rating_store
from app.db.items import existing_item_ids, insert_missing_items
from app.db.ratings import RatingIn
from app.db.tables import Rating
from app.domain import InvalidRatingError, ItemsNotInStoreError, validate_rating
from rbm_core.scale import RatingScale

__all__ = [
    "FieldProblem",
    "RatingIn",
    "RatingsRejected",
    "delete_rating",
    "list_ratings",
    "write_rating",
    "write_ratings",
]

MAX_REPORTED: Final = 100
"""Most wrong entries listed in one rejection (the count of all is in the message)."""


@dataclass(frozen=True)
class FieldProblem:
    """One wrong field: where (a path into the request body), what, and its kind."""

    loc: tuple[str | int, ...]
    msg: str
    type: str


class RatingsRejected(ValueError):
    """Some ratings are invalid; nothing was written.

    Attributes
    ----------
    problems : list of FieldProblem
        The wrong entries (at most :data:`MAX_REPORTED`).
    total : int
        How many entries are wrong in all.
    unknown_items_only : bool
        Every problem is an unknown item (the API then answers 404).
    """

    def __init__(self, problems: list[FieldProblem], total: int) -> None:
        self.problems = problems
        self.total = total
        self.unknown_items_only = all(p.type == "unknown_item" for p in problems)
        first = problems[0].msg if problems else "invalid ratings"
        more = f" ({total} wrong entries)" if total > 1 else ""
        super().__init__(f"{first}{more}")


def _scale_problem(
    value: float, scale: RatingScale, loc: tuple[str | int, ...]
) -> FieldProblem | None:
    try:
        validate_rating(value, scale)
    except InvalidRatingError as exc:
        return FieldProblem(loc, str(exc), "rating_scale")
    return None


def write_rating(
    session: Session,
    entry: RatingIn,
    *,
    scale: RatingScale,
    auto_create_items: bool = False,
) -> tuple[Rating, bool]:
    """Insert or replace one rating.

    Parameters
    ----------
    session : Session
        The unit of work; not committed here.
    entry : RatingIn
        The rating (ids already checked by the API schema).
    scale : RatingScale
        The allowed values.
    auto_create_items : bool
        Create an unknown item instead of refusing the rating.

    Returns
    -------
    tuple of (Rating, bool)
        The stored rating and whether it was created (``False``: replaced).

    Raises
    ------
    RatingsRejected
        Off-scale value, or an unknown item (``unknown_items_only``).
    """
    problem = _scale_problem(entry.rating, scale, ("rating",))
    if problem is not None:
        raise RatingsRejected([problem], 1)
    if auto_create_items:
        insert_missing_items(session, [entry.item_id])
    try:
        # No existence check first: the foreign key refuses an unknown item in the
        # same round trip (the caller rolls the failed transaction back).
        return rating_store.upsert_rating(
            session, entry.user_id, entry.item_id, entry.rating, entry.rated_at, scale=scale
        )
    except ItemsNotInStoreError:
        raise RatingsRejected(
            [FieldProblem(("item_id",), f"unknown item id {entry.item_id!r}", "unknown_item")], 1
        ) from None


def write_ratings(
    session: Session,
    entries: Sequence[RatingIn],
    *,
    scale: RatingScale,
    auto_create_items: bool = False,
) -> int:
    """Write a batch of ratings, all or nothing.

    Entries are written in (user, item) order, so concurrent batches take their row
    locks in the same order and cannot deadlock; a pair repeated in the batch keeps
    its last entry.

    Parameters
    ----------
    session : Session
        The unit of work; not committed here.
    entries : sequence of RatingIn
        The ratings.
    scale : RatingScale
        The allowed values.
    auto_create_items : bool
        Create unknown items instead of refusing the batch.

    Returns
    -------
    int
        Distinct (user, item) pairs written.

    Raises
    ------
    RatingsRejected
        Listing every off-scale rating and every entry naming an unknown item.
    """
    problems: list[FieldProblem] = []
    total = 0
    for position, entry in enumerate(entries):
        problem = _scale_problem(entry.rating, scale, ("ratings", position, "rating"))
        if problem is not None:
            total += 1
            if len(problems) < MAX_REPORTED:
                problems.append(problem)
    item_ids = [entry.item_id for entry in entries]
    if auto_create_items and not total:
        insert_missing_items(session, item_ids)
    elif not auto_create_items:
        known = existing_item_ids(session, item_ids)
        for position, entry in enumerate(entries):
            if entry.item_id not in known:
                total += 1
                if len(problems) < MAX_REPORTED:
                    problems.append(
                        FieldProblem(
                            ("ratings", position, "item_id"),
                            f"unknown item id {entry.item_id!r}",
                            "unknown_item",
                        )
                    )
    if total:
        problems.sort(key=lambda p: (int(p.loc[1]), str(p.loc[2])))
        raise RatingsRejected(problems, total)
    # Stable sort: a repeated pair keeps its entries' order, so the last one wins.
    ordered = sorted(entries, key=lambda e: (e.user_id, e.item_id))
    try:
        return rating_store.upsert_ratings(
            session,
            ordered,
            scale=scale,
        )
    except ItemsNotInStoreError as exc:  # deleted between the check and the write
        raise RatingsRejected(
            [FieldProblem(("ratings",), str(exc), "unknown_item")], len(exc.item_ids)
        ) from None


def list_ratings(
    session: Session, user_id: str, *, offset: int, limit: int
) -> tuple[list[Rating], int]:
    """One page of a user's ratings (newest first) and the user's total."""
    page = rating_store.get_user_ratings(session, user_id, offset=offset, limit=limit)
    if not page and offset == 0:
        return [], 0
    return page, rating_store.count_user_ratings(session, user_id)


def delete_rating(session: Session, user_id: str, item_id: str) -> bool:
    """Delete one rating; ``True`` if it existed."""
    return rating_store.delete_rating(session, user_id, item_id)
