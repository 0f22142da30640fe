"""How the served model is trained: validation split, search, blend, ranking weights, refit.

:func:`train_parts` is the procedure behind :meth:`RBMRecommender.fit
<rbm_core.recommender.RBMRecommender.fit>`, as functions over the training ratings:

1. hold out ``validation_fraction`` of each user's ratings;
2. search each RBM part's settings on them (:mod:`rbm_core.search`), early stopping
   choosing the epochs; the rating parts are scored by held-out RMSE (the item RBM
   with the fold-in it serves with), the ranker by held-out NDCG@10;
3. fit the blend of the rating parts and the ranking weights on the same held-out
   ratings, with the parts trained without them;
4. retrain every part on all the ratings with the chosen settings and epochs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from rbm_core import metrics
from rbm_core.baselines import BiasBaseline
from rbm_core.blend import blend_features, fit_blend
from rbm_core.data import RatingMatrix
from rbm_core.item_rbm import ItemSoftmaxRBM
from rbm_core.model import SoftmaxRBM
from rbm_core.ranker import RBMRanker
from rbm_core.search import PartSearch, SearchBudget, Trial, candidates, run_search
from rbm_core.training import HeldOutRatings, held_out_ratings, subsample_rows

__all__ = [
    "RatingParts",
    "TrainedParts",
    "high_probability",
    "leave_one_out_scores",
    "ranking_scores",
    "train_parts",
]

logger = logging.getLogger(__name__)

BETA_GRID = (1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0)
OMEGA_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
ALPHA_GRID = (0.0, 0.5, 1.0)
"""The ranking weights tried on the held-out ratings."""

SHORT_PROFILE = 10
"""Ratings of a held-out user's short profile (a new user's first ratings)."""

DEFAULT_RANKING_WEIGHTS = (1.5, 1.0, 0.5)
"""``beta``, ``omega`` and ``alpha`` when there are too few ratings to choose them (the
values chosen most often on the ML-100K folds)."""

MIN_HELD_OUT = 200
MIN_RELEVANT = 20
"""Held-out ratings (and relevant ones) needed to choose settings and weights on them."""

EARLY_STOPPING_EPOCHS = 1.5
"""During the search a part may train up to this multiple of its ``n_epochs``; early
stopping picks the epoch."""

BLEND_RIDGE = 10.0
"""L2 penalty of the blend weights (fitted on about 10 % of the training ratings)."""


@dataclass(frozen=True)
class RatingParts:
    """The three rating predictors of the blend."""

    user_rbm: SoftmaxRBM
    item_rbm: ItemSoftmaxRBM
    bias: BiasBaseline

    def predictions_at(
        self, codes: sp.csr_matrix, rows: NDArray[np.int64], items: NDArray[np.int64]
    ) -> tuple[NDArray[np.floating], NDArray[np.floating], NDArray[np.float64]]:
        """Each part's answer for (user row, item) pairs.

        Returns
        -------
        user_dist, item_dist : ndarray of shape (n_pairs, K)
        bias_expected : ndarray of shape (n_pairs,)
        """
        return (
            self.user_rbm.distribution_at(codes, rows, items),
            self.item_rbm.distribution_at(codes, rows, items),
            self.bias.expected_at(codes, rows, items),
        )


@dataclass(frozen=True)
class TrainedParts:
    """What :func:`train_parts` returns: the parts, the weights and the record."""

    rating: RatingParts
    ranker: RBMRanker
    blend_weights: NDArray[np.float64]
    ranking_weights: NDArray[np.float64]
    trials: list[Trial]
    chosen: dict[str, dict[str, Any]]
    validation: dict[str, Any]
    histories: dict[str, list[dict[str, Any]]]


def high_probability(
    model: SoftmaxRBM, codes: sp.csr_matrix, high_rating: float
) -> NDArray[np.floating]:
    """``P(r_ui >= high_rating)`` of every item for each user of ``codes``, (n, n_items)."""
    high = model.scale_.values >= high_rating - 1e-9
    fold = model._fold_in(codes)
    n = codes.shape[0]
    out = np.empty((n, model.n_items_), dtype=np.float32)
    step = max(1, (32 * 2**20) // max(1, model.n_items_ * model.scale_.n_levels))
    for lo in range(0, n, step):
        dist = model._distribution_items(fold[lo : lo + step])
        out[lo : lo + step] = dist[:, :, high].sum(axis=2)
    return out


def ranking_scores(
    personal: NDArray[np.floating],
    item_bias: NDArray[np.floating],
    p_high: NDArray[np.floating],
    beta: float,
    omega: float,
) -> NDArray[np.floating]:
    """``beta * b + personal + omega * log P(high)`` (see :mod:`rbm_core.recommender`)."""
    scores = personal + beta * item_bias
    if omega:
        scores = scores + omega * np.log(np.maximum(p_high, 1e-12))
    return scores


def leave_one_out_scores(
    model: Any, items: NDArray[np.int64], levels: NDArray[np.int64], targets: NDArray[np.int64]
) -> NDArray[np.floating]:
    """The served ranking score of ``targets`` with each of the user's ratings left out.

    ``model`` is a fitted :class:`~rbm_core.recommender.RBMRecommender`.

    Returns
    -------
    ndarray of shape (n_rated, T)
    """
    beta, omega, alpha = (float(w) for w in model.ranking_weights_)
    high = model.scale_.values >= model.high_rating_ - 1e-9
    p_high = model.user_rbm_.leave_one_out_distribution(items, levels, targets)[:, :, high]
    return ranking_scores(
        model.ranker_.leave_one_out_personal(items, levels, targets, evidence_exponent=alpha),
        model.ranker_.item_bias[targets],
        p_high.sum(axis=2),
        beta,
        omega,
    )


def train_parts(
    train: RatingMatrix,
    settings: Mapping[str, dict[str, Any]],
    spaces: Mapping[str, Mapping[str, tuple[Any, ...]]] | None,
    *,
    max_trials: int,
    budget_seconds: float,
    validation_fraction: float,
    refit: bool,
    high_rating: float,
    rng: np.random.Generator,
) -> TrainedParts:
    """Search, blend, weigh and retrain (steps 1-4 of the module docstring).

    Parameters
    ----------
    train : RatingMatrix
    settings : mapping of part name to dict
        Each part's starting settings (``user_rbm``, ``item_rbm``, ``bias``, ``ranker``).
    spaces : mapping or None
        Search space of each RBM part; None: no search (the settings as given).
    max_trials, budget_seconds : int, float
        Bounds of the search.
    validation_fraction : float
    refit : bool
    high_rating : float
    rng : numpy.random.Generator
        Draws the split, the search order and every part's seed.
    """
    seeds = {name: int(rng.integers(2**31 - 1)) for name in ("user_rbm", "item_rbm", "ranker")}
    fit_part, held = train.split(validation_fraction, rng)
    held_out = held_out_ratings(fit_part, held, train.item_ids, rng)
    relevant = _relevant(held_out, high_rating)
    if len(held_out.targets) < MIN_HELD_OUT or relevant.nnz < MIN_RELEVANT:
        logger.info(
            "%d held-out ratings (%d relevant): too few to choose settings or weights; "
            "training with the settings given and the default weights",
            len(held_out.targets),
            relevant.nnz,
        )
        return _train_fixed(train, settings, seeds, high_rating, len(held_out.targets))

    def options(name: str) -> list[dict[str, Any]]:
        if spaces is None:
            return [dict(settings[name])]
        return candidates(spaces[name], settings[name], max_trials, rng)

    user_search: PartSearch[SoftmaxRBM] = PartSearch(
        "user_rbm", options("user_rbm"), _user_trainer(fit_part, held, seeds)
    )
    item_search: PartSearch[ItemSoftmaxRBM] = PartSearch(
        "item_rbm", options("item_rbm"), _item_trainer(fit_part, held, held_out, seeds)
    )
    ranker_search: PartSearch[RBMRanker] = PartSearch(
        "ranker", options("ranker"), _ranker_trainer(fit_part, held, high_rating, seeds)
    )
    searches: list[PartSearch[Any]] = [user_search, item_search, ranker_search]
    trials = run_search(searches, SearchBudget(budget_seconds))
    for search in searches:
        trial = search.chosen_trial()
        logger.info(
            "%s: chose %s (held-out %.4f, epoch %d)",
            search.name,
            trial.params,
            trial.score,
            trial.epochs,
        )
    bias = BiasBaseline(**settings["bias"]).fit(fit_part)
    parts = RatingParts(user_search.chosen(), item_search.chosen(), bias)
    ranker = ranker_search.chosen()
    blend_weights, rating_figures = _fit_blend(parts, held_out, fit_part)
    ranking_weights, ranking_figures = _fit_ranking_weights(
        ranker, parts.user_rbm, held_out, relevant, high_rating, rng
    )
    # the settings chosen, trained for the epoch early stopping kept
    chosen = {
        search.name: {**search.chosen_trial().params, "n_epochs": search.chosen_trial().epochs}
        for search in searches
    }
    chosen["bias"] = dict(settings["bias"])
    # the curves of the chosen trials: the ones with held-out figures per epoch
    histories = {search.name: list(getattr(search.chosen(), "history_", [])) for search in searches}
    if refit:
        parts, ranker = _refit(train, chosen, seeds)
    return TrainedParts(
        rating=parts,
        ranker=ranker,
        blend_weights=blend_weights,
        ranking_weights=ranking_weights,
        trials=trials,
        chosen=chosen,
        histories=histories,
        validation={
            "mode": "validated",
            **rating_figures,
            **ranking_figures,
            "n_held_out": len(held_out.targets),
            "high_rating": high_rating,
        },
    )


def _train_fixed(
    train: RatingMatrix,
    settings: Mapping[str, dict[str, Any]],
    seeds: Mapping[str, int],
    high_rating: float,
    n_held_out: int,
) -> TrainedParts:
    """Too little data to hold some out: the settings as given and the default weights."""
    chosen = {name: dict(params) for name, params in settings.items()}
    parts, ranker = _refit(train, chosen, seeds)
    return TrainedParts(
        rating=parts,
        ranker=ranker,
        histories={
            "user_rbm": list(parts.user_rbm.history_),
            "item_rbm": list(parts.item_rbm.history_),
            "ranker": list(ranker.history_),
        },
        blend_weights=default_blend_weights(),
        ranking_weights=np.array(DEFAULT_RANKING_WEIGHTS, dtype=np.float64),
        trials=[],
        chosen=chosen,
        validation={
            "mode": "fixed",
            "reason": (
                f"{n_held_out} held-out ratings: fewer than {MIN_HELD_OUT} (or fewer than "
                f"{MIN_RELEVANT} rated {high_rating:g} or more) to choose settings and weights"
            ),
            "n_held_out": n_held_out,
            "high_rating": high_rating,
        },
    )


def default_blend_weights() -> NDArray[np.float64]:
    """The blend without held-out ratings: the mean of the two RBMs' expected ratings."""
    weights = np.zeros(12, dtype=np.float64)
    weights[:2] = 0.5
    return weights


