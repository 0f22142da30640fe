"""What the service serves: one model for both jobs, made of RBM parts.

:class:`RBMRecommender` holds

- a **rating model**: a user-based conditional softmax RBM
  (:class:`~rbm_core.model.SoftmaxRBM` with implicit input), an item-based one
  (:class:`~rbm_core.item_rbm.ItemSoftmaxRBM`) and the bias baseline, blended with
  weights fitted on held-out ratings (:mod:`rbm_core.blend`). It serves the expected
  rating and a distribution over the levels whose expectation is that rating;
- a **ranker** for top-N lists: the implicit-feedback RBM
  (:class:`~rbm_core.ranker.RBMRanker`), whose score of item ``i`` for a user is

      ``beta * b_i + sum_j W_ij p(h_j | r) + omega * log P(r_ui >= high)``,

  the ranker's learned item bias (popularity), its personal term, and the rating
  RBM's probability that the user rates the item highly, with ``beta`` and ``omega``
  chosen on held-out ratings by NDCG@10.

``fit`` carves a validation split out of the training ratings (a share of each user's
ratings), searches each part's key hyperparameters on it within a time budget that
scales with the data (:mod:`rbm_core.search`), fits the blend and the ranking weights
on the same held-out ratings, then retrains every part on all the training ratings
with the settings chosen. Every choice is recorded in ``search_`` and ``validation_``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from rbm_core.base import BaseEstimator, Prediction, Recommender
from rbm_core.baselines import BiasBaseline
from rbm_core.blend import blend_features, tilt_to_mean
from rbm_core.checks import (
    check_bool,
    check_number,
    check_positive_int,
    check_random_state,
    check_rating_matrix,
)
from rbm_core.data import RatingMatrix, UserRatings
from rbm_core.item_rbm import ItemSoftmaxRBM
from rbm_core.model import SoftmaxRBM
from rbm_core.ranker import RBMRanker
from rbm_core.recommender_training import (
    RatingParts,
    high_probability,
    leave_one_out_scores,
    ranking_scores,
    train_parts,
)
from rbm_core.search import default_budget_seconds
from rbm_core.softmax_inference import DTYPE, FoldIn

__all__ = [
    "PART_CLASSES",
    "PART_DEFAULTS",
    "SEARCH_SPACES",
    "RBMRecommender",
    "recommender_settings",
]

logger = logging.getLogger(__name__)

PART_CLASSES: dict[str, type[BaseEstimator]] = {
    "user_rbm": SoftmaxRBM,
    "item_rbm": ItemSoftmaxRBM,
    "bias": BiasBaseline,
    "ranker": RBMRanker,
}
"""The parts of the served model, by name."""

PART_DEFAULTS: dict[str, dict[str, Any]] = {
    "user_rbm": {
        "implicit_input": True,
        "n_iter_no_change": 5,
        # alone, the rating part ranks by P(high): popularity is the ranker's to learn
        "ranking": "p_high",
    },
    "item_rbm": {"n_iter_no_change": 5},
    "bias": {},
    "ranker": {},
}
"""Each part's settings over its class defaults (during the search a part may train for
1.5 times its ``n_epochs``; early stopping picks the epoch)."""

SEARCH_SPACES: dict[str, dict[str, tuple[Any, ...]]] = {
    "user_rbm": {
        "learning_rate": (0.1, 0.2, 0.3),
        "weight_decay": (0.005, 0.01, 0.02, 0.04),
        "n_hidden": (50, 100, 200),
    },
    "item_rbm": {
        "learning_rate": (0.1, 0.2, 0.3),
        "weight_decay": (0.005, 0.01, 0.02, 0.04),
        "n_hidden": (100, 200),
    },
    "ranker": {
        "learning_rate": (0.005, 0.01, 0.02),
        "weight_decay": (0.003, 0.01, 0.03),
        "n_hidden": (100, 200, 400),
    },
}
"""What the search may change in each part (the rest of a part's settings stay)."""

_PAIR_BLOCK = 2**16
"""(user, item) pairs blended at once when every item is scored."""


_PART_PARAMS = {
    "user_rbm": "user_rbm_params",
    "item_rbm": "item_rbm_params",
    "ranker": "ranker_params",
}


def recommender_settings(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``RBMRecommender`` keyword arguments from flat settings, parts addressed by a dot.

    ``{"search": False, "user_rbm.n_hidden": 200}`` becomes
    ``{"search": False, "user_rbm_params": {"n_hidden": 200}}`` (the form the command
    line's ``--param NAME=VALUE`` takes).

    Raises
    ------
    ValueError
        For a name that is neither a setting of RBMRecommender nor ``PART.SETTING`` of
        one of its RBM parts (the message lists what is allowed).
    """
    own = set(RBMRecommender._param_names()) - set(_PART_PARAMS.values())
    out: dict[str, Any] = {}
    for name, value in flat.items():
        part, dot, setting = name.partition(".")
        if dot:
            if part not in _PART_PARAMS or not setting:
                raise ValueError(
                    f"unknown setting {name!r}: a part's setting is PART.NAME with PART one "
                    f"of {', '.join(_PART_PARAMS)}"
                )
            out.setdefault(_PART_PARAMS[part], {})[setting] = value
        elif name in own:
            out[name] = value
        else:
            raise ValueError(
                f"unknown setting {name!r}: use one of {', '.join(sorted(own))}, or "
                "PART.NAME for a part (e.g. user_rbm.n_hidden)"
            )
    return out


class RBMRecommender(Recommender):
    """The served model: a blended RBM rating model and an RBM ranker (see the module).

    Parameters
    ----------
    user_rbm_params, item_rbm_params, ranker_params : mapping or None
        Settings of each part over :data:`PART_DEFAULTS`; with ``search`` they are
        the starting point that the search may change (only the names in
        :data:`SEARCH_SPACES`).
    search : bool
        Choose each RBM part's learning rate, weight decay and hidden units on the
        validation split (epochs always come from early stopping on it).
    search_budget_seconds : float or None
        Time for the optional trials of the search; by default
        :func:`~rbm_core.search.default_budget_seconds` of the number of ratings.
    max_trials : int
        Settings tried per part at most (the defaults count as one).
    validation_fraction : float
        Share of each user's training ratings held out to choose settings and weights.
    refit : bool
        Retrain the parts on all training ratings after the choices (else serve the
        parts trained without the validation split).
    high_rating : float or None
        What counts as a high rating for the ranking; by default the upper quarter of
        the scale (4 on 1..5).
    random_state : int, numpy.random.Generator or None
    blas_threads : int or None
    verbose : bool

    Attributes
    ----------
    user_rbm_ : SoftmaxRBM
    item_rbm_ : ItemSoftmaxRBM
    bias_ : BiasBaseline
    ranker_ : RBMRanker
    blend_weights_ : ndarray of shape (12,)
        Weights of :func:`~rbm_core.blend.blend_features` over the three rating parts.
    ranking_weights_ : ndarray of shape (3,)
        ``beta`` and ``omega`` of the ranking score, and the ranker's evidence exponent
        ``alpha`` (see :mod:`rbm_core.ranker`).
    item_popularity_ : ndarray of shape (n_items_,)
    high_rating_ : float
    search_ : dict
        ``trials`` (every setting tried: part, params, held-out score, epochs, seconds),
        ``chosen`` (each part's settings), ``budget_seconds`` and ``seconds``.
    validation_ : dict
        Held-out figures of the choices: RMSE of each rating part and of the blend,
        NDCG@10 of the ranker alone and of the served ranking; ``mode`` is
        ``validated``, or ``fixed`` when there were too few ratings to hold some out
        (``reason`` says so).
    curves_ : dict of str to list of dict
        Per RBM part, its per-epoch history as trained on the validation split (with
        the held-out RMSE or NDCG@10 and free energies; without a split, the
        history of the final training).
    training_fingerprint_ : str
    item_ids_, scale_, n_items_, n_users_
    """

    _array_attributes = ("blend_weights_", "ranking_weights_", "item_popularity_")
    _metadata_attributes = (
        *Recommender._metadata_attributes,
        "high_rating_",
        "search_",
        "validation_",
        "curves_",
        "training_fingerprint_",
    )
    _part_names: ClassVar[tuple[str, ...]] = tuple(PART_CLASSES)

    user_rbm_: SoftmaxRBM
    item_rbm_: ItemSoftmaxRBM
    bias_: BiasBaseline
    ranker_: RBMRanker

    def __init__(
        self,
        *,
        user_rbm_params: Mapping[str, Any] | None = None,
        item_rbm_params: Mapping[str, Any] | None = None,
        ranker_params: Mapping[str, Any] | None = None,
        search: bool = True,
        search_budget_seconds: float | None = None,
        max_trials: int = 4,
        validation_fraction: float = 0.2,
        refit: bool = True,
        high_rating: float | None = None,
        random_state: int | np.random.Generator | None = None,
        blas_threads: int | None = 1,
        verbose: bool = False,
    ) -> None:
        self.user_rbm_params = user_rbm_params
        self.item_rbm_params = item_rbm_params
        self.ranker_params = ranker_params
        self.search = search
        self.search_budget_seconds = search_budget_seconds
        self.max_trials = max_trials
        self.validation_fraction = validation_fraction
        self.refit = refit
        self.high_rating = high_rating
        self.random_state = random_state
        self.blas_threads = blas_threads
        self.verbose = verbose

    # -- settings ---------------------------------------------------------------------------
    def part_settings(self, name: str) -> dict[str, Any]:
        """A part's settings before the search: :data:`PART_DEFAULTS` and the overrides."""
        given = {
            "user_rbm": self.user_rbm_params,
            "item_rbm": self.item_rbm_params,
            "ranker": self.ranker_params,
        }.get(name)
        settings = {**PART_DEFAULTS[name], **dict(given or {})}
        if name != "bias":
            settings.setdefault("blas_threads", self.blas_threads)
        return settings

    def _validate_params(self) -> None:
        for name, value in (
            ("user_rbm_params", self.user_rbm_params),
            ("item_rbm_params", self.item_rbm_params),
            ("ranker_params", self.ranker_params),
        ):
            if value is not None and not isinstance(value, Mapping):
                raise ValueError(f"{name} must be a mapping of settings, got {value!r}")
        for name in ("user_rbm", "item_rbm", "ranker"):
            cls = PART_CLASSES[name]
            settings = self.part_settings(name)
            unknown = sorted(set(settings) - set(cls._param_names()))
            if unknown:
                raise ValueError(f"{name}: unknown setting {unknown[0]!r} of {cls.__name__}")
            if "random_state" in settings:
                raise ValueError(f"{name}: set random_state on the RBMRecommender, not a part")
            try:
                cls(**settings)._validate_params()
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        check_bool("search", self.search)
        check_bool("refit", self.refit)
        check_bool("verbose", self.verbose)
        if self.search_budget_seconds is not None:
            check_number("search_budget_seconds", self.search_budget_seconds, low=0.0)
        check_positive_int("max_trials", self.max_trials)
        check_number(
            "validation_fraction", self.validation_fraction, low=0.0, low_open=True, high=0.5
        )
        if self.high_rating is not None:
            check_number("high_rating", self.high_rating)
        if self.blas_threads is not None:
            check_positive_int("blas_threads", self.blas_threads)
        check_random_state(self.random_state)

    # -- training ---------------------------------------------------------------------------
    def fit(self, train: RatingMatrix) -> RBMRecommender:
        """Search, blend and train every part on ``train`` (see the module docstring).

        Returns
        -------
        RBMRecommender
            ``self``.
        """
        self._validate_params()
        check_rating_matrix(train, "train")
        start = time.monotonic()
        rng = np.random.default_rng(self.random_state)
        budget = (
            default_budget_seconds(train.n_ratings)
            if self.search_budget_seconds is None
            else float(self.search_budget_seconds)
        )
        self.high_rating_ = (
            train.scale.high_rating if self.high_rating is None else float(self.high_rating)
        )
        trained = train_parts(
            train,
            {name: self.part_settings(name) for name in PART_CLASSES},
            SEARCH_SPACES if self.search else None,
            max_trials=int(self.max_trials),
            budget_seconds=budget,
            validation_fraction=float(self.validation_fraction),
            refit=bool(self.refit),
            high_rating=self.high_rating_,
            rng=rng,
        )
        self.user_rbm_ = trained.rating.user_rbm
        self.item_rbm_ = trained.rating.item_rbm
        self.bias_ = trained.rating.bias
        self.ranker_ = trained.ranker
        self.blend_weights_ = trained.blend_weights
        self.ranking_weights_ = trained.ranking_weights
        self.item_popularity_ = np.diff(train.codes.tocsc().indptr).astype(DTYPE)
        self.validation_ = trained.validation
        self.curves_ = trained.histories
        self.training_fingerprint_ = train.fingerprint()
        self._store_catalog(train)
        self.search_ = {
            "enabled": bool(self.search),
            "budget_seconds": budget,
            "trials": [trial.to_dict() for trial in trained.trials],
            "chosen": trained.chosen,
            "seconds": round(time.monotonic() - start, 3),
        }
        return self

    @property
    def parts(self) -> dict[str, BaseEstimator]:
        """The fitted parts by name (``user_rbm``, ``item_rbm``, ``bias``, ``ranker``)."""
        self._check_fitted()
        return {name: getattr(self, f"{name}_") for name in PART_CLASSES}

    def _rating_parts(self) -> RatingParts:
        return RatingParts(self.user_rbm_, self.item_rbm_, self.bias_)

    # -- rating prediction ------------------------------------------------------------------
    def _blend_parts(
        self, codes: sp.csr_matrix, rows: NDArray[np.int64], items: NDArray[np.int64]
    ) -> tuple[NDArray[np.floating], NDArray[np.floating], NDArray[np.floating]]:
        """The two RBMs' distributions and the blended expected rating for (user, item) pairs."""
        user_dist, item_dist, bias_expected = self._rating_parts().predictions_at(
            codes, rows, items
        )
        expected = self._blended_expected(
            user_dist, item_dist, bias_expected, np.diff(codes.indptr)[rows], items
        )
        return user_dist, item_dist, expected

    def _blended_expected(
        self,
        user_dist: NDArray[np.floating],
        item_dist: NDArray[np.floating],
        bias_expected: NDArray[np.floating],
        counts: NDArray[Any],
        items: NDArray[np.int64],
    ) -> NDArray[np.floating]:
        """The blend of the parts' answers for pairs whose users rated ``counts`` items."""
        values = self.scale_.values
        predictions = np.column_stack([user_dist @ values, item_dist @ values, bias_expected])
        features = blend_features(predictions, counts, self.item_popularity_[items])
        expected: NDArray[np.floating] = np.clip(
            features @ self.blend_weights_, values[0], values[-1]
        )
        return expected

    def _expected_one(
        self,
        items: NDArray[np.int64],
        levels: NDArray[np.int64],
        fold: FoldIn,
        columns: NDArray[np.int64],
    ) -> NDArray[np.floating]:
        """:meth:`_blend_parts`' expected rating of ``columns`` for one user, whose
        user-RBM fold-in ``fold`` is already made: no code matrix, no second fold-in."""
        expected = self._blended_expected(
            self.user_rbm_._distribution_items(fold, columns)[0],
            self.item_rbm_._distribution_one(items, levels, columns),
            self.bias_._expected_one(items, levels, columns),
            np.full(len(columns), len(items)),
            columns,
        )
        return expected.astype(DTYPE)

    def _blend_at(
        self, codes: sp.csr_matrix, rows: NDArray[np.int64], items: NDArray[np.int64]
    ) -> tuple[NDArray[np.floating], NDArray[np.floating]]:
        """Blended expected rating and distribution for (user row, item) pairs."""
        user_dist, item_dist, expected = self._blend_parts(codes, rows, items)
        values = self.scale_.values
        mixture = (user_dist.astype(np.float64) + item_dist) / 2.0
        dist = tilt_to_mean(mixture, values, expected).astype(DTYPE)
        # the tilt meets the target to ~1e-4: serve the distribution's own expectation
        return (dist @ values.astype(DTYPE)).astype(DTYPE), dist

    def expected_ratings(
        self, user_ratings: UserRatings, item_ids: Sequence[str]
    ) -> NDArray[np.floating]:
        """The blended expected rating of ``item_ids`` (all known to the model) alone.

        What :meth:`predict` serves as ``expected``, to within the 1e-4 to which the
        served distribution meets it, without computing that distribution: a page of
        recommendations shows the expected ratings only.

        Raises
        ------
        UnknownItemError
            If an item is not known to the model.
        """
        self._check_fitted()
        items, levels, _ = self._encode_one(user_ratings)
        cols = np.asarray([self._column(item) for item in item_ids], dtype=np.int64)
        return self._expected_one(items, levels, self.user_rbm_._fold_in_one(items, levels), cols)

    def distribution_at(
        self, codes: sp.csr_matrix, rows: NDArray[np.int64], items: NDArray[np.int64]
    ) -> NDArray[np.floating]:
        """The blended ``p(r_ui = k)`` for (user row of ``codes``, item column) pairs."""
        self._check_fitted()
        return self._blend_at(codes, rows, items)[1]

    def predict(
        self, user_ratings: UserRatings, item_ids: Sequence[str] | None = None
    ) -> Prediction:
        """Predict one user's ratings (the blend) from the ratings given.

        Parameters
        ----------
        user_ratings : mapping of str to float
            Unknown items are ignored and listed in ``ignored_ratings``.
        item_ids : sequence of str, optional
            Items to predict, all model items by default; unknown ones are listed in
            ``unknown_items``.

        Returns
        -------
        Prediction
            ``expected`` is the blended rating, ``distribution`` a distribution over
            the levels whose expectation it is.
        """
        self._check_fitted()
        items, levels, ignored = self._encode_one(user_ratings)
        cols, names, unknown = self._columns(item_ids)
        codes = self._one_row(items, levels)
        expected, dist = self._blend_at(codes, np.zeros(len(cols), dtype=np.int64), cols)
        return Prediction(
            names, expected, distribution=dist, unknown_items=unknown, ignored_ratings=ignored
        )

    # -- ranking ----------------------------------------------------------------------------
    def ranking_scores(self, codes: sp.csr_matrix) -> NDArray[np.floating]:
        """The served ranking score of every item for each user, shape (n_users, n_items_)."""
        self._check_fitted()
        beta, omega, alpha = (float(w) for w in self.ranking_weights_)
        p_high = high_probability(self.user_rbm_, codes, self.high_rating_)
        return ranking_scores(
            self.ranker_.personal_scores(codes, evidence_exponent=alpha),
            self.ranker_.item_bias,
            p_high,
            beta,
            omega,
        )

    def _rank_one(self, items: NDArray[np.int64], levels: NDArray[np.int64]) -> NDArray[Any]:
        return self._rank_folded(items, levels, self.user_rbm_._fold_in_one(items, levels))

    def _rank_one_then_predict(
        self, items: NDArray[np.int64], levels: NDArray[np.int64]
    ) -> tuple[NDArray[Any], Callable[[NDArray[np.int64]], NDArray[np.floating]]]:
        # one fold-in of the user RBM serves the ranking's P(high) and the page's ratings
        fold = self.user_rbm_._fold_in_one(items, levels)
        return self._rank_folded(items, levels, fold), partial(
            self._expected_one, items, levels, fold
        )

    def _rank_folded(
        self, items: NDArray[np.int64], levels: NDArray[np.int64], fold: FoldIn
    ) -> NDArray[Any]:
        beta, omega, alpha = (float(w) for w in self.ranking_weights_)
        high = self.scale_.values >= self.high_rating_ - 1e-9
        dist = self.user_rbm_._distribution_items(fold)[0]
        return ranking_scores(
            self.ranker_.personal_scores_one(items, levels, evidence_exponent=alpha),
            self.ranker_.item_bias,
            dist[:, high].sum(axis=1),
            beta,
            omega,
        )

    def _score_one(
        self, items: NDArray[np.int64], levels: NDArray[np.int64]
    ) -> tuple[NDArray[np.floating], NDArray[np.floating]]:
        scores = self._rank_one(items, levels)[None, :]
        cols = np.arange(self.n_items_, dtype=np.int64)
        expected, _ = self._blend_at(self._one_row(items, levels), np.zeros_like(cols), cols)
        return scores, expected[None, :]

    def similar_items(self, item_id: str, n: int = 10) -> list[tuple[str, float]]:
        """Items like ``item_id`` by the ranker's weights (see :meth:`RBMRanker.similar_items`)."""
        self._check_fitted()
        return self.ranker_.similar_items(item_id, n)

    def explain(
        self, user_ratings: UserRatings, item_ids: Sequence[str], n_reasons: int = 3
    ) -> list[list[tuple[str, float, float]]]:
        """The user's ratings that most support each item's ranking score.

        The contribution of rated item ``r`` to item ``i`` is how much ``i``'s score
        drops when ``r`` is left out of the user's ratings,
        ``s_i(R) - s_i(R minus r)``, through every path of the model: the ranker's
        hidden units and the rating RBM's ``P(high)`` (its hidden units and the user's
        rating offset). Computed exactly, for all rated items at once.

        Parameters
        ----------
        user_ratings : mapping of str to float
        item_ids : sequence of str
            The items to explain (unknown ids get an empty list).
        n_reasons : int
            Supporting ratings per item at most (only positive contributions).

        Returns
        -------
        list of list of (rated item id, rating, contribution)
            For each item of ``item_ids``, strongest support first.
        """
        self._check_fitted()
        n_reasons = check_positive_int("n_reasons", n_reasons)
        items, levels, _ = self._encode_one(user_ratings)
        targets = np.array([self._item_index.get(i, -1) for i in item_ids], dtype=np.int64)
        known = targets >= 0
        out: list[list[tuple[str, float, float]]] = [[] for _ in item_ids]
        if len(items) == 0 or not known.any():
            return out
        drop = leave_one_out_scores(self, items, levels, targets[known])  # (n_rated, T)
        full = self._rank_one(items, levels)[targets[known]]
        contribution = full[None, :] - drop
        values = self.scale_.values[levels]
        for t, slot in enumerate(np.flatnonzero(known)):
            order = np.lexsort((items, -contribution[:, t]))[:n_reasons]
            out[int(slot)] = [
                (str(self.item_ids_[items[r]]), float(values[r]), float(contribution[r, t]))
                for r in order
                if contribution[r, t] > 0
            ]
        return out

    def _rank_codes(self, codes: sp.csr_matrix) -> NDArray[Any]:
        return self.ranking_scores(codes)

    def _score_codes(
        self, codes: sp.csr_matrix
    ) -> tuple[NDArray[np.floating], NDArray[np.floating]]:
        scores = self.ranking_scores(codes)
        expected = np.empty(scores.shape, dtype=DTYPE)
        m = self.n_items_
        # every (user, item) pair of a few users at a time: the item RBM's features are
        # gathered per pair, so the block is bounded
        step = max(1, _PAIR_BLOCK // max(1, m))
        items = np.tile(np.arange(m, dtype=np.int64), step)
        for lo in range(0, codes.shape[0], step):
            block = codes[lo : lo + step]
            n = block.shape[0]
            rows = np.repeat(np.arange(n, dtype=np.int64), m)
            expected[lo : lo + n] = self._blend_at(block, rows, items[: n * m])[0].reshape(n, m)
        return scores, expected

    # -- persistence ------------------------------------------------------------------------
    def _artifact_state(self) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
        arrays, metadata = super()._artifact_state()
        described: dict[str, Any] = {}
        for name, part in self.parts.items():
            part_arrays, part_meta = part._artifact_state()
            for key, value in part_arrays.items():
                arrays[f"{name}.{key}"] = value
            # the catalog and scale are the composite's, stored once
            for shared in ("item_ids", "rating_scale"):
                part_meta.pop(shared, None)
            described[name] = {
                "model_class": type(part).__name__,
                "hyperparameters": part.get_params(),
                "metadata": part_meta,
            }
        metadata["parts"] = described
        return arrays, metadata

    def _restore_artifact_state(
        self, arrays: Mapping[str, NDArray[Any]], metadata: Mapping[str, Any]
    ) -> None:
        super()._restore_artifact_state(arrays, metadata)
        described = metadata["parts"]
        shared = {"item_ids": metadata["item_ids"], "rating_scale": metadata["rating_scale"]}
        for name, cls in PART_CLASSES.items():
            entry = described[name]
            if entry["model_class"] != cls.__name__:
                raise ValueError(f"part {name} is a {entry['model_class']}, not a {cls.__name__}")
            part = cls().set_params(**dict(entry["hyperparameters"]))
            prefix = f"{name}."
            part_arrays = {
                key[len(prefix) :]: value for key, value in arrays.items() if key.startswith(prefix)
            }
            part._restore_artifact_state(part_arrays, {**entry["metadata"], **shared})
            part._check_restored()
            part._validate_params()
            setattr(self, f"{name}_", part)

    def _check_restored(self) -> None:
        super()._check_restored()
        for name, part in self.parts.items():
            if isinstance(part, Recommender) and not np.array_equal(part.item_ids_, self.item_ids_):
                raise ValueError(f"part {name} has another catalog")
        if self.blend_weights_.shape != (12,) or self.ranking_weights_.shape != (3,):
            raise ValueError("array shapes do not match")
