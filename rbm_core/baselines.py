"""Baseline recommenders to compare the RBM with: global mean, user + item biases, popularity.

They follow the :class:`~rbm_core.model.SoftmaxRBM` conventions where the idea applies,
so the evaluation harness treats every model alike: hyperparameters are keyword-only
``__init__`` arguments stored unchanged, ``fit(train)`` returns ``self``, learned
attributes end in ``_``, a user is a mapping item id -> rating folded in at prediction
time (items the model does not know are ignored and reported), ``score_batch`` scores
many users at once and ``recommend`` returns :class:`~rbm_core.model.Recommendation`
lists.

- :class:`GlobalMean` predicts the training mean for everything (no ranking).
- :class:`BiasBaseline` predicts ``mu + b_u + b_i`` with regularised biases (rating
  prediction and ranking).
- :class:`Popularity` ranks items by their number of ratings or by a damped mean
  rating (ranking only).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from rbm_core.data import RatingMatrix, UserRatings
from rbm_core.metrics import top_k
from rbm_core.model import NotFittedError, Recommendation
from rbm_core.scale import RatingScale, RatingScaleError

__all__ = ["BiasBaseline", "GlobalMean", "Popularity", "RatingPrediction"]

PopularityScore = Literal["count", "damped_mean"]


@dataclass(frozen=True)
class RatingPrediction:
    """Predicted ratings of one user for some items (a baseline has no distribution).

    Attributes
    ----------
    item_ids : list of str
        The known items asked for (or every model item), in order.
    expected : ndarray of shape (n,)
        Predicted rating of each item.
    unknown_items : list of str
        Items asked for that the model does not know (no prediction made).
    ignored_ratings : list of str
        Rated items the model does not know (left out of the fold-in).
    """

    item_ids: list[str]
    expected: NDArray[np.float64]
    unknown_items: list[str] = field(default_factory=list)
    ignored_ratings: list[str] = field(default_factory=list)


def _is_user_batch(obj: object) -> bool:
    return isinstance(obj, Sequence) and not isinstance(obj, str | bytes | Mapping)


def _check_train(train: object) -> RatingMatrix:
    if not isinstance(train, RatingMatrix):
        raise TypeError(f"train must be a RatingMatrix, got {type(train).__name__}")
    if train.n_ratings == 0:
        raise ValueError("train has no ratings")
    return train


def _non_negative(owner: object, name: str) -> float:
    value = getattr(owner, name)
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


class _Baseline:
    """State and fold-in plumbing shared by the baselines (not part of the API)."""

    _param_names: tuple[str, ...] = ()
    item_ids_: NDArray[np.str_]
    scale_: RatingScale
    global_mean_: float

    def get_params(self) -> dict[str, Any]:
        """The hyperparameters, as passed to ``__init__``."""
        return {name: getattr(self, name) for name in self._param_names}

    def set_params(self, **params: Any) -> _Baseline:
        """Set hyperparameters by name; returns ``self``."""
        for name, value in params.items():
            if name not in self._param_names:
                raise ValueError(f"unknown hyperparameter {name!r}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({shown})"

    @property
    def is_fitted(self) -> bool:
        """Whether ``fit`` has run."""
        return hasattr(self, "item_ids_")

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit() first")

    def _store_catalog(self, train: RatingMatrix) -> None:
        self.item_ids_ = train.item_ids.copy()
        self.scale_ = train.scale
        self.n_items_ = train.n_items
        self.n_users_ = train.n_users
        values = train.values
        self.global_mean_ = float(values.data.mean())
        self.item_popularity_ = np.diff(values.tocsc().indptr).astype(np.float64)
        self.__dict__.pop("_item_index_cache", None)

    @property
    def _item_index(self) -> dict[str, int]:
        cache: dict[str, int] | None = self.__dict__.get("_item_index_cache")
        if cache is None:
            cache = {str(item): i for i, item in enumerate(self.item_ids_.tolist())}
            self.__dict__["_item_index_cache"] = cache
        return cache

    def _encode(self, users: Sequence[UserRatings]) -> tuple[sp.csr_matrix, list[list[str]]]:
        """The users' known ratings as a value CSR (n_users, n_items_), and the unknown ids."""
        index = self._item_index
        rows: list[int] = []
        cols: list[int] = []
        values: list[float] = []
        ignored: list[list[str]] = []
        for row, ratings in enumerate(users):
            if not isinstance(ratings, Mapping):
                kind = type(ratings).__name__
                raise TypeError(f"user ratings must be a mapping item id -> rating, got {kind}")
            unknown: list[str] = []
            for item, value in ratings.items():
                if not isinstance(item, str):
                    raise TypeError(f"item ids must be strings, got {item!r}")
                if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                    raise RatingScaleError(f"rating for item {item!r} is not a number: {value!r}")
                col = index.get(item)
                if col is None:
                    unknown.append(item)
                    continue
                rows.append(row)
                cols.append(col)
                values.append(float(value))
            ignored.append(unknown)
        level = self.scale_.indices_of(np.asarray(values, dtype=np.float64))
        matrix = sp.csr_matrix(
            (self.scale_.values[level], (np.asarray(rows, dtype=np.int64), cols)),
            shape=(len(users), self.n_items_),
        )
        matrix.sort_indices()
        return matrix, ignored

    def _query(
        self, item_ids: Sequence[str] | None
    ) -> tuple[NDArray[np.int64], list[str], list[str]]:
        if item_ids is None:
            return np.arange(self.n_items_), self.item_ids_.tolist(), []
        if isinstance(item_ids, str):
            raise TypeError("item_ids must be a sequence of item ids, not a single string")
        index = self._item_index
        cols: list[int] = []
        names: list[str] = []
        unknown: list[str] = []
        for item in item_ids:
            col = index.get(item) if isinstance(item, str) else None
            if col is None:
                unknown.append(str(item))
            else:
                cols.append(col)
                names.append(item)
        return np.asarray(cols, dtype=np.int64), names, unknown