# -- one trial per part ---------------------------------------------------------------------
def _with_epoch_cap(params: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's settings with room for early stopping to find the best epoch."""
    epochs = int(params.get("n_epochs", 40))
    return {**params, "n_epochs": max(epochs, round(EARLY_STOPPING_EPOCHS * epochs))}


def _best_epoch(history: list[dict[str, Any]], key: str, *, higher: bool = False) -> int:
    scored = [(entry[key], entry["epoch"]) for entry in history if entry.get(key) is not None]
    if not scored:
        return len(history)
    _value, epoch = (max if higher else min)(scored, key=lambda pair: pair[0])
    return int(epoch)


def _user_trainer(
    fit_part: RatingMatrix, held: RatingMatrix, seeds: Mapping[str, int]
) -> Callable[[dict[str, Any]], tuple[SoftmaxRBM, float, int]]:
    def train(params: dict[str, Any]) -> tuple[SoftmaxRBM, float, int]:
        model = SoftmaxRBM(
            **_with_epoch_cap(params), early_stopping=True, random_state=seeds["user_rbm"]
        )
        model.fit(fit_part, held)
        epoch = _best_epoch(model.history_, "validation_rmse")
        return model, float(model.history_[epoch - 1]["validation_rmse"]), epoch

    return train


def _item_trainer(
    fit_part: RatingMatrix,
    held: RatingMatrix,
    held_out: HeldOutRatings,
    seeds: Mapping[str, int],
) -> Callable[[dict[str, Any]], tuple[ItemSoftmaxRBM, float, int]]:
    def train(params: dict[str, Any]) -> tuple[ItemSoftmaxRBM, float, int]:
        model = ItemSoftmaxRBM(
            **_with_epoch_cap(params), early_stopping=True, random_state=seeds["item_rbm"]
        )
        model.fit(fit_part, held)
        # scored as served: users folded in by regression, not the trained user weights
        dist = model.distribution_at(held_out.inputs, held_out.rows, held_out.items)
        pred = dist.astype(np.float64) @ fit_part.scale.values
        epoch = _best_epoch(model.history_, "validation_rmse")
        return model, metrics.rmse(held_out.targets, pred), epoch

    return train


def _ranker_trainer(
    fit_part: RatingMatrix, held: RatingMatrix, high_rating: float, seeds: Mapping[str, int]
) -> Callable[[dict[str, Any]], tuple[RBMRanker, float, int]]:
    def train(params: dict[str, Any]) -> tuple[RBMRanker, float, int]:
        model = RBMRanker(
            **_with_epoch_cap(params),
            relevance_threshold=high_rating,
            random_state=seeds["ranker"],
        ).fit(fit_part, held)
        epoch = _best_epoch(model.history_, "validation_ndcg", higher=True)
        ndcg = max(
            (e["validation_ndcg"] for e in model.history_ if e["validation_ndcg"] is not None),
            default=0.0,
        )
        return model, -float(ndcg), epoch

    return train


# -- weights fitted on the held-out ratings -------------------------------------------------
def _relevant(held_out: HeldOutRatings, high_rating: float) -> sp.csr_matrix:
    keep = held_out.targets >= high_rating - 1e-9
    return sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.float32), (held_out.rows[keep], held_out.items[keep])),
        shape=held_out.inputs.shape,
    )


