"""``GET /model``: the model version this process serves."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ModelHolderDep
from app.api.errors import TYPE_NO_MODEL, ProblemError, problem_responses
from app.jsonable import to_jsonable
from app.schemas.model_versions import ModelInfo, ModelPart
from app.services.model_holder import ServedModel
from rbm_core.recommender import RBMRecommender

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
        parts=describe_parts(loaded.model),
    )


_ROLES = {
    "user_rbm": "rating predictor (blended), and P(high) in the ranking score",
    "item_rbm": "rating predictor (blended)",
    "bias": "rating predictor (blended)",
    "ranker": "ranks the recommendations (with user_rbm's P(high))",
}


def describe_parts(model: ServedModel) -> dict[str, ModelPart]:
    """Each part of a served model, its settings and its held-out figures."""
    if not isinstance(model, RBMRecommender):
        return {}
    figures = model.validation_
    validation = {
        "user_rbm": {"rmse": figures.get("user_rbm_rmse")},
        "item_rbm": {"rmse": figures.get("item_rbm_rmse")},
        "bias": {"rmse": figures.get("bias_rmse")},
        "ranker": {
            "ndcg_at_10": figures.get("ranker_ndcg"),
            "served_ranking_ndcg_at_10": figures.get("ranking_ndcg"),
            "beta": float(model.ranking_weights_[0]),
            "omega": float(model.ranking_weights_[1]),
            "evidence_exponent": float(model.ranking_weights_[2]),
        },
    }
    return {
        name: ModelPart(
            model_class=type(part).__name__,
            role=_ROLES[name],
            settings=to_jsonable(part.get_params()),
            validation=to_jsonable(validation[name]),
        )
        for name, part in model.parts.items()
    }
