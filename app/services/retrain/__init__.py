"""The retrain job, one module per job:

* :mod:`.job`: one run, start to finish (:func:`run_retrain`, :func:`train_and_activate`);
* :mod:`.runs`: the run records in ``training_runs`` (request, claim, outcome, queries);
* :mod:`.recovery`: runs and files abandoned by a dead process;
* :mod:`.holdout`: the stable hold-out split of a snapshot;
* :mod:`.gate`: the promotion gate (metrics, criteria, references, the decision).

The names below are what the API, the CLI and the worker use.
"""

from app.services.retrain.holdout import HOLDOUT_FRACTION, holdout_mask
from app.services.retrain.job import (
    MIN_TRAINING_RATINGS,
    InterruptGuard,
    RetrainError,
    run_retrain,
    train_and_activate,
)
from app.services.retrain.recovery import recover_abandoned
from app.services.retrain.runs import (
    TrainingRunInfo,
    get_run,
    list_runs,
    next_queued_run,
    request_retrain,
)

__all__ = [
    "HOLDOUT_FRACTION",
    "MIN_TRAINING_RATINGS",
    "InterruptGuard",
    "RetrainError",
    "TrainingRunInfo",
    "get_run",
    "holdout_mask",
    "list_runs",
    "next_queued_run",
    "recover_abandoned",
    "request_retrain",
    "run_retrain",
    "train_and_activate",
]
