"""Bounded, seeded hyperparameter search on held-out ratings, within a time budget.

A model part's search space is a few values per hyperparameter. The candidates are the
part's defaults first, then distinct combinations drawn in a seeded order, so the same
data and seed give the same search. Candidates are tried round-robin over the parts
(every part's defaults first, always) while the budget lasts; a candidate is skipped
when the time its part's defaults took would overrun the budget. Each trial trains with
early stopping on the held-out ratings, so the number of epochs is chosen too.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

__all__ = [
    "PartSearch",
    "SearchBudget",
    "Trial",
    "candidates",
    "default_budget_seconds",
    "run_search",
]

M = TypeVar("M")

SECONDS_PER_RATING = 2.5e-4
"""Default search budget per training rating (20 s for ML-100K's 80,000 ratings)."""

MIN_BUDGET_SECONDS = 10.0


def default_budget_seconds(n_ratings: int) -> float:
    """The default search budget for ``n_ratings`` training ratings, in seconds."""
    return max(MIN_BUDGET_SECONDS, SECONDS_PER_RATING * float(n_ratings))


def candidates(
    space: Mapping[str, Sequence[Any]],
    defaults: Mapping[str, Any],
    n: int,
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    """Up to ``n`` distinct settings: ``defaults`` first, then seeded draws from ``space``.

    Parameters
    ----------
    space : mapping of str to sequence
        The values to try for each searched hyperparameter.
    defaults : mapping
        The part's settings without search (they fill every hyperparameter the
        space does not name).
    n : int
        How many settings at most.
    rng : numpy.random.Generator

    Returns
    -------
    list of dict
        Full settings (``defaults`` updated by the drawn values).
    """
    names = sorted(space)
    grid = list(itertools.product(*(tuple(space[name]) for name in names)))
    order = rng.permutation(len(grid))
    out = [dict(defaults)]
    seen = {tuple(defaults.get(name) for name in names)}
    for index in order:
        if len(out) >= n:
            break
        combo = grid[int(index)]
        if combo in seen:
            continue
        seen.add(combo)
        out.append({**defaults, **dict(zip(names, combo, strict=True))})
    return out


@dataclass(frozen=True)
class Trial:
    """One searched setting of one part: how it scored on the held-out ratings.

    Attributes
    ----------
    part : str
    params : dict
        The full settings tried.
    score : float
        Held-out figure (lower is better: RMSE, or minus NDCG for a ranker).
    epochs : int
        The epoch early stopping kept.
    seconds : float
    """

    part: str
    params: dict[str, Any]
    score: float
    epochs: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (recorded in the artifact and the training run)."""
        return {
            "part": self.part,
            "params": self.params,
            "score": self.score,
            "epochs": self.epochs,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class SearchBudget:
    """Seconds left for optional trials (the defaults always run)."""

    seconds: float
    start: float = field(default_factory=time.monotonic)

    def remaining(self) -> float:
        """Seconds left, never below zero."""
        return max(0.0, self.seconds - (time.monotonic() - self.start))


@dataclass
class PartSearch(Generic[M]):
    """The search of one part: its candidates and how to train and score one.

    ``train`` takes the settings and returns the fitted model, its held-out score
    (lower is better) and the epoch kept.
    """

    name: str
    settings: list[dict[str, Any]]
    train: Callable[[dict[str, Any]], tuple[M, float, int]]
    trials: list[Trial] = field(default_factory=list)
    best: M | None = None
    best_trial: Trial | None = None

    def chosen(self) -> M:
        """The best model trained so far (``RuntimeError`` before any trial)."""
        if self.best is None:
            raise RuntimeError(f"{self.name}: no setting has been tried")
        return self.best

    def chosen_trial(self) -> Trial:
        """The trial of :meth:`chosen`."""
        if self.best_trial is None:
            raise RuntimeError(f"{self.name}: no setting has been tried")
        return self.best_trial

    def run(self, index: int) -> None:
        """Train and score candidate ``index``; keep it if it is the best so far."""
        settings = self.settings[index]
        start = time.monotonic()
        model, score, epochs = self.train(settings)
        trial = Trial(self.name, settings, float(score), int(epochs), time.monotonic() - start)
        self.trials.append(trial)
        if self.best_trial is None or trial.score < self.best_trial.score:
            self.best, self.best_trial = model, trial


def run_search(parts: Sequence[PartSearch[Any]], budget: SearchBudget) -> list[Trial]:
    """Every part's defaults, then further candidates round-robin while the budget lasts.

    Returns
    -------
    list of Trial
        Every trial, in the order run.
    """
    log: list[Trial] = []
    for part in parts:
        part.run(0)
        log.append(part.trials[-1])
    rounds = max((len(part.settings) for part in parts), default=0)
    for index in range(1, rounds):
        for part in parts:
            if index >= len(part.settings):
                continue
            cost = part.trials[0].seconds
            if cost > budget.remaining():
                continue
            part.run(index)
            log.append(part.trials[-1])
    return log
