"""Bodies of the retrain routes (``/admin/retrain``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TrainingRunOut"]


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

    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [_EXAMPLE_RUN]})

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
