"""The softmax-visible Restricted Boltzmann Machine for collaborative filtering.

:class:`SoftmaxRBM` is the estimator: hyperparameters, initialisation, training and
persistence. What a fitted model computes (fold-in, predictions, scores, samples) is
:class:`~rbm_core.softmax_inference.SoftmaxRBMInference`; the formulas live in
:mod:`rbm_core.functional` and :mod:`rbm_core.contrastive_divergence`, the epoch loop
in :mod:`rbm_core.training`, and the item index, encoding and top-N in
:mod:`rbm_core.base`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from rbm_core import training
from rbm_core.checks import (
    check_bool,
    check_choice,
    check_number,
    check_positive_int,
    check_random_state,
    check_rating_matrix,
    check_same_scale,
)
from rbm_core.contrastive_divergence import CDStatistics, cd_statistics, offset_weights_gradient
from rbm_core.data import RatingMatrix
from rbm_core.scale import RatingScaleError
from rbm_core.softmax_inference import (
    DTYPE,
    PredictionMode,
    RankingScore,
    SoftmaxRBMInference,
)
from rbm_core.training import CDSchedule, HeldOutRatings

_ITEM_MEAN_PRIOR = 10.0
"""Pseudo-count shrinking each item's mean rating towards the global mean."""


@dataclass(frozen=True)
class _TrainingData:
    """What one training run iterates over (see :func:`rbm_core.training.run_epochs`)."""

    train: RatingMatrix
    validation: HeldOutRatings | None
    probe: sp.csr_matrix  # the ratings whose mean free energy is train_free_energy
    rng: np.random.Generator


