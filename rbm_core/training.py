"""The training loop shared by the RBM estimators: epochs, history, early stopping, updates.

:func:`run_epochs` runs mini-batch epochs over ``n_cases`` training cases (users,
items or images) in a random order per epoch. The estimator supplies what one batch
does and what an epoch reports (:class:`EpochTrainable`); the loop checks the learned
arrays for divergence after every epoch, appends one history entry per epoch, shows a
progress bar and logs when asked to, and stops early on a validation figure, keeping
the best epoch's arrays. The schedules (CD steps per epoch, learning-rate decay), the
momentum update, the BLAS thread limit and the held-out validation ratings are small
helpers beside it.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, TypeVar

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from rbm_core.data import RatingMatrix, find_sorted

__all__ = [
    "CDSchedule",
    "EarlyStopping",
    "EpochTrainable",
    "HeldOutRatings",
    "TrainingDivergedError",
    "aligned_rows",
    "blas_thread_limit",
    "cd_schedule",
    "decayed_learning_rate",
    "held_out_ratings",
    "make_writable",
    "momentum_step",
    "run_epochs",
    "steps_at",
    "subsample_rows",
]

logger = logging.getLogger(__name__)

CDSchedule: TypeAlias = int | Sequence[Sequence[int]]
"""``cd_steps``: an int, or ``[[first_epoch, steps], ...]`` pairs (epochs counted from 0)."""

DataT = TypeVar("DataT", contravariant=True)


class TrainingDivergedError(ArithmeticError):
    """Training produced non-finite weights (learning rate too high?)."""


# -- schedules ------------------------------------------------------------------------------
def cd_schedule(cd_steps: CDSchedule) -> list[tuple[int, int]]:
    """``cd_steps`` as ``[(first_epoch, steps), ...]``; ``ValueError`` if malformed."""
    if isinstance(cd_steps, bool):
        raise ValueError(f"cd_steps must be an int or [[epoch, steps], ...], got {cd_steps!r}")
    if isinstance(cd_steps, int | np.integer):
        if cd_steps < 1:
            raise ValueError(f"cd_steps must be >= 1, got {cd_steps!r}")
        return [(0, int(cd_steps))]
    try:
        pairs = [(int(e), int(t)) for e, t in cd_steps]
    except (TypeError, ValueError):
        raise ValueError(
            f"cd_steps must be an int or [[epoch, steps], ...], got {cd_steps!r}"
        ) from None
    if not pairs or pairs[0][0] != 0:
        raise ValueError("a cd_steps schedule must start at epoch 0")
    if any(t < 1 for _, t in pairs) or any(b[0] <= a[0] for a, b in itertools.pairwise(pairs)):
        raise ValueError("cd_steps schedule: epochs must increase and steps be >= 1")
    return pairs


def steps_at(schedule: Sequence[tuple[int, int]], epoch: int) -> int:
    """The number of Gibbs steps the schedule gives for ``epoch`` (counted from 0)."""
    current = 1
    for first, steps in schedule:
        if epoch >= first:
            current = steps
    return current


def decayed_learning_rate(rate: float, decay: float, epoch: int) -> float:
    """``rate / (1 + decay * epoch)``."""
    return float(rate) / (1.0 + float(decay) * epoch)


def blas_thread_limit(threads: int | None) -> AbstractContextManager[Any]:
    """A context limiting BLAS to ``threads`` threads (no limit for None)."""
    if threads is None:
        return nullcontext()
    from threadpoolctl import threadpool_limits

    limits: AbstractContextManager[Any] = threadpool_limits(limits=int(threads), user_api="blas")
    return limits


# -- updates --------------------------------------------------------------------------------
def make_writable(model: object, names: Sequence[str]) -> None:
    """Give ``model`` private, writable copies of those of its arrays ``names`` that are not.

    A model loaded memory-mapped holds read-only arrays; training updates them in place.
    """
    for name in names:
        arr = getattr(model, name)
        if not arr.flags.writeable:
            setattr(model, name, np.array(arr))


def momentum_step(
    param: NDArray[np.floating],
    velocity: NDArray[np.floating],
    gradient: NDArray[np.floating] | None,
    learning_rate: float,
    momentum: float,
    *,
    rows: NDArray[np.integer] | None = None,
    weight_decay: float = 0.0,
    buffer: NDArray[np.floating] | None = None,
) -> None:
    """One momentum step, in place: ``v <- m v + lr (g - decay W)``, ``W <- W + v``.

    Parameters
    ----------
    param, velocity : ndarray
        The array and its velocity (same shape and dtype), updated in place.
    gradient : ndarray or None
        Ascent direction for ``param`` (or for ``param[rows]``); None: momentum only.
    learning_rate, momentum : float
    rows : ndarray of int, optional
        The rows of ``param`` the gradient covers; momentum and decay touch all rows.
    weight_decay : float
        L2 penalty; its term is computed in ``buffer`` (same shape as ``param``) to
        avoid a temporary of the size of ``param``.
    """
    dtype = param.dtype.type
    if momentum or gradient is None or rows is not None:
        velocity *= dtype(momentum)
    else:  # v <- lr g at once (the same result, two fewer passes)
        np.multiply(gradient, dtype(learning_rate), out=velocity)
        gradient = None
    if weight_decay:
        scratch = np.empty_like(param) if buffer is None else buffer
        np.multiply(param, dtype(-learning_rate * float(weight_decay)), out=scratch)
        velocity += scratch
    if gradient is not None:
        step = dtype(learning_rate) * gradient
        if rows is None:
            velocity += step
        else:
            velocity[rows] += step
    param += velocity


# -- held-out validation ratings --------------------------------------------------------------
@dataclass(frozen=True)
class HeldOutRatings:
    """Held-out ratings of training users, ready to be predicted from their training ratings.

    Attributes
    ----------
    inputs : scipy.sparse.csr_matrix of shape (n_val_users, n_items)
        Each validation user's training ratings (level codes) to fold in; empty rows
        for users absent from the training data.
    rows, items : ndarray of int, shape (n_held_out,)
        Row in ``inputs`` and item column of each held-out rating.
    targets : ndarray of shape (n_held_out,)
        The held-out rating values.
    targets_codes : scipy.sparse.csr_matrix of shape (n_val_users, n_items)
        The held-out ratings as level codes.
    train_probe : scipy.sparse.csr_matrix of shape (n_val_users, n_items)
        As many of each user's training ratings as the user has held out (or all of
        them, if fewer): an equal-sized set of the same users, to compare with.
    """

    inputs: sp.csr_matrix
    rows: NDArray[np.int64]
    items: NDArray[np.int64]
    targets: NDArray[np.float64]
    targets_codes: sp.csr_matrix
    train_probe: sp.csr_matrix


def aligned_rows(train: RatingMatrix, user_ids: NDArray[np.str_]) -> sp.csr_matrix:
    """Rows of ``train.codes`` for ``user_ids`` (empty rows for users not in ``train``)."""
    pos, known = find_sorted(train.user_ids, user_ids)
    inputs = train.codes[pos].multiply(known[:, None].astype(np.int8)).tocsr()
    inputs.eliminate_zeros()
    inputs.sort_indices()
    return inputs.astype(np.int8)


def subsample_rows(
    codes: sp.csr_matrix, counts: NDArray[np.integer], rng: np.random.Generator
) -> sp.csr_matrix:
    """At most ``counts[u]`` random entries of each row ``u`` of ``codes``."""
    per_row = np.diff(codes.indptr)
    rows = np.repeat(np.arange(codes.shape[0]), per_row)
    order = np.lexsort((rng.random(codes.nnz), rows))
    rank = np.empty(codes.nnz, dtype=np.int64)
    rank[order] = np.arange(codes.nnz) - np.repeat(codes.indptr[:-1], per_row)
    keep = rank < np.repeat(np.asarray(counts, dtype=np.int64), per_row)
    out = sp.csr_matrix((codes.data[keep], (rows[keep], codes.indices[keep])), shape=codes.shape)
    out.sort_indices()
    return out


def held_out_ratings(
    train: RatingMatrix,
    validation: RatingMatrix,
    item_ids: NDArray[np.str_],
    rng: np.random.Generator | None = None,
) -> HeldOutRatings:
    """Align ``validation`` with a model's items and its users' training ratings.

    Parameters
    ----------
    train : RatingMatrix
        The training ratings, columns in ``item_ids`` order.
    validation : RatingMatrix
        Held-out ratings of (mostly) the same users; ratings of other items are dropped.
    item_ids : ndarray of str
        The model's items.
    rng : numpy.random.Generator, optional
        Draws the training probe.
    """
    if not np.array_equal(validation.item_ids, item_ids):
        validation = validation.with_item_catalog(item_ids)
    inputs = aligned_rows(train, validation.user_ids)
    rows, items, levels = validation.triples()
    return HeldOutRatings(
        inputs=inputs,
        rows=rows,
        items=items,
        targets=validation.scale.values[levels],
        targets_codes=validation.codes,
        train_probe=subsample_rows(
            inputs, np.diff(validation.codes.indptr), np.random.default_rng(rng)
        ),
    )


# -- the loop -------------------------------------------------------------------------------
@dataclass(frozen=True)
class EarlyStopping:
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    ``monitor`` names a history figure; lower is better unless ``higher_is_better``.
    """

    patience: int
    monitor: str = "validation_rmse"
    higher_is_better: bool = False
    min_delta: float = 1e-5


