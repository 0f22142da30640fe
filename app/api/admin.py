"""``/admin/retrain``: ask the worker for a retrain, and follow the run.

The API process never trains: ``POST /admin/retrain`` only records a ``queued`` run;
``rbmrec worker`` picks it up.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query, Response, status

from app.api.deps import SessionDep
from app.api.errors import ProblemError, problem_responses
from app.api.security import admin_router
from app.schemas.training_runs import TrainingRunOut
from app.services import retrain

router = admin_router(prefix="/admin", tag="admin")

RunId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:\-]{1,64}$",
        description="A training run id.",
        examples=["run-20261129T030000123Z-1a2b3c4d"],
    ),
]


@router.post(
    "/retrain",
    summary="Queue a retrain",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TrainingRunOut,
)
def request_retrain(session: SessionDep, response: Response) -> TrainingRunOut:
    """Ask the worker for a retrain now; follow it at the ``Location`` header.

    Returns the queued run (a run already queued and not yet started is returned
    instead of a second one). The API process never trains: ``rbmrec worker`` runs it."""
    info, _created = retrain.request_retrain(session, trigger="api")
    session.commit()
    response.headers["Location"] = f"/admin/retrain/{info.id}"
    return TrainingRunOut.model_validate(info)


@router.get(
    "/retrain",
    summary="Recent retrain runs",
    response_model=list[TrainingRunOut],
)
def list_retrains(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200, description="At most this many.")] = 20,
) -> list[TrainingRunOut]:
    """The newest runs first, whatever started them."""
    return [TrainingRunOut.model_validate(run) for run in retrain.list_runs(session, limit=limit)]


@router.get(
    "/retrain/{run_id}",
    summary="One retrain run",
    response_model=TrainingRunOut,
    responses=problem_responses(404),
)
def get_retrain(run_id: RunId, session: SessionDep) -> TrainingRunOut:
    """Status, timings, counts, metrics and error of one run."""
    info = retrain.get_run(session, run_id)
    if info is None:
        raise ProblemError(404, f"no training run {run_id!r}")
    return TrainingRunOut.model_validate(info)
