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

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from email.message import Message
from typing import Annotated, TypeVar

import anyio
from fastapi import Depends, Path, Request, Response
from pydantic import BaseModel
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app.api.errors import ProblemError
from app.api.load_shedding import ScoringPool, ScoringQueueFullError, overloaded
from app.api.metrics import ApiMetrics
from app.domain import ID_MAX_LENGTH, ID_PATTERN
from app.services.catalog import CatalogCache
from app.services.model_holder import ModelHolder
from app.settings import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = [
    "CatalogDep",
    "ItemIdPath",
    "MetricsDep",
    "ModelHolderDep",
    "ReadSessionDep",
    "Recommender",
    "RecommenderDep",
    "SessionDep",
    "SettingsDep",
    "UserIdPath",
    "get_session",
    "model_response",
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


@dataclass(frozen=True)
class Recommender:
    """Everything ``GET /users/{id}/recommendations`` needs, as one dependency.

    One dependency rather than five: FastAPI resolves each one per request, and that
    is measurable on the hottest route. Built once per app by the lifespan.

    Attributes
    ----------
    read_engine : Engine
        Read-only work (autocommit on PostgreSQL, see :func:`get_read_session`); the
        handler opens one connection in its worker thread: no session, and no
        thread-pool hop to close one afterwards.
    holder : ModelHolder
    catalog : CatalogCache
    metrics : ApiMetrics
    scoring : ScoringPool
        The few threads that score (see :data:`app.api.main.SCORING_THREADS`), with
        a bounded queue (``RBMREC_MAX_QUEUE``).
    """

    read_engine: Engine
    holder: ModelHolder
    catalog: CatalogCache
    metrics: ApiMetrics
    scoring: ScoringPool

    async def score(self, work: Callable[[], T]) -> T:
        """Run ``work`` on the scoring threads; a 503 at once when their queue is full.

        One hop to a small pool of its own for the whole request: the work is CPU-bound
        under the GIL, so more threads would only contend for it (each holding a pooled
        connection meanwhile), and a plain executor hands over in a third of the time
        of AnyIO's worker threads.
        """
        try:
            future = self.scoring.submit(work)
        except ScoringQueueFullError as exc:
            self.metrics.shed.labels(reason="scoring_queue").inc()
            raise overloaded(str(exc)) from None
        return await asyncio.wrap_future(future)


async def get_recommender(request: Request) -> Recommender:
    """The app's :class:`Recommender`."""
    recommender: Recommender = request.app.state.recommender
    return recommender


async def get_catalog(request: Request) -> CatalogCache:
    """The cached catalog facts (popular items, genre index)."""
    catalog: CatalogCache = request.app.state.catalog
    return catalog


async def get_metrics(request: Request) -> ApiMetrics:
    """The app's Prometheus metrics."""
    metrics: ApiMetrics = request.app.state.metrics
    return metrics


def _finish(session: Session) -> None:
    try:
        session.commit()
    except BaseException:
        _discard(session)
        raise
    session.close()


def _discard(session: Session) -> None:
    try:
        session.rollback()
    except SQLAlchemyError:  # the connection may be gone: keep the original error
        logger.debug("rollback failed", exc_info=True)
    finally:
        session.close()


@contextlib.asynccontextmanager
async def _session_scope(factory: sessionmaker[Session]) -> AsyncIterator[Session]:
    session = factory()
    try:
        yield session
    except BaseException:
        with anyio.CancelScope(shield=True):
            if session.in_transaction():
                await run_in_threadpool(_discard, session)
            else:
                session.close()
        raise
    with anyio.CancelScope(shield=True):
        if session.in_transaction():
            await run_in_threadpool(_finish, session)
        else:
            session.close()


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One session per request: commit on success, roll back on error, always close.

    Creating a session does no I/O (it connects on first use), so it happens on the
    event loop; only the commit or rollback goes to the thread pool. The cleanup is
    shielded, so a client that disconnects never leaks a connection.
    """
    async with _session_scope(request.app.state.session_factory) as session:
        yield session


async def get_read_session(request: Request) -> AsyncIterator[Session]:
    """A session for handlers that only read.

    On PostgreSQL its statements run in autocommit mode: no ``BEGIN``/``COMMIT``
    round trips (a third less server CPU per recommendation, measured), at the cost
    that two statements of one request may see different snapshots. On SQLite it
    is an ordinary session.
    """
    async with _session_scope(request.app.state.read_session_factory) as session:
        yield session


def model_response(
    model: BaseModel, status_code: int = 200, *, exclude_unset: bool = False
) -> Response:
    """Serialize a response model to JSON directly.

    A plain ``def`` handler returning a model makes FastAPI validate that model once
    more, in another thread-pool hop; the models here are validated when built.
    ``exclude_unset`` leaves out optional fields nobody set (e.g. the explanations of
    a recommendation that was not asked to explain itself).
    """
    return Response(
        content=model.__pydantic_serializer__.to_json(model, exclude_unset=exclude_unset),
        status_code=status_code,
        media_type="application/json",
    )


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
ReadSessionDep = Annotated[Session, Depends(get_read_session, scope="function")]
RecommenderDep = Annotated[Recommender, Depends(get_recommender)]
ModelHolderDep = Annotated[ModelHolder, Depends(get_model_holder)]
CatalogDep = Annotated[CatalogCache, Depends(get_catalog)]
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
