"""The promotion gate: may the candidate replace the active version?

Every model is scored on the same held-out ratings (:mod:`.holdout`), each user
folded in from their training ratings (:func:`rbm_core.evaluation.predict_test_ratings`,
the protocol of ``rbmrec evaluate``). Three notions make the gate:

* a :class:`Metric` turns a model's answers on the hold-out into one figure: RMSE
  and MAE of the held-out ratings, and NDCG@10 of the top-N lists (every item the
  user did not rate in training ranked; relevant: held-out ratings at or above the
  scale's high rating, 4 on 1..5);
* a :class:`Criterion` is a metric with its tolerance: the candidate may be worse
  than a reference by at most that much (RMSE within ``RBMREC_PROMOTION_TOLERANCE``
  and NDCG@10 within ``RBMREC_NDCG_TOLERANCE`` of the active version:
  :func:`criteria`);
* a :class:`Reference` is a model the candidate must not be worse than: the active
  version (:func:`active_reference`) and the bias baseline fitted on the same
  training ratings (:func:`baseline_reference`: the candidate's RMSE may not be
  worse at all, so a model that predicts worse than ``mu + b_u + b_i`` is never
  served).

:func:`decide` compares the candidate with every reference on every criterion,
on the held-out ratings that all of them can predict, and activates the candidate
only if it passes every comparison. The figures it returns are recorded with the
run and the version (``candidate_rmse``, ``active_rmse``, ``n_compared``, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from numpy.typing import NDArray

from app.services.artifacts import check_artifact
from app.services.registry import ModelVersionInfo
from app.services.retrain.holdout import HoldOut
from app.settings import Settings
from rbm_core.artifact import load_model
from rbm_core.base import BaseEstimator, Recommender
from rbm_core.baselines import BiasBaseline
from rbm_core.data import find_sorted
from rbm_core.evaluation import RatingPredictor, predict_test_ratings
from rbm_core.metrics import mae, ndcg_of_scores, rmse
from rbm_core.model import SoftmaxRBM
from rbm_core.recommender import RBMRecommender

__all__ = [
    "BASELINE_CRITERIA",
    "MAE",
    "NDCG",
    "REPORTED_METRICS",
    "RMSE",
    "Criterion",
    "Decision",
    "Metric",
    "Reference",
    "Scored",
    "active_reference",
    "baseline_reference",
    "criteria",
    "decide",
    "held_out_ndcg",
    "own_figures",
    "score",
]


_RANKING_BATCH = 512
"""Held-out users ranked at once (bounds the users x items scores in memory)."""


@dataclass(frozen=True)
class Scored:
    """One model's answers on the hold-out.

    Attributes
    ----------
    name : str
        Prefix of its recorded figures: ``candidate``, ``active``.
    model : RatingPredictor or None
        The fitted model (``None`` when it could not be loaded).
    predictions : ndarray of shape (n_held,)
        Its prediction of each held-out rating; NaN where it does not know the item
        (and everywhere when it could not be scored).
    ndcg : float or None
        NDCG@10 of its top-N lists for the held-out users (None: it does not rank, or
        no held-out rating is high).
    """

    name: str
    model: RatingPredictor | None
    predictions: NDArray[np.float64]
    ndcg: float | None = None

    @property
    def predicted(self) -> NDArray[np.bool_]:
        """Which held-out ratings it predicts."""
        return ~np.isnan(self.predictions)


MetricFunction = Callable[[HoldOut, Scored, NDArray[np.bool_]], float]
"""(hold-out, a scored model, the held-out ratings compared) -> the figure."""


@dataclass(frozen=True)
class Metric:
    """A figure computed from a model's answers on the hold-out.

    Attributes
    ----------
    key : str
        Suffix of the recorded figures (``candidate_<key>``, ``active_<key>``).
    label : str
        How reasons name it: ``RMSE``.
    higher_is_better : bool
        ``False`` for errors, ``True`` for ranking quality.
    compute : callable
        ``compute(holdout, scored, compared)``: the figure over the ``compared``
        held-out ratings.
    """

    key: str
    label: str
    higher_is_better: bool
    compute: MetricFunction


def _on_ratings(
    error: Callable[[NDArray[np.float64], NDArray[np.float64]], float],
) -> MetricFunction:
    def compute(holdout: HoldOut, scored: Scored, compared: NDArray[np.bool_]) -> float:
        return error(holdout.ratings[compared], scored.predictions[compared])

    return compute


def _ranking(holdout: HoldOut, scored: Scored, compared: NDArray[np.bool_]) -> float:
    # over every held-out user: a top-N list is judged whole, not rating by rating
    return float("nan") if scored.ndcg is None else scored.ndcg


RMSE = Metric("rmse", "RMSE", higher_is_better=False, compute=_on_ratings(rmse))
MAE = Metric("mae", "MAE", higher_is_better=False, compute=_on_ratings(mae))
NDCG = Metric("ndcg_at_10", "NDCG@10", higher_is_better=True, compute=_ranking)

REPORTED_METRICS: tuple[Metric, ...] = (RMSE, MAE, NDCG)
"""Figures recorded for the candidate and every reference, whether or not they gate."""


@dataclass(frozen=True)
class Criterion:
    """The candidate may be worse than a reference on ``metric`` by at most ``tolerance``.

    Attributes
    ----------
    metric : Metric
    tolerance : float
        In the metric's unit; 0 means "not worse".
    setting : str
        The setting the tolerance comes from; recorded under this name.
    """

    metric: Metric
    tolerance: float
    setting: str

    def passes(self, candidate: float, reference: float) -> bool:
        """Whether ``candidate`` is within the tolerance of ``reference`` (or better)."""
        if self.metric.higher_is_better:
            return candidate >= reference - self.tolerance
        return candidate <= reference + self.tolerance


def criteria(settings: Settings) -> tuple[Criterion, ...]:
    """What the gate checks against the active version: RMSE and NDCG@10 within tolerance."""
    return (
        Criterion(RMSE, settings.promotion_tolerance, setting="promotion_tolerance"),
        Criterion(NDCG, settings.ndcg_tolerance, setting="ndcg_tolerance"),
    )


BASELINE_CRITERIA: tuple[Criterion, ...] = (
    Criterion(RMSE, 0.0, setting="baseline_rmse_tolerance"),
)
"""Against the bias baseline: the candidate's RMSE may not be worse at all."""


