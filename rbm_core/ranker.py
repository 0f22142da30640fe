"""The top-N ranker: a Bernoulli RBM over which items each user rated.

Recommending is predicting what a user will engage with, not only how the user will
rate it; a model of ratings alone ranks poorly (docs/model.md). The ranker is an RBM
whose visible layer is a user's implicit vector over *all* items (1 = rated,
0 = not), trained by contrastive divergence (:class:`~rbm_core.bernoulli.BernoulliRBM`).
A user is folded in from the items they rated; every item gets the mean-field
log-odds of being rated,

    ``s_i = b_i + sum_j W_ij p(h_j = 1 | r)``,  with ``p(h | r) = sigmoid(c + r W)``,

whose two terms the served model weighs separately: the visible bias ``b_i`` (the
item's learned popularity) and the personal term through the hidden units. The
number of epochs is chosen by early stopping on held-out NDCG@10 when validation
ratings are given.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.special import expit

from rbm_core.base import Recommender, nearest_items, unit_rows
from rbm_core.bernoulli import BernoulliRBM
from rbm_core.checks import (
    check_number,
    check_positive_int,
    check_random_state,
    check_rating_matrix,
)
from rbm_core.data import RatingMatrix
from rbm_core.metrics import ndcg_of_scores
from rbm_core.softmax_inference import DTYPE
from rbm_core.training import aligned_rows, blas_thread_limit

__all__ = ["RBMRanker", "implicit_matrix"]


def implicit_matrix(codes: sp.csr_matrix) -> sp.csr_matrix:
    """The binary "rated" matrix of level codes, float32 (the ranker's visible data)."""
    return sp.csr_matrix(
        (np.ones(codes.nnz, dtype=DTYPE), codes.indices, codes.indptr), shape=codes.shape
    )


class RBMRanker(Recommender):
    """Bernoulli RBM over users' implicit "rated" vectors; ranks by ``p(v_i = 1 | user)``.

    Parameters
    ----------
    n_hidden, learning_rate, momentum, weight_decay, batch_size, n_epochs, cd_steps,
    persistent, blas_threads
        As for :class:`~rbm_core.bernoulli.BernoulliRBM` (``batch_size`` counts users;
        ``n_epochs`` is the maximum with early stopping).
    evaluate_every : int
        With validation ratings, the held-out NDCG@10 is measured every this many
        epochs, and training stops when it has not improved ``n_iter_no_change`` times
        in a row; the best measured epoch's weights are kept.
    n_iter_no_change : int
        Patience of early stopping, in evaluations.
    relevance_threshold : float or None
        Held-out ratings at or above it are the relevant items of early stopping; by
        default the upper quarter of the scale (:attr:`RatingScale.high_rating`).
    random_state : int, numpy.random.Generator or None
    verbose : bool

    Attributes
    ----------
    weights_ : ndarray of shape (n_items_, n_hidden)
    visible_bias_ : ndarray of shape (n_items_,)
    hidden_bias_ : ndarray of shape (n_hidden,)
    item_popularity_ : ndarray of shape (n_items_,)
    item_mean_ : ndarray of shape (n_items_,)
        Mean training rating of each item, shrunk towards the global mean with 10
        pseudo-ratings (the ``predicted_rating`` of the ranker alone).
    n_epochs_ : int
        Epochs of the weights kept.
    history_ : list of dict
        The BernoulliRBM's per-epoch history, with ``validation_ndcg`` where measured.
    item_ids_, scale_, n_items_, n_users_
    """

    _array_attributes = (
        "weights_",
        "visible_bias_",
        "hidden_bias_",
        "item_popularity_",
        "item_mean_",
    )
    _metadata_attributes = (*Recommender._metadata_attributes, "n_epochs_", "history_")

    def __init__(
        self,
        *,
        n_hidden: int = 200,
        learning_rate: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 0.01,
        batch_size: int = 50,
        n_epochs: int = 40,
        cd_steps: int = 1,
        persistent: bool = False,
        evaluate_every: int = 5,
        n_iter_no_change: int = 3,
        relevance_threshold: float | None = None,
        random_state: int | np.random.Generator | None = None,
        blas_threads: int | None = 1,
        verbose: bool = False,
    ) -> None:
        self.n_hidden = n_hidden
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.cd_steps = cd_steps
        self.persistent = persistent
        self.evaluate_every = evaluate_every
        self.n_iter_no_change = n_iter_no_change
        self.relevance_threshold = relevance_threshold
        self.random_state = random_state
        self.blas_threads = blas_threads
        self.verbose = verbose

    def _machine(self) -> BernoulliRBM:
        return BernoulliRBM(
            n_hidden=self.n_hidden,
            learning_rate=self.learning_rate,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            n_epochs=self.n_epochs,
            cd_steps=self.cd_steps,
            persistent=self.persistent,
            random_state=self.random_state,
            blas_threads=self.blas_threads,
            verbose=False,
        )

    def _validate_params(self) -> None:
        self._machine()._validate_params()
        check_positive_int("evaluate_every", self.evaluate_every)
        check_positive_int("n_iter_no_change", self.n_iter_no_change)
        if self.relevance_threshold is not None:
            check_number("relevance_threshold", self.relevance_threshold)
        check_random_state(self.random_state)

    # -- training ---------------------------------------------------------------------------
    def fit(self, train: RatingMatrix, validation: RatingMatrix | None = None) -> RBMRanker:
        """Train on the implicit vectors of ``train``; early stopping on ``validation``.

        Parameters
        ----------
        train : RatingMatrix
        validation : RatingMatrix, optional
            Held-out ratings of (mostly) the same users: the relevant ones (at or above
            ``relevance_threshold``) are what the held-out NDCG@10 looks for.

        Returns
        -------
        RBMRanker
            ``self``.
        """
        self._validate_params()
        check_rating_matrix(train, "train")
        if validation is not None:
            check_rating_matrix(validation, "validation")
        visible = implicit_matrix(train.codes)
        machine = self._machine()
        held = None if validation is None else self._held_out(train, validation)
        best: tuple[float, int, BernoulliRBM] | None = None
        misses = 0
        history: list[dict[str, Any]] = []
        with blas_thread_limit(self.blas_threads):
            for epoch in range(1, int(self.n_epochs) + 1):
                machine.partial_fit(visible)
                entry = dict(machine.history_[-1], validation_ndcg=None)
                if held is not None and (
                    epoch % int(self.evaluate_every) == 0 or epoch == int(self.n_epochs)
                ):
                    inputs, relevant = held
                    score = ndcg_of_scores(_logits(machine, inputs), inputs, relevant)
                    entry["validation_ndcg"] = score
                    if best is None or score > best[0]:
                        best, misses = (score, epoch, copy.deepcopy(machine)), 0
                    else:
                        misses += 1
                history.append(entry)
                if held is not None and misses >= int(self.n_iter_no_change):
                    break
        kept = machine if best is None else best[2]
        self.weights_ = np.asarray(kept.weights_, dtype=DTYPE)
        self.visible_bias_ = np.asarray(kept.visible_bias_, dtype=DTYPE)
        self.hidden_bias_ = np.asarray(kept.hidden_bias_, dtype=DTYPE)
        self.n_epochs_ = kept.n_epochs_
        self.history_ = history
        counts = np.diff(train.codes.tocsc().indptr).astype(np.float64)
        sums = np.asarray(train.values.sum(axis=0), dtype=np.float64).ravel()
        mean = float(sums.sum() / max(counts.sum(), 1.0))
        self.item_popularity_ = counts.astype(DTYPE)
        self.item_mean_ = ((sums + 10.0 * mean) / (counts + 10.0)).astype(DTYPE)
        self._store_catalog(train)
        return self

    def _held_out(
        self, train: RatingMatrix, validation: RatingMatrix
    ) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """The validation users' training inputs and their relevant held-out items."""
        if not np.array_equal(validation.item_ids, train.item_ids):
            validation = validation.with_item_catalog(train.item_ids)
        inputs = implicit_matrix(aligned_rows(train, validation.user_ids))
        threshold = (
            train.scale.high_rating
            if self.relevance_threshold is None
            else float(self.relevance_threshold)
        )
        values = validation.values
        relevant = sp.csr_matrix(values >= threshold, dtype=DTYPE)
        relevant.eliminate_zeros()
        return inputs, relevant

    # -- scoring ----------------------------------------------------------------------------
    def personal_scores(self, codes: sp.csr_matrix) -> NDArray[np.floating]:
        """The personal term ``sum_j W_ij p(h_j | r)`` of every item, shape (n_users, n_items_)."""
        self._check_fitted()
        hidden = expit(implicit_matrix(codes) @ self.weights_ + self.hidden_bias_)
        result: NDArray[np.floating] = hidden @ self.weights_.T
        return result

    def personal_scores_one(self, items: NDArray[np.int64]) -> NDArray[np.floating]:
        """:meth:`personal_scores` of one user given as the columns rated, shape (n_items_,)."""
        hidden = expit(self.weights_[items].sum(axis=0) + self.hidden_bias_)
        result: NDArray[np.floating] = self.weights_ @ hidden
        return result

    def leave_one_out_personal(
        self, items: NDArray[np.int64], targets: NDArray[np.int64]
    ) -> NDArray[np.floating]:
        """The personal term of ``targets`` with each rated item left out, (n_rated, T).

        Parameters
        ----------
        items : ndarray of int, shape (n_rated,)
            The columns the user rated.
        targets : ndarray of int, shape (T,)
        """
        x = self.weights_[items].sum(axis=0) + self.hidden_bias_
        hidden = expit(x[None, :] - self.weights_[items])
        result: NDArray[np.floating] = hidden @ self.weights_[targets].T
        return result

    def _score_codes(
        self, codes: sp.csr_matrix
    ) -> tuple[NDArray[np.floating], NDArray[np.floating]]:
        scores = self.personal_scores(codes) + self.visible_bias_
        return scores, np.broadcast_to(self.item_mean_, scores.shape)

    def _score_one(
        self, items: NDArray[np.int64], levels: NDArray[np.int64]
    ) -> tuple[NDArray[np.floating], NDArray[np.floating]]:
        scores = self.personal_scores_one(items) + self.visible_bias_
        return scores[None, :], self.item_mean_[None, :]

    def similar_items(self, item_id: str, n: int = 10) -> list[tuple[str, float]]:
        """The ``n`` items whose hidden-unit weights are closest to ``item_id``'s (cosine).

        Items rated by the same kind of users drive the hidden units alike: "people who
        rated this also rated". The item itself is left out.

        Raises
        ------
        UnknownItemError
            If the model does not know ``item_id``.
        """
        self._check_fitted()
        n = check_positive_int("n", n)
        col = self._column(item_id)
        units = self._cached("item_units", lambda: unit_rows(self.weights_))
        return [(str(self.item_ids_[c]), sim) for c, sim in nearest_items(units, col, n)]

    def _check_restored(self) -> None:
        super()._check_restored()
        m, f = self.weights_.shape
        if m != len(self.item_ids_) or self.visible_bias_.shape != (m,):
            raise ValueError("array shapes do not match")
        if self.hidden_bias_.shape != (f,) or self.item_mean_.shape != (m,):
            raise ValueError("array shapes do not match")


def _logits(machine: BernoulliRBM, visible: sp.csr_matrix) -> NDArray[np.floating]:
    """Mean-field ``b_i + sum_j W_ij p(h_j | v)`` of a BernoulliRBM being trained."""
    hidden = expit(visible @ machine.weights_ + machine.hidden_bias_)
    result: NDArray[np.floating] = hidden @ machine.weights_.T + machine.visible_bias_
    return result
