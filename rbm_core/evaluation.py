"""The offline evaluation harness: models side by side on train/test splits.

Protocol (one split = one training and one test rating set):

- Every model is fitted on the training ratings only. Its fit time is measured.
- **Rating accuracy** (RMSE, MAE) covers every test rating. Each test user is folded
  in from that user's training ratings and the model predicts the user's test items.
  A user without training ratings is folded in from no ratings at all, which every
  model answers with its cold-start prediction (the RBM's item priors, ``mu + b_i``
  for the bias baseline). An item missing from the training catalog cannot be scored
  by any model: it gets the *fallback*, the mean training rating. The counts of both
  cases are reported (``n_test_new_user``, ``n_test_new_item``).
- **Top-N** (Precision, Recall, NDCG, MAP and catalog coverage at ``k``): for each test
  user, every item of the training catalog the user did not rate in the training data
  is ranked by the model's ranking score. Relevant items are the user's test items
  rated ``>= relevance_threshold`` (4.0 by default); relevant test items missing from
  the training catalog count as misses. Users with no relevant item are skipped
  (``n_ranked_users`` says how many were kept). Scoring is batched and ranking uses
  ``argpartition``; there is no Python loop over ratings.
- Beside accuracy, each ranking reports how much of the catalog the top-k lists cover
  (``coverage_at_k``), how novel their items are (``novelty_at_k``: mean
  self-information ``-log2(n_i / n_users)`` of the recommended items, in bits) and how
  personal they are (``personalisation_at_k``: mean pairwise Jaccard distance between
  users' lists).
- A model takes part in what it supports: ``predict(user_ratings, item_ids)`` gives
  the rating metrics, ``score_batch(users)`` the top-N metrics; the other figures are
  ``None`` (for instance the popularity baseline's RMSE).
- The served model (``rbm``, an :class:`~rbm_core.recommender.RBMRecommender`) is made
  of parts; ``user_rbm``, ``item_rbm`` and ``ranker`` report those parts alone, exactly
  as fitted inside it (no fit time of their own).

:func:`evaluate` runs the protocol on several splits (the ML-100K folds ``u1`` ..
``u5`` from :func:`rbm_core.datasets.load_ml100k_folds`, or one pair from
:func:`rbm_core.datasets.load_train_test`) and averages every figure over the folds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import scipy.sparse as sp
from numpy.typing import NDArray

from rbm_core import metrics
from rbm_core.data import RatingDataError, RatingMatrix, UserRatings, find_sorted
from rbm_core.datasets import RatingSplit, infer_scale
from rbm_core.lineup import ModelFactory, PartOf
from rbm_core.scale import RatingScale, RatingScaleError

__all__ = [
    "DEFAULT_K",
    "DEFAULT_RELEVANCE_THRESHOLD",
    "EvaluationError",
    "EvaluationReport",
    "evaluate",
    "evaluate_split",
    "metric_names",
    "predict_test_ratings",
]

logger = logging.getLogger(__name__)

DEFAULT_K = 10
DEFAULT_RELEVANCE_THRESHOLD = 4.0
# users scored at once, and at most this many (user, item) scores in memory at a time
_USER_BATCH = 1024
_SCORE_CELLS = 2**24


class EvaluationError(ValueError):
    """The evaluation cannot run: bad input data, or a model failed to fit."""


@runtime_checkable
class RatingPredictor(Protocol):
    """A model that predicts ratings for one folded-in user."""

    item_ids_: NDArray[np.str_]

    def predict(self, user_ratings: UserRatings, item_ids: Sequence[str] | None = None) -> Any:
        """Return an object with ``item_ids`` and ``expected`` for the known items asked for."""


@runtime_checkable
class BatchScorer(Protocol):
    """A model that scores every catalog item for many users at once."""

    item_ids_: NDArray[np.str_]

    def score_batch(self, users: Sequence[UserRatings]) -> tuple[Any, sp.csr_matrix]:
        """Return scores of shape (n_users, n_items_) and the rated items as a CSR."""


class _Estimator(Protocol):
    item_ids_: NDArray[np.str_]

    def fit(self, train: RatingMatrix) -> Any: ...


# -- one split ----------------------------------------------------------------------------
def metric_names(k: int = DEFAULT_K) -> tuple[str, ...]:
    """The keys of a fold result (besides ``fold``), in report order."""
    return (
        "rmse",
        "mae",
        f"precision_at_{k}",
        f"recall_at_{k}",
        f"ndcg_at_{k}",
        f"map_at_{k}",
        f"coverage_at_{k}",
        f"novelty_at_{k}",
        f"personalisation_at_{k}",
        "fit_seconds",
        "n_train",
        "n_test",
        "n_test_new_user",
        "n_test_new_item",
        "n_ranked_users",
    )


@dataclass(frozen=True)
class _TestSet:
    """Test ratings grouped by user, with each user's training ratings."""

    user_ids: NDArray[np.str_]  # (n_test_users,) distinct, sorted
    user_of: NDArray[np.int64]  # (n_test,) index into user_ids, sorted by user
    items: NDArray[np.str_]  # (n_test,)
    ratings: NDArray[np.float64]  # (n_test,)
    bounds: NDArray[np.int64]  # (n_test_users + 1,) ratings of user u: bounds[u]:bounds[u+1]
    train_ratings: list[dict[str, float]]  # (n_test_users,)
    new_user: NDArray[np.bool_]  # (n_test,)
    new_item: NDArray[np.bool_]  # (n_test,)
    row: NDArray[np.intp]  # (n_test,) the row of the test frame each rating came from


