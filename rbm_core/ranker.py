"""The top-N ranker: a Bernoulli RBM over which items each user rated, and liked.

Recommending is predicting what a user will engage with *and* like, not only how the
user would rate an item; a model of ratings alone ranks poorly (docs/model.md). The
ranker is an RBM whose visible layer has two binary units per item (2M in all): *rated*
(the user rated the item) and *liked* (the rating is at least the high rating, 4 on
1..5). It is trained by contrastive divergence (:class:`~rbm_core.bernoulli.BernoulliRBM`)
on every training user's vector. A user is folded in from the items they rated and
liked; every item gets the mean-field log-odds of being rated and of being liked,

    ``s_i = (b_i + b_{M+i}) + sum_j (W_ij + W_{M+i,j}) p(h_j = 1 | v)``,
    ``p(h | v) = sigmoid(c + kappa_u v W)``,

whose two parts the served model weighs separately: the visible biases (the item's
learned popularity) and the personal term through the hidden units.

**Evidence scaling.** The machine learns from whole profiles (a MovieLens user rated
about 80 items). A profile of ten ratings folded in as it is barely moves the hidden
units, so every short profile gets the same popular list. Read as a sample of a
longer profile, its input is scaled by ``kappa_u = max(1, n_ref / n_u)^alpha``
(``n_ref``: the mean training profile length): ``alpha = 0`` is the plain mean field;
the served model chooses ``alpha`` on held-out ratings of users folded in from their
whole profile and from ten of their ratings (docs/model.md). The number of epochs is
chosen by early stopping on held-out NDCG@10 when validation ratings are given.

**Low ratings.** The machine is trained on what users rated; a rating says "I watched
this", however low. Read that way, a new user who rates four horror films 1 is folded
in as a horror watcher and gets horror. At fold-in the rated unit of an item rated at
or below the low rating (2 on 1..5) is read as ``1 - dislike_weight``: 0 by default (a
low rating is no evidence of interest), below 0 for evidence against. Training is
unchanged; the cost on held-out NDCG is measured in docs/model.md.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.special import expit

from rbm_core.base import Recommender
from rbm_core.bernoulli import BernoulliRBM
from rbm_core.checks import (
    check_number,
    check_positive_int,
    check_random_state,
    check_rating_matrix,
)
from rbm_core.data import RatingMatrix
from rbm_core.metrics import ndcg_of_scores
from rbm_core.similarity import nearest_items, unit_rows
from rbm_core.softmax_inference import DTYPE
from rbm_core.training import aligned_rows, blas_thread_limit

__all__ = ["RBMRanker", "visible_matrix"]

_MACHINE_PARAMS = (
    "n_hidden",
    "learning_rate",
    "momentum",
    "weight_decay",
    "batch_size",
    "n_epochs",
    "cd_steps",
    "persistent",
    "random_state",
    "blas_threads",
)
"""Hyperparameters passed unchanged to the BernoulliRBM."""


def visible_matrix(
    codes: sp.csr_matrix,
    liked_code: int,
    disliked_code: int = 0,
    dislike_weight: float = 0.0,
) -> sp.csr_matrix:
    """The ranker's visible rows ``[rated | liked]`` of level codes, shape (n, 2M), float32.

    Parameters
    ----------
    codes : scipy.sparse.csr_matrix of shape (n, M)
        Level codes (level index + 1).
    liked_code : int
        The lowest code that counts as liked.
    disliked_code, dislike_weight
        The fold-in input: the rated unit of an item whose code is at most
        ``disliked_code`` holds ``1 - dislike_weight`` (see the module docstring). By
        default every rated unit holds 1, as in training.
    """
    n, m = codes.shape
    liked = codes.data >= liked_code
    rated = np.ones(len(codes.data), dtype=DTYPE)
    if disliked_code >= 1 and dislike_weight:
        rated[codes.data <= disliked_code] = 1.0 - dislike_weight
    rows = np.repeat(np.arange(n), np.diff(codes.indptr))
    cols = np.concatenate([codes.indices, codes.indices[liked] + m])
    values = np.concatenate([rated, np.ones(int(liked.sum()), dtype=DTYPE)])
    all_rows = np.concatenate([rows, rows[liked]])
    visible = sp.csr_matrix((values, (all_rows, cols)), shape=(n, 2 * m))
    visible.sort_indices()
    return visible


class RBMRanker(Recommender):
    """Bernoulli RBM over users' ``[rated | liked]`` vectors; ranks by their log-odds.

    Parameters
    ----------
    n_hidden, learning_rate, momentum, weight_decay, batch_size, n_epochs, cd_steps,
    persistent, blas_threads
        As for :class:`~rbm_core.bernoulli.BernoulliRBM` (``batch_size`` counts users;
        ``n_epochs`` is the maximum with early stopping).
    liked_rating : float or None
        A rating at or above it is "liked"; by default the scale's
        :attr:`~rbm_core.scale.RatingScale.high_rating`.
    evidence_exponent : float
        ``alpha`` of the evidence scaling (see the module docstring), >= 0.
    disliked_rating : float or None
        A rating at or below it is "low"; by default the scale's
        :attr:`~rbm_core.scale.RatingScale.low_rating`.
    dislike_weight : float
        At fold-in the rated unit of a low rating holds ``1 - dislike_weight``: 1 (the
        default) reads a low rating as no evidence of interest, 0 as any other rating,
        above 1 as evidence against (see the module docstring). >= 0.
    evaluate_every : int
        With validation ratings, the held-out NDCG@10 is measured every this many
        epochs, and training stops when it has not improved ``n_iter_no_change`` times
        in a row; the best measured epoch's weights are kept.
    n_iter_no_change : int
        Patience of early stopping, in evaluations.
    relevance_threshold : float or None
        Held-out ratings at or above it are the relevant items of early stopping; by
        default ``liked_rating``.
    random_state : int, numpy.random.Generator or None
    verbose : bool

    Attributes
    ----------
    weights_ : ndarray of shape (2 * n_items_, n_hidden)
        Rows ``0..M-1`` for "rated", ``M..2M-1`` for "liked".
    visible_bias_ : ndarray of shape (2 * n_items_,)
    hidden_bias_ : ndarray of shape (n_hidden,)
    item_popularity_ : ndarray of shape (n_items_,)
    item_mean_ : ndarray of shape (n_items_,)
        Mean training rating of each item, shrunk towards the global mean with 10
        pseudo-ratings (the ``predicted_rating`` of the ranker alone).
    liked_level_ : int
        Index of the lowest liked level.
    disliked_level_ : int
        Index of the highest low level (-1: none, as in artifacts saved before it).
    reference_count_ : float
        ``n_ref``, the mean number of ratings of a training user.
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
    _metadata_attributes = (
        *Recommender._metadata_attributes,
        "liked_level_",
        "disliked_level_",
        "reference_count_",
        "n_epochs_",
        "history_",
    )

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
        liked_rating: float | None = None,
        evidence_exponent: float = 0.5,
        disliked_rating: float | None = None,
        dislike_weight: float = 1.0,
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
        self.liked_rating = liked_rating
        self.evidence_exponent = evidence_exponent
        self.disliked_rating = disliked_rating
        self.dislike_weight = dislike_weight
        self.evaluate_every = evaluate_every
        self.n_iter_no_change = n_iter_no_change
        self.relevance_threshold = relevance_threshold
        self.random_state = random_state
        self.blas_threads = blas_threads
        self.verbose = verbose

    def _machine(self) -> BernoulliRBM:
        """The Bernoulli RBM this estimator trains (its hyperparameters checked)."""
        shared = {name: getattr(self, name) for name in _MACHINE_PARAMS}
        return BernoulliRBM(**shared, verbose=False)

    def _validate_params(self) -> None:
        self._machine()._validate_params()
        check_positive_int("evaluate_every", self.evaluate_every)
        check_positive_int("n_iter_no_change", self.n_iter_no_change)
        check_number("evidence_exponent", self.evidence_exponent, low=0.0)
        check_number("dislike_weight", self.dislike_weight, low=0.0)
        for name in ("liked_rating", "disliked_rating", "relevance_threshold"):
            if getattr(self, name) is not None:
                check_number(name, getattr(self, name))
        check_random_state(self.random_state)

    # -- training ---------------------------------------------------------------------------
    def fit(self, train: RatingMatrix, validation: RatingMatrix | None = None) -> RBMRanker:
        """Train on the ``[rated | liked]`` vectors of ``train``; early stopping on ``validation``.

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
        liked = train.scale.high_rating if self.liked_rating is None else self.liked_rating
        self.liked_level_ = int(np.searchsorted(train.scale.values, float(liked) - 1e-9))
        low = train.scale.low_rating if self.disliked_rating is None else self.disliked_rating
        self.disliked_level_ = int(np.searchsorted(train.scale.values, float(low) + 1e-9)) - 1
        if self.disliked_level_ >= self.liked_level_:
            raise ValueError(
                f"disliked_rating ({low:g}) must be below liked_rating ({float(liked):g})"
            )
        self._store_catalog(train)
        visible = visible_matrix(train.codes, self.liked_level_ + 1)
        machine = self._machine()
        held = None if validation is None else self._held_out(train, validation)
        best: tuple[float, BernoulliRBM] | None = None
        misses = 0
        history: list[dict[str, Any]] = []
        with blas_thread_limit(self.blas_threads):
            for epoch in range(1, int(self.n_epochs) + 1):
                machine.partial_fit(visible)
                entry = dict(machine.history_[-1], validation_ndcg=None)
                if held is not None and (
                    epoch % int(self.evaluate_every) == 0 or epoch == int(self.n_epochs)
                ):
                    inputs, rated, relevant = held
                    score = ndcg_of_scores(_logits(machine, inputs), rated, relevant)
                    entry["validation_ndcg"] = score
                    if best is None or score > best[0]:
                        best, misses = (score, copy.deepcopy(machine)), 0
                    else:
                        misses += 1
                history.append(entry)
                if held is not None and misses >= int(self.n_iter_no_change):
                    break
        kept = machine if best is None else best[1]
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
        self.reference_count_ = float(train.n_ratings / max(train.n_users, 1))
        self._reset_caches()  # what was derived from earlier weights
        return self

    def _held_out(
        self, train: RatingMatrix, validation: RatingMatrix
    ) -> tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix]:
        """The validation users' visible inputs, rated items and relevant held-out items."""
        if not np.array_equal(validation.item_ids, train.item_ids):
            validation = validation.with_item_catalog(train.item_ids)
        codes = aligned_rows(train, validation.user_ids)
        threshold = (
            train.scale.values[self.liked_level_]
            if self.relevance_threshold is None
            else float(self.relevance_threshold)
        )
        relevant = sp.csr_matrix(validation.values >= threshold - 1e-9, dtype=DTYPE)
        relevant.eliminate_zeros()
        return self._evidence(codes), codes, relevant

    # -- scoring ----------------------------------------------------------------------------
    @property
    def item_bias(self) -> NDArray[np.floating]:
        """``b_i + b_{M+i}``: each item's learned log-odds of being rated and liked."""
        m = self.n_items_
        bias: NDArray[np.floating] = self.visible_bias_[:m] + self.visible_bias_[m:]
        return bias

    def _exponent(self, evidence_exponent: float | None) -> float:
        return float(self.evidence_exponent if evidence_exponent is None else evidence_exponent)

    def _evidence_scale(self, counts: NDArray[Any], exponent: float) -> NDArray[np.floating]:
        """``kappa_u = max(1, n_ref / n_u)^alpha`` for profiles of ``counts`` ratings."""
        ratio = self.reference_count_ / np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
        return np.power(np.maximum(ratio, 1.0), exponent).astype(DTYPE)

    def _personal(self, hidden: NDArray[np.floating], columns: Any = None) -> NDArray[Any]:
        """``sum_j (W_ij + W_{M+i,j}) h_j`` for items ``columns`` (all by default)."""
        # W_i + W_{M+i} once per model: one product instead of two
        both = self._cached("item_weights", self._item_weights)
        if columns is not None:
            both = both[columns]
        result: NDArray[Any] = hidden @ both.T
        return result

    def _item_weights(self) -> NDArray[np.floating]:
        m = self.n_items_
        both: NDArray[np.floating] = self.weights_[:m] + self.weights_[m:]
        return both

    def personal_scores(
        self, codes: sp.csr_matrix, evidence_exponent: float | None = None
    ) -> NDArray[np.floating]:
        """The personal term of every item for each user of ``codes``, (n_users, n_items_)."""
        self._check_fitted()
        visible = self._evidence(codes)
        kappa = self._evidence_scale(np.diff(codes.indptr), self._exponent(evidence_exponent))
        hidden = expit(kappa[:, None] * (visible @ self.weights_) + self.hidden_bias_)
        return self._personal(hidden)

    def _evidence(self, codes: sp.csr_matrix) -> sp.csr_matrix:
        """The fold-in input rows of ``codes`` (:func:`visible_matrix` with low ratings)."""
        return visible_matrix(
            codes, self.liked_level_ + 1, self.disliked_level_ + 1, float(self.dislike_weight)
        )

    def _rated_units(self, levels: NDArray[np.int64]) -> NDArray[np.floating]:
        """Each rating's "rated" unit: 1, or ``1 - dislike_weight`` for a low rating."""
        rated = np.where(levels <= self.disliked_level_, 1.0 - float(self.dislike_weight), 1.0)
        return rated.astype(DTYPE)

    def _own_inputs(self, items: NDArray[np.int64], levels: NDArray[np.int64]) -> NDArray[Any]:
        """Each rating's input to the hidden units, ``(n_rated, n_hidden)``: the rated
        unit (held at ``1 - dislike_weight`` for a low rating) and the liked one."""
        m = self.n_items_
        own: NDArray[Any] = self._rated_units(levels)[:, None] * self.weights_[items] + np.where(
            (levels >= self.liked_level_)[:, None], self.weights_[items + m], 0.0
        )
        return own

    def _input_one(self, items: NDArray[np.int64], levels: NDArray[np.int64]) -> NDArray[Any]:
        """The sum of :meth:`_own_inputs` over the ratings, without the (n_rated, F) terms:
        one product for the rated units and a sum over the liked ones."""
        total: NDArray[Any] = self._rated_units(levels) @ self.weights_[items]
        total += self.weights_[items[levels >= self.liked_level_] + self.n_items_].sum(axis=0)
        return total

    def personal_scores_one(
        self,
        items: NDArray[np.int64],
        levels: NDArray[np.int64],
        evidence_exponent: float | None = None,
    ) -> NDArray[np.floating]:
        """:meth:`personal_scores` of one user (columns and level indices), (n_items_,)."""
        kappa = self._evidence_scale(np.array([len(items)]), self._exponent(evidence_exponent))
        hidden = expit(kappa[0] * self._input_one(items, levels) + self.hidden_bias_)
        result: NDArray[np.floating] = self._personal(hidden[None, :])[0]
        return result

    def leave_one_out_personal(
        self,
        items: NDArray[np.int64],
        levels: NDArray[np.int64],
        targets: NDArray[np.int64],
        evidence_exponent: float | None = None,
    ) -> NDArray[np.floating]:
        """The personal term of ``targets`` with each rating left out, (n_rated, T)."""
        own = self._own_inputs(items, levels)
        total = own.sum(axis=0)
        kappa = self._evidence_scale(np.array([len(items) - 1]), self._exponent(evidence_exponent))
        hidden = expit(kappa[0] * (total[None, :] - own) + self.hidden_bias_)
        return self._personal(hidden, targets)

    def _score_codes(
        self, codes: sp.csr_matrix
    ) -> tuple[NDArray[np.floating], NDArray[np.floating]]:
        scores = self.personal_scores(codes) + self.item_bias
        return scores, np.broadcast_to(self.item_mean_, scores.shape)

    def _score_one(
        self, items: NDArray[np.int64], levels: NDArray[np.int64]
    ) -> tuple[NDArray[np.floating], NDArray[np.floating]]:
        scores = self.personal_scores_one(items, levels) + self.item_bias
        return scores[None, :], self.item_mean_[None, :]

    def similar_items(self, item_id: str, n: int = 10) -> list[tuple[str, float]]:
        """The ``n`` items whose hidden-unit weights are closest to ``item_id``'s (cosine).

        Items rated and liked by the same kind of users drive the hidden units alike:
        "people who liked this also liked". The item itself is left out.

        Raises
        ------
        UnknownItemError
            If the model does not know ``item_id``.
        """
        self._check_fitted()
        n = check_positive_int("n", n)
        col = self._column(item_id)
        m = self.n_items_

        def units() -> NDArray[np.floating]:
            return unit_rows(np.hstack([self.weights_[:m], self.weights_[m:]]))

        found = nearest_items(self._cached("item_units", units), col, n)
        return [(str(self.item_ids_[c]), sim) for c, sim in found]

    def _restore_artifact_state(
        self, arrays: Mapping[str, NDArray[Any]], metadata: Mapping[str, Any]
    ) -> None:
        # artifacts saved before low ratings were read at fold-in: every rating counts
        super()._restore_artifact_state(arrays, {"disliked_level": -1, **metadata})

    def _check_restored(self) -> None:
        super()._check_restored()
        m2, f = self.weights_.shape
        m = len(self.item_ids_)
        if m2 != 2 * m or self.visible_bias_.shape != (2 * m,):
            raise ValueError("array shapes do not match")
        if self.hidden_bias_.shape != (f,) or self.item_mean_.shape != (m,):
            raise ValueError("array shapes do not match")


def _logits(machine: BernoulliRBM, visible: sp.csr_matrix) -> NDArray[np.floating]:
    """Mean-field log-odds of "rated" plus "liked" of a BernoulliRBM being trained."""
    m = visible.shape[1] // 2
    hidden = expit(visible @ machine.weights_ + machine.hidden_bias_)
    logits = hidden @ machine.weights_.T + machine.visible_bias_
    result: NDArray[np.floating] = logits[:, :m] + logits[:, m:]
    return result
