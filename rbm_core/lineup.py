"""The models ``rbmrec evaluate`` compares: the served model, its parts, the references.

:func:`default_models` turns names into factories of unfitted models. A part entry
(``user_rbm``, ``item_rbm``, ``ranker``) is not fitted again: its factory returns a
:class:`PartOf`, and the harness reports that part of the fitted ``rbm`` alone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rbm_core.baselines import BiasBaseline, GlobalMean, Popularity
from rbm_core.recommender import RBMRecommender
from rbm_core.references import EASE, ItemQualityPopularity

__all__ = [
    "DEFAULT_MODELS",
    "MODEL_NAMES",
    "PART_ENTRIES",
    "LineupError",
    "ModelFactory",
    "PartOf",
    "default_models",
]


class LineupError(ValueError):
    """The models asked for cannot be compared (unknown name, bad settings, order)."""


MODEL_NAMES = (
    "rbm",
    "user_rbm",
    "item_rbm",
    "ranker",
    "ease",
    "item_quality",
    "bias",
    "popularity",
    "global_mean",
)
"""Every model the harness knows, in report order."""

DEFAULT_MODELS = ("rbm", "ease", "item_quality", "bias", "popularity", "global_mean")
"""The models of a default evaluation."""

PART_ENTRIES = ("user_rbm", "item_rbm", "ranker")
"""Entries that report a part of the fitted ``rbm`` alone."""

ModelFactory = Callable[[], Any]
"""A zero-argument callable returning a fresh, unfitted model with ``fit(train)``."""


# -- models -------------------------------------------------------------------------------
def default_models(
    rbm_params: Mapping[str, Any] | None = None,
    *,
    names: Sequence[str] = DEFAULT_MODELS,
) -> dict[str, ModelFactory]:
    """Factories of the models to compare: the served RBM model, its parts and references.

    Parameters
    ----------
    rbm_params : mapping, optional
        Keyword arguments of :class:`~rbm_core.recommender.RBMRecommender` (its
        defaults otherwise; ``verbose`` defaults to False).
    names : sequence of str
        Which of :data:`MODEL_NAMES` to include, in order. A part entry
        (:data:`PART_ENTRIES`) needs ``rbm`` listed before it.

    Returns
    -------
    dict of str to callable
        Name -> zero-argument factory of an unfitted model; a part entry's factory
        returns a :class:`PartOf` naming the part of the fitted ``rbm``.

    Raises
    ------
    EvaluationError
        For an unknown model name or a bad RBMRecommender setting.
    """
    params = {"verbose": False, **dict(rbm_params or {})}
    try:
        RBMRecommender(**params)._validate_params()
    except (TypeError, ValueError) as exc:
        raise LineupError(f"bad RBM settings: {exc}") from None
    available: dict[str, ModelFactory] = {
        "rbm": lambda: RBMRecommender(**params),
        "ease": EASE,
        "item_quality": ItemQualityPopularity,
        "bias": BiasBaseline,
        "global_mean": GlobalMean,
        "popularity": Popularity,
    }
    for part in PART_ENTRIES:
        available[part] = functools.partial(PartOf, "rbm", part)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise LineupError(f"unknown model {unknown[0]!r}; choose from {', '.join(MODEL_NAMES)}")
    if not names:
        raise LineupError("no models to evaluate")
    if len(set(names)) != len(names):
        raise LineupError("a model is listed twice")
    for name in names:
        if name in PART_ENTRIES and ("rbm" not in names or names.index("rbm") > names.index(name)):
            raise LineupError(f"{name} reports a part of rbm: list rbm before it")
    return {name: available[name] for name in names}


@dataclass(frozen=True)
class PartOf:
    """A model entry that is a part of another entry's fitted model (reported alone)."""

    model: str
    part: str
