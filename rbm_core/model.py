"""The softmax-visible Restricted Boltzmann Machine for collaborative filtering.

The estimator validates input, initialises and loops; the formulas live in
:mod:`rbm_core.functional`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, cast, overload

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.special import expit

from rbm_core import functional as fn
from rbm_core import training
from rbm_core.contrastive_divergence import CDStatistics, cd_statistics
from rbm_core.data import RatingMatrix, UserRatings, find_sorted
from rbm_core.scale import RatingScaleError
from rbm_core.training import CDSchedule, HeldOutRatings

logger = logging.getLogger(__name__)

DTYPE = np.float32
"""dtype of every learned array and of all inference arithmetic."""

PredictionMode = Literal["mean_field", "exact"]
RankingScore = Literal["expected", "p_high", "p_high_popularity"]

_PARAM_NAMES = (
    "n_hidden",
    "learning_rate",
    "learning_rate_decay",
    "momentum",
    "weight_decay",
    "batch_size",
    "n_epochs",
    "cd_steps",
    "prediction",
    "ranking",
    "high_rating",
    "popularity_weight",
    "hidden_dropout",
    "user_offset",
    "offset_shrinkage",
    "early_stopping",
    "validation_fraction",
    "n_iter_no_change",
    "random_state",
    "blas_threads",
    "verbose",
)


class NotFittedError(ValueError, AttributeError):
    """The model is used before ``fit`` (or ``load_model``) gave it weights."""


class UnknownItemError(KeyError):
    """An item id the model does not know was asked for where it cannot be ignored."""

    def __init__(self, item_id: str) -> None:
        super().__init__(item_id)
        self.item_id = item_id

    def __str__(self) -> str:
        return f"unknown item id {self.item_id!r}"


@dataclass(frozen=True)
class Prediction:
    """Predicted ratings of one user for some items.

    Attributes
    ----------
    item_ids : list of str
        The known items asked for (or every model item), in order.
    expected : ndarray of shape (n,)
        Expected rating (value units) under ``distribution``.
    distribution : ndarray of shape (n, K)
        ``p(rating = level k)`` for each item; rows sum to one.
    unknown_items : list of str
        Items asked for that the model does not know (no prediction made).
    ignored_ratings : list of str
        Rated items the model does not know (left out of the fold-in).
    """

    item_ids: list[str]
    expected: NDArray[np.floating]
    distribution: NDArray[np.floating]
    unknown_items: list[str] = field(default_factory=list)
    ignored_ratings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ItemScores:
    """Scores of one user for every model item (in ``model.item_ids_`` order).

    Attributes
    ----------
    score : ndarray of shape (n_items,)
        The ranking score ``recommend`` sorts by (see ``SoftmaxRBM.ranking``).
    expected : ndarray of shape (n_items,)
        Expected rating.
    rated : ndarray of bool, shape (n_items,)
        Items present in the user's ratings.
    ignored_ratings : list of str
        Rated items the model does not know.
    """

    score: NDArray[np.floating]
    expected: NDArray[np.floating]
    rated: NDArray[np.bool_]
    ignored_ratings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Recommendation:
    """One recommended item: its id, ranking score and expected rating."""

    item_id: str
    score: float
    predicted_rating: float


_ITEM_MEAN_PRIOR = 10.0
"""Pseudo-count shrinking each item's mean rating towards the global mean."""


@dataclass(frozen=True)
class _FoldIn:
    """Users folded into the model: hidden inputs and conditional visible biases."""

    x: NDArray[np.floating]  # (n, F) hidden inputs
    user_bias: NDArray[np.floating] | None  # (n, K) or None

    def __getitem__(self, rows: slice) -> _FoldIn:
        return _FoldIn(self.x[rows], None if self.user_bias is None else self.user_bias[rows])


@dataclass(frozen=True)
class _Encoded:
    """A batch of users' ratings on the model's items."""

    codes: sp.csr_matrix  # (n_users, n_items_) level codes
    ignored: list[list[str]]


def _is_user_batch(obj: object) -> bool:
    return isinstance(obj, Sequence) and not isinstance(obj, str | bytes | Mapping)


@dataclass(frozen=True)
class _TrainingData:
    """What one training run iterates over (see :func:`rbm_core.training.run_epochs`)."""

    train: RatingMatrix
    validation: HeldOutRatings | None
    probe: sp.csr_matrix  # the ratings whose mean free energy is train_free_energy
    rng: np.random.Generator


