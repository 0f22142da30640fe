"""Typed dependencies of the routers: settings, the request's session, the model holder.

Resources live on ``app.state`` (created by the lifespan in :mod:`app.api.main`);
the aliases here keep handler signatures short::

    def handler(session: SessionDep, holder: ModelHolderDep) -> ...

``SessionDep`` is one unit of work per request: committed when the handler
returns, rolled back when it raises, closed either way, and *before* the response
is sent (``scope="function"``), so a client that got a 2xx can read its write
straight away and a failed commit is answered as an error, not lost.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from email.message import Message
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.api.errors import ProblemError
from app.api.metrics import ApiMetrics
from app.domain import ID_MAX_LENGTH, ID_PATTERN
from app.services.model_holder import ModelHolder
from app.services.recommend import StorePopularity
from app.settings import Settings

logger = logging.getLogger(__name__)

__all__ = [
    "ItemIdPath",
    "MetricsDep",
    "ModelHolderDep",
    "PopularityDep",
    "SessionDep",
    "SettingsDep",
    "UserIdPath",
    "get_session",
    "require_json",
]


async def get_settings(request: Request) -> Settings:
    """The app's settings (given to ``create_app`` or read from the environment)."""
    settings: Settings = request.app.state.settings
    return settings


async def get_model_holder(request: Request) -> ModelHolder:
    """The process's :class:`ModelHolder`."""
    holder: ModelHolder = request.app.state.model_holder
    return holder


async def get_popularity(request: Request) -> StorePopularity:
    """The cached most-rated items of the store."""
    popularity: StorePopularity = request.app.state.popularity
    return popularity


async def get_metrics(request: Request) -> ApiMetrics:
    """The app's Prometheus metrics."""
    metrics: ApiMetrics = request.app.state.metrics
    return metrics


def get_session(request: Request) -> Iterator[Session]:
    """One session per request: commit on success, roll back on error, always close."""
    factory: sessionmaker[Session] = request.app.state.session_factory
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        try:
            session.rollback()
        except SQLAlchemyError:  # the connection may be gone: keep the original error
            logger.debug("rollback failed", exc_info=True)
        raise
    finally:
        session.close()


async def require_json(request: Request) -> None:
    """Refuse request bodies that are not JSON with 415 (an empty body is left to validation)."""
    content_type = request.headers.get("content-type")
    if content_type is None:
        return
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    if message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    ):
        return
    raise ProblemError(
        415,
        f"the request body must be JSON (Content-Type: application/json), not {content_type!r}",
    )


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
ModelHolderDep = Annotated[ModelHolder, Depends(get_model_holder)]
PopularityDep = Annotated[StorePopularity, Depends(get_popularity)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]

_ID_DOC = "1-64 letters, digits or '_', '.', ':', '-'."
UserIdPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=ID_MAX_LENGTH,
        pattern=ID_PATTERN,
        description=f"User id: {_ID_DOC}",
        examples=["196"],
    ),
]
ItemIdPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=ID_MAX_LENGTH,
        pattern=ID_PATTERN,
        description=f"Item id: {_ID_DOC}",
        examples=["242"],
    ),
]
