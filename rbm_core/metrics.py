"""Accuracy and ranking metrics for recommenders: pure numpy, vectorised over users.

Rating accuracy compares predicted with true ratings (:func:`rmse`, :func:`mae`).

Ranking metrics work on a *hit matrix*: ``hits[u, r]`` is true when the item a model
put at rank ``r`` (0-based) for user ``u`` is relevant to that user, and
``n_relevant[u]`` counts all of the user's relevant items, including those the model
could never rank (for instance items missing from the training catalog): they count
as misses. Build the hit matrix from ranked item indices with :func:`hit_matrix`.
Every ranking metric is the mean over users of a per-user value; users with no
relevant item must be left out by the caller (their recall, NDCG and AP are
undefined) and are refused here.

With ``rel_r = hits[u, r]`` (0 or 1) and ``R_u = n_relevant[u]``:

- ``Precision@k = (1/k) * sum_{r<k} rel_r``
- ``Recall@k    = (1/R_u) * sum_{r<k} rel_r``
- ``DCG@k       = sum_{r<k} rel_r / log2(r + 2)`` (binary gains);
  ``IDCG@k = sum_{r < min(R_u, k)} 1 / log2(r + 2)``; ``NDCG@k = DCG@k / IDCG@k``
- ``AP@k        = (1/min(R_u, k)) * sum_{r<k} rel_r * Precision@(r+1)``; ``MAP@k`` is its
  mean over users
- ``coverage@k  = |union of the users' top-k items| / n_items`` (catalog coverage)

A list shorter than ``k`` (a user who rated nearly everything) is padded with misses;
precision still divides by ``k``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "average_precision_at_k",
    "catalog_coverage",
    "hit_matrix",
    "mae",
    "map_at_k",
    "ndcg_at_k",
    "ndcg_of_scores",
    "novelty_at_k",
    "personalisation_at_k",
    "precision_at_k",
    "recall_at_k",
    "rmse",
]


# -- rating accuracy ---------------------------------------------------------------------
def _pair(y_true: ArrayLike, y_pred: ArrayLike) -> NDArray[np.float64]:
    true = np.asarray(y_true, dtype=np.float64)
    pred = np.asarray(y_pred, dtype=np.float64)
    if true.ndim != 1 or pred.ndim != 1:
        raise ValueError(
            f"y_true and y_pred must be one-dimensional, got shapes {true.shape}, {pred.shape}"
        )
    if true.shape != pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {len(true)} and {len(pred)}")
    if true.size == 0:
        raise ValueError("no ratings to compare")
    if not (np.isfinite(true).all() and np.isfinite(pred).all()):
        raise ValueError("ratings and predictions must be finite numbers")
    return pred - true


def rmse(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Root mean squared error, ``sqrt(mean((y_pred - y_true)**2))``.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_ratings,)
        True and predicted ratings.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        On empty input, different lengths or non-finite values.
    """
    err = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean(err * err)))


