"""``/admin/retrain``: ask the worker for a retrain, and follow the run.

The API process never trains: ``POST /admin/retrain`` only records a ``queued`` run;
``rbmrec worker`` picks it up.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import SessionDep
from app.api.errors import ProblemError, problem_responses
from app.api.security import require_admin_key
from app.services import retrain

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin_key)],
    responses=problem_responses(401, 403, 422, 503),
)

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

_EXAMPLE_RUN: dict[str, Any] = {
    "id": "run-20261129T030000123Z-1a2b3c4d",
    "trigger": "api",
    "status": "activated",
    "requested_at": "2026-11-29T03:00:00.123000Z",
    "started_at": "2026-11-29T03:00:01.002000Z",
    "finished_at": "2026-11-29T03:00:41.530000Z",
    "duration_seconds": 40.528,
    "owner": "worker-1:4242",
    "n_users": 943,
    "n_items": 1682,
    "n_ratings": 100000,
    "n_train": 90012,
    "n_validation": 9988,
    "metrics": {
        "validation_rmse": 0.932,
        "candidate_rmse": 0.932,
        "active_rmse": 0.934,
        "promotion_tolerance": 0.005,
        "decision": "activate",
    },
    "model_version_id": "20261129T030000123Z-9f2c1a",
    "reason": "candidate RMSE 0.9320 vs active 0.9340 on 9950 held-out ratings",
    "error": None,
}


class TrainingRunOut(BaseModel):
    """A retrain run: status, timings, data counts, metrics, and error if any."""

    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE_RUN]})

    id: str
    trigger: str = Field(description="schedule, api or cli.", examples=["api"])
    status: str = Field(
        description="queued, running, activated, rejected, skipped or failed.",
        examples=["queued"],
    )
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    owner: str | None = Field(description="host:pid of the worker that ran it.")
    n_users: int | None
    n_items: int | None
    n_ratings: int | None
    n_train: int | None
    n_validation: int | None
    metrics: dict[str, Any]
    model_version_id: str | None = Field(description="The version it produced, if any.")
    reason: str | None = Field(description="Why it was skipped or rejected.")
    error: str | None = Field(description="Why it failed.")

    @classmethod
    def of(cls, info: retrain.TrainingRunInfo) -> TrainingRunOut:
        """The response body of a registry record."""
        return cls(
            id=info.id,
            trigger=info.trigger,
            status=info.status,
            requested_at=info.requested_at,
            started_at=info.started_at,
            finished_at=info.finished_at,
            duration_seconds=info.duration_seconds,
            owner=info.owner,
            n_users=info.n_users,
            n_items=info.n_items,
            n_ratings=info.n_ratings,
            n_train=info.n_train,
            n_validation=info.n_validation,
            metrics=info.metrics,
            model_version_id=info.model_version_id,
            reason=info.reason,
            error=info.error,
        )


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
    return TrainingRunOut.of(info)


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
    return [TrainingRunOut.of(run) for run in retrain.list_runs(session, limit=limit)]


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
    return TrainingRunOut.of(info)
