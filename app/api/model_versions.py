"""``/models``: the registered model versions (admin): list, inspect, activate (rollback)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Path, Query

from app.api.deps import ModelHolderDep, SessionDep
from app.api.errors import ProblemError, problem_responses
from app.api.security import admin_router
from app.schemas.model_versions import ModelVersionList, ModelVersionOut
from app.services import registry
from app.services.artifacts import ArtifactIntegrityError

logger = logging.getLogger(__name__)

router = admin_router(prefix="/models", tag="models")

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
        versions=[ModelVersionOut.model_validate(v) for v in versions],
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
    return ModelVersionOut.model_validate(info)


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
    except registry.VersionNotActivatableError as exc:
        raise ProblemError(409, str(exc)) from None
    except ArtifactIntegrityError as exc:
        # The log gets the artifact's path; the client only the version and the digests.
        logger.warning("model version %s cannot be activated: %s", version_id, exc)
        raise ProblemError(
            409, f"model version {version_id!r} cannot be activated: {exc.public_reason()}"
        ) from None
    # Commit before reloading: the holder reads the active version in its own session.
    session.commit()
    try:
        holder.refresh()
    except Exception:
        # The activation stands; the periodic poll retries the load.
        logger.exception("model %s activated, but reloading it in this process failed", info.id)
    return ModelVersionOut.model_validate(info)
