"""Bodies of ``GET /model`` (the served model) and ``/models`` (the registered versions)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.schemas.fields import EXAMPLE_TIME

__all__ = ["ModelInfo", "ModelPart", "ModelVersionList", "ModelVersionOut"]


class ModelPart(BaseModel):
    """One part of the served model."""

    model_config = ConfigDict(protected_namespaces=())

    model_class: str = Field(description="The rbm_core estimator.")
    role: str = Field(description="What the part does in the served model.")
    settings: dict[str, Any] = Field(description="Its hyperparameters as trained.")
    validation: dict[str, Any] = Field(
        description="Its figures on the model's own validation split (RMSE, NDCG@10)."
    )


class ModelInfo(BaseModel):
    """The model version this process serves."""

    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "version": "20261129T030000123Z-9f2c1a",
                    "status": "active",
                    "trained_at": EXAMPLE_TIME,
                    "activated_at": EXAMPLE_TIME,
                    "loaded_at": EXAMPLE_TIME,
                    "n_users": 943,
                    "n_items": 1682,
                    "n_ratings": 100000,
                    "hyperparameters": {"n_hidden": 100, "n_epochs": 30},
                    "metrics": {"validation_rmse": 0.93, "validation_mae": 0.73},
                }
            ]
        },
    )

    version: str
    status: str = Field(description="Registry status when it was loaded.")
    trained_at: datetime
    activated_at: datetime | None
    loaded_at: datetime = Field(description="When this process loaded it.")
    n_users: int
    n_items: int
    n_ratings: int
    hyperparameters: dict[str, Any]
    metrics: dict[str, Any] = Field(description="Evaluation on held-out ratings.")
    parts: dict[str, ModelPart] = Field(
        default_factory=dict,
        description="The parts of the served model: rating predictors (user_rbm, "
        "item_rbm, bias: blended into predicted_rating) and the ranker (ranker: with "
        "user_rbm's P(high), the recommendations' score). Empty for versions trained "
        "before the model had parts (a SoftmaxRBM alone does both jobs).",
    )


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
    "hyperparameters": {"search": True, "validation_fraction": 0.2, "random_state": 7},
    "metrics": {
        "validation_rmse": 0.902,
        "validation_mae": 0.711,
        "validation_ndcg_at_10": 0.271,
        "active_version": "20261128T030000456Z-1b2c3d",
        "candidate_rmse": 0.902,
        "active_rmse": 0.904,
        "candidate_ndcg_at_10": 0.271,
        "active_ndcg_at_10": 0.268,
        "bias_baseline_rmse": 0.941,
        "promotion_tolerance": 0.005,
        "ndcg_tolerance": 0.01,
        "decision": "activate",
    },
    "training_curves": {
        "user_rbm": {
            "epoch": [1, 2, 3],
            "validation_rmse": [0.99, 0.96, 0.95],
            "free_energy_gap": [0.8, 1.1, 1.3],
        },
        "ranker": {"epoch": [1, 2, 3], "validation_ndcg": [None, None, 0.21]},
    },
    "note": None,
}


class ModelVersionOut(BaseModel):
    """A model version: its status, data, parameters, evaluation and training curves."""

    model_config = ConfigDict(
        from_attributes=True, json_schema_extra={"examples": [_EXAMPLE_VERSION]}
    )

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
    training_curves: dict[str, Any] = Field(
        description="Per-epoch curves of each RBM part (user_rbm, item_rbm, ranker) as "
        "trained on its validation split: epoch, train_rmse, validation_rmse, "
        "free_energy_gap, validation_ndcg, ... (lists, one value per epoch). Versions "
        "trained before the served model had parts hold one set of curves directly."
    )
    note: str | None = Field(description="Why it was rejected or failed.")

    @field_validator("training_curves", mode="before")
    @classmethod
    def _curves_as_lists(cls, curves: dict[str, Any]) -> dict[str, Any]:
        # A curve registered as a single value is a curve of one point.
        def curve(value: Any) -> Any:
            if isinstance(value, dict):
                return {str(k): curve(v) for k, v in value.items()}
            return value if isinstance(value, list) else [value]

        return {str(k): curve(v) for k, v in curves.items()}


class ModelVersionList(BaseModel):
    """The model versions, newest first, and which one is active."""

    active_version: str | None = Field(
        description="Id of the active version; null before the first model."
    )
    versions: list[ModelVersionOut]
