"""Health checks (``/health/live``, ``/health/ready``) and ``GET /metrics``."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.api.deps import MetricsDep, ModelHolderDep
from app.api.errors import PROBLEM_MEDIA_TYPE
from app.api.metrics import CONTENT_TYPE
from app.api.security import auth_mode
from app.db.engine import ping
from app.schemas.health import DatabaseStatus, Liveness, ModelStatus, NotReady, Readiness

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get(
    "/health/live",
    summary="Liveness: the process answers",
    response_model=Liveness,
)
async def live() -> Liveness:
    """Always 200 while the process runs (no dependency is checked)."""
    return Liveness()


@router.get(
    "/health/ready",
    summary="Readiness: the database answers",
    description="200 when the database answers, else 503 (a problem document with the "
    "same fields). Also says which model is served and why the active one is not, "
    "if so; a missing model does not make the service unready (it serves `popular`).",
    response_model=Readiness,
    responses={503: {"model": NotReady, "description": "The database does not answer."}},
)
def ready(request: Request, holder: ModelHolderDep) -> Response:
    """Check the database with ``SELECT 1`` and report the model's state."""
    factory: sessionmaker[Session] = request.app.state.session_factory
    database = DatabaseStatus(ok=True)
    try:
        ping(factory)
    except SQLAlchemyError as exc:
        logger.warning("readiness: the database does not answer: %s", type(exc).__name__)
        database = DatabaseStatus(ok=False, error="the database does not answer")
    status = holder.status()
    model = ModelStatus(
        loaded=status.loaded is not None,
        version=status.loaded.version.id if status.loaded is not None else None,
        active_version=status.active_version_id,
        last_check=status.last_check,
        error=status.error,
    )
    strategy = "rbm" if status.loaded is not None else "popular"
    replica: str = request.app.state.replica
    auth = auth_mode(request.app.state.settings)
    if database.ok:
        body = Readiness(
            status="ready",
            database=database,
            model=model,
            strategy=strategy,
            replica=replica,
            auth=auth,
        )
        return JSONResponse(body.model_dump(mode="json"))
    problem = NotReady(
        title="Not ready",
        status=503,
        detail="the ratings database does not answer; the service recovers by itself "
        "when it is back",
        instance=request.url.path,
        database=database,
        model=model,
        strategy=strategy,
        replica=replica,
        auth=auth,
    )
    return JSONResponse(
        problem.model_dump(mode="json"),
        status_code=503,
        media_type=PROBLEM_MEDIA_TYPE,
        headers={"Retry-After": "5"},
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(metrics: MetricsDep) -> Response:
    """Prometheus text exposition."""
    return Response(metrics.render(), media_type=CONTENT_TYPE)
