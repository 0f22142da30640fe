"""Baseline recommenders to compare the RBM with: global mean, user + item biases, popularity.

They are estimators of :mod:`rbm_core.base` like :class:`~rbm_core.model.SoftmaxRBM`,
so the evaluation harness, the artifacts and the contract tests treat every model
alike: keyword-only hyperparameters, ``fit(train)`` returning ``self``, learned
attributes ending in ``_``, a user given as a mapping item id -> rating folded in at
prediction time (unknown items ignored and reported), and, for the rankers,
``score_items`` / ``score_batch`` / ``recommend`` from :class:`~rbm_core.base.Recommender`.

- :class:`GlobalMean` predicts the training mean for everything (no ranking).
- :class:`BiasBaseline` predicts ``mu + b_u + b_i`` with regularised biases (rating
  prediction and ranking).
- :class:`Popularity` ranks items by their number of ratings or by a damped mean
  rating (ranking only).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from rbm_core.base import RatingEstimator, RatingPrediction, Recommender
from rbm_core.checks import check_choice, check_number, check_positive_int, check_rating_matrix
from rbm_core.data import RatingMatrix, UserRatings

__all__ = ["BiasBaseline", "GlobalMean", "Popularity"]

PopularityScore = Literal["count", "damped_mean"]


class _Baseline(RatingEstimator):
    """What every baseline keeps: the catalog, the mean rating and each item's count."""

    _array_attributes: ClassVar[tuple[str, ...]] = ("item_popularity_",)
    _metadata_attributes: ClassVar[tuple[str, ...]] = (
        *RatingEstimator._metadata_attributes,
        "global_mean_",
    )

    global_mean_: float
    item_popularity_: NDArray[np.float64]

    def _store_statistics(self, train: RatingMatrix) -> None:
        self._store_catalog(check_rating_matrix(train, "train"))
        self.global_mean_ = float(train.values.data.mean())
        self.item_popularity_ = train.codes.getnnz(axis=0).astype(np.float64)

    def _check_restored(self) -> None:
        # arrays named user_* hold one entry per training user, the others one per item
        super()._check_restored()
        for name in self._array_attributes:
            want = self.n_users_ if name.startswith("user_") else self.n_items_
            if len(getattr(self, name)) != want:
                raise ValueError(
                    f"{name.rstrip('_')} has {len(getattr(self, name))} entries, not {want}"
                )


class NonPersonalised(_Baseline, Recommender):
    """A ranking that is the same for every user: one score and one mean per item."""

    _array_attributes = (*_Baseline._array_attributes, "item_score_", "item_mean_")

    item_score_: NDArray[np.float64]
    item_mean_: NDArray[np.float64]

    def _score_codes(self, codes: sp.csr_matrix) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        n = codes.shape[0]
        return (
            np.broadcast_to(self.item_score_, (n, self.n_items_)).copy(),
            np.broadcast_to(self.item_mean_, (n, self.n_items_)).copy(),
        )


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
        self._store_statistics(train)
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
        _, _, ignored = self._encode_one(user_ratings)
        cols, names, unknown = self._columns(item_ids)
        return RatingPrediction(names, np.full(len(cols), self.global_mean_), unknown, ignored)


class BiasBaseline(_Baseline, Recommender):
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

    _array_attributes = (*_Baseline._array_attributes, "item_bias_", "user_bias_", "user_ids_")

    def __init__(self, *, reg_user: float = 15.0, reg_item: float = 10.0, n_iter: int = 10) -> None:
        self.reg_user = reg_user
        self.reg_item = reg_item
        self.n_iter = n_iter

    def _validate_params(self) -> None:
        check_number("reg_user", self.reg_user, low=0.0)
        check_number("reg_item", self.reg_item, low=0.0)
        check_positive_int("n_iter", self.n_iter)

    def fit(self, train: RatingMatrix) -> BiasBaseline:
        """Fit the biases on ``train``; returns ``self``."""
        self._validate_params()
        reg_user, reg_item = float(self.reg_user), float(self.reg_item)
        self._store_statistics(train)
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

    def _user_bias(self, codes: sp.csr_matrix) -> NDArray[np.float64]:
        # b_u = sum_i (r_ui - mu - b_i) / (reg_user + n_u) over the ratings given
        known = self._values_of(codes)
        residual = known.data - self.global_mean_ - self.item_bias_[known.indices]
        rows = np.repeat(np.arange(known.shape[0]), np.diff(known.indptr))
        # bincount of no ratings at all comes back as int64: cast before dividing
        sums = np.bincount(rows, weights=residual, minlength=known.shape[0]).astype(np.float64)
        denom = float(self.reg_user) + np.diff(known.indptr).astype(np.float64)
        result: NDArray[np.float64] = np.divide(
            sums, denom, out=np.zeros_like(sums), where=denom > 0
        )
        return result

    def expected_at(
        self, codes: sp.csr_matrix, rows: NDArray[np.int64], items: NDArray[np.int64]
    ) -> NDArray[np.float64]:
        """``mu + b_u + b_i`` (clipped) for (user row of ``codes``, item column) pairs."""
        self._check_fitted()
        raw = self.global_mean_ + self._user_bias(codes)[rows] + self.item_bias_[items]
        return np.clip(raw, self.scale_.min, self.scale_.max)

    def _expected_one(
        self, items: NDArray[np.int64], levels: NDArray[np.int64], columns: NDArray[np.int64]
    ) -> NDArray[np.float64]:
        """:meth:`expected_at` of one user (sorted columns and level indices) for the
        items at ``columns``: no code matrix."""
        residual = self.scale_.values[levels] - self.global_mean_ - self.item_bias_[items]
        denom = float(self.reg_user) + len(items)
        user_bias = float(residual.sum()) / denom if denom > 0 else 0.0
        raw = self.global_mean_ + user_bias + self.item_bias_[columns]
        return np.clip(raw, self.scale_.min, self.scale_.max)

    def _score_codes(self, codes: sp.csr_matrix) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        raw = self.global_mean_ + self._user_bias(codes)[:, None] + self.item_bias_[None, :]
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
        items, levels, ignored = self._encode_one(user_ratings)
        cols, names, unknown = self._columns(item_ids)
        b_u = float(self._user_bias(self._one_row(items, levels))[0])
        expected = np.clip(
            self.global_mean_ + b_u + self.item_bias_[cols], self.scale_.min, self.scale_.max
        )
        return RatingPrediction(names, expected, unknown, ignored)


class Popularity(NonPersonalised):
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

    def __init__(self, *, by: PopularityScore = "count", damping: float = 10.0) -> None:
        self.by = by
        self.damping = damping

    def _validate_params(self) -> None:
        check_choice("by", self.by, ("count", "damped_mean"))
        check_number("damping", self.damping, low=0.0)

    def fit(self, train: RatingMatrix) -> Popularity:
        """Count the ratings of each item in ``train``; returns ``self``."""
        self._validate_params()
        damping = float(self.damping)
        self._store_statistics(train)
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
