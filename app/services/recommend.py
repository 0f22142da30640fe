"""Recommendations, predictions and similar items for the API (plain functions).

The hot path of ``GET /users/{id}/recommendations`` is: one indexed query for the
user's current ratings, one fold-in through the loaded model (a gather of the
rated items' weights and one matrix product over all items), boolean masks for
the rated, excluded and genre-filtered items, ``argpartition`` for the top
``offset + n``, and one query for the titles of the items returned. Nothing is
cached per user, so a rating written a moment ago already counts.

Strategy ``popular`` answers when the user has no rating the model knows, or no
model is loaded: the most-rated items, from the model's training counts when a
model is loaded, else from the store (cached in :class:`StorePopularity`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Select, func, literal, select
from sqlalchemy.orm import Session

from app.db import repository
from app.db.models import Item
from app.services.model_holder import LoadedModel
from rbm_core.model import UnknownItemError as ModelUnknownItemError

logger = logging.getLogger(__name__)

__all__ = [
    "ItemNotInModelError",
    "NoModelError",
    "PopularList",
    "PredictionResult",
    "Recommendation",
    "RecommendationResult",
    "SimilarItem",
    "StorePopularity",
    "item_ids_with_genre",
    "predict",
    "recommend",
    "similar_items",
    "titles_of",
]

Strategy = Literal["rbm", "popular"]

POPULARITY_TTL_SECONDS: Final = 30.0
"""How long the store's popularity list is reused when this process wrote nothing."""


class NoModelError(LookupError):
    """No model is loaded (none trained yet, or the active one failed to load)."""


class ItemNotInModelError(LookupError):
    """The item exists in the store but the loaded model was trained without it."""

    def __init__(self, item_id: str, in_store: bool) -> None:
        self.item_id = item_id
        self.in_store = in_store
        if in_store:
            message = (
                f"item {item_id!r} is not known to the model (it had no ratings when the "
                "model was trained)"
            )
        else:
            message = f"unknown item id {item_id!r}"
        super().__init__(message)


@dataclass(frozen=True)
class Recommendation:
    """One recommended item."""

    item_id: str
    title: str | None
    score: float
    predicted_rating: float | None


@dataclass(frozen=True)
class RecommendationResult:
    """Recommendations for one user and how they were made."""

    strategy: Strategy
    model_version: str | None
    items: list[Recommendation]


@dataclass(frozen=True)
class PredictionResult:
    """Predicted ratings of one user."""

    model_version: str | None
    levels: tuple[float, ...]
    item_ids: list[str]
    expected: NDArray[np.floating]
    distribution: NDArray[np.floating]
    unknown_items: list[str]


@dataclass(frozen=True)
class SimilarItem:
    """An item similar to another one."""

    item_id: str
    title: str | None
    similarity: float


# -- store popularity ----------------------------------------------------------------------
@dataclass(frozen=True)
class PopularList:
    """Items of the store by number of ratings, most rated first."""

    item_ids: list[str]
    counts: list[int]
    means: list[float]
    computed_at: float


class StorePopularity:
    """The store's most-rated items, cached for the ``popular`` strategy without a model.

    The list is recomputed (one ``GROUP BY`` over the ratings) when it is older than
    ``ttl_seconds``, or at the next use after this process wrote a rating
    (:meth:`mark_dirty`). Only one thread recomputes; the others keep using the
    previous list meanwhile.

    The list is read through the caller's session: on SQLite a second connection
    would wait for the write lock that the request's own transaction holds.

    Parameters
    ----------
    ttl_seconds : float
        Longest reuse of a list.
    """

    def __init__(self, ttl_seconds: float = POPULARITY_TTL_SECONDS) -> None:
        self._ttl = ttl_seconds
        self._list: PopularList | None = None
        self._dirty = True
        self._lock = threading.Lock()

    def mark_dirty(self) -> None:
        """Ratings changed: recompute at the next use."""
        self._dirty = True

    def get(self, session: Session) -> PopularList:
        """The current list, recomputed (through ``session``) if stale."""
        current = self._list
        fresh = (
            current is not None
            and not self._dirty
            and time.monotonic() - current.computed_at < self._ttl
        )
        if fresh:
            assert current is not None
            return current
        if current is not None:
            if not self._lock.acquire(blocking=False):
                return current  # another thread is recomputing: serve the previous list
        else:
            self._lock.acquire()
            if self._list is not None:  # computed while this thread waited
                self._lock.release()
                return self._list
        try:
            self._dirty = False
            try:
                rows = repository.item_rating_counts(session)
            except BaseException:
                self._dirty = True
                raise
            self._list = PopularList(
                item_ids=[row[0] for row in rows],
                counts=[row[1] for row in rows],
                means=[row[2] for row in rows],
                computed_at=time.monotonic(),
            )
            return self._list
        finally:
            self._lock.release()