def _test_set(train: RatingMatrix, test: pd.DataFrame) -> _TestSet:
    users = test["user_id"].astype(str).to_numpy().astype(np.str_)
    items = test["item_id"].astype(str).to_numpy().astype(np.str_)
    ratings = test["rating"].to_numpy(dtype=np.float64)
    order = np.argsort(users, kind="stable")
    users, items, ratings = users[order], items[order], ratings[order]
    user_ids, first, user_of = np.unique(users, return_index=True, return_inverse=True)
    bounds = np.append(first, len(users)).astype(np.int64)
    _, in_train = find_sorted(train.user_ids, user_ids)
    train_ratings = [
        train.user_ratings(str(u)) if known else {}
        for u, known in zip(user_ids.tolist(), in_train.tolist(), strict=True)
    ]
    return _TestSet(
        user_ids=user_ids,
        user_of=user_of.astype(np.int64),
        items=items,
        ratings=ratings,
        bounds=bounds,
        train_ratings=train_ratings,
        new_user=~in_train[user_of],
        new_item=~np.isin(items, train.item_ids),
        row=order,
    )


def _known_mask(model: Any, items: NDArray[np.str_]) -> NDArray[np.bool_]:
    return np.isin(items, np.asarray(model.item_ids_).astype(np.str_))


def _rating_predictions(
    model: RatingPredictor, test: _TestSet, fallback: float
) -> NDArray[np.float64]:
    """One prediction per test rating (test order); unknown items get ``fallback``."""
    pred = np.full(len(test.ratings), fallback, dtype=np.float64)
    known = _known_mask(model, test.items)
    for u, ratings in enumerate(test.train_ratings):
        lo, hi = int(test.bounds[u]), int(test.bounds[u + 1])
        rows = lo + np.flatnonzero(known[lo:hi])
        if rows.size == 0:
            continue
        result = model.predict(ratings, item_ids=test.items[rows].tolist())
        expected = np.asarray(result.expected, dtype=np.float64)
        if expected.shape != rows.shape:
            raise EvaluationError(
                f"{type(model).__name__}.predict returned {expected.size} predictions "
                f"for {rows.size} known items"
            )
        pred[rows] = expected
    return pred