@dataclass(frozen=True)
class Reference:
    """A model the candidate is compared with.

    Attributes
    ----------
    scored : Scored
        Its answers on the hold-out.
    label : str
        How reasons name the model in general: ``the active model``.
    title : str
        How reasons name this very model: ``the active version <id>``.
    unavailable : str or None
        Why it could not be scored (cannot be loaded or evaluated), if so.
    replaceable : bool
        When it is unavailable, the candidate passes it (an active version that no
        longer loads is replaced); otherwise the candidate is rejected.
    figures : dict
        Recorded as they are (``active_version``).
    checks : tuple of Criterion or None
        What must hold against this reference; None: the criteria of the settings.
    """

    scored: Scored
    label: str
    title: str
    unavailable: str | None = None
    replaceable: bool = False
    figures: dict[str, Any] = field(default_factory=dict)
    checks: tuple[Criterion, ...] | None = None


@dataclass(frozen=True)
class Decision:
    """The gate's answer: activate or reject, why, and the figures behind it."""

    activate: bool
    reason: str
    figures: dict[str, Any]

    @property
    def verdict(self) -> str:
        """``activate`` or ``reject`` (recorded as the run's ``decision``)."""
        return "activate" if self.activate else "reject"


def score(name: str, model: RatingPredictor, holdout: HoldOut) -> Scored:
    """Predict every held-out rating with ``model`` (NaN for items it does not know), and
    rank for every held-out user when the model ranks (NDCG@10)."""
    predictions = predict_test_ratings(model, holdout.train, holdout.held)
    ndcg = held_out_ndcg(model, holdout) if isinstance(model, Recommender) else None
    return Scored(name, model, predictions, ndcg)


def held_out_ndcg(model: Recommender, holdout: HoldOut, k: int = 10) -> float | None:
    """NDCG@k of ``model``'s top-k lists for the held-out users (None: no relevant rating).

    Each held-out user is folded in from their training ratings; every item of the
    model the user did not rate in training is a candidate; relevant are the user's
    held-out ratings at or above the scale's high rating.
    """
    held = holdout.held
    high = held["rating"].to_numpy(dtype=np.float64) >= holdout.train.scale.high_rating - 1e-9
    items = held["item_id"].to_numpy().astype(str)
    known = high & np.isin(items, model.item_ids_)
    users = np.unique(held["user_id"].to_numpy().astype(str)[known])
    if users.size == 0:
        return None
    user_of = np.searchsorted(users, held["user_id"].to_numpy().astype(str)[known])
    columns = pd.Index(model.item_ids_).get_indexer(pd.Index(items[known]))
    relevant = sp.csr_matrix(
        (np.ones(len(columns)), (user_of, columns)), shape=(users.size, len(model.item_ids_))
    )
    train = holdout.train
    _, in_train = find_sorted(train.user_ids, users)
    profiles = [train.user_ratings(u) if ok else {} for u, ok in zip(users, in_train, strict=True)]
    total, count = 0.0, 0
    for lo in range(0, users.size, _RANKING_BATCH):
        scores, rated = model.score_batch(profiles[lo : lo + _RANKING_BATCH])
        part = relevant[lo : lo + _RANKING_BATCH]
        n = int(np.count_nonzero(np.diff(part.indptr)))
        total += ndcg_of_scores(scores, rated, part, k) * n
        count += n
    return total / count if count else None


def own_figures(candidate: Scored, holdout: HoldOut) -> dict[str, Any]:
    """The candidate alone on every held-out rating it can predict (its validation figures)."""
    predicted = candidate.predicted
    if not predicted.any():
        return {"validation_rmse": None, "validation_mae": None, "n_evaluated": 0}
    return {
        "validation_rmse": RMSE.compute(holdout, candidate, predicted),
        "validation_mae": MAE.compute(holdout, candidate, predicted),
        "n_evaluated": int(predicted.sum()),
    }