def _fit_blend(
    parts: RatingParts, held_out: HeldOutRatings, fit_part: RatingMatrix
) -> tuple[NDArray[np.float64], dict[str, Any]]:
    user_dist, item_dist, bias_expected = parts.predictions_at(
        held_out.inputs, held_out.rows, held_out.items
    )
    values = fit_part.scale.values
    predictions = np.column_stack([user_dist @ values, item_dist @ values, bias_expected])
    user_counts = np.diff(held_out.inputs.indptr)[held_out.rows]
    item_counts = np.diff(fit_part.codes.tocsc().indptr)[held_out.items]
    features = blend_features(predictions, user_counts, item_counts)
    weights = fit_blend(features, held_out.targets, BLEND_RIDGE)
    blended = np.clip(features @ weights, values[0], values[-1])
    figures = {
        f"{name}_rmse": metrics.rmse(held_out.targets, predictions[:, k])
        for k, name in enumerate(("user_rbm", "item_rbm", "bias"))
    }
    # in-sample for the blend: the weights were fitted on these ratings
    figures["blend_rmse"] = metrics.rmse(held_out.targets, blended)
    return weights, figures


def _fit_ranking_weights(
    ranker: RBMRanker,
    user_rbm: SoftmaxRBM,
    held_out: HeldOutRatings,
    relevant: sp.csr_matrix,
    high_rating: float,
    rng: np.random.Generator,
) -> tuple[NDArray[np.float64], dict[str, Any]]:
    """``beta``, ``omega`` and the evidence exponent ``alpha`` by held-out NDCG@10.

    Every held-out user is ranked twice: folded in from their whole training profile,
    and from :data:`SHORT_PROFILE` of its ratings drawn at random (a user new to the
    service). The weights maximise the mean of the two NDCG@10: the service ranks for
    both kinds of users.
    """
    users = np.flatnonzero(np.diff(relevant.indptr))
    inputs, rel = held_out.inputs[users], relevant[users]
    short = subsample_rows(inputs, np.full(len(users), SHORT_PROFILE), rng)
    profiles = {"whole": inputs, "short": short}
    p_high = {
        name: high_probability(user_rbm, codes, high_rating) for name, codes in profiles.items()
    }
    bias = ranker.item_bias
    results: dict[tuple[float, float, float], tuple[float, float]] = {}
    for alpha in ALPHA_GRID:
        personal = {
            name: ranker.personal_scores(codes, evidence_exponent=alpha)
            for name, codes in profiles.items()
        }
        for beta in BETA_GRID:
            for omega in OMEGA_GRID:
                # the ranked lists leave out every item of the whole profile
                results[(beta, omega, alpha)] = tuple(  # type: ignore[assignment]
                    metrics.ndcg_of_scores(
                        ranking_scores(personal[name], bias, p_high[name], beta, omega),
                        inputs,
                        rel,
                    )
                    for name in ("whole", "short")
                )
    chosen = max(results, key=lambda key: (sum(results[key]), -key[0], -key[1], -key[2]))
    figures = {
        "ranker_ndcg": results[(1.0, 0.0, 0.0)][0],
        "ranking_ndcg": results[chosen][0],
        "ranking_ndcg_short_profiles": results[chosen][1],
        "ranker_ndcg_short_profiles": results[(1.0, 0.0, 0.0)][1],
        "n_ranked_users": len(users),
        "short_profile": SHORT_PROFILE,
    }
    return np.array(chosen, dtype=np.float64), figures


def _refit(
    train: RatingMatrix, chosen: Mapping[str, dict[str, Any]], seeds: Mapping[str, int]
) -> tuple[RatingParts, RBMRanker]:
    user = SoftmaxRBM(**{**chosen["user_rbm"], "early_stopping": False}).set_params(
        random_state=seeds["user_rbm"]
    )
    item = ItemSoftmaxRBM(**{**chosen["item_rbm"], "early_stopping": False}).set_params(
        random_state=seeds["item_rbm"]
    )
    ranker = RBMRanker(**chosen["ranker"]).set_params(random_state=seeds["ranker"])
    return (
        RatingParts(user.fit(train), item.fit(train), BiasBaseline(**chosen["bias"]).fit(train)),
        ranker.fit(train),
    )