def mae(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Mean absolute error, ``mean(|y_pred - y_true|)``.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_ratings,)
        True and predicted ratings.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        On empty input, different lengths or non-finite values.
    """
    return float(np.mean(np.abs(_pair(y_true, y_pred))))


# -- ranking -----------------------------------------------------------------------------
def hit_matrix(recommended: ArrayLike, relevant: sp.spmatrix | sp.sparray) -> NDArray[np.bool_]:
    """Which recommended items are relevant.

    Parameters
    ----------
    recommended : array-like of int, shape (n_users, k)
        Item (column) indices in rank order; ``-1`` pads lists shorter than ``k``.
    relevant : scipy sparse matrix of shape (n_users, n_items)
        Non-zero where the item is relevant to the user.

    Returns
    -------
    ndarray of bool, shape (n_users, k)
        ``hits[u, r]`` is true when ``recommended[u, r]`` is relevant to user ``u``.
    """
    rec = np.asarray(recommended, dtype=np.int64)
    if rec.ndim != 2:
        raise ValueError(f"recommended must be two-dimensional, got shape {rec.shape}")
    rel = sp.csr_matrix(relevant)
    rel.eliminate_zeros()
    n_users, n_items = rel.shape
    if rec.shape[0] != n_users:
        raise ValueError(f"recommended has {rec.shape[0]} rows but relevant has {n_users} users")
    if rec.size and (rec.max() >= n_items or rec.min() < -1):
        raise ValueError(f"recommended item indices must be in -1 .. {n_items - 1}")
    # (user, item) pairs as one sorted int64 key, so membership is a binary search
    rel_rows = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(rel.indptr))
    rel_keys = np.sort(rel_rows * n_items + rel.indices.astype(np.int64))
    keys = np.arange(n_users, dtype=np.int64)[:, None] * n_items + rec
    if rel_keys.size == 0:
        return np.zeros(rec.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(rel_keys, keys), rel_keys.size - 1)
    hits: NDArray[np.bool_] = (rel_keys[pos] == keys) & (rec >= 0)
    return hits


def _hits(hits: ArrayLike, k: int | None) -> tuple[NDArray[np.float64], int]:
    arr = np.asarray(hits)
    if arr.ndim != 2:
        raise ValueError(f"hits must be two-dimensional (n_users, k), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError("no users to evaluate")
    if arr.dtype != np.bool_ and not np.isin(arr, (0, 1)).all():
        raise ValueError("hits must be 0/1 or boolean")
    depth = arr.shape[1] if k is None else k
    if isinstance(depth, bool) or not isinstance(depth, int | np.integer) or depth < 1:
        raise ValueError(f"k must be a positive integer, got {depth!r}")
    if depth > arr.shape[1]:
        raise ValueError(f"k = {depth} exceeds the {arr.shape[1]} ranked positions given")
    return arr[:, :depth].astype(np.float64), int(depth)


def _relevant_counts(n_relevant: ArrayLike, hits: NDArray[np.float64]) -> NDArray[np.float64]:
    counts = np.asarray(n_relevant)
    if counts.shape != (hits.shape[0],):
        raise ValueError(f"n_relevant must have shape ({hits.shape[0]},), got {counts.shape}")
    counts = counts.astype(np.float64)
    if (counts < 1).any():
        raise ValueError("every user needs at least one relevant item (skip the others)")
    if (hits.sum(axis=1) > counts).any():
        raise ValueError("a user has more hits than relevant items")
    return counts


def precision_at_k(hits: ArrayLike, k: int | None = None) -> float:
    """Precision@k: the mean share of relevant items among each user's top ``k``.

    ``Precision@k = (1/k) * sum_{r<k} hits[u, r]``, averaged over users.

    Parameters
    ----------
    hits : array-like of bool, shape (n_users, n_ranked)
        See :func:`hit_matrix`.
    k : int, optional
        Cut-off, at most ``n_ranked``; ``n_ranked`` by default.

    Returns
    -------
    float
        In [0, 1].
    """
    h, depth = _hits(hits, k)
    return float(np.mean(h.sum(axis=1) / depth))


def recall_at_k(hits: ArrayLike, n_relevant: ArrayLike, k: int | None = None) -> float:
    """Recall@k: the mean share of each user's relevant items found in the top ``k``.

    ``Recall@k = (1/R_u) * sum_{r<k} hits[u, r]``, averaged over users.

    Parameters
    ----------
    hits : array-like of bool, shape (n_users, n_ranked)
        See :func:`hit_matrix`.
    n_relevant : array-like of int, shape (n_users,)
        ``R_u``, the number of relevant items of each user (each >= 1).
    k : int, optional
        Cut-off, at most ``n_ranked``; ``n_ranked`` by default.

    Returns
    -------
    float
        In [0, 1].
    """
    h, _ = _hits(hits, k)
    counts = _relevant_counts(n_relevant, h)
    return float(np.mean(h.sum(axis=1) / counts))


def ndcg_at_k(hits: ArrayLike, n_relevant: ArrayLike, k: int | None = None) -> float:
    """NDCG@k with binary gains, averaged over users.

    ``DCG@k = sum_{r<k} hits[u, r] / log2(r + 2)`` and the ideal
    ``IDCG@k = sum_{r < min(R_u, k)} 1 / log2(r + 2)`` (all relevant items first);
    ``NDCG@k = DCG@k / IDCG@k``.

    Parameters
    ----------
    hits : array-like of bool, shape (n_users, n_ranked)
        See :func:`hit_matrix`.
    n_relevant : array-like of int, shape (n_users,)
        ``R_u``, the number of relevant items of each user (each >= 1).
    k : int, optional
        Cut-off, at most ``n_ranked``; ``n_ranked`` by default.

    Returns
    -------
    float
        In [0, 1]; 1 when every user's relevant items fill the top of the list.
    """
    h, depth = _hits(hits, k)
    counts = _relevant_counts(n_relevant, h)
    discount = 1.0 / np.log2(np.arange(depth, dtype=np.float64) + 2.0)
    dcg = h @ discount
    ideal = np.concatenate(([0.0], np.cumsum(discount)))
    idcg = ideal[np.minimum(counts, depth).astype(np.int64)]
    return float(np.mean(dcg / idcg))


def average_precision_at_k(
    hits: ArrayLike, n_relevant: ArrayLike, k: int | None = None
) -> NDArray[np.float64]:
    """AP@k of each user.

    ``AP@k = (1/min(R_u, k)) * sum_{r<k} hits[u, r] * Precision@(r+1)``: the precision
    at each hit, summed, over the best number of hits the top ``k`` could hold.

    Parameters
    ----------
    hits : array-like of bool, shape (n_users, n_ranked)
        See :func:`hit_matrix`.
    n_relevant : array-like of int, shape (n_users,)
        ``R_u``, the number of relevant items of each user (each >= 1).
    k : int, optional
        Cut-off, at most ``n_ranked``; ``n_ranked`` by default.

    Returns
    -------
    ndarray of shape (n_users,)
        Each in [0, 1].
    """
    h, depth = _hits(hits, k)
    counts = _relevant_counts(n_relevant, h)
    precision_at_r = np.cumsum(h, axis=1) / np.arange(1, depth + 1, dtype=np.float64)
    result: NDArray[np.float64] = (h * precision_at_r).sum(axis=1) / np.minimum(counts, depth)
    return result


def map_at_k(hits: ArrayLike, n_relevant: ArrayLike, k: int | None = None) -> float:
    """MAP@k: the mean over users of :func:`average_precision_at_k`.

    Parameters
    ----------
    hits : array-like of bool, shape (n_users, n_ranked)
        See :func:`hit_matrix`.
    n_relevant : array-like of int, shape (n_users,)
        ``R_u``, the number of relevant items of each user (each >= 1).
    k : int, optional
        Cut-off, at most ``n_ranked``; ``n_ranked`` by default.

    Returns
    -------
    float
        In [0, 1].
    """
    return float(np.mean(average_precision_at_k(hits, n_relevant, k)))


def catalog_coverage(recommended: ArrayLike, n_items: int, k: int | None = None) -> float:
    """Catalog coverage@k: the share of the catalog in at least one user's top ``k``.

    ``coverage@k = |union_u top_k(u)| / n_items``.

    Parameters
    ----------
    recommended : array-like of int, shape (n_users, n_ranked)
        Item indices in rank order; ``-1`` pads short lists.
    n_items : int
        Size of the catalog the items were drawn from.
    k : int, optional
        Cut-off, at most ``n_ranked``; ``n_ranked`` by default.

    Returns
    -------
    float
        In [0, 1].
    """
    rec = np.asarray(recommended, dtype=np.int64)
    if rec.ndim != 2:
        raise ValueError(f"recommended must be two-dimensional, got shape {rec.shape}")
    if isinstance(n_items, bool) or not isinstance(n_items, int | np.integer) or n_items < 1:
        raise ValueError(f"n_items must be a positive integer, got {n_items!r}")
    depth = rec.shape[1] if k is None else k
    if isinstance(depth, bool) or not isinstance(depth, int | np.integer) or depth < 1:
        raise ValueError(f"k must be a positive integer, got {depth!r}")
    if depth > rec.shape[1]:
        raise ValueError(f"k = {depth} exceeds the {rec.shape[1]} ranked positions given")
    top = rec[:, :depth]
    top = top[top >= 0]
    if top.size and top.max() >= n_items:
        raise ValueError(f"recommended item indices must be below n_items = {n_items}")
    return float(np.unique(top).size / n_items)


def top_k(
    scores: ArrayLike, k: int, exclude: sp.spmatrix | sp.sparray | None = None
) -> NDArray[np.int64]:
    """The ``k`` best-scored items of each user, best first.

    Ties are broken by the lower item index, so the result is deterministic.

    Parameters
    ----------
    scores : array-like of float, shape (n_users, n_items)
        Higher is better; ``-inf`` or NaN marks an item that must not be ranked.
    k : int
        List length.
    exclude : scipy sparse matrix of shape (n_users, n_items), optional
        Non-zero entries (e.g. the items a user already rated) are never returned.

    Returns
    -------
    ndarray of int64, shape (n_users, k)
        Item indices; ``-1`` pads the lists of users with fewer than ``k`` rankable items.
    """
    s = np.array(scores, dtype=np.float64, copy=True)
    if s.ndim != 2:
        raise ValueError(f"scores must be two-dimensional, got shape {s.shape}")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    n_users, n_items = s.shape
    s[np.isnan(s)] = -np.inf
    if exclude is not None:
        ex = sp.csr_matrix(exclude)
        if ex.shape != s.shape:
            raise ValueError(f"exclude has shape {ex.shape}, scores {s.shape}")
        ex.eliminate_zeros()
        s[np.repeat(np.arange(n_users), np.diff(ex.indptr)), ex.indices] = -np.inf
    depth = min(int(k), n_items)
    if depth < n_items:
        part = np.argpartition(-s, depth - 1, axis=1)[:, :depth]
        # argpartition splits ties at the k-th score arbitrarily; rows where a tied item
        # was left out are sorted in full, so the lower-index tie-break stays exact
        chosen = np.take_along_axis(s, part, axis=1)
        kth = chosen.min(axis=1, keepdims=True)
        tied = np.isfinite(kth[:, 0]) & ((s == kth).sum(axis=1) > (chosen == kth).sum(axis=1))
        if tied.any():
            part[tied] = np.argsort(-s[tied], axis=1, kind="stable")[:, :depth]
    else:
        part = np.broadcast_to(np.arange(n_items), (n_users, n_items)).copy()
    part_scores = np.take_along_axis(s, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    top = np.take_along_axis(part, order, axis=1)
    top_scores = np.take_along_axis(part_scores, order, axis=1)
    out = np.full((n_users, int(k)), -1, dtype=np.int64)
    out[:, :depth] = np.where(np.isfinite(top_scores), top, -1)
    return out


def ndcg_of_scores(
    scores: ArrayLike,
    rated: sp.spmatrix | sp.sparray,
    relevant: sp.spmatrix | sp.sparray,
    k: int = 10,
) -> float:
    """NDCG@k of ranking by ``scores``, every item a user did not rate being a candidate.

    The top-N protocol in one call: each user's unrated items are ranked by score, and
    the hits are the user's relevant (held-out) items. Users without a relevant item
    are left out.

    Parameters
    ----------
    scores : array-like of float, shape (n_users, n_items)
    rated : scipy sparse matrix of shape (n_users, n_items)
        Non-zero where the user rated the item in the data the scores come from.
    relevant : scipy sparse matrix of shape (n_users, n_items)
        Non-zero where the item is relevant to the user.
    k : int
        Cut-off.

    Returns
    -------
    float
        NaN when no user has a relevant item.
    """
    rel = sp.csr_matrix(relevant)
    rel.eliminate_zeros()
    counts = np.diff(rel.indptr)
    users = np.flatnonzero(counts)
    if users.size == 0:
        return float("nan")
    s = np.asarray(scores)[users]
    top = top_k(s, k, exclude=sp.csr_matrix(rated)[users])
    return ndcg_at_k(hit_matrix(top, rel[users]), counts[users], k)


def novelty_at_k(
    recommended: ArrayLike, item_counts: ArrayLike, n_users: int, k: int | None = None
) -> float:
    """Mean self-information ``-log2(n_i / n_users)`` of the recommended items, in bits.

    Zhou et al., "Solving the apparent diversity-accuracy dilemma of recommender
    systems" (PNAS 2010): recommending what few users rated is more novel. Items
    nobody rated count as rated once.

    Parameters
    ----------
    recommended : array-like of int, shape (n_users, n_ranked)
        Item indices in rank order; ``-1`` pads short lists (left out).
    item_counts : array-like of shape (n_items,)
        Training ratings of each item.
    n_users : int
        Users of the training data.
    k : int, optional
        Cut-off; the whole lists by default.

    Returns
    -------
    float
        NaN when nothing was recommended.
    """
    rec = np.asarray(recommended, dtype=np.int64)
    if k is not None:
        rec = rec[:, :k]
    items = rec[rec >= 0]
    if items.size == 0:
        return float("nan")
    counts = np.maximum(np.asarray(item_counts, dtype=np.float64), 1.0)
    return float(np.mean(-np.log2(counts[items] / max(int(n_users), 1))))


def personalisation_at_k(
    recommended: ArrayLike,
    k: int | None = None,
    *,
    max_users: int = 2000,
    random_state: int | np.random.Generator | None = 0,
) -> float:
    """Mean pairwise Jaccard distance between users' top-k lists.

    1 when no two users share an item, 0 when everyone gets the same list. Above
    ``max_users`` users, a seeded sample of that many is compared (the pairs grow
    quadratically).

    Parameters
    ----------
    recommended : array-like of int, shape (n_users, n_ranked)
        Item indices in rank order; ``-1`` pads short lists.
    k : int, optional
        Cut-off; the whole lists by default.

    Returns
    -------
    float
        NaN with fewer than two users.
    """
    rec = np.asarray(recommended, dtype=np.int64)
    if k is not None:
        rec = rec[:, :k]
    if rec.shape[0] > max_users:
        rng = np.random.default_rng(random_state)
        rec = rec[np.sort(rng.choice(rec.shape[0], max_users, replace=False))]
    n = rec.shape[0]
    if n < 2:
        return float("nan")
    rows, cols = np.nonzero(rec >= 0)
    lists = sp.csr_matrix(
        (np.ones(rows.size), (rows, rec[rows, cols])), shape=(n, int(rec.max(initial=0)) + 1)
    )
    lists.data[:] = 1.0
    sizes = np.asarray(lists.sum(axis=1)).ravel()
    shared = np.asarray((lists @ lists.T).todense())
    union = sizes[:, None] + sizes[None, :] - shared
    distance = 1.0 - np.divide(shared, union, out=np.zeros_like(shared), where=union > 0)
    upper = np.triu_indices(n, 1)
    return float(distance[upper].mean())
