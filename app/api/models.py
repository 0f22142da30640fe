"""``/models``: the registered model versions (admin): list, inspect, activate (rollback)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import ModelHolderDep, SessionDep
from app.api.errors import ProblemError, problem_responses
from app.api.security import require_admin_key
from app.services import registry

logger = logging.getLogger(__name__)

router = APIRouter(
    prefix="/models",
    tags=["models"],
    dependencies=[Depends(require_admin_key)],
    responses=problem_responses(401, 403, 422, 503),
)

VersionId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        pattern=registry.VERSION_ID_PATTERN.pattern,
        description="A model version id.",
        examples=["20261129T030000123Z-9f2c1a"],
    ),
]

_EXAMPLE_VERSION: dict[str, Any] = {
    "id": "20261129T030000123Z-9f2c1a",
    "status": "active",
    "created_at": "2026-11-29T03:00:41.512000Z",
    "activated_at": "2026-11-29T03:00:41.530000Z",
    "artifact_available": True,
    "sha256": "5f1d0c1e8b0a4e8a2f7c3d9b6a1e4c7f0b2d5a8e1c4f7a0d3b6e9c2f5a8b1d4e",
    "n_users": 943,
    "n_items": 1682,
    "n_ratings": 100000,
    "snapshot_max_rated_at": "1998-04-22T23:10:38Z",
    "hyperparameters": {"n_hidden": 100, "n_epochs": 30, "learning_rate": 0.05},
    "metrics": {
        "validation_rmse": 0.932,
        "validation_mae": 0.735,
        "active_version": "20261128T030000456Z-1b2c3d",
        "candidate_rmse": 0.932,
        "active_rmse": 0.934,
        "promotion_tolerance": 0.005,
        "decision": "activate",
    },
    "training_curves": {
        "epoch": [1, 2, 3],
        "validation_rmse": [0.99, 0.96, 0.95],
        "free_energy_gap": [0.8, 1.1, 1.3],
    },
    "note": None,
}


class ModelVersionOut(BaseModel):
    """A model version: its status, data, parameters, evaluation and training curves."""

    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE_VERSION]})

    id: str
    status: str = Field(
        description="training, candidate, active, rejected, retired or failed.",
        examples=["active"],
    )
    created_at: datetime
    activated_at: datetime | None = Field(description="When it was last activated.")
    artifact_available: bool = Field(
        description="Whether its files are on disk (retention deletes old ones)."
    )
    sha256: str = Field(description="SHA-256 of the artifact files (empty while training).")
    n_users: int
    n_items: int
    n_ratings: int
    snapshot_max_rated_at: datetime | None = Field(
        description="Newest rating time in the training snapshot."
    )
    hyperparameters: dict[str, Any]
    metrics: dict[str, Any] = Field(
        description="Validation RMSE/MAE on the held-out ratings and, for a retrain, the "
        "comparison with the model that was active."
    )
    training_curves: dict[str, list[Any]] = Field(
        description="Per-epoch curves: validation_rmse, free_energy_gap, train_rmse, ..."
    )
    note: str | None = Field(description="Why it was rejected or failed.")

    @classmethod
    def of(cls, info: registry.ModelVersionInfo) -> ModelVersionOut:
        """The response body of a registry record."""
        return cls(
            id=info.id,
            status=info.status,
            created_at=info.created_at,
            activated_at=info.activated_at,
            artifact_available=info.artifact_available,
            sha256=info.sha256,
            n_users=info.n_users,
            n_items=info.n_items,
            n_ratings=info.n_ratings,
            snapshot_max_rated_at=info.snapshot_max_rated_at,
            hyperparameters=info.hyperparameters,
            metrics=info.metrics,
            training_curves={
                str(k): list(v) if isinstance(v, list) else [v]
                for k, v in info.training_curves.items()
            },
            note=info.note,
        )


class ModelVersionList(BaseModel):
    """The model versions, newest first, and which one is active."""

    active_version: str | None = Field(
        description="Id of the active version; null before the first model."
    )
    versions: list[ModelVersionOut]


@router.get(
    "",
    summary="List the model versions",
    response_model=ModelVersionList,
)
def list_models(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500, description="At most this many.")] = 50,
) -> ModelVersionList:
    """Model versions, newest first, with their metrics and training curves."""
    versions = registry.list_versions(session, limit=limit)
    active = registry.get_active_version(session)
    return ModelVersionList(
        active_version=active.id if active is not None else None,
        versions=[ModelVersionOut.of(v) for v in versions],
    )


@router.get(
    "/{version_id}",
    summary="One model version",
    response_model=ModelVersionOut,
    responses=problem_responses(404),
)
def get_model(version_id: VersionId, session: SessionDep) -> ModelVersionOut:
    """One model version with its metrics and per-epoch training curves."""
    info = registry.get_version(session, version_id)
    if info is None:
        raise ProblemError(404, f"no model version {version_id!r}")
    return ModelVersionOut.of(info)


@router.post(
    "/{version_id}/activate",
    summary="Activate a model version (e.g. roll back)",
    response_model=ModelVersionOut,
    responses=problem_responses(404, 409),
)
def activate_model(
    version_id: VersionId, session: SessionDep, holder: ModelHolderDep
) -> ModelVersionOut:
    """Make this version the active one. This process serves it at once; the other API
    processes switch within ``RBMREC_MODEL_POLL_SECONDS``.

    409 when it cannot be activated: still training, failed, its files deleted by
    retention, or its artifact fails its checksum (nothing changes then)."""
    try:
        info = registry.activate_version(session, version_id)
    except registry.VersionNotFoundError as exc:
        raise ProblemError(404, str(exc)) from None
    except (registry.VersionNotActivatableError, registry.ArtifactIntegrityError) as exc:
        raise ProblemError(409, str(exc)) from None
    # Commit before reloading: the holder reads the active version in its own session.
    session.commit()
    try:
        holder.refresh()
    except Exception:
        # The activation stands; the periodic poll retries the load.
        logger.exception("model %s activated, but reloading it in this process failed", info.id)
    return ModelVersionOut.of(info)