def predict_test_ratings(
    model: RatingPredictor,
    train: RatingMatrix,
    test: pd.DataFrame,
    *,
    fallback: float = np.nan,
) -> NDArray[np.float64]:
    """Predict every test rating, each user folded in from that user's training ratings.

    The rating half of the protocol of :func:`evaluate_split`, for a caller that
    scores fitted models of its own on one test set (the service's retrain gate).

    Parameters
    ----------
    model : RatingPredictor
        A fitted model (``predict`` and ``item_ids_``).
    train : RatingMatrix
        The ratings users are folded in from (no ratings: a new user).
    test : pandas.DataFrame
        Columns ``user_id``, ``item_id`` and ``rating``.
    fallback : float, default NaN
        The prediction for items the model does not know.

    Returns
    -------
    ndarray of shape (len(test),)
        One prediction per row of ``test``, in its order.
    """
    data = _test_set(train, test)
    predictions = np.empty(len(data.items), dtype=np.float64)
    predictions[data.row] = _rating_predictions(model, data, fallback)
    return predictions


def _figure(value: float) -> float | None:
    """A figure for the report: None where it is undefined (NaN, e.g. a single user)."""
    return None if np.isnan(value) else float(value)


def _item_counts(train: RatingMatrix, catalog: NDArray[np.str_]) -> NDArray[np.float64]:
    """Training ratings of each catalog item (0 for items not in ``train``)."""
    counts = np.diff(train.codes.tocsc().indptr).astype(np.float64)
    where = pd.Index(train.item_ids).get_indexer(pd.Index(catalog))
    return np.where(where >= 0, counts[np.maximum(where, 0)], 0.0)


