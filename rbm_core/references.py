"""Top-N references the served ranker is measured against (never served themselves).

- :class:`EASE`: Steck's "Embarrassingly Shallow Autoencoders for Sparse Data" (WWW
  2019), the strongest simple top-N model on MovieLens: an item-item weight matrix
  ``B = I - P diag(1 / diag(P))`` with ``P = (X^T X + lambda I)^{-1}`` over the binary
  training matrix ``X`` (zero diagonal), scores ``x_u B``. ``lambda`` is chosen on a
  validation split carved from the training ratings by NDCG@10.
- :class:`ItemQualityPopularity`: a non-personalised score, an item's number of
  ratings times its smoothed share of high ratings,
  ``n_i (h_i + a p) / (n_i + a)``; what a ranking that mostly follows popularity is
  worth.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from numpy.typing import NDArray

from rbm_core.base import Recommender
from rbm_core.baselines import NonPersonalised, _Baseline
from rbm_core.checks import check_number, check_random_state
from rbm_core.data import RatingMatrix
from rbm_core.metrics import ndcg_of_scores
from rbm_core.training import aligned_rows

__all__ = ["EASE", "EASE_L2_GRID", "MAX_EASE_ITEMS", "ItemQualityPopularity"]

EASE_L2_GRID = (50.0, 100.0, 200.0, 400.0, 800.0, 1600.0)
"""The ``lambda`` values EASE tries by default."""

MAX_EASE_ITEMS = 20_000
"""EASE inverts an items x items matrix: refused beyond this many items."""


def _binary(codes: sp.csr_matrix) -> sp.csr_matrix:
    return sp.csr_matrix(
        (np.ones(codes.nnz, dtype=np.float64), codes.indices, codes.indptr), shape=codes.shape
    )


def ease_weights(binary: sp.csr_matrix, l2: float) -> NDArray[np.float64]:
    """EASE's closed form ``B = I - P diag(1 / diag(P))``, ``P = (X^T X + l2 I)^{-1}``."""
    gram = np.asarray((binary.T @ binary).todense(), dtype=np.float64)
    gram[np.diag_indices_from(gram)] += l2
    inverse = scipy.linalg.inv(gram, overwrite_a=True, check_finite=False)
    weights: NDArray[np.float64] = -inverse / np.diag(inverse)[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights


class EASE(_Baseline, Recommender):
    """EASE (Steck, WWW 2019) with ``l2`` chosen on a validation split (see the module).

    Parameters
    ----------
    l2_grid : sequence of float or None
        The values of ``lambda`` tried (by default :data:`EASE_L2_GRID`).
    validation_fraction : float
        Share of each user's ratings held out to choose ``lambda``.
    random_state : int, numpy.random.Generator or None
        Draws the validation split.

    Attributes
    ----------
    weights_ : ndarray of shape (n_items_, n_items_)
    l2_ : float
        The ``lambda`` chosen.
    validation_ndcg_ : dict of str to float
        Held-out NDCG@10 of each ``lambda`` tried.
    item_mean_ : ndarray of shape (n_items_,)
        Damped mean rating of each item (the ``predicted_rating`` of its lists).
    """

    _array_attributes = (*_Baseline._array_attributes, "weights_", "item_mean_")
    _metadata_attributes = (*_Baseline._metadata_attributes, "l2_", "validation_ndcg_")

    def __init__(
        self,
        *,
        l2_grid: Sequence[float] | None = None,
        validation_fraction: float = 0.2,
        random_state: int | np.random.Generator | None = 0,
    ) -> None:
        self.l2_grid = l2_grid
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def _grid(self) -> list[float]:
        return list(EASE_L2_GRID if self.l2_grid is None else self.l2_grid)

    def _validate_params(self) -> None:
        grid = self._grid()
        if not grid:
            raise ValueError("l2_grid must list at least one value")
        for value in grid:
            check_number("l2_grid value", value, low=0.0, low_open=True)
        check_number(
            "validation_fraction", self.validation_fraction, low=0.0, low_open=True, high=0.5
        )
        check_random_state(self.random_state)

    def fit(self, train: RatingMatrix) -> EASE:
        """Choose ``lambda`` on a validation split, then fit on all of ``train``."""
        self._validate_params()
        self._store_statistics(train)
        if train.n_items > MAX_EASE_ITEMS:
            raise ValueError(
                f"EASE needs a {train.n_items} x {train.n_items} matrix; it is refused beyond "
                f"{MAX_EASE_ITEMS} items"
            )
        kept, held = train.split(float(self.validation_fraction), self.random_state)
        inputs = _binary(aligned_rows(kept, held.user_ids))
        relevant = sp.csr_matrix(held.values >= train.scale.high_rating)
        scores = {}
        for l2 in self._grid():
            weights = ease_weights(_binary(kept.codes), float(l2))
            scores[float(l2)] = ndcg_of_scores(inputs @ weights, inputs, relevant)
        self.validation_ndcg_ = scores
        self.l2_ = max(scores, key=lambda value: (scores[value], -value))
        self.weights_ = ease_weights(_binary(train.codes), self.l2_)
        sums = np.asarray(train.values.sum(axis=0), dtype=np.float64).ravel()
        self.item_mean_ = (sums + 10.0 * self.global_mean_) / (self.item_popularity_ + 10.0)
        return self

    def _score_codes(self, codes: sp.csr_matrix) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        scores = np.asarray(_binary(codes) @ self.weights_)
        return scores, np.broadcast_to(self.item_mean_, scores.shape)


class ItemQualityPopularity(NonPersonalised):
    """Item count times smoothed share of high ratings (non-personalised; see the module).

    Parameters
    ----------
    prior_count : float
        Pseudo-ratings ``a`` at the global share of high ratings.
    high_rating : float or None
        A rating at or above it is high; by default the upper quarter of the scale.
    """

    def __init__(self, *, prior_count: float = 5.0, high_rating: float | None = None) -> None:
        self.prior_count = prior_count
        self.high_rating = high_rating

    def _validate_params(self) -> None:
        check_number("prior_count", self.prior_count, low=0.0)
        if self.high_rating is not None:
            check_number("high_rating", self.high_rating)

    def fit(self, train: RatingMatrix) -> ItemQualityPopularity:
        """Count each item's ratings and high ratings in ``train``; returns ``self``."""
        self._validate_params()
        self._store_statistics(train)
        values = train.values
        high = train.scale.high_rating if self.high_rating is None else float(self.high_rating)
        n_high = np.asarray((values >= high - 1e-9).sum(axis=0), dtype=np.float64).ravel()
        counts = self.item_popularity_
        share = float(n_high.sum() / max(counts.sum(), 1.0))
        a = float(self.prior_count)
        self.item_score_ = counts * (n_high + a * share) / (counts + a)
        sums = np.asarray(values.sum(axis=0), dtype=np.float64).ravel()
        self.item_mean_ = (sums + 10.0 * self.global_mean_) / (counts + 10.0)
        return self