# -- helpers ---------------------------------------------------------------------------
def titles_of(session: Session, item_ids: Sequence[str]) -> dict[str, str]:
    """Titles of some items (one query); items not in the store are absent."""
    if not item_ids:
        return {}
    stmt = select(Item.id, Item.title).where(Item.id.in_(list(item_ids)))
    return {item_id: title for item_id, title in session.execute(stmt)}


def _genre_query(session: Session, genre: str) -> Select[tuple[str]]:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        elements = func.jsonb_array_elements_text(Item.genres).table_valued("value")
    else:
        elements = func.json_each(Item.genres).table_valued("value")
    match = (
        select(literal(1))
        .select_from(elements)
        .where(func.lower(elements.c.value) == genre.lower())
        .exists()
    )
    return select(Item.id).where(match)


def item_ids_with_genre(session: Session, genre: str) -> set[str]:
    """Ids of the items listing ``genre`` (case-insensitive, ASCII on SQLite)."""
    return set(session.scalars(_genre_query(session, genre)))


def _dedupe(ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def _top(
    score: NDArray[np.float64], allowed: NDArray[np.bool_], offset: int, n: int
) -> NDArray[np.intp]:
    """Positions of the best ``allowed`` scores, ranks ``offset`` to ``offset + n``.

    Ties are broken by position, so the order is deterministic.
    """
    candidates = np.flatnonzero(allowed)
    k = offset + n
    if k < len(candidates):
        # argpartition: O(M) selection of the k best, then only those k are sorted
        candidates = candidates[np.argpartition(-score[candidates], k - 1)[:k]]
    order = np.lexsort((candidates, -score[candidates]))
    return candidates[order][offset:k]


def _allowed_mask(
    session: Session,
    loaded: LoadedModel,
    rated: Iterable[str],
    exclude: Iterable[str],
    genre: str | None,
) -> NDArray[np.bool_]:
    index = loaded.item_index
    allowed = np.ones(len(loaded.item_ids), dtype=bool)
    blocked = [index[i] for i in (*rated, *exclude) if i in index]
    allowed[blocked] = False
    if genre is not None:
        in_genre = np.zeros(len(loaded.item_ids), dtype=bool)
        in_genre[[index[i] for i in item_ids_with_genre(session, genre) if i in index]] = True
        allowed &= in_genre
    return allowed


# -- recommendations -------------------------------------------------------------------
def recommend(
    session: Session,
    loaded: LoadedModel | None,
    popularity: StorePopularity,
    user_id: str,
    *,
    n: int = 10,
    offset: int = 0,
    genre: str | None = None,
    exclude: Sequence[str] = (),
) -> RecommendationResult:
    """Recommend items to a user from the ratings the store holds now.

    Parameters
    ----------
    session : Session
        The request's unit of work.
    loaded : LoadedModel or None
        The model to use (taken once from the holder by the caller).
    popularity : StorePopularity
        Fallback ranking when no model is loaded.
    user_id : str
        The user; an unknown user simply has no ratings.
    n : int
        Page size.
    offset : int
        Ranks to skip (paging).
    genre : str, optional
        Only items listing this genre (case-insensitive).
    exclude : sequence of str
        Item ids never to return.

    Returns
    -------
    RecommendationResult
        Never an item the user rated or excluded.
    """
    ratings = repository.user_rating_map(session, user_id)
    if loaded is not None:
        levels = set(loaded.levels)
        known = {
            item: value
            for item, value in ratings.items()
            if item in loaded.item_index and value in levels
        }
        allowed = _allowed_mask(session, loaded, ratings, exclude, genre)
        if known:
            scores = loaded.model.score_items(known)
            score = np.asarray(scores.score, dtype=np.float64)
            allowed &= np.isfinite(score)
            top = _top(score, allowed, offset, n)
            expected = scores.expected
            strategy: Strategy = "rbm"
        else:
            order = loaded.popular_order[allowed[loaded.popular_order]]
            top = order[offset : offset + n]
            score = np.asarray(loaded.model.item_popularity_, dtype=np.float64)
            expected = loaded.prior_expected
            strategy = "popular"
        ids = [str(i) for i in loaded.item_ids[top].tolist()]
        titles = titles_of(session, ids)
        items = [
            Recommendation(item, titles.get(item), float(score[pos]), float(expected[pos]))
            for item, pos in zip(ids, top.tolist(), strict=True)
        ]
        return RecommendationResult(strategy, loaded.version.id, items)
    return RecommendationResult(
        "popular",
        None,
        _store_popular(
            session, popularity, ratings, n=n, offset=offset, genre=genre, exclude=exclude
        ),
    )


def _store_popular(
    session: Session,
    popularity: StorePopularity,
    rated: Iterable[str],
    *,
    n: int,
    offset: int,
    genre: str | None,
    exclude: Sequence[str],
) -> list[Recommendation]:
    popular = popularity.get(session)
    blocked = {*rated, *exclude}
    in_genre = item_ids_with_genre(session, genre) if genre is not None else None
    picked: list[int] = []
    skipped = 0
    for pos, item in enumerate(popular.item_ids):
        if item in blocked or (in_genre is not None and item not in in_genre):
            continue
        if skipped < offset:
            skipped += 1
            continue
        picked.append(pos)
        if len(picked) == n:
            break
    ids = [popular.item_ids[pos] for pos in picked]
    titles = titles_of(session, ids)
    return [
        Recommendation(
            popular.item_ids[pos],
            titles.get(popular.item_ids[pos]),
            float(popular.counts[pos]),
            float(popular.means[pos]),
        )
        for pos in picked
    ]


# -- predictions and similar items -------------------------------------------------
def predict(
    session: Session,
    loaded: LoadedModel | None,
    user_id: str,
    item_ids: Sequence[str],
    *,
    levels: Sequence[float],
) -> PredictionResult:
    """Predict a user's ratings of some items from the ratings the store holds now.

    Parameters
    ----------
    session : Session
        The request's unit of work.
    loaded : LoadedModel or None
        The model; without one, every item is reported unknown.
    user_id : str
        The user.
    item_ids : sequence of str
        The items (duplicates are answered once).
    levels : sequence of float
        Rating levels reported when no model is loaded (the configured scale).

    Returns
    -------
    PredictionResult
    """
    wanted = _dedupe(item_ids)
    if loaded is None:
        k = len(levels)
        return PredictionResult(
            None, tuple(levels), [], np.empty(0), np.empty((0, k)), unknown_items=wanted
        )
    ratings = repository.user_rating_map(session, user_id)
    allowed = set(loaded.levels)
    known = {
        item: value
        for item, value in ratings.items()
        if item in loaded.item_index and value in allowed
    }
    prediction = loaded.model.predict(known, item_ids=wanted)
    return PredictionResult(
        loaded.version.id,
        loaded.levels,
        prediction.item_ids,
        prediction.expected,
        prediction.distribution,
        prediction.unknown_items,
    )


def similar_items(
    session: Session, loaded: LoadedModel | None, item_id: str, n: int
) -> list[SimilarItem]:
    """The ``n`` items most similar to ``item_id`` in the model's weights.

    Raises
    ------
    NoModelError
        No model is loaded.
    ItemNotInModelError
        The model does not know the item (``in_store`` says whether it exists).
    """
    if loaded is None:
        raise NoModelError("no model is loaded yet: train one with `rbmrec train`")
    try:
        pairs = loaded.model.similar_items(item_id, n)
    except ModelUnknownItemError:
        in_store = repository.get_item(session, item_id) is not None
        raise ItemNotInModelError(item_id, in_store) from None
    titles = titles_of(session, [item for item, _ in pairs])
    return [SimilarItem(item, titles.get(item), float(sim)) for item, sim in pairs]