class EpochTrainable(Protocol[DataT]):
    """What :func:`run_epochs` needs from an estimator (``DataT``: its training data).

    ``_trained_arrays`` names the learned arrays a batch updates (checked for
    divergence, kept from the best epoch under early stopping).
    """

    n_epochs_: int
    history_: list[dict[str, Any]]

    @property
    def _trained_arrays(self) -> tuple[str, ...]: ...

    def _epoch_settings(self, epoch: int) -> dict[str, Any]:
        """The scheduled settings of ``epoch`` (counted from 0), recorded in the history."""
        ...

    def _train_batch(self, data: DataT, rows: NDArray[np.int64], epoch: int) -> tuple[float, int]:
        """Update from the cases ``rows``; returns (squared reconstruction error, count).

        A count of 0 says the batch measured no reconstruction error.
        """
        ...

    def _epoch_figures(self, data: DataT) -> dict[str, Any]:
        """Figures of the model after an epoch (free energies, validation errors, ...)."""
        ...

    def _reset_caches(self) -> None: ...


def run_epochs(
    model: EpochTrainable[DataT],
    data: DataT,
    *,
    n_cases: int,
    n_epochs: int,
    batch_size: int,
    rng: np.random.Generator,
    early_stopping: EarlyStopping | None = None,
    verbose: bool = False,
    name: str = "",
) -> None:
    """Train ``model`` for ``n_epochs`` epochs of shuffled mini-batches of its cases.

    Each epoch visits every case once in a random order, in batches of
    ``batch_size`` cases (sorted within the batch), then appends to
    ``model.history_``: ``epoch`` (1-based), the epoch's settings, ``train_rmse``
    (root of the summed squared errors over their count; None when the batches
    counted nothing), the model's figures and ``seconds``.

    Raises
    ------
    TrainingDivergedError
        If a learned array holds a non-finite value after an epoch.
    """
    from tqdm.auto import tqdm

    best: tuple[float, list[NDArray[Any]]] | None = None
    since_best = 0
    n_batches = -(-n_cases // batch_size)
    bar = tqdm(total=n_epochs * n_batches, disable=not verbose, desc=name, unit="batch")
    try:
        for _ in range(n_epochs):
            epoch = model.n_epochs_
            start = time.perf_counter()
            settings = model._epoch_settings(epoch)
            sq_err, n_seen = 0.0, 0
            order = rng.permutation(n_cases)
            for lo in range(0, n_cases, batch_size):
                err, count = model._train_batch(data, np.sort(order[lo : lo + batch_size]), epoch)
                bar.update(1)
                sq_err += err
                n_seen += count
            if not all(np.isfinite(getattr(model, a)).all() for a in model._trained_arrays):
                raise TrainingDivergedError(
                    f"non-finite weights after epoch {epoch + 1}; "
                    "lower the learning rate or raise the weight decay"
                )
            model.n_epochs_ += 1
            model._reset_caches()
            entry: dict[str, Any] = {
                "epoch": model.n_epochs_,
                **settings,
                "train_rmse": float(np.sqrt(sq_err / n_seen)) if n_seen else None,
                **model._epoch_figures(data),
            }
            entry["seconds"] = time.perf_counter() - start
            model.history_.append(entry)
            if verbose:
                logger.info("epoch %d: %s", model.n_epochs_, entry)
                bar.set_postfix(
                    {
                        k: f"{v:.4f}"
                        for k, v in entry.items()
                        if k.endswith("rmse") and v is not None
                    }
                )
            if early_stopping is None or entry.get(early_stopping.monitor) is None:
                continue
            score = float(entry[early_stopping.monitor])
            if early_stopping.higher_is_better:
                score = -score
            if best is None or score < best[0] - early_stopping.min_delta:
                best = (score, [getattr(model, a).copy() for a in model._trained_arrays])
                since_best = 0
                continue
            since_best += 1
            if since_best >= early_stopping.patience:
                logger.info(
                    "early stopping after epoch %d (best %s %.4f)",
                    model.n_epochs_,
                    early_stopping.monitor,
                    -best[0] if early_stopping.higher_is_better else best[0],
                )
                break
    finally:
        bar.close()
    if best is not None:
        for name_, arr in zip(model._trained_arrays, best[1], strict=True):
            setattr(model, name_, arr)
        model._reset_caches()