class SoftmaxRBM(SoftmaxRBMInference):
    """Restricted Boltzmann Machine with K-way softmax visible units, one per rated item.

    Salakhutdinov, Mnih and Hinton, "Restricted Boltzmann Machines for Collaborative
    Filtering", ICML 2007. Each user is one training case; the weights ``W`` (M x K x F),
    visible biases (M x K) and hidden biases (F) are shared by all users, and a user's
    visible units exist only for the items that user rated. Training is contrastive
    divergence (CD-T) with momentum and weight decay; prediction folds in any user's
    ratings (seen in training or not) through ``p(h | V)``.

    With ``user_offset`` (the default) the model is a *conditional* RBM: each user's
    visible biases are shifted by ``a_k z_u``, where ``z_u`` is the user's mean rating
    offset from the items' mean ratings (shrunk towards zero) and ``a`` (K,) is learned
    with the other parameters. The energy becomes
    ``E(V, h) = -sum_ijk v_i^k W_ij^k h_j - sum_ik v_i^k (b_i^k + a_k z_u) - sum_j c_j h_j``;
    ``z_u`` is computed from the ratings given, so fold-in works as before. It lets
    the RBM express "this user rates high" directly, which the hidden units learn
    poorly; on MovieLens 100K it lowers the RMSE by about 0.03 (see docs/model.md).

    Parameters
    ----------
    n_hidden : int
        F, the number of binary hidden units.
    learning_rate : float
        Step size for gradients averaged over the users of a mini-batch.
    learning_rate_decay : float
        The rate at epoch ``e`` is ``learning_rate / (1 + learning_rate_decay * e)``.
    momentum : float
        Momentum of the parameter updates, in [0, 1).
    weight_decay : float
        L2 penalty on ``W``.
    batch_size : int
        Users per mini-batch.
    n_epochs : int
        Passes over the training users (the maximum, with early stopping).
    cd_steps : int or sequence of [first_epoch, steps]
        Gibbs steps T of CD-T, fixed or growing over the epochs, e.g.
        ``[[0, 1], [20, 3], [30, 5]]``.
    prediction : {"mean_field", "exact"}
        How ``p(v_q | V)`` is computed: mean-field (one pass through ``p(h | V)``) or the
        exact marginal over the hidden units. Both account for ``hidden_dropout``.
    ranking : {"expected", "p_high", "p_high_popularity"}
        The score ``recommend`` sorts by: the expected rating, the probability of a
        rating >= ``high_rating``, or that probability times the item's training
        popularity to the power ``popularity_weight``.
    high_rating : float
        Threshold of a "high" rating for the ``p_high*`` scores.
    popularity_weight : float
        Exponent of the popularity factor of ``p_high_popularity``.
    hidden_dropout : float
        Probability of dropping each hidden unit per user and CD step (Srivastava et
        al., 2014); mean-field prediction scales the hidden probabilities by
        ``1 - hidden_dropout``, exact prediction each unit's factor of the marginal
        (the geometric mean over dropout masks, see
        :func:`~rbm_core.functional.exact_marginal_distribution`). 0 disables it.
    user_offset : bool
        Condition the visible biases on the user's rating offset (see above).
    offset_shrinkage : float
        Pseudo-count ``lambda`` of ``z_u = sum_i (r_ui - mean_i) / (n_u + lambda)``,
        >= 0; a user without ratings has ``z_u = 0`` (also for ``lambda = 0``).
    early_stopping : bool
        Stop when the validation RMSE has not improved for ``n_iter_no_change`` epochs
        and keep the best epoch's weights. Without an explicit validation matrix,
        ``validation_fraction`` of each training user's ratings is held out for it.
    validation_fraction : float
        Share of ratings held out for early stopping when no validation is given.
    n_iter_no_change : int
        Patience of early stopping, in epochs.
    random_state : int, numpy.random.Generator or None
        Seed (or generator) for initialisation, batch order and Gibbs sampling.
    blas_threads : int or None
        BLAS threads during training (None: the library's default). The per-batch
        products are small, and on a shared machine extra BLAS threads mostly wait for
        each other: one thread trained ML-100K 2.5x faster than two on a busy 2-core
        machine.
    verbose : bool
        Show a progress bar (tqdm) and log each epoch at INFO level.

    Attributes
    ----------
    weights_ : ndarray of shape (n_items_, K, n_hidden)
    visible_bias_ : ndarray of shape (n_items_, K)
    hidden_bias_ : ndarray of shape (n_hidden,)
    offset_weights_ : ndarray of shape (K,)
        ``a``, the response of each level's bias to the user's rating offset.
    item_means_ : ndarray of shape (n_items_,)
        Mean training rating of each item, shrunk towards the global mean (the
        reference for ``z_u``).
    item_ids_ : ndarray of str, shape (n_items_,)
    item_popularity_ : ndarray of shape (n_items_,)
        Number of training ratings of each item.
    scale_ : RatingScale
    n_items_, n_users_ : int
        Items and users of the training data.
    n_epochs_ : int
        Epochs trained so far.
    history_ : list of dict
        Per epoch: epoch, cd_steps, learning_rate, train_rmse (RMSE of the first
        mean-field reconstruction against the input ratings), validation_rmse and
        validation_mae (None without validation), train_free_energy and
        validation_free_energy, and seconds. With validation data, the two free
        energies are the mean over validation users of ``F(V)`` of their held-out
        ratings and of as many of their training ratings: equal-sized sets of the
        same users, so a growing gap shows overfitting. Without validation,
        train_free_energy is the mean ``F(V)`` of up to 2,000 training users.
    training_fingerprint_ : str
        :meth:`RatingMatrix.fingerprint` of the training data.

    Notes
    -----
    All arrays are float32 (:data:`DTYPE`). Single-user inference gathers only the rows
    of ``W`` of the rated items, then one matrix-vector product over all items.

    The defaults were chosen on validation splits carved from the MovieLens 100K
    training folds (docs/model.md): on the canonical folds u1..u5 they give a mean
    RMSE of about 0.927 and about 4 s of training per fold on two cores.
    """

    _trained_arrays: ClassVar[tuple[str, ...]] = (
        "weights_",
        "visible_bias_",
        "hidden_bias_",
        "offset_weights_",
    )
    """The arrays contrastive divergence updates (in this order)."""
    _array_attributes = (*_trained_arrays, "item_means_", "item_popularity_")
    _metadata_attributes = (
        "n_items_",
        "n_users_",
        "n_epochs_",
        "training_fingerprint_",
        "history_",
    )

    def __init__(
        self,
        *,
        n_hidden: int = 100,
        learning_rate: float = 0.2,
        learning_rate_decay: float = 0.0,
        momentum: float = 0.5,
        weight_decay: float = 0.02,
        batch_size: int = 100,
        n_epochs: int = 40,
        cd_steps: CDSchedule = 1,
        prediction: PredictionMode = "mean_field",
        ranking: RankingScore = "p_high_popularity",
        high_rating: float = 4.0,
        popularity_weight: float = 1.0,
        hidden_dropout: float = 0.0,
        user_offset: bool = True,
        offset_shrinkage: float = 5.0,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 5,
        random_state: int | np.random.Generator | None = None,
        blas_threads: int | None = 1,
        verbose: bool = False,
    ) -> None:
        self.n_hidden = n_hidden
        self.learning_rate = learning_rate
        self.learning_rate_decay = learning_rate_decay
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.cd_steps = cd_steps
        self.prediction = prediction
        self.ranking = ranking
        self.high_rating = high_rating
        self.popularity_weight = popularity_weight
        self.hidden_dropout = hidden_dropout
        self.user_offset = user_offset
        self.offset_shrinkage = offset_shrinkage
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state
        self.blas_threads = blas_threads
        self.verbose = verbose

    def _validate_params(self) -> None:
        for name in ("n_hidden", "batch_size", "n_epochs", "n_iter_no_change"):
            check_positive_int(name, getattr(self, name))
        if self.blas_threads is not None:
            check_positive_int("blas_threads", self.blas_threads)
        check_number("learning_rate", self.learning_rate, low=0.0, low_open=True)
        for name in (
            "learning_rate_decay",
            "weight_decay",
            "popularity_weight",
            "offset_shrinkage",
        ):
            check_number(name, getattr(self, name), low=0.0)
        check_number("momentum", self.momentum, low=0.0, high=1.0)
        check_number("hidden_dropout", self.hidden_dropout, low=0.0, high=1.0)
        check_bool("user_offset", self.user_offset)
        check_number("high_rating", self.high_rating)
        check_number(
            "validation_fraction", self.validation_fraction, low=0.0, low_open=True, high=1.0
        )
        check_choice("prediction", self.prediction, ("mean_field", "exact"))
        check_choice("ranking", self.ranking, ("expected", "p_high", "p_high_popularity"))
        training.cd_schedule(self.cd_steps)
        check_random_state(self.random_state)

    # -- training ---------------------------------------------------------------------
    def fit(self, train: RatingMatrix, validation: RatingMatrix | None = None) -> SoftmaxRBM:
        """Train from scratch on ``train``.

        Parameters
        ----------
        train : RatingMatrix
            Training ratings; its items become the model's items.
        validation : RatingMatrix, optional
            Held-out ratings of (mostly) the same users, predicted from their training
            ratings for the history and early stopping.

        Returns
        -------
        SoftmaxRBM
            ``self``.
        """
        self._check_training_input(train, validation)
        rng = np.random.default_rng(self.random_state)
        if validation is None and self.early_stopping:
            train, validation = train.split(self.validation_fraction, rng)
        self._initialise(train, rng)
        self._train(train, validation, self.n_epochs, rng, early_stopping=self.early_stopping)
        return self

    def partial_fit(
        self, train: RatingMatrix, validation: RatingMatrix | None = None
    ) -> SoftmaxRBM:
        """Run one more epoch on ``train`` (initialising from it if not fitted yet).

        On a fitted model, ``train`` is aligned with the model's items; ratings of
        unknown items are dropped.

        Returns
        -------
        SoftmaxRBM
            ``self``.
        """
        self._check_training_input(train, validation)
        if not hasattr(self, "_rng"):
            self._rng = np.random.default_rng(self.random_state)
        if not self.is_fitted:
            self._initialise(train, self._rng)
        else:
            if train.scale != self.scale_:
                raise RatingScaleError(
                    f"training data uses scale {train.scale}, the model {self.scale_}"
                )
            if not np.array_equal(train.item_ids, self.item_ids_):
                train = train.with_item_catalog(self.item_ids_)
            training.make_writable(self, self._trained_arrays)
        self._train(train, validation, 1, self._rng, early_stopping=False)
        return self

    def _check_training_input(self, train: RatingMatrix, validation: RatingMatrix | None) -> None:
        self._validate_params()
        check_rating_matrix(train, "train")
        if validation is not None:
            check_rating_matrix(validation, "validation")
            check_same_scale(train, validation)

    def _initialise(self, train: RatingMatrix, rng: np.random.Generator) -> None:
        m, k, f = train.n_items, train.n_levels, int(self.n_hidden)
        counts = train.level_counts().astype(np.float64)
        values = train.scale.values
        # visible biases: log of each item's smoothed rating frequencies, shrunk towards
        # the global level frequencies so items with few ratings get sensible rates
        prior = (counts.sum(axis=0) + 1.0) / (counts.sum() + k)
        freq = (counts + 2.0 * prior) / (counts.sum(axis=1, keepdims=True) + 2.0)
        global_mean = float(counts.sum(axis=0) @ values / max(counts.sum(), 1.0))
        item_n = counts.sum(axis=1)
        self.weights_ = (rng.standard_normal((m, k, f)) * 0.01).astype(DTYPE)
        self.visible_bias_ = np.log(freq).astype(DTYPE)
        self.hidden_bias_ = np.zeros(f, dtype=DTYPE)
        self.offset_weights_ = np.zeros(k, dtype=DTYPE)
        self.item_means_ = (
            (counts @ values + _ITEM_MEAN_PRIOR * global_mean) / (item_n + _ITEM_MEAN_PRIOR)
        ).astype(DTYPE)
        self.item_popularity_ = item_n.astype(DTYPE)
        self._store_catalog(train)
        self.n_epochs_ = 0
        self.history_: list[dict[str, Any]] = []
        self.training_fingerprint_ = train.fingerprint()
        self._velocity = [np.zeros_like(getattr(self, name)) for name in self._trained_arrays]

    def _train(
        self,
        train: RatingMatrix,
        validation: RatingMatrix | None,
        n_epochs: int,
        rng: np.random.Generator,
        *,
        early_stopping: bool,
    ) -> None:
        if not hasattr(self, "_velocity"):
            self._velocity = [np.zeros_like(getattr(self, name)) for name in self._trained_arrays]
        held_out = None
        if validation is not None:
            held_out = training.held_out_ratings(train, validation, self.item_ids_, rng)
            probe = held_out.train_probe
        else:
            probe = train.codes[np.sort(rng.permutation(train.n_users)[: min(train.n_users, 2000)])]
        stopping = None
        if early_stopping and held_out is not None:
            stopping = training.EarlyStopping(patience=int(self.n_iter_no_change))
        with training.blas_thread_limit(self.blas_threads):
            training.run_epochs(
                self,
                _TrainingData(train, held_out, probe, rng),
                n_cases=train.n_users,
                n_epochs=n_epochs,
                batch_size=int(self.batch_size),
                rng=rng,
                early_stopping=stopping,
                verbose=bool(self.verbose),
                name=type(self).__name__,
            )

    def _epoch_settings(self, epoch: int) -> dict[str, Any]:
        return {
            "cd_steps": training.steps_at(training.cd_schedule(self.cd_steps), epoch),
            "learning_rate": training.decayed_learning_rate(
                self.learning_rate, self.learning_rate_decay, epoch
            ),
        }

    def _train_batch(
        self, data: _TrainingData, rows: NDArray[np.int64], epoch: int
    ) -> tuple[float, int]:
        codes = data.train.codes[rows]
        if codes.nnz == 0:
            return 0.0, 0
        settings = self._epoch_settings(epoch)
        offsets = self._user_offsets(codes)
        stats = cd_statistics(
            codes,
            self.weights_,
            self.visible_bias_,
            self.hidden_bias_,
            self.scale_.values.astype(DTYPE),
            settings["cd_steps"],
            data.rng,
            dropout=float(self.hidden_dropout),
            user_bias=self._user_bias(offsets),
        )
        # overflow is caught by the finiteness check after the epoch
        with np.errstate(over="ignore", invalid="ignore"):
            self._apply_update(stats, offsets, settings["learning_rate"])
        return stats.squared_error, stats.n_ratings

    def _apply_update(
        self, stats: CDStatistics, offsets: NDArray[np.floating] | None, lr: float
    ) -> None:
        # momentum SGD on every array; weight decay on W only. Decay and momentum touch
        # all of W (in place, no temporaries of its size); the gradient only the rows of
        # the items rated in the batch.
        vw, vb, vh, vo = self._velocity
        momentum = float(self.momentum)
        training.momentum_step(
            self.weights_,
            vw,
            stats.d_weights,
            lr,
            momentum,
            rows=stats.items,
            weight_decay=float(self.weight_decay),
            buffer=self._cached("update_buffer", lambda: np.empty_like(self.weights_)),
        )
        training.momentum_step(
            self.visible_bias_, vb, stats.d_visible_bias, lr, momentum, rows=stats.items
        )
        training.momentum_step(self.hidden_bias_, vh, stats.d_hidden_bias, lr, momentum)
        d_offset = None
        if offsets is not None:
            d_offset = offset_weights_gradient(offsets, stats.d_user_bias).astype(DTYPE)
        training.momentum_step(self.offset_weights_, vo, d_offset, lr, momentum)

    def _epoch_figures(self, data: _TrainingData) -> dict[str, Any]:
        figures: dict[str, Any] = {
            "train_free_energy": self._mean_free_energy(data.probe),
            "validation_rmse": None,
            "validation_mae": None,
            "validation_free_energy": None,
        }
        if data.validation is not None:
            rmse, mae = self._validation_scores(data.validation)
            figures["validation_rmse"] = rmse
            figures["validation_mae"] = mae
            figures["validation_free_energy"] = self._mean_free_energy(
                data.validation.targets_codes
            )
        return figures

    def _validation_scores(self, held_out: HeldOutRatings) -> tuple[float, float]:
        """RMSE and MAE of the held-out ratings predicted from the training ratings."""
        dist = self._distribution_at(self._fold_in(held_out.inputs), held_out.rows, held_out.items)
        pred = dist.astype(np.float64) @ self.scale_.values
        err = pred - held_out.targets
        return float(np.sqrt(np.mean(err**2))), float(np.mean(np.abs(err)))

    def _mean_free_energy(self, codes: sp.csr_matrix) -> float:
        if codes.shape[0] == 0:
            return float("nan")
        return float(np.mean(self._free_energies(codes), dtype=np.float64))

    # -- persistence ------------------------------------------------------------------------
    def _artifact_state(self) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
        arrays, metadata = super()._artifact_state()
        metadata["n_hidden"] = int(self.weights_.shape[2])
        return arrays, metadata

    def _check_restored(self) -> None:
        super()._check_restored()
        m, k, f = self.weights_.shape
        if (m, k) != (len(self.item_ids_), self.scale_.n_levels) or self.visible_bias_.shape != (
            m,
            k,
        ):
            raise ValueError("array shapes do not match")
        if self.hidden_bias_.shape != (f,) or self.item_popularity_.shape != (m,):
            raise ValueError("array shapes do not match")
