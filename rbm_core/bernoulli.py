"""The Bernoulli-visible Restricted Boltzmann Machine: binary or [0, 1]-valued data.

:class:`BernoulliRBM` is the estimator (hyperparameters, initialisation, training,
inference, persistence hooks); the formulas are in :mod:`rbm_core.bernoulli_functional`
and, for the hidden side it shares with the softmax RBM, :mod:`rbm_core.functional`;
the epoch loop is :func:`rbm_core.training.run_epochs`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from rbm_core import bernoulli_functional as bf
from rbm_core import functional as fn
from rbm_core import training
from rbm_core.base import BaseEstimator
from rbm_core.checks import (
    check_bool,
    check_number,
    check_positive_int,
    check_random_state,
    check_unit_interval_matrix,
)
from rbm_core.training import CDSchedule

__all__ = ["DTYPE", "BernoulliRBM"]

DTYPE = np.float32
"""dtype of every learned array and of all arithmetic (the input is converted to it)."""

Visible: TypeAlias = NDArray[np.floating] | sp.csr_matrix
"""Rows of visible values: a dense array or a CSR matrix."""

_PROBE_ROWS = 500
"""Training rows whose reconstruction error and free energy the history reports."""

_CHUNK_BYTES = 8 * 2**20
"""Working-set cap of the dense rows made from a sparse matrix for the epoch figures."""


@dataclass(frozen=True)
class _TrainingData:
    """What one training run iterates over (see :func:`rbm_core.training.run_epochs`)."""

    X: Visible
    validation: Visible | None
    probe: Visible  # training rows the history's figures are computed on


class BernoulliRBM(BaseEstimator):
    """Restricted Boltzmann Machine with binary hidden units and Bernoulli visible units.

    The visible units take values in [0, 1]: binary data, or probabilities such as
    grey levels (as in Hinton's "A Practical Guide to Training Restricted Boltzmann
    Machines", 2010, which this implementation follows). The energy is
    ``E(v, h) = -v.W.h - b.v - c.h`` and the free energy
    ``F(v) = -b.v - sum_j softplus(c_j + v.W_j)``. Training is contrastive divergence
    (CD-k) or persistent CD (Tieleman, 2008) with momentum and an L2 weight decay on
    ``W``, on mini-batches of rows; gradients are averaged over the batch. The data may
    be a dense array or a scipy.sparse CSR matrix; a sparse matrix is only made dense
    one mini-batch at a time.

    Samples and probabilities in a CD step (:func:`~rbm_core.bernoulli_functional.cd_statistics`):
    the hidden units driven by the data are sampled, their statistics use
    ``p(h | v)``; intermediate Gibbs layers are sampled; for CD the last visible layer
    is ``p(v | h)`` and the last hidden layer ``p(h | v)`` of it. For PCD the chains'
    visible layer is always sampled (they must stay samples of the model).

    Parameters
    ----------
    n_hidden : int
        F, the number of binary hidden units.
    learning_rate : float
        Step size for gradients averaged over a mini-batch.
    momentum : float
        Momentum of the parameter updates, in [0, 1).
    weight_decay : float
        L2 penalty on ``W`` (not on the biases), >= 0.
    batch_size : int
        Rows per mini-batch; also the number of persistent chains for PCD.
    n_epochs : int
        Passes over the data in ``fit``.
    cd_steps : int or sequence of [first_epoch, steps]
        Gibbs steps k of CD-k (or PCD-k), fixed or growing over the epochs, e.g.
        ``[[0, 1], [10, 3]]``.
    persistent : bool
        Persistent contrastive divergence: the negative chains carry on from one
        mini-batch to the next (and across ``partial_fit`` calls) instead of
        restarting at the data.
    random_state : int, numpy.random.Generator or None
        Seed (or generator) for initialisation, batch order and Gibbs sampling; also
        the default seed of ``score_samples``, ``sample`` and ``gibbs``.
    blas_threads : int or None
        BLAS threads during training (None: the library's default). The per-batch
        products are small, and extra threads mostly wait for each other.
    verbose : bool
        Show a progress bar (tqdm) and log each epoch at INFO level.

    Attributes
    ----------
    weights_ : ndarray of shape (n_features_in_, n_hidden)
        ``W``, one row per visible unit (the layout of :class:`~rbm_core.model.SoftmaxRBM`;
        scikit-learn's ``components_`` is its transpose). Column ``j`` is hidden unit
        ``j``'s filter.
    visible_bias_ : ndarray of shape (n_features_in_,)
        ``b``; initialised at ``log(p / (1 - p))`` of the (smoothed) feature means.
    hidden_bias_ : ndarray of shape (n_hidden,)
        ``c``; initialised at 0 (``W`` at N(0, 0.01^2)).
    n_features_in_ : int
        Visible units (columns of the training data).
    n_epochs_ : int
        Epochs trained so far (``fit`` restarts the count, ``partial_fit`` adds one).
    history_ : list of dict
        Per epoch: ``epoch``, ``cd_steps``, ``train_rmse`` (root mean squared error of
        the CD reconstructions ``p(v | h_0)`` during the epoch; None for PCD, whose
        chains do not reconstruct the batch), ``reconstruction_error`` (mean squared
        error of :meth:`reconstruct` after the epoch, per visible unit, on up to 500
        training rows) and, with a validation set (else None),
        ``validation_reconstruction_error``, ``train_free_energy`` and
        ``validation_free_energy`` (mean ``F(v)`` of those training rows and of the
        validation rows) and ``free_energy_gap`` (validation minus training: a growing
        gap shows overfitting, Hinton's guide, section 6; a free energy alone says
        little, as the partition function changes too), and ``seconds``.

    Notes
    -----
    All arrays are float32 (:data:`DTYPE`). Momentum buffers, the persistent chains
    and the training generator live on the instance between ``partial_fit`` calls; an
    artifact keeps the weights, biases and history only, so ``partial_fit`` after
    ``load_model`` restarts them.
    """

    _trained_arrays: ClassVar[tuple[str, ...]] = ("weights_", "visible_bias_", "hidden_bias_")
    """The arrays contrastive divergence updates (in this order)."""
    _array_attributes = _trained_arrays
    _metadata_attributes = ("n_features_in_", "n_epochs_", "history_")

    weights_: NDArray[np.floating]
    visible_bias_: NDArray[np.floating]
    hidden_bias_: NDArray[np.floating]
    n_features_in_: int
    n_epochs_: int
    history_: list[dict[str, Any]]
    # training state kept between partial_fit calls (not persisted)
    _rng: np.random.Generator
    _velocity: list[NDArray[np.floating]]
    _chains: NDArray[np.floating] | None
    _schedule: list[tuple[int, int]]

    def __init__(
        self,
        *,
        n_hidden: int = 100,
        learning_rate: float = 0.1,
        momentum: float = 0.5,
        weight_decay: float = 0.0001,
        batch_size: int = 10,
        n_epochs: int = 20,
        cd_steps: CDSchedule = 1,
        persistent: bool = False,
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
        self.random_state = random_state
        self.blas_threads = blas_threads
        self.verbose = verbose

    def _validate_params(self) -> None:
        for name in ("n_hidden", "batch_size", "n_epochs"):
            check_positive_int(name, getattr(self, name))
        if self.blas_threads is not None:
            check_positive_int("blas_threads", self.blas_threads)
        check_number("learning_rate", self.learning_rate, low=0.0, low_open=True)
        check_number("momentum", self.momentum, low=0.0, high=1.0)
        check_number("weight_decay", self.weight_decay, low=0.0)
        training.cd_schedule(self.cd_steps)
        check_bool("persistent", self.persistent)
        check_bool("verbose", self.verbose)
        check_random_state(self.random_state)

    # -- training ---------------------------------------------------------------------
    def fit(self, X: object, validation: object = None) -> BernoulliRBM:
        """Train from scratch for ``n_epochs`` epochs.

        Parameters
        ----------
        X : array-like or scipy.sparse matrix of shape (n_samples, n_features)
            Training rows, values in [0, 1].
        validation : array-like or scipy.sparse matrix of shape (n_val, n_features), optional
            Held-out rows whose reconstruction error and free energy the history
            reports after each epoch.

        Returns
        -------
        BernoulliRBM
            ``self``.

        Raises
        ------
        ValueError
            A hyperparameter breaks its rule, or ``X`` / ``validation`` is not a
            2-D matrix of values in [0, 1] (TypeError if it does not hold numbers).
        TrainingDivergedError
            The weights became non-finite (learning rate too high).
        """
        self._validate_params()
        data = check_unit_interval_matrix(X)
        held_out = self._check_validation(validation, data.shape[1])
        self._initialise(data, np.random.default_rng(self.random_state))
        self._train(data, held_out, int(self.n_epochs))
        return self

    def partial_fit(self, X: object, validation: object = None) -> BernoulliRBM:
        """Run one epoch over ``X`` in mini-batches (initialising from it if not fitted).

        Momentum buffers and, for PCD, the persistent chains carry on from the
        previous call (or from ``fit``), so a caller can loop epochs and evaluate its
        own figures in between. ``X`` must have the model's number of features.

        Returns
        -------
        BernoulliRBM
            ``self``.
        """
        self._validate_params()
        n_features = self.n_features_in_ if self.is_fitted else None
        data = check_unit_interval_matrix(X, n_features=n_features)
        held_out = self._check_validation(validation, data.shape[1])
        if not self.is_fitted:
            self._initialise(data, np.random.default_rng(self.random_state))
        else:
            training.make_writable(self, self._trained_arrays)
        self._train(data, held_out, 1)
        return self

    def _check_validation(self, validation: object, n_features: int) -> Visible | None:
        if validation is None:
            return None
        return check_unit_interval_matrix(validation, "validation", n_features=n_features)

    def _initialise(self, X: Visible, rng: np.random.Generator) -> None:
        n, m = X.shape
        f = int(self.n_hidden)
        self.weights_ = rng.standard_normal((m, f), dtype=DTYPE) * DTYPE(0.01)
        sums = np.asarray(X.sum(axis=0), dtype=DTYPE).ravel()
        self.visible_bias_ = bf.initial_visible_bias(sums, n)
        self.hidden_bias_ = np.zeros(f, dtype=DTYPE)
        self.n_features_in_ = m
        self.n_epochs_ = 0
        self.history_ = []
        self._reset_caches()
        self._rng = rng
        self._velocity = [np.zeros_like(getattr(self, a)) for a in self._trained_arrays]
        self._chains = None

    def _train(self, X: Visible, validation: Visible | None, n_epochs: int) -> None:
        if not hasattr(self, "_rng"):  # loaded from an artifact
            self._rng = np.random.default_rng(self.random_state)
        if getattr(self, "_velocity", None) is None:
            self._velocity = [np.zeros_like(getattr(self, a)) for a in self._trained_arrays]
        if not self.persistent:
            self._chains = None
        elif getattr(self, "_chains", None) is None:
            # chains start at h = 0, i.e. v ~ sigmoid(b): the (smoothed) feature means
            self._chains = np.zeros((int(self.batch_size), self.hidden_bias_.shape[0]), DTYPE)
        self._schedule = training.cd_schedule(self.cd_steps)
        n = X.shape[0]
        # evenly spaced rows: representative, and no draw from the training generator
        # (so that fit for k epochs equals k calls of partial_fit)
        probe = X[np.unique(np.linspace(0, n - 1, min(n, _PROBE_ROWS)).astype(np.int64))]
        # overflow is caught by the finiteness check after each epoch
        with (
            training.blas_thread_limit(self.blas_threads),
            np.errstate(over="ignore", invalid="ignore"),
        ):
            training.run_epochs(
                self,
                _TrainingData(X, validation, probe),
                n_cases=n,
                n_epochs=n_epochs,
                batch_size=int(self.batch_size),
                rng=self._rng,
                verbose=bool(self.verbose),
                name=type(self).__name__,
            )

    def _epoch_settings(self, epoch: int) -> dict[str, Any]:
        return {"cd_steps": training.steps_at(self._schedule, epoch)}

    def _train_batch(
        self, data: _TrainingData, rows: NDArray[np.int64], epoch: int
    ) -> tuple[float, int]:
        stats = bf.cd_statistics(
            data.X[rows],
            self.weights_,
            self.visible_bias_,
            self.hidden_bias_,
            training.steps_at(self._schedule, epoch),
            self._rng,
            self._chains,
        )
        self._chains = stats.chains
        lr, momentum = float(self.learning_rate), float(self.momentum)
        vw, vb, vc = self._velocity
        training.momentum_step(
            self.weights_,
            vw,
            stats.d_weights,
            lr,
            momentum,
            weight_decay=float(self.weight_decay),
            buffer=self._cached("update_buffer", lambda: np.empty_like(self.weights_)),
        )
        training.momentum_step(self.visible_bias_, vb, stats.d_visible_bias, lr, momentum)
        training.momentum_step(self.hidden_bias_, vc, stats.d_hidden_bias, lr, momentum)
        return stats.squared_error, stats.n_values

    def _epoch_figures(self, data: _TrainingData) -> dict[str, Any]:
        figures: dict[str, Any] = {
            "reconstruction_error": self._reconstruction_error(data.probe),
            "train_free_energy": None,
            "validation_reconstruction_error": None,
            "validation_free_energy": None,
            "free_energy_gap": None,
        }
        # free energies are compared, never read alone (Z changes from epoch to epoch):
        # computed only when there is a validation set to compare with
        if data.validation is not None:
            train_energy = self._mean_free_energy(data.probe)
            energy = self._mean_free_energy(data.validation)
            figures["train_free_energy"] = train_energy
            figures["validation_reconstruction_error"] = self._reconstruction_error(data.validation)
            figures["validation_free_energy"] = energy
            figures["free_energy_gap"] = energy - train_energy
        return figures

    def _chunks(self, X: Visible) -> Iterator[Visible]:
        """Rows of ``X`` in chunks whose dense form stays within ``_CHUNK_BYTES``."""
        n, m = X.shape
        step = max(1, _CHUNK_BYTES // (4 * m)) if sp.issparse(X) else max(n, 1)
        for lo in range(0, n, step):
            yield X[lo : lo + step]

    def _reconstruction_error(self, X: Visible) -> float:
        """Mean squared error of :meth:`reconstruct` per visible unit."""
        total = sum(bf.squared_error(rows, self._reconstruction(rows)) for rows in self._chunks(X))
        n, m = X.shape
        return float(total / (n * m))

    def _mean_free_energy(self, X: Visible) -> float:
        total = sum(
            float(self._free_energy(rows).sum(dtype=np.float64)) for rows in self._chunks(X)
        )
        return float(total / X.shape[0])

    # -- inference --------------------------------------------------------------------
    def _check_input(self, X: object, what: str = "X") -> Visible:
        self._check_fitted()
        return check_unit_interval_matrix(X, what, n_features=self.n_features_in_, min_rows=0)

    def _reconstruction(self, X: Visible) -> NDArray[np.floating]:
        hidden = fn.hidden_probabilities(X, self.weights_, self.hidden_bias_)
        return bf.visible_probabilities(hidden, self.weights_, self.visible_bias_)

    def _free_energy(self, X: Visible) -> NDArray[np.floating]:
        return fn.free_energy(X, self.weights_, self.visible_bias_, self.hidden_bias_)

    def transform(self, X: object) -> NDArray[np.floating]:
        """Hidden features ``p(h_j = 1 | v) = sigmoid(c_j + v.W_j)`` of each row.

        Parameters
        ----------
        X : array-like or scipy.sparse matrix of shape (n_samples, n_features_in_)

        Returns
        -------
        ndarray of shape (n_samples, n_hidden)
        """
        return fn.hidden_probabilities(self._check_input(X), self.weights_, self.hidden_bias_)

    def reconstruct(self, X: object) -> NDArray[np.floating]:
        """One deterministic forward and backward pass: ``p(v | h = p(h | v))``.

        The reconstruction of each row as the model sees it; compare it with ``X``
        (e.g. the mean squared error) to see how much of the data the hidden layer
        captures. The output is dense, also for a sparse ``X``: pass a large sparse
        matrix in chunks of rows.

        Returns
        -------
        ndarray of shape (n_samples, n_features_in_)
        """
        return self._reconstruction(self._check_input(X))

    def free_energy(self, X: object) -> NDArray[np.floating]:
        """``F(v) = -b.v - sum_j softplus(c_j + v.W_j)`` of each row, shape (n_samples,).

        ``p(v)`` is proportional to ``exp(-F(v))``: lower is more probable.
        """
        return self._free_energy(self._check_input(X))

    def score_samples(
        self, X: object, *, random_state: int | np.random.Generator | None = None
    ) -> NDArray[np.floating]:
        """Pseudo-likelihood of each row, as scikit-learn's ``BernoulliRBM`` defines it.

        For each row one unit ``i`` is drawn uniformly and the score is
        ``n_features * log p(v_i | v_-i)`` (see
        :func:`~rbm_core.bernoulli_functional.pseudo_log_likelihood`): a noisy,
        unbiased estimate of the log pseudo-likelihood ``sum_i log p(v_i | v_-i)``.

        Parameters
        ----------
        X : array-like or scipy.sparse matrix of shape (n_samples, n_features_in_)
            Binary rows (for values strictly between 0 and 1 the score is the same
            formula, as in scikit-learn, but not a likelihood).
        random_state : int, numpy.random.Generator or None
            Draws the units; None: the model's ``random_state``. With an int seed the
            result is the same on every call.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        data = self._check_input(X)
        rng = self._generator(random_state)
        features = np.asarray(rng.integers(0, self.n_features_in_, size=data.shape[0]))
        return bf.pseudo_log_likelihood(
            data, self.weights_, self.visible_bias_, self.hidden_bias_, features
        )

    def sample(
        self,
        n_samples: int = 1,
        *,
        n_steps: int = 1000,
        probabilities: bool = False,
        random_state: int | np.random.Generator | None = None,
    ) -> NDArray[np.floating]:
        """Generate data: ``n_samples`` Gibbs chains started from uniform random states.

        Parameters
        ----------
        n_samples : int
            Independent chains.
        n_steps : int
            Gibbs steps ``v -> h -> v`` per chain.
        probabilities : bool
            Return ``p(v | h)`` of the last step (the chains' expected values, less
            noisy to look at) instead of the binary states drawn from it.
        random_state : int, numpy.random.Generator or None
            None: the model's ``random_state``.

        Returns
        -------
        ndarray of shape (n_samples, n_features_in_)
        """
        self._check_fitted()
        n_samples = check_positive_int("n_samples", n_samples)
        rng = self._generator(random_state)
        start = fn.sample_bernoulli(
            np.full((n_samples, self.n_features_in_), 0.5, dtype=DTYPE), rng
        )
        return self._run_chains(start, n_steps, probabilities, rng)

    def gibbs(
        self,
        X: object,
        *,
        n_steps: int = 1,
        probabilities: bool = False,
        random_state: int | np.random.Generator | None = None,
    ) -> NDArray[np.floating]:
        """Run a Gibbs chain from each row of ``X`` for ``n_steps`` steps.

        Parameters and return value as in :meth:`sample`; the chains start at the rows
        of ``X`` (shape (n_samples, n_features_in_)) instead of random states.
        """
        data = self._check_input(X)
        return self._run_chains(data, n_steps, probabilities, self._generator(random_state))

    def _run_chains(
        self, start: Visible, n_steps: int, probabilities: bool, rng: np.random.Generator
    ) -> NDArray[np.floating]:
        n_steps = check_positive_int("n_steps", n_steps)
        check_bool("probabilities", probabilities)
        states, means = bf.gibbs_chain(
            start, self.weights_, self.visible_bias_, self.hidden_bias_, n_steps, rng
        )
        return means if probabilities else states

    def _generator(self, random_state: int | np.random.Generator | None) -> np.random.Generator:
        check_random_state(random_state)
        return np.random.default_rng(self.random_state if random_state is None else random_state)

    # -- persistence ------------------------------------------------------------------------
    def _check_restored(self) -> None:
        m, f = self.n_features_in_, int(self.n_hidden)
        if (
            self.weights_.shape != (m, f)
            or self.visible_bias_.shape != (m,)
            or self.hidden_bias_.shape != (f,)
        ):
            raise ValueError(
                f"array shapes {self.weights_.shape}, {self.visible_bias_.shape}, "
                f"{self.hidden_bias_.shape} do not match {m} features and {f} hidden units"
            )