def active_reference(version: ModelVersionInfo, holdout: HoldOut) -> Reference:
    """The active version as a reference: loaded from its verified artifact and scored.

    An active version that cannot be loaded or evaluated (missing files, another
    rating scale) is replaceable: the candidate takes its place.
    """

    def unavailable(why: str) -> Reference:
        missing = Scored("active", None, np.full(holdout.n_held, np.nan))
        return Reference(
            missing,
            label="the active model",
            title=f"the active version {version.id}",
            unavailable=why,
            replaceable=True,
            figures={"active_version": version.id},
        )

    try:
        check_artifact(version.artifact_path, version.sha256)
        model = load_model(version.artifact_path, mmap=True, estimator=BaseEstimator)
        if not isinstance(model, RBMRecommender | SoftmaxRBM):
            raise TypeError(f"it holds a {type(model).__name__}, not a served model")
    except Exception as exc:
        return unavailable(f"the active version {version.id} cannot be loaded ({exc})")
    try:
        scored = score("active", model, holdout)
    except Exception as exc:  # e.g. a different rating scale
        return unavailable(f"the active version {version.id} cannot be evaluated ({exc})")
    return Reference(
        scored,
        label="the active model",
        title=f"the active version {version.id}",
        figures={"active_version": version.id},
    )


def baseline_reference(holdout: HoldOut) -> Reference:
    """The bias baseline fitted on the training ratings: the candidate must predict better."""
    baseline = BiasBaseline().fit(holdout.train)
    return Reference(
        score("bias_baseline", baseline, holdout),
        label="the bias baseline",
        title="the bias baseline (mu + b_u + b_i)",
        checks=BASELINE_CRITERIA,
    )


def decide(
    candidate: Scored,
    references: Sequence[Reference],
    checks: Sequence[Criterion],
    holdout: HoldOut,
) -> Decision:
    """Compare the candidate with every reference on every criterion.

    All models are compared on the same held-out ratings: those every one of them
    can predict. The candidate is activated only if it passes every criterion
    against every reference; a reference that could not be scored is passed when
    it is replaceable and rejects the candidate otherwise.

    Parameters
    ----------
    candidate : Scored
        The model just trained.
    references : sequence of Reference
        At least one.
    checks : sequence of Criterion
        What must hold against each reference (see :func:`criteria`).
    holdout : HoldOut
        The held-out ratings.

    Returns
    -------
    Decision
    """
    figures: dict[str, Any] = {}
    for reference in references:
        figures.update(reference.figures)
    every_check = [*checks, *(c for r in references for c in (r.checks or ()))]
    figures.update({check.setting: check.tolerance for check in every_check})

    blocking = [r.unavailable for r in references if r.unavailable and not r.replaceable]
    if blocking:
        return Decision(False, "; ".join(blocking), figures)
    replaced = [r.unavailable for r in references if r.unavailable]
    available = [r for r in references if not r.unavailable]
    if not available:
        return Decision(True, f"{'; '.join(replaced)}; the candidate replaces it", figures)
    labels = " and ".join(r.label for r in available)

    if not candidate.predicted.any() or any(not r.scored.predicted.any() for r in available):
        return Decision(
            False, f"no held-out ratings to compare the candidate with {labels}", figures
        )
    compared = candidate.predicted.copy()
    for reference in available:
        compared &= reference.scored.predicted
    n = int(compared.sum())
    if n == 0:
        return Decision(
            False, f"the candidate and {labels} share no predictable held-out ratings", figures
        )

    metrics = [
        *REPORTED_METRICS,
        *(c.metric for c in every_check if c.metric not in REPORTED_METRICS),
    ]
    values = {
        (scored.name, metric.key): metric.compute(holdout, scored, compared)
        for scored in (candidate, *(r.scored for r in available))
        for metric in metrics
    }
    figures.update(
        {
            f"{name}_{key}": None if np.isnan(value) else value
            for (name, key), value in values.items()
        }
    )
    figures["n_compared"] = n

    passed, failed = [], []
    for reference in available:
        for check in reference.checks if reference.checks is not None else checks:
            mine = values[(candidate.name, check.metric.key)]
            theirs = values[(reference.scored.name, check.metric.key)]
            label = check.metric.label
            if np.isnan(mine) or np.isnan(theirs):
                # e.g. an active version that does not rank, or no high held-out rating
                passed.append(f"{label} not compared with {reference.title} (not measured)")
                continue
            if check.passes(mine, theirs):
                passed.append(
                    f"candidate {label} {mine:.4f} vs {reference.scored.name} {theirs:.4f} "
                    f"on {n} held-out ratings (tolerance {check.tolerance})"
                )
            else:
                failed.append(
                    f"candidate {label} {mine:.4f} is worse than {reference.title}'s "
                    f"{theirs:.4f} by more than the tolerance {check.tolerance} "
                    f"(on {n} held-out ratings)"
                )
    if failed:
        return Decision(False, "; ".join(failed), figures)
    replacing = [f"{note}; the candidate replaces it" for note in replaced]
    return Decision(True, "; ".join([*replacing, *passed]), figures)
