"""Recommendations, predictions and similar items for the API (plain functions).

The hot path of ``GET /users/{id}/recommendations`` is: one indexed query for the
user's current ratings, one fold-in through the loaded model (a gather of the
rated items' weights and one matrix product over all items), boolean masks for
the rated, excluded and genre-filtered items, ``argpartition`` for the top
``offset + n``, and one query for the titles of the items returned. Nothing is
cached per user, so a rating written a moment ago already counts.

Strategy ``popular`` answers when the user has no rating the model knows, or no
model is loaded: the most-rated items, from the model's training counts when a
model is loaded, else from the store (cached in :class:`CatalogCache`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from sqlalchemy.orm import Session

from app.db.items import get_item
from app.db.ratings import user_rating_map
from app.schemas.items import SimilarItem
from app.schemas.recommendations import Explanation, RecommendedItem
from app.services.catalog import CatalogCache, Db
from app.services.model_holder import LoadedModel
from rbm_core import UnknownItemError
from rbm_core.recommender import RBMRecommender

logger = logging.getLogger(__name__)

__all__ = [
    "ItemNotInModelError",
    "NoModelError",
    "PredictionResult",
    "RecommendationResult",
    "predict",
    "recommend",
    "recommend_from_ratings",
    "similar_items",
]

Strategy = Literal["rbm", "popular"]

EXPLANATIONS_PER_ITEM = 3
"""Supporting ratings listed per recommended item with ``explain=true``."""


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
class RecommendationResult:
    """Recommendations for one user and how they were made."""

    strategy: Strategy
    model_version: str | None
    items: list[RecommendedItem]


@dataclass(frozen=True)
class PredictionResult:
    """Predicted ratings of one user."""

    model_version: str | None
    levels: tuple[float, ...]
    item_ids: list[str]
    expected: NDArray[np.floating]
    distribution: NDArray[np.floating]
    unknown_items: list[str]


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
    session: Db,
    loaded: LoadedModel,
    catalog: CatalogCache,
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
        in_genre[[index[i] for i in catalog.genre_items(session, genre) if i in index]] = True
        allowed &= in_genre
    return allowed


def _usable_ratings(loaded: LoadedModel, ratings: dict[str, float]) -> dict[str, float]:
    """The ratings the model can fold in: empty when it knows none of the items.

    Ratings of items the model does not know are left in (it ignores them); values
    off the model's scale are dropped (the store's scale may have changed since).
    """
    index = loaded.item_index
    if not any(item in index for item in ratings):
        return {}
    levels = set(loaded.levels)
    if levels.issuperset(ratings.values()):  # the usual case: no copy
        return ratings
    usable = {item: value for item, value in ratings.items() if value in levels}
    return usable if any(item in index for item in usable) else {}


# -- recommendations -------------------------------------------------------------------
def recommend(
    session: Db,
    loaded: LoadedModel | None,
    catalog: CatalogCache,
    user_id: str,
    *,
    n: int = 10,
    offset: int = 0,
    genre: str | None = None,
    exclude: Sequence[str] = (),
    explain: bool = False,
) -> RecommendationResult:
    """Recommend items to a user from the ratings the store holds now.

    Parameters
    ----------
    session : Session or Connection
        Where to read the user's ratings (and, rarely, catalog facts).
    loaded : LoadedModel or None
        The model to use (taken once from the holder by the caller).
    catalog : CatalogCache
        Popular items (the fallback without a model) and the genre index.
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
    explain : bool
        Add to each item the user's ratings that most support it (see
        :meth:`rbm_core.recommender.RBMRecommender.explain`) and a reason in words.

    Returns
    -------
    RecommendationResult
        Never an item the user rated or excluded.
    """
    ratings = user_rating_map(session, user_id)
    return recommend_from_ratings(
        session,
        loaded,
        catalog,
        ratings,
        n=n,
        offset=offset,
        genre=genre,
        exclude=exclude,
        explain=explain,
    )


def recommend_from_ratings(
    session: Db,
    loaded: LoadedModel | None,
    catalog: CatalogCache,
    ratings: dict[str, float],
    *,
    n: int = 10,
    offset: int = 0,
    genre: str | None = None,
    exclude: Sequence[str] = (),
    explain: bool = False,
) -> RecommendationResult:
    """Recommend items for a set of ratings (of a stored user, or passed in a request).

    Parameters are those of :func:`recommend`, with the ratings (item id -> value)
    in place of the user; ``session`` is only read for catalog facts.
    """
    if loaded is not None:
        known = _usable_ratings(loaded, ratings)
        allowed = _allowed_mask(session, loaded, catalog, ratings, exclude, genre)
        support: list[list[tuple[str, float, float]]] | None = None
        if known:
            # the ranking alone for every item; predicted ratings for the page only,
            # from the same fold-in
            scored = loaded.model.score_items(known, predicted=False)
            score = np.asarray(scored.score).astype(np.float64, copy=False)
            allowed &= np.isfinite(score)
            top = _top(score, allowed, offset, n)
            ids = [str(i) for i in loaded.item_ids[top].tolist()]
            predicted = np.asarray(scored.expected_at(top.astype(np.int64)))
            strategy: Strategy = "rbm"
            if explain:
                support = _support(loaded, known, ids)
        else:
            order = loaded.popular_order[allowed[loaded.popular_order]]
            top = order[offset : offset + n]
            ids = [str(i) for i in loaded.item_ids[top].tolist()]
            score = np.asarray(loaded.model.item_popularity_, dtype=np.float64)
            predicted = loaded.prior_expected[top]
            strategy = "popular"
        rated_ids = [item for reasons in support or [] for item, _, _ in reasons]
        titles = catalog.titles(session, _dedupe([*ids, *rated_ids]))
        items = [
            _recommended(
                item,
                titles,
                float(score[pos]),
                float(predicted[rank]),
                None if not explain else (support[rank] if support is not None else []),
            )
            for rank, (item, pos) in enumerate(zip(ids, top.tolist(), strict=True))
        ]
        return RecommendationResult(strategy, loaded.version.id, items)
    return RecommendationResult(
        "popular",
        None,
        _store_popular(session, catalog, ratings, n=n, offset=offset, genre=genre, exclude=exclude),
    )


def _support(
    loaded: LoadedModel, known: dict[str, float], ids: list[str]
) -> list[list[tuple[str, float, float]]]:
    """The ratings that most support each item, when the served model can say."""
    if not isinstance(loaded.model, RBMRecommender):
        return [[] for _ in ids]  # versions trained before explanations existed
    return loaded.model.explain(known, ids, n_reasons=EXPLANATIONS_PER_ITEM)


def _recommended(
    item: str,
    titles: Mapping[str, str],
    score: float,
    predicted: float,
    support: list[tuple[str, float, float]] | None,
) -> RecommendedItem:
    if support is None:
        return RecommendedItem(
            item_id=item, title=titles.get(item), score=score, predicted_rating=predicted
        )
    explanations = [
        Explanation(item_id=rated, title=titles.get(rated), rating=value, contribution=weight)
        for rated, value, weight in support
    ]
    reason = None
    if explanations:
        strongest = explanations[0]
        reason = f"because you rated {strongest.title or strongest.item_id} {strongest.rating:g}"
    return RecommendedItem(
        item_id=item,
        title=titles.get(item),
        score=score,
        predicted_rating=predicted,
        explanations=explanations,
        reason=reason,
    )


def _store_popular(
    session: Db,
    catalog: CatalogCache,
    rated: Iterable[str],
    *,
    n: int,
    offset: int,
    genre: str | None,
    exclude: Sequence[str],
) -> list[RecommendedItem]:
    popular = catalog.popular(session)
    blocked = {*rated, *exclude}
    in_genre = catalog.genre_items(session, genre) if genre is not None else None
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
    titles = catalog.titles(session, ids)
    return [
        RecommendedItem(
            item_id=popular.item_ids[pos],
            title=titles.get(popular.item_ids[pos]),
            score=float(popular.counts[pos]),
            predicted_rating=float(popular.means[pos]),
        )
        for pos in picked
    ]


# -- predictions and similar items -------------------------------------------------
def predict(
    session: Db,
    loaded: LoadedModel | None,
    user_id: str,
    item_ids: Sequence[str],
    *,
    levels: Sequence[float],
) -> PredictionResult:
    """Predict a user's ratings of some items from the ratings the store holds now.

    Parameters
    ----------
    session : Session or Connection
        Where to read the user's ratings.
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
    ratings = user_rating_map(session, user_id)
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
    session: Session, loaded: LoadedModel | None, catalog: CatalogCache, item_id: str, n: int
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
    except UnknownItemError:
        in_store = get_item(session, item_id) is not None
        raise ItemNotInModelError(item_id, in_store) from None
    titles = catalog.titles(session, [item for item, _ in pairs])
    return [
        SimilarItem(item_id=item, title=titles.get(item), similarity=float(sim))
        for item, sim in pairs
    ]