class _Ranker(_Baseline, ABC):
    """``score_batch`` and ``recommend`` on top of a per-user score matrix."""

    @abstractmethod
    def _scores(self, known: sp.csr_matrix) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Ranking scores and predicted ratings, both of shape (n_users, n_items_)."""

    def score_batch(
        self, users: Sequence[UserRatings]
    ) -> tuple[NDArray[np.float64], sp.csr_matrix]:
        """Ranking scores of many users at once.

        Parameters
        ----------
        users : sequence of mapping of str to float
            Each user's ratings.

        Returns
        -------
        scores : ndarray of shape (n_users, n_items_)
            Higher is better; rated items are scored too.
        rated : scipy.sparse.csr_matrix of shape (n_users, n_items_)
            The users' ratings of known items (non-zero = rated).
        """
        self._check_fitted()
        known, _ = self._encode(users)
        scores, _ = self._scores(known)
        return scores, known

    @overload
    def recommend(
        self, user_ratings: UserRatings, n: int = 10, exclude: Iterable[str] = ()
    ) -> list[Recommendation]: ...

    @overload
    def recommend(
        self, user_ratings: Sequence[UserRatings], n: int = 10, exclude: Iterable[str] = ()
    ) -> list[list[Recommendation]]: ...

    def recommend(
        self,
        user_ratings: UserRatings | Sequence[UserRatings],
        n: int = 10,
        exclude: Iterable[str] = (),
    ) -> list[Recommendation] | list[list[Recommendation]]:
        """Top-``n`` items for one user (a mapping) or for many (a sequence of mappings).

        Items the user rated and items in ``exclude`` are never returned; ties are
        broken by item order.

        Parameters
        ----------
        user_ratings : mapping of str to float, or a sequence of them
        n : int
            Items per user (fewer if the catalog runs out).
        exclude : iterable of str
            Item ids never to return; unknown ids are fine.

        Returns
        -------
        list of Recommendation, or a list of such lists for a batch
        """
        self._check_fitted()
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if isinstance(exclude, str):
            raise TypeError("exclude must be an iterable of item ids, not a single string")
        single = not _is_user_batch(user_ratings)
        users: Sequence[UserRatings] = (
            [user_ratings]  # type: ignore[list-item]
            if single
            else user_ratings  # type: ignore[assignment]
        )
        known, _ = self._encode(users)
        scores, predicted = self._scores(known)
        index = self._item_index
        excluded = [c for c in (index.get(i) for i in exclude) if c is not None]
        if excluded:
            scores = scores.copy()
            scores[:, excluded] = -np.inf
        top = top_k(scores, int(n), exclude=known)
        ids = self.item_ids_
        result = [
            [
                Recommendation(str(ids[c]), float(scores[r, c]), float(predicted[r, c]))
                for c in top[r]
                if c >= 0
            ]
            for r in range(top.shape[0])
        ]
        return result[0] if single else result


class GlobalMean(_Baseline):
    """Predicts the mean training rating for every user and item.

    Attributes
    ----------
    global_mean_ : float
        Mean of the training ratings.
    item_ids_ : ndarray of str, shape (n_items_,)
    item_popularity_ : ndarray of shape (n_items_,)
        Number of training ratings of each item.
    scale_ : RatingScale
    n_items_, n_users_ : int
    """

    def fit(self, train: RatingMatrix) -> GlobalMean:
        """Learn the mean rating of ``train``; returns ``self``."""
        self._store_catalog(_check_train(train))
        return self

    def predict(
        self, user_ratings: UserRatings, item_ids: Sequence[str] | None = None
    ) -> RatingPrediction:
        """The global mean for each known item asked for (all model items by default).

        Parameters
        ----------
        user_ratings : mapping of str to float
            Checked, otherwise unused: the prediction is the same for everyone.
        item_ids : sequence of str, optional
            Items to predict; unknown ones are listed in ``unknown_items``.

        Returns
        -------
        RatingPrediction
        """
        self._check_fitted()
        _, ignored = self._encode([user_ratings])
        cols, names, unknown = self._query(item_ids)
        return RatingPrediction(names, np.full(len(cols), self.global_mean_), unknown, ignored[0])


class BiasBaseline(_Ranker):
    """User and item biases: ``r_hat(u, i) = mu + b_u + b_i``, clipped to the scale.

    Fitted by alternating least squares on the regularised squared error
    ``sum (r_ui - mu - b_u - b_i)^2 + reg_item * sum b_i^2 + reg_user * sum b_u^2``
    (Koren, "Factor in the Neighbors", TKDD 2010, section 2.1). Each pass solves the
    item biases with the user biases fixed, then the user biases:
    ``b_i = sum_u (r_ui - mu - b_u) / (reg_item + n_i)``,
    ``b_u = sum_i (r_ui - mu - b_i) / (reg_user + n_u)``.
    At prediction time ``b_u`` is folded in from the ratings given, with the same
    formula, so a user's training ratings reproduce the fitted bias.

    Parameters
    ----------
    reg_user : float
        Shrinkage of the user biases towards zero.
    reg_item : float
        Shrinkage of the item biases towards zero.
    n_iter : int
        Alternating passes.

    Attributes
    ----------
    global_mean_ : float
        ``mu``, the mean training rating.
    item_bias_ : ndarray of shape (n_items_,)
    user_bias_ : ndarray of shape (n_users_,)
        Biases of the training users (rows of the training matrix).
    user_ids_ : ndarray of str, shape (n_users_,)
    item_ids_ : ndarray of str, shape (n_items_,)
    item_popularity_ : ndarray of shape (n_items_,)
    scale_ : RatingScale
    n_items_, n_users_ : int

    Notes
    -----
    ``score_batch`` and ``recommend`` rank by the unclipped ``mu + b_u + b_i`` (that is,
    by ``b_i``), so clipping never turns the top of a generous user's list into ties.
    """

    _param_names = ("reg_user", "reg_item", "n_iter")

    def __init__(self, *, reg_user: float = 15.0, reg_item: float = 10.0, n_iter: int = 10) -> None:
        self.reg_user = reg_user
        self.reg_item = reg_item
        self.n_iter = n_iter

    def fit(self, train: RatingMatrix) -> BiasBaseline:
        """Fit the biases on ``train``; returns ``self``."""
        reg_user = _non_negative(self, "reg_user")
        reg_item = _non_negative(self, "reg_item")
        if isinstance(self.n_iter, bool) or not isinstance(self.n_iter, int) or self.n_iter < 1:
            raise ValueError(f"n_iter must be a positive integer, got {self.n_iter!r}")
        self._store_catalog(_check_train(train))
        values = train.values
        mu = self.global_mean_
        residual = values.copy()
        residual.data -= mu
        by_item = residual.tocsc()
        n_u = np.diff(values.indptr).astype(np.float64)
        n_i = np.diff(by_item.indptr).astype(np.float64)
        user_rows = np.repeat(np.arange(train.n_users), np.diff(values.indptr))
        item_cols_csc = np.repeat(np.arange(train.n_items), np.diff(by_item.indptr))
        b_u = np.zeros(train.n_users)
        b_i = np.zeros(train.n_items)
        for _ in range(int(self.n_iter)):
            # b_i = sum_u (r_ui - mu - b_u) / (reg_item + n_i)
            item_sums = np.bincount(
                item_cols_csc,
                weights=by_item.data - b_u[by_item.indices],
                minlength=train.n_items,
            )
            b_i = np.divide(
                item_sums, reg_item + n_i, out=np.zeros_like(item_sums), where=reg_item + n_i > 0
            )
            # b_u = sum_i (r_ui - mu - b_i) / (reg_user + n_u)
            user_sums = np.bincount(
                user_rows,
                weights=residual.data - b_i[residual.indices],
                minlength=train.n_users,
            )
            b_u = np.divide(
                user_sums, reg_user + n_u, out=np.zeros_like(user_sums), where=reg_user + n_u > 0
            )
        self.item_bias_ = b_i
        self.user_bias_ = b_u
        self.user_ids_ = train.user_ids.copy()
        return self

    def _user_bias(self, known: sp.csr_matrix) -> NDArray[np.float64]:
        # b_u = sum_i (r_ui - mu - b_i) / (reg_user + n_u) over the ratings given
        residual = known.data - self.global_mean_ - self.item_bias_[known.indices]
        rows = np.repeat(np.arange(known.shape[0]), np.diff(known.indptr))
        # bincount of no ratings at all comes back as int64: cast before dividing
        sums = np.bincount(rows, weights=residual, minlength=known.shape[0]).astype(np.float64)
        denom = float(self.reg_user) + np.diff(known.indptr).astype(np.float64)
        result: NDArray[np.float64] = np.divide(
            sums, denom, out=np.zeros_like(sums), where=denom > 0
        )
        return result

    def _scores(self, known: sp.csr_matrix) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        raw = self.global_mean_ + self._user_bias(known)[:, None] + self.item_bias_[None, :]
        return raw, np.clip(raw, self.scale_.min, self.scale_.max)

    def predict(
        self, user_ratings: UserRatings, item_ids: Sequence[str] | None = None
    ) -> RatingPrediction:
        """Predict one user's ratings from the ratings given (fold-in of ``b_u``).

        Parameters
        ----------
        user_ratings : mapping of str to float
            The user's ratings; unknown items are ignored and listed in
            ``ignored_ratings``. No ratings means ``b_u = 0``.
        item_ids : sequence of str, optional
            Items to predict (all model items by default); unknown ones are listed in
            ``unknown_items``.

        Returns
        -------
        RatingPrediction
            ``expected`` is ``mu + b_u + b_i`` clipped to the rating scale.
        """
        self._check_fitted()
        known, ignored = self._encode([user_ratings])
        cols, names, unknown = self._query(item_ids)
        b_u = float(self._user_bias(known)[0])
        expected = np.clip(
            self.global_mean_ + b_u + self.item_bias_[cols], self.scale_.min, self.scale_.max
        )
        return RatingPrediction(names, expected, unknown, ignored[0])


class Popularity(_Ranker):
    """Recommends the most popular items the user has not rated (the same list for all).

    Parameters
    ----------
    by : {"count", "damped_mean"}
        ``"count"``: rank by the number of training ratings. ``"damped_mean"``: rank by
        the mean rating shrunk towards the global mean ``mu``,
        ``(sum_u r_ui + damping * mu) / (n_i + damping)``.
    damping : float
        Pseudo-ratings at ``mu`` added to each item for ``"damped_mean"``.

    Attributes
    ----------
    item_score_ : ndarray of shape (n_items_,)
        The ranking score of each item.
    item_mean_ : ndarray of shape (n_items_,)
        Damped mean rating of each item (the ``predicted_rating`` of recommendations).
    global_mean_ : float
    item_ids_ : ndarray of str, shape (n_items_,)
    item_popularity_ : ndarray of shape (n_items_,)
        Number of training ratings of each item.
    scale_ : RatingScale
    n_items_, n_users_ : int
    """

    _param_names = ("by", "damping")

    def __init__(self, *, by: PopularityScore = "count", damping: float = 10.0) -> None:
        self.by = by
        self.damping = damping

    def fit(self, train: RatingMatrix) -> Popularity:
        """Count the ratings of each item in ``train``; returns ``self``."""
        if self.by not in ("count", "damped_mean"):
            raise ValueError(f"by must be 'count' or 'damped_mean', got {self.by!r}")
        damping = _non_negative(self, "damping")
        self._store_catalog(_check_train(train))
        sums = np.asarray(train.values.sum(axis=0)).ravel()
        counts = self.item_popularity_
        denom = counts + damping
        self.item_mean_ = np.divide(
            sums + damping * self.global_mean_,
            denom,
            out=np.full_like(sums, self.global_mean_),
            where=denom > 0,
        )
        self.item_score_ = counts.copy() if self.by == "count" else self.item_mean_.copy()
        return self

    def _scores(self, known: sp.csr_matrix) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        n = known.shape[0]
        return (
            np.broadcast_to(self.item_score_, (n, self.n_items_)).copy(),
            np.broadcast_to(self.item_mean_, (n, self.n_items_)).copy(),
        )
