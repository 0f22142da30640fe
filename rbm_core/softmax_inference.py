"""What a fitted softmax RBM computes: fold-in, ``p(v | V)``, scores, features and samples.

:class:`SoftmaxRBMInference` holds the inference of :class:`~rbm_core.model.SoftmaxRBM`
(which adds the hyperparameters, training and persistence): a user's ratings are
folded in to the hidden layer, then every item's rating distribution, expected
rating and ranking score follow. The formulas are in :mod:`rbm_core.functional`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.special import expit

from rbm_core import functional as fn
from rbm_core.base import Prediction, Recommender, is_user_batch
from rbm_core.checks import check_positive_int
from rbm_core.data import UserRatings, find_sorted
from rbm_core.similarity import nearest_items, unit_rows

__all__ = ["DTYPE", "FoldIn", "PredictionMode", "RankingScore", "SoftmaxRBMInference"]

DTYPE = np.float32
"""dtype of every learned array and of all inference arithmetic."""

PredictionMode = Literal["mean_field", "exact"]
RankingScore = Literal["expected", "p_high", "p_high_popularity"]


@dataclass(frozen=True)
class FoldIn:
    """Users folded into the model: hidden inputs and conditional visible biases."""

    x: NDArray[np.floating]  # (n, F) hidden inputs
    user_bias: NDArray[np.floating] | None  # (n, K) or None

    def __getitem__(self, rows: slice) -> FoldIn:
        return FoldIn(self.x[rows], None if self.user_bias is None else self.user_bias[rows])


class SoftmaxRBMInference(Recommender):
    """Inference of a fitted softmax-visible RBM (see :class:`~rbm_core.model.SoftmaxRBM`).

    It reads the learned arrays below and the hyperparameters that shape inference
    (``prediction``, ``ranking``, ``high_rating``, ``popularity_weight``,
    ``hidden_dropout``, ``user_offset``, ``offset_shrinkage``), all set by the
    estimator that extends it.
    """

    weights_: NDArray[np.floating]
    visible_bias_: NDArray[np.floating]
    hidden_bias_: NDArray[np.floating]
    offset_weights_: NDArray[np.floating]
    implicit_weights_: NDArray[np.floating]
    item_means_: NDArray[np.floating]
    item_popularity_: NDArray[np.floating]

    prediction: PredictionMode
    ranking: RankingScore
    high_rating: float
    popularity_weight: float
    hidden_dropout: float
    user_offset: bool
    offset_shrinkage: float

    # -- fold-in: from ratings to the hidden layer ------------------------------------------
    def _free_energies(self, codes: sp.csr_matrix) -> NDArray[np.floating]:
        """``F(V)`` of each user of a code matrix, shape (n_users,)."""
        visible = fn.one_hot_visible(codes, self.scale_.n_levels, DTYPE)
        ub = self._user_bias(self._user_offsets(codes))
        hb = self._hidden_bias_of(codes)
        return fn.free_energy(visible, self.weights_, self.visible_bias_, hb, ub)

    def _hidden_bias_of(self, codes: sp.csr_matrix) -> NDArray[np.floating]:
        """``c``, plus ``sum_{i rated} D_i`` per user with implicit input, (F,) or (n, F)."""
        if not len(self.implicit_weights_):
            return self.hidden_bias_
        rated = sp.csr_matrix(
            (np.ones(codes.nnz, dtype=DTYPE), codes.indices, codes.indptr), shape=codes.shape
        )
        hb: NDArray[np.floating] = np.asarray(rated @ self.implicit_weights_)
        hb += self.hidden_bias_
        return hb

    def _user_offsets(self, codes: sp.csr_matrix) -> NDArray[np.floating] | None:
        """Each user's rating offset ``z_u`` (see :func:`functional.user_offsets`), or None."""
        if not self.user_offset:
            return None
        z = fn.user_offsets(
            codes, self.scale_.values, self.item_means_, float(self.offset_shrinkage)
        )
        return z.astype(DTYPE)

    def _user_bias(self, offsets: NDArray[np.floating] | None) -> NDArray[np.floating] | None:
        """Conditional visible bias ``u_k = a_k z_u`` of each user, shape (n, K)."""
        return None if offsets is None else fn.offset_bias(offsets, self.offset_weights_)

    def _fold_in(self, codes: sp.csr_matrix) -> FoldIn:
        visible = fn.one_hot_visible(codes, self.scale_.n_levels, DTYPE)
        x = fn.hidden_input(visible, self.weights_, self._hidden_bias_of(codes))
        return FoldIn(x, self._user_bias(self._user_offsets(codes)))

    def _fold_in_one(self, items: NDArray[np.int64], levels: NDArray[np.int64]) -> FoldIn:
        # sparse gather: only the rated items' rows of W take part
        x = self.weights_[items, levels].sum(axis=0, dtype=DTYPE)
        x += self.hidden_bias_
        if len(self.implicit_weights_):
            x += self.implicit_weights_[items].sum(axis=0, dtype=DTYPE)
        ub = None
        if self.user_offset:
            dev = self.scale_.values[levels] - self.item_means_[items]
            z = fn.shrunk_mean(dev.sum(), len(items), float(self.offset_shrinkage))
            ub = fn.offset_bias(z.reshape(1).astype(DTYPE), self.offset_weights_)
        return FoldIn(x[None, :], ub)

    def leave_one_out_distribution(
        self, items: NDArray[np.int64], levels: NDArray[np.int64], query: NDArray[np.int64]
    ) -> NDArray[np.floating]:
        """``p(v_q | V minus rating r)`` for each of one user's ratings ``r``.

        One fold-in per left-out rating, all at once: the hidden input loses that
        rating's weights (and implicit weights), the rating offset its deviation.

        Parameters
        ----------
        items, levels : ndarray of int, shape (n_rated,)
            The user's ratings (columns and level indices).
        query : ndarray of int, shape (Q,)
            The items to predict.

        Returns
        -------
        ndarray of shape (n_rated, Q, K)
        """
        full = self._fold_in_one(items, levels)
        x = full.x - self.weights_[items, levels]
        if len(self.implicit_weights_):
            x -= self.implicit_weights_[items]
        user_bias = None
        if self.user_offset:
            dev = self.scale_.values[levels] - self.item_means_[items]
            z = fn.shrunk_mean(dev.sum() - dev, len(items) - 1, float(self.offset_shrinkage))
            user_bias = fn.offset_bias(z.astype(DTYPE), self.offset_weights_)
        return self._distribution_items(FoldIn(x, user_bias), query)

    def _top_down(self, x: NDArray[np.floating]) -> NDArray[np.floating]:
        """Hidden probabilities as the visible layer sees them (scaled for dropout)."""
        p: NDArray[np.floating] = expit(x)
        if self.hidden_dropout:
            p *= DTYPE(self._keep)
        return p

    @property
    def _keep(self) -> float:
        """Probability that a hidden unit is present (``1 - hidden_dropout``)."""
        return 1.0 - float(self.hidden_dropout)

    def distribution_at(
        self, codes: sp.csr_matrix, rows: NDArray[np.int64], items: NDArray[np.int64]
    ) -> NDArray[np.floating]:
        """``p(v_q | V)`` for (user row of ``codes``, item column) pairs, shape (n_pairs, K).

        Parameters
        ----------
        codes : scipy.sparse.csr_matrix of shape (n_users, n_items_)
            The users' ratings as level codes (see :class:`~rbm_core.data.RatingMatrix`).
        rows, items : ndarray of int, shape (n_pairs,)
        """
        self._check_fitted()
        return self._distribution_at(self._fold_in(codes), rows, items)

    def _distribution_at(
        self, fold: FoldIn, rows: NDArray[np.int64], items: NDArray[np.int64]
    ) -> NDArray[np.floating]:
        """``p(v_q | V)`` for (user row, item) pairs, shape (n_pairs, K)."""
        if self.prediction == "exact":
            return fn.exact_marginal_at(
                fold.x, self.weights_, self.visible_bias_, rows, items, fold.user_bias, self._keep
            )
        return fn.mean_field_at(
            self._top_down(fold.x), self.weights_, self.visible_bias_, rows, items, fold.user_bias
        )

    def _distribution_items(
        self, fold: FoldIn, query: NDArray[np.int64] | None = None
    ) -> NDArray[np.floating]:
        """``p(v_q | V)`` of every folded-in user for items ``query`` (all by default).

        Returns an array of shape (n_users, n_query, K).
        """
        w, b = self.weights_, self.visible_bias_
        if query is not None:
            w, b = w[query], b[query]
        if self.prediction == "exact":
            return fn.exact_marginal_distribution(fold.x, w, b, fold.user_bias, self._keep)
        return fn.mean_field_distribution(self._top_down(fold.x), w, b, fold.user_bias)

    # -- scoring (the hooks of Recommender) ---------------------------------------------------
    def _score_from(
        self, dist: NDArray[np.floating], expected: NDArray[np.floating]
    ) -> NDArray[np.floating]:
        """The ``ranking`` score from distributions (..., K) and expected ratings (...)."""
        if self.ranking == "expected":
            return expected
        high = self.scale_.values >= float(self.high_rating) - 1e-9
        if not high.any():
            high[-1] = True
        p_high: NDArray[np.floating] = dist[..., high].sum(axis=-1)
        if self.ranking == "p_high":
            return p_high
        pop = np.power(self.item_popularity_ + DTYPE(1.0), DTYPE(self.popularity_weight))
        score: NDArray[np.floating] = p_high * pop
        return score

    def _score_one(
        self, items: NDArray[np.int64], levels: NDArray[np.int64]
    ) -> tuple[NDArray[np.floating], NDArray[np.floating]]:
        dist = self._distribution_items(self._fold_in_one(items, levels))
        expected = dist @ self.scale_.values.astype(DTYPE)
        return self._score_from(dist, expected), expected

    def _score_codes(
        self, codes: sp.csr_matrix
    ) -> tuple[NDArray[np.floating], NDArray[np.floating]]:
        fold = self._fold_in(codes)
        n = codes.shape[0]
        scores = np.empty((n, self.n_items_), dtype=DTYPE)
        expected = np.empty((n, self.n_items_), dtype=DTYPE)
        values = self.scale_.values.astype(DTYPE)
        # bound the (users, M, K) temporaries
        step = max(1, (64 * 2**20) // max(1, self.n_items_ * self.scale_.n_levels * 4))
        for lo in range(0, n, step):
            dist = self._distribution_items(fold[lo : lo + step])
            expected[lo : lo + step] = dist @ values
            scores[lo : lo + step] = self._score_from(dist, expected[lo : lo + step])
        return scores, expected

    # -- public inference -------------------------------------------------------------------
    def predict(
        self, user_ratings: UserRatings, item_ids: Sequence[str] | None = None
    ) -> Prediction:
        """Predict one user's ratings from the ratings given (fold-in).

        Parameters
        ----------
        user_ratings : mapping of str to float
            The user's ratings (item id -> value on the model's scale). Unknown items
            are ignored and listed in ``Prediction.ignored_ratings``.
        item_ids : sequence of str, optional
            Items to predict; all model items by default. Unknown ones are listed in
            ``Prediction.unknown_items``.

        Returns
        -------
        Prediction
        """
        self._check_fitted()
        items, levels, ignored = self._encode_one(user_ratings)
        cols, names, unknown = self._columns(item_ids)
        query = None if item_ids is None else cols
        dist = self._distribution_items(self._fold_in_one(items, levels), query)[0]
        expected = dist @ self.scale_.values.astype(DTYPE)
        return Prediction(names, expected, unknown, ignored, distribution=dist)

    def transform(self, user_ratings: UserRatings | Sequence[UserRatings]) -> NDArray[np.floating]:
        """Hidden features ``p(h | V)`` of one user, shape (F,), or many, shape (n, F)."""
        self._check_fitted()
        if is_user_batch(user_ratings):
            codes = self._encode(user_ratings).codes  # type: ignore[arg-type]
            result: NDArray[np.floating] = expit(self._fold_in(codes).x)
            return result
        items, levels, _ = self._encode_one(user_ratings)  # type: ignore[arg-type]
        single: NDArray[np.floating] = expit(self._fold_in_one(items, levels).x[0])
        return single

    def free_energy(
        self, user_ratings: UserRatings | Sequence[UserRatings]
    ) -> float | NDArray[np.floating]:
        """Free energy ``F(V)`` of one user's ratings (a float) or many (shape (n,)).

        ``p(V)`` is proportional to ``exp(-F(V))`` among rating vectors of the same items;
        unknown items are ignored.
        """
        self._check_fitted()
        batch = is_user_batch(user_ratings)
        users = user_ratings if batch else [user_ratings]
        fe = self._free_energies(self._encode(users).codes)  # type: ignore[arg-type]
        return fe if batch else float(fe[0])

    def sample(
        self,
        user_ratings: UserRatings | None = None,
        item_ids: Sequence[str] | None = None,
        *,
        n_samples: int = 1,
        n_steps: int = 100,
        random_state: int | np.random.Generator | None = None,
    ) -> NDArray[np.float64]:
        """Generate ratings from the model by block Gibbs sampling.

        Parameters
        ----------
        user_ratings : mapping of str to float, optional
            Starting state of the chains (its known items). Without it the chains
            start from uniformly random levels.
        item_ids : sequence of str, optional
            The items to generate ratings for (the visible units present); by default
            the known items of ``user_ratings``.
        n_samples : int
            Independent chains.
        n_steps : int
            Gibbs steps per chain (``v -> h -> v``).
        random_state : int, numpy.random.Generator or None

        Returns
        -------
        ndarray of shape (n_samples, n_items)
            Sampled rating values, columns in the order of ``item_ids`` (or of the
            known items of ``user_ratings``, in model order).

        Raises
        ------
        UnknownItemError
            If an item of ``item_ids`` is not known to the model.
        ValueError
            If no item is given, or ``n_samples`` / ``n_steps`` is not a positive int.
        """
        self._check_fitted()
        n_samples = check_positive_int("n_samples", n_samples)
        n_steps = check_positive_int("n_steps", n_steps)
        rng = np.random.default_rng(random_state)
        start_items = np.empty(0, dtype=np.int64)
        start_levels = np.empty(0, dtype=np.int64)
        if user_ratings is not None:
            start_items, start_levels, _ = self._encode_one(user_ratings)
        if item_ids is None:
            query = start_items
        elif isinstance(item_ids, str):
            raise TypeError("item_ids must be a sequence of item ids, not a single string")
        else:
            query = np.asarray([self._column(item) for item in item_ids], dtype=np.int64)
        if len(query) == 0:
            raise ValueError("nothing to sample: give item_ids or ratings of known items")
        # chains start at the given ratings where there are some, uniformly elsewhere
        levels = rng.integers(0, self.scale_.n_levels, size=(n_samples, len(query)))
        bias = self.visible_bias_[query]
        if len(start_items):
            pos, given = find_sorted(start_items, query)
            levels[:, given] = start_levels[pos[given]]
            # the conditioning offset comes from the ratings given (none: zero)
            ub = self._fold_in_one(start_items, start_levels).user_bias
            if ub is not None:
                bias = bias + ub
        weights = self.weights_[query]
        hidden_bias = self.hidden_bias_
        if len(self.implicit_weights_):
            # the conditioning "rated" vector: the items whose ratings are sampled
            hidden_bias = hidden_bias + self.implicit_weights_[query].sum(axis=0)
        for _ in range(n_steps):
            hidden = fn.sample_hiddens(levels, weights, hidden_bias, rng)
            levels = fn.sample_visibles(hidden, weights, bias, rng)
        return self.scale_.values[levels]

    def similar_items(self, item_id: str, n: int = 10) -> list[tuple[str, float]]:
        """The ``n`` items whose weights are most similar to ``item_id``'s (cosine).

        Each item is represented by its weights ``W[m]`` (K x F, flattened); the item
        itself is left out.

        Raises
        ------
        UnknownItemError
            If the model does not know ``item_id`` (a ``KeyError``).
        """
        self._check_fitted()
        n = check_positive_int("n", n)
        col = self._column(item_id)
        units = self._cached("item_units", lambda: unit_rows(self.weights_))
        return [(str(self.item_ids_[c]), sim) for c, sim in nearest_items(units, col, n)]