def _ranking_figures(
    model: BatchScorer, train: RatingMatrix, test: _TestSet, k: int, threshold: float
) -> dict[str, float | int | None]:
    relevant = test.ratings >= threshold - 1e-9
    n_relevant = np.bincount(test.user_of[relevant], minlength=len(test.user_ids))
    users = np.flatnonzero(n_relevant > 0)
    out: dict[str, float | int | None] = {
        f"precision_at_{k}": None,
        f"recall_at_{k}": None,
        f"ndcg_at_{k}": None,
        f"map_at_{k}": None,
        f"coverage_at_{k}": None,
        f"novelty_at_{k}": None,
        f"personalisation_at_{k}": None,
        "n_ranked_users": int(users.size),
    }
    if users.size == 0:
        return out
    catalog = np.asarray(model.item_ids_).astype(np.str_)
    order = np.argsort(catalog, kind="stable")
    # relevant test items inside the catalog, as (row among `users`, model column)
    keep = relevant & np.isin(test.items, catalog)
    row_of_user = np.full(len(test.user_ids), -1, dtype=np.int64)
    row_of_user[users] = np.arange(users.size)
    rel_rows = row_of_user[test.user_of[keep]]
    rel_cols = order[np.searchsorted(catalog[order], test.items[keep])]
    relevant_matrix = sp.csr_matrix(
        (np.ones(rel_rows.size, dtype=np.int8), (rel_rows, rel_cols)),
        shape=(users.size, catalog.size),
    )
    top = np.empty((users.size, k), dtype=np.int64)
    batch = max(1, min(_USER_BATCH, _SCORE_CELLS // max(catalog.size, 1)))
    for lo in range(0, users.size, batch):
        chunk = users[lo : lo + batch]
        scores, rated = model.score_batch([test.train_ratings[u] for u in chunk])
        top[lo : lo + chunk.size] = metrics.top_k(np.asarray(scores), k, exclude=rated)
    hits = metrics.hit_matrix(top, relevant_matrix)
    counts = n_relevant[users]
    out[f"precision_at_{k}"] = metrics.precision_at_k(hits, k)
    out[f"recall_at_{k}"] = metrics.recall_at_k(hits, counts, k)
    out[f"ndcg_at_{k}"] = metrics.ndcg_at_k(hits, counts, k)
    out[f"map_at_{k}"] = metrics.map_at_k(hits, counts, k)
    out[f"coverage_at_{k}"] = metrics.catalog_coverage(top, int(catalog.size), k)
    counts_of_items = _item_counts(train, catalog)
    out[f"novelty_at_{k}"] = _figure(metrics.novelty_at_k(top, counts_of_items, train.n_users, k))
    out[f"personalisation_at_{k}"] = _figure(metrics.personalisation_at_k(top, k))
    return out


def evaluate_split(
    train: RatingMatrix,
    test: pd.DataFrame,
    models: Mapping[str, ModelFactory],
    *,
    fold: int = 1,
    k: int = DEFAULT_K,
    relevance_threshold: float = DEFAULT_RELEVANCE_THRESHOLD,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Fit and score every model on one split.

    Parameters
    ----------
    train : RatingMatrix
        Training ratings.
    test : pandas.DataFrame
        Test ratings: columns ``user_id``, ``item_id``, ``rating``.
    models : mapping of str to callable
        Name -> factory of an unfitted model (see :func:`rbm_core.lineup.default_models`).
    fold : int
        The fold number written into each result.
    k : int
        Cut-off of the top-N metrics.
    relevance_threshold : float
        Test ratings at or above it are relevant.
    progress : callable, optional
        Called with one line of text per step.

    Returns
    -------
    results : dict of str to dict
        Per model: ``fold`` and every key of :func:`metric_names` (``None`` where the
        model has no such figure).
    params : dict of str to dict
        Per model: its hyperparameters (``get_params()``), or an empty dict.

    Raises
    ------
    EvaluationError
        If a model fails to fit or gives malformed predictions.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise EvaluationError(f"k must be a positive integer, got {k!r}")
    if not np.isfinite(relevance_threshold):
        raise EvaluationError("the relevance threshold must be a finite number")
    data = _test_set(train, test)
    fallback = float(train.values.data.mean())
    results: dict[str, dict[str, Any]] = {}
    params: dict[str, dict[str, Any]] = {}
    fitted: dict[str, Any] = {}
    for name, factory in models.items():
        model = factory()
        fit_seconds: float | None = None
        if isinstance(model, PartOf):
            # reported alone, exactly as fitted inside the other entry's model
            model = fitted[model.model].parts[model.part]
        else:
            start = time.perf_counter()
            try:
                model.fit(train)
            except (ValueError, TypeError, ArithmeticError) as exc:
                raise EvaluationError(f"{name}: fitting failed on fold {fold}: {exc}") from None
            fit_seconds = time.perf_counter() - start
        fitted[name] = model
        row: dict[str, Any] = {"fold": fold, **dict.fromkeys(metric_names(k))}
        row.update(
            fit_seconds=fit_seconds,
            n_train=train.n_ratings,
            n_test=len(data.ratings),
            n_test_new_user=int(data.new_user.sum()),
            n_test_new_item=int(data.new_item.sum()),
        )
        try:
            if isinstance(model, RatingPredictor):
                pred = _rating_predictions(model, data, fallback)
                row["rmse"] = metrics.rmse(data.ratings, pred)
                row["mae"] = metrics.mae(data.ratings, pred)
            if isinstance(model, BatchScorer):
                row.update(_ranking_figures(model, train, data, k, relevance_threshold))
        except (ValueError, TypeError, ArithmeticError) as exc:
            if isinstance(exc, EvaluationError):
                raise
            raise EvaluationError(f"{name}: scoring failed on fold {fold}: {exc}") from None
        results[name] = row
        get_params = getattr(model, "get_params", None)
        params[name] = dict(get_params()) if callable(get_params) else {}
        if progress is not None:
            progress(_progress_line(name, row, k))
    return results, params


def _progress_line(name: str, row: Mapping[str, Any], k: int) -> str:
    seconds = row["fit_seconds"]
    fit = "(a part of rbm)" if seconds is None else f"fit {seconds:.2f}s"
    parts = [f"fold {row['fold']}: {name:<12} {fit}"]
    if row["rmse"] is not None:
        parts.append(f"RMSE {row['rmse']:.4f} MAE {row['mae']:.4f}")
    if row[f"ndcg_at_{k}"] is not None:
        parts.append(f"P@{k} {row[f'precision_at_{k}']:.4f} NDCG@{k} {row[f'ndcg_at_{k}']:.4f}")
    return "  ".join(parts)


# -- several splits -----------------------------------------------------------------------
@dataclass(frozen=True)
class EvaluationReport:
    """Results of :func:`evaluate`.

    Attributes
    ----------
    folds : dict of str to list of dict
        Per model, one result per fold (see :func:`evaluate_split`).
    hyperparameters : dict of str to dict
        Per model, its hyperparameters.
    protocol : dict
        k, relevance threshold, rating scale, fallback rule and the data sources.
    """

    folds: dict[str, list[dict[str, Any]]]
    hyperparameters: dict[str, dict[str, Any]]
    protocol: dict[str, Any] = field(default_factory=dict)

    def means(self, model: str) -> dict[str, float | None]:
        """The mean of every figure over the folds (``None`` if a fold lacks it)."""
        rows = self.folds[model]
        keys = [key for key in rows[0] if key != "fold"]
        mean: dict[str, float | None] = {}
        for key in keys:
            values = [row[key] for row in rows]
            mean[key] = None if any(v is None for v in values) else float(np.mean(values))
        return mean

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"models": {name: {"folds": [...], "mean": {...}}}, ...}``."""
        return {
            "models": {
                name: {"folds": [dict(r) for r in rows], "mean": self.means(name)}
                for name, rows in self.folds.items()
            },
            "hyperparameters": {
                name: {key: _jsonable(v) for key, v in params.items()}
                for name, params in self.hyperparameters.items()
            },
            "protocol": {key: _jsonable(v) for key, v in self.protocol.items()},
        }


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


def evaluate(
    splits: Sequence[RatingSplit],
    models: Mapping[str, ModelFactory],
    *,
    scale: RatingScale | None = None,
    k: int = DEFAULT_K,
    relevance_threshold: float = DEFAULT_RELEVANCE_THRESHOLD,
    progress: Callable[[str], None] | None = None,
) -> EvaluationReport:
    """Run the protocol on every split and collect the results.

    Parameters
    ----------
    splits : sequence of RatingSplit
        The folds.
    models : mapping of str to callable
        Name -> factory of an unfitted model (see :func:`rbm_core.lineup.default_models`).
    scale : RatingScale, optional
        The rating scale; detected from all the ratings of all splits by default (see
        :func:`infer_scale`).
    k : int
        Cut-off of the top-N metrics.
    relevance_threshold : float
        Test ratings at or above it are relevant.
    progress : callable, optional
        Called with one line of text per step (for a progress display).

    Returns
    -------
    EvaluationReport

    Raises
    ------
    EvaluationError
        If a rating is off the scale, no scale can be detected, or a model fails.
    """
    if not splits:
        raise EvaluationError("no folds to evaluate")
    if not models:
        raise EvaluationError("no models to evaluate")
    if scale is None:
        try:
            scale = infer_scale(
                np.concatenate(
                    [
                        np.concatenate([s.train["rating"].to_numpy(), s.test["rating"].to_numpy()])
                        for s in splits
                    ]
                )
            )
        except RatingScaleError as exc:
            raise EvaluationError(str(exc)) from None
        logger.info("rating scale detected from the data: %s", scale)
    folds: dict[str, list[dict[str, Any]]] = {name: [] for name in models}
    params: dict[str, dict[str, Any]] = {}
    for split in splits:
        where = f"fold {split.fold} ({split.source})" if split.source else f"fold {split.fold}"
        try:
            train = RatingMatrix.from_frame(split.train, scale)
        except (RatingScaleError, RatingDataError) as exc:
            raise EvaluationError(f"{where}, training ratings: {exc}") from None
        try:
            scale.indices_of(split.test["rating"].to_numpy(dtype=np.float64))
        except RatingScaleError as exc:
            raise EvaluationError(f"{where}, test ratings: {exc}") from None
        if progress is not None:
            progress(
                f"fold {split.fold}: {train.n_ratings} training ratings "
                f"({train.n_users} users, {train.n_items} items), {len(split.test)} test ratings"
            )
        results, params = evaluate_split(
            train,
            split.test,
            models,
            fold=split.fold,
            k=k,
            relevance_threshold=relevance_threshold,
            progress=progress,
        )
        for name, row in results.items():
            folds[name].append(row)
    protocol = {
        "k": k,
        "relevance_threshold": float(relevance_threshold),
        "rating_scale": str(scale),
        "fallback": "mean training rating, for test items missing from the training data",
        "folds": [s.fold for s in splits],
        "sources": [s.source for s in splits],
    }
    return EvaluationReport(folds, params, protocol)