class SoftmaxRBM:
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
        exact marginal over the hidden units.
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
        ``1 - hidden_dropout``. 0 disables it.
    user_offset : bool
        Condition the visible biases on the user's rating offset (see above).
    offset_shrinkage : float
        Pseudo-count ``lambda`` of ``z_u = sum_i (r_ui - mean_i) / (n_u + lambda)``.
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
    RMSE of about 0.926 and about 4 s of training per fold on two cores.
    """

    _trained_arrays: ClassVar[tuple[str, ...]] = (
        "weights_",
        "visible_bias_",
        "hidden_bias_",
        "offset_weights_",
    )
    """The arrays contrastive divergence updates (in this order)."""

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

    # -- scikit-learn plumbing ------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """The hyperparameters, as passed to ``__init__``."""
        return {name: getattr(self, name) for name in _PARAM_NAMES}

    def set_params(self, **params: Any) -> SoftmaxRBM:
        """Set hyperparameters by name; returns ``self``."""
        for name, value in params.items():
            if name not in _PARAM_NAMES:
                raise ValueError(f"unknown hyperparameter {name!r}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"SoftmaxRBM({shown})"

    @property
    def is_fitted(self) -> bool:
        """Whether the model has weights."""
        return hasattr(self, "weights_")

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                "this SoftmaxRBM is not fitted yet: call fit() or load_model() first"
            )

    def _validate_params(self) -> None:
        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

        def non_negative(name: str, upper: float | None = None) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not np.isfinite(value) or value < 0 or (upper is not None and value >= upper):
                bound = f" and < {upper}" if upper is not None else ""
                raise ValueError(f"{name} must be >= 0{bound}, got {value!r}")

        for name in ("n_hidden", "batch_size", "n_epochs", "n_iter_no_change"):
            positive_int(name)
        if self.blas_threads is not None:
            positive_int("blas_threads")
        non_negative("learning_rate")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        non_negative("learning_rate_decay")
        non_negative("momentum", upper=1.0)
        non_negative("weight_decay")
        non_negative("popularity_weight")
        non_negative("hidden_dropout", upper=1.0)
        non_negative("offset_shrinkage")
        if not isinstance(self.user_offset, bool):
            raise ValueError(f"user_offset must be True or False, got {self.user_offset!r}")
        if not isinstance(self.high_rating, int | float) or not np.isfinite(self.high_rating):
            raise ValueError(f"high_rating must be a number, got {self.high_rating!r}")
        if not isinstance(self.validation_fraction, int | float) or not (
            0.0 < self.validation_fraction < 1.0
        ):
            raise ValueError(
                f"validation_fraction must be in (0, 1), got {self.validation_fraction!r}"
            )
        if self.prediction not in ("mean_field", "exact"):
            raise ValueError(f"prediction must be 'mean_field' or 'exact', got {self.prediction!r}")
        if self.ranking not in ("expected", "p_high", "p_high_popularity"):
            raise ValueError(
                f"ranking must be 'expected', 'p_high' or 'p_high_popularity', got {self.ranking!r}"
            )
        training.cd_schedule(self.cd_steps)
        if self.random_state is not None and not isinstance(
            self.random_state, int | np.integer | np.random.Generator
        ):
            raise ValueError(
                f"random_state must be an int, a numpy Generator or None, got {self.random_state!r}"
            )

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
        self._validate_params()
        _check_matrix(train, "train")
        if validation is not None:
            _check_matrix(validation, "validation")
            _check_same_scale(train, validation)
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
        self._validate_params()
        _check_matrix(train, "train")
        if validation is not None:
            _check_matrix(validation, "validation")
            _check_same_scale(train, validation)
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
            # a memory-mapped (loaded) model is read-only: train on private copies
            for name in self._trained_arrays:
                arr = getattr(self, name)
                if not arr.flags.writeable:
                    setattr(self, name, np.array(arr, dtype=DTYPE))
        self._train(train, validation, 1, self._rng, early_stopping=False)
        return self

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
        self.item_ids_ = train.item_ids.copy()
        self.scale_ = train.scale
        self.n_items_ = m
        self.n_users_ = train.n_users
        self.n_epochs_ = 0
        self.history_: list[dict[str, Any]] = []
        self.training_fingerprint_ = train.fingerprint()
        self._velocity = [np.zeros_like(getattr(self, name)) for name in self._trained_arrays]
        self._reset_caches()

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
            buffer=self._update_buffer(),
        )
        training.momentum_step(
            self.visible_bias_, vb, stats.d_visible_bias, lr, momentum, rows=stats.items
        )
        training.momentum_step(self.hidden_bias_, vh, stats.d_hidden_bias, lr, momentum)
        d_offset = None
        if offsets is not None:
            # the offset weights are shared by all items: average over the batch's ratings
            grad = (offsets[:, None] * stats.d_user_bias).sum(axis=0) / max(stats.n_ratings, 1)
            d_offset = grad.astype(DTYPE)
        training.momentum_step(self.offset_weights_, vo, d_offset, lr, momentum)

    def _update_buffer(self) -> NDArray[np.floating]:
        buffer: NDArray[np.floating] | None = self.__dict__.get("_buffer")
        if buffer is None or buffer.shape != self.weights_.shape:
            buffer = np.empty_like(self.weights_)
            self.__dict__["_buffer"] = buffer
        return buffer

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
        visible = fn.one_hot_visible(codes, self.scale_.n_levels, DTYPE)
        ub = self._user_bias(self._user_offsets(codes))
        fe = fn.free_energy(visible, self.weights_, self.visible_bias_, self.hidden_bias_, ub)
        return float(np.mean(fe, dtype=np.float64))

    # -- fold-in: from ratings to the hidden layer ------------------------------------------
    def _reset_caches(self) -> None:
        for name in ("_item_index_cache", "_item_unit_cache", "_item_names_cache"):
            self.__dict__.pop(name, None)

    def _item_names(self) -> list[str]:
        cache: list[str] | None = self.__dict__.get("_item_names_cache")
        if cache is None:
            cache = [str(item) for item in self.item_ids_.tolist()]
            self.__dict__["_item_names_cache"] = cache
        return cache

    @property
    def _item_index(self) -> dict[str, int]:
        cache: dict[str, int] | None = self.__dict__.get("_item_index_cache")
        if cache is None:
            cache = {str(item): i for i, item in enumerate(self.item_ids_.tolist())}
            self.__dict__["_item_index_cache"] = cache
        return cache

    def _user_offsets(self, codes: sp.csr_matrix) -> NDArray[np.floating] | None:
        """Each user's rating offset ``z_u``: mean deviation from the items' means, shrunk.

        ``z_u = sum_i (r_ui - mean_i) / (n_u + offset_shrinkage)``; None when the model
        does not use it.
        """
        if not self.user_offset:
            return None
        z = fn.user_offsets(
            codes, self.scale_.values, self.item_means_, float(self.offset_shrinkage)
        )
        return z.astype(DTYPE)

    def _user_bias(self, offsets: NDArray[np.floating] | None) -> NDArray[np.floating] | None:
        """Conditional visible bias ``u_k = a_k z_u`` of each user, shape (n, K)."""
        return None if offsets is None else fn.offset_bias(offsets, self.offset_weights_)

    def _fold_in(self, codes: sp.csr_matrix) -> _FoldIn:
        visible = fn.one_hot_visible(codes, self.scale_.n_levels, DTYPE)
        x = fn.hidden_input(visible, self.weights_, self.hidden_bias_)
        return _FoldIn(x, self._user_bias(self._user_offsets(codes)))

    def _fold_in_one(self, items: NDArray[np.int64], levels: NDArray[np.int64]) -> _FoldIn:
        # sparse gather: only the rated items' rows of W take part
        x = self.weights_[items, levels].sum(axis=0, dtype=DTYPE)
        x += self.hidden_bias_
        ub = None
        if self.user_offset:
            dev = self.scale_.values[levels] - self.item_means_[items]
            z = fn.shrunk_mean(dev.sum(), len(items), float(self.offset_shrinkage))
            ub = fn.offset_bias(z.reshape(1).astype(DTYPE), self.offset_weights_)
        return _FoldIn(x[None, :], ub)

    def _top_down(self, x: NDArray[np.floating]) -> NDArray[np.floating]:
        """Hidden probabilities as the visible layer sees them (scaled for dropout)."""
        p: NDArray[np.floating] = expit(x)
        if self.hidden_dropout:
            p *= DTYPE(1.0 - float(self.hidden_dropout))
        return p

    def _distribution_at(
        self, fold: _FoldIn, rows: NDArray[np.int64], items: NDArray[np.int64]
    ) -> NDArray[np.floating]:
        """``p(v_q | V)`` for (user row, item) pairs, shape (n_pairs, K)."""
        if self.prediction == "exact":
            return fn.exact_marginal_at(
                fold.x, self.weights_, self.visible_bias_, rows, items, fold.user_bias
            )
        return fn.mean_field_at(
            self._top_down(fold.x), self.weights_, self.visible_bias_, rows, items, fold.user_bias
        )

    def _distribution_items(
        self, fold: _FoldIn, query: NDArray[np.int64] | None = None
    ) -> NDArray[np.floating]:
        """``p(v_q | V)`` of every folded-in user for items ``query`` (all by default).

        Returns an array of shape (n_users, n_query, K).
        """
        w, b = self.weights_, self.visible_bias_
        if query is not None:
            w, b = w[query], b[query]
        if self.prediction == "exact":
            return fn.exact_marginal_distribution(fold.x, w, b, fold.user_bias)
        return fn.mean_field_distribution(self._top_down(fold.x), w, b, fold.user_bias)

    def _encode(self, users: Sequence[UserRatings]) -> _Encoded:
        rows: list[int] = []
        cols: list[int] = []
        levels: list[int] = []
        ignored: list[list[str]] = []
        for row, ratings in enumerate(users):
            user_cols, user_levels, unknown = self._encode_user(ratings)
            rows.extend([row] * len(user_cols))
            cols.extend(user_cols)
            levels.extend(user_levels)
            ignored.append(unknown)
        codes = sp.csr_matrix(
            (
                (np.asarray(levels, dtype=np.int64) + 1).astype(np.int8),
                (np.asarray(rows, dtype=np.int64), cols),
            ),
            shape=(len(users), self.n_items_),
        )
        codes.sort_indices()
        return _Encoded(codes, ignored)

    def _encode_user(self, ratings: UserRatings) -> tuple[list[int], list[int], list[str]]:
        """Validate one user's ratings: (item columns, level indices, unknown item ids).

        Raises
        ------
        TypeError
            Not a mapping, or an item id that is not a string.
        RatingScaleError
            A rating that is not a number or not on the model's scale.
        """
        if not isinstance(ratings, Mapping):
            raise TypeError(
                f"user ratings must be a mapping item id -> rating, got {type(ratings).__name__}"
            )
        index = self._item_index
        # exact scale values (4 and 4.0 alike) by dict lookup; anything else goes
        # through RatingScale.indices_of, which accepts float noise and names bad values
        level_of = {value: k for k, value in enumerate(self.scale_.values.tolist())}
        cols: list[int] = []
        levels: list[int] = []
        inexact: list[tuple[int, float]] = []
        unknown: list[str] = []
        for item, value in ratings.items():
            # exact-type tests first: isinstance with a union costs twice this whole loop
            if type(item) is not str and not isinstance(item, str):
                raise TypeError(f"item ids must be strings, got {item!r}")
            if type(value) is not float and (
                isinstance(value, bool) or not isinstance(value, (int, float, np.number))
            ):
                raise RatingScaleError(f"rating for item {item!r} is not a number: {value!r}")
            col = index.get(item)
            if col is None:
                unknown.append(item)
                continue
            level = level_of.get(value)
            if level is None:
                inexact.append((len(levels), float(value)))
                level = -1
            cols.append(col)
            levels.append(level)
        if inexact:
            found = self.scale_.indices_of(np.asarray([v for _, v in inexact], dtype=np.float64))
            for (pos, _), level in zip(inexact, found.tolist(), strict=True):
                levels[pos] = level
        return cols, levels, unknown

    def _encode_one(
        self, user_ratings: UserRatings
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], list[str]]:
        """One user's (item columns, level indices, unknown item ids), columns sorted.

        The same encoding as one row of :meth:`_encode`, without building a sparse
        matrix (which costs more than the rest of a single-user fold-in).
        """
        cols, user_levels, unknown = self._encode_user(user_ratings)
        items = np.asarray(cols, dtype=np.int64)
        levels = np.asarray(user_levels, dtype=np.int64)
        # column order, as in a CSR row: the float32 sum of the rated items' weights
        # then does not depend on the order of the mapping
        order = np.argsort(items, kind="stable")
        return items[order], levels[order], unknown

    def _score_from(
        self, dist: NDArray[np.floating], expected: NDArray[np.floating]
    ) -> NDArray[np.floating]:
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
        if isinstance(item_ids, str):
            raise TypeError("item_ids must be a sequence of item ids, not a single string")
        index = self._item_index
        query: NDArray[np.int64] | None = None
        if item_ids is None:
            names = self._item_names()
            unknown: list[str] = []
        else:
            names, cols, unknown = [], [], []
            for item in item_ids:
                col = index.get(item) if isinstance(item, str) else None
                if col is None:
                    unknown.append(str(item))
                else:
                    names.append(item)
                    cols.append(col)
            query = np.asarray(cols, dtype=np.int64)
        dist = self._distribution_items(self._fold_in_one(items, levels), query)[0]
        expected = dist @ self.scale_.values.astype(DTYPE)
        return Prediction(
            item_ids=list(names),
            expected=expected,
            distribution=dist,
            unknown_items=unknown,
            ignored_ratings=ignored,
        )

    def score_items(self, user_ratings: UserRatings) -> ItemScores:
        """Score every model item for one user (see ``ranking``).

        Returns
        -------
        ItemScores
            Arrays over ``item_ids_``; rated items are scored too and flagged in
            ``rated``.
        """
        self._check_fitted()
        items, levels, ignored = self._encode_one(user_ratings)
        dist = self._distribution_items(self._fold_in_one(items, levels))[0]
        expected = dist @ self.scale_.values.astype(DTYPE)
        rated = np.zeros(self.n_items_, dtype=bool)
        rated[items] = True
        return ItemScores(self._score_from(dist, expected), expected, rated, ignored)

    def score_batch(
        self, users: Sequence[UserRatings]
    ) -> tuple[NDArray[np.floating], sp.csr_matrix]:
        """Scores of many users at once.

        Returns
        -------
        scores : ndarray of shape (n_users, n_items_)
        codes : scipy.sparse.csr_matrix of shape (n_users, n_items_)
            The users' known ratings as level codes (non-zero = rated).
        """
        self._check_fitted()
        enc = self._encode(users)
        scores, _ = self._scores_of_codes(enc.codes)
        return scores, enc.codes

    def _scores_of_codes(
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

        Items the user rated and items in ``exclude`` are never returned; items are
        ranked by the ``ranking`` score, ties broken by item order. Deterministic.

        Parameters
        ----------
        user_ratings : mapping of str to float, or a sequence of them
        n : int
            Number of items per user (fewer if the catalog runs out).
        exclude : iterable of str
            Item ids never to return (for every user of a batch); unknown ids are fine.

        Returns
        -------
        list of Recommendation, or a list of such lists for a batch
        """
        self._check_fitted()
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if isinstance(exclude, str):
            raise TypeError("exclude must be an iterable of item ids, not a single string")
        excluded = np.zeros(self.n_items_, dtype=bool)
        index = self._item_index
        for item in exclude:
            col = index.get(item)
            if col is not None:
                excluded[col] = True
        single = not _is_user_batch(user_ratings)
        users = cast("Sequence[UserRatings]", [user_ratings] if single else user_ratings)
        if single:
            items, levels, _ = self._encode_one(users[0])
            dist = self._distribution_items(self._fold_in_one(items, levels))
            expected = dist @ self.scale_.values.astype(DTYPE)
            scores = self._score_from(dist, expected)
            mask = sp.csr_matrix(
                (np.ones(len(items), dtype=np.int8), items, [0, len(items)]),
                shape=(1, self.n_items_),
            )
        else:
            mask = self._encode(users).codes
            scores, expected = self._scores_of_codes(mask)
        out = self._top_n(scores, expected, mask, excluded, int(n))
        return out[0] if single else out

    def _top_n(
        self,
        scores: NDArray[np.floating],
        expected: NDArray[np.floating],
        rated: sp.csr_matrix,
        excluded: NDArray[np.bool_],
        n: int,
    ) -> list[list[Recommendation]]:
        scores = scores.astype(np.float64, copy=True)
        scores[:, excluded] = -np.inf
        rows = fn.rows_of(rated)
        scores[rows, rated.indices] = -np.inf
        allowed = np.isfinite(scores).sum(axis=1)
        k = min(n, self.n_items_)
        if k < self.n_items_:
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        else:
            part = np.tile(np.arange(self.n_items_), (scores.shape[0], 1))
        part_scores = np.take_along_axis(scores, part, axis=1)
        # sort by score, then by item index for a deterministic tie-break
        order = np.lexsort((part, -part_scores), axis=1)
        top = np.take_along_axis(part, order, axis=1)
        ids = self.item_ids_
        result: list[list[Recommendation]] = []
        for r in range(scores.shape[0]):
            cols = top[r, : min(k, int(allowed[r]))]
            result.append(
                [
                    Recommendation(str(ids[c]), float(scores[r, c]), float(expected[r, c]))
                    for c in cols
                ]
            )
        return result

    def transform(self, user_ratings: UserRatings | Sequence[UserRatings]) -> NDArray[np.floating]:
        """Hidden features ``p(h | V)`` of one user, shape (F,), or many, shape (n, F)."""
        self._check_fitted()
        if _is_user_batch(user_ratings):
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
        batch = _is_user_batch(user_ratings)
        users = user_ratings if batch else [user_ratings]
        codes = self._encode(users).codes  # type: ignore[arg-type]
        visible = fn.one_hot_visible(codes, self.scale_.n_levels, DTYPE)
        ub = self._user_bias(self._user_offsets(codes))
        fe = fn.free_energy(visible, self.weights_, self.visible_bias_, self.hidden_bias_, ub)
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
        for name, value in (("n_samples", n_samples), ("n_steps", n_steps)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        rng = np.random.default_rng(random_state)
        start_items = np.empty(0, dtype=np.int64)
        start_levels = np.empty(0, dtype=np.int64)
        if user_ratings is not None:
            start_items, start_levels, _ = self._encode_one(user_ratings)
        if item_ids is None:
            query = start_items
        else:
            if isinstance(item_ids, str):
                raise TypeError("item_ids must be a sequence of item ids, not a single string")
            index = self._item_index
            cols = []
            for item in item_ids:
                col = index.get(item)
                if col is None:
                    raise UnknownItemError(str(item))
                cols.append(col)
            query = np.asarray(cols, dtype=np.int64)
        if len(query) == 0:
            raise ValueError("nothing to sample: give item_ids or ratings of known items")
        # chains start at the given ratings where there are some, uniformly elsewhere
        levels = rng.integers(0, self.scale_.n_levels, size=(int(n_samples), len(query)))
        bias = self.visible_bias_[query]
        if len(start_items):
            pos, given = find_sorted(start_items, query)
            levels[:, given] = start_levels[pos[given]]
            # the conditioning offset comes from the ratings given (none: zero)
            ub = self._fold_in_one(start_items, start_levels).user_bias
            if ub is not None:
                bias = bias + ub
        weights = self.weights_[query]
        for _ in range(int(n_steps)):
            hidden = fn.sample_hiddens(levels, weights, self.hidden_bias_, rng)
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
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        col = self._item_index.get(item_id) if isinstance(item_id, str) else None
        if col is None:
            raise UnknownItemError(str(item_id))
        units = self._item_units()
        sims = units @ units[col]
        sims[col] = -np.inf
        k = min(int(n), self.n_items_ - 1)
        if k <= 0:
            return []
        part = np.argpartition(-sims, k - 1)[:k]
        order = np.lexsort((part, -sims[part]))
        return [(str(self.item_ids_[c]), float(sims[c])) for c in part[order]]

    def _item_units(self) -> NDArray[np.floating]:
        cache: NDArray[np.floating] | None = self.__dict__.get("_item_unit_cache")
        if cache is None:
            flat = self.weights_.reshape(self.n_items_, -1).astype(DTYPE)
            flat = flat - flat.mean(axis=1, keepdims=True)
            norms = np.linalg.norm(flat, axis=1, keepdims=True)
            cache = flat / np.maximum(norms, DTYPE(1e-12))
            self.__dict__["_item_unit_cache"] = cache
        return cache


def _check_matrix(matrix: object, what: str) -> None:
    if not isinstance(matrix, RatingMatrix):
        raise TypeError(f"{what} must be a RatingMatrix, got {type(matrix).__name__}")
    if what == "train" and (matrix.n_ratings == 0 or matrix.n_items == 0):
        raise ValueError("train has no ratings")


def _check_same_scale(train: RatingMatrix, validation: RatingMatrix) -> None:
    if train.scale != validation.scale:
        raise RatingScaleError(
            f"validation uses rating scale {validation.scale}, train {train.scale}"
        )
