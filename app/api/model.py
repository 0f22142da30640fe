"""``GET /model``: the model version this process serves."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ModelHolderDep
from app.api.errors import TYPE_NO_MODEL, ProblemError, problem_responses
from app.schemas.model_versions import ModelInfo

router = APIRouter(tags=["model"])


@router.get(
    "/model",
    summary="The active model",
    description="Version, training time, data counts, hyperparameters and evaluation "
    "metrics of the model that recommendations use. 404 before the first model has "
    "been trained (recommendations then use the `popular` strategy).",
    response_model=ModelInfo,
    responses=problem_responses(404),
)
async def get_model(holder: ModelHolderDep) -> ModelInfo:
    """Describe the loaded model (no database access)."""
    loaded = holder.current
    if loaded is None:
        status = holder.status()
        detail = "no model is loaded: train one with `rbmrec train`"
        if status.error:
            detail = f"no model is loaded: {status.error}"
        raise ProblemError(404, detail, title="No model", type=TYPE_NO_MODEL)
    version = loaded.version
    return ModelInfo(
        version=version.id,
        status=version.status,
        trained_at=version.created_at,
        activated_at=version.activated_at,
        loaded_at=loaded.loaded_at,
        n_users=version.n_users,
        n_items=version.n_items,
        n_ratings=version.n_ratings,
        hyperparameters=version.hyperparameters,
        metrics=version.metrics,
    )
