"""One error shape for every 4xx and 5xx: RFC 9457 problem details.

Every error response is ``application/problem+json`` with ``type``, ``title``,
``status``, ``detail`` and ``instance`` (the request path); validation errors add
``errors``, a list of ``{loc, msg, type}`` naming each wrong field. Handlers here turn
framework errors (unknown route, wrong method, validation), domain errors and
database trouble into that shape; :class:`app.api.middleware.ResponseGuard`
catches whatever else escapes, logs its traceback, and answers a generic 500 so no
stack trace ever reaches a client.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError, ResponseValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from app.domain import ID_PATTERN, ID_RULE, InvalidIdError, InvalidRatingError, ItemsNotInStoreError
from app.schemas.problems import Problem, ValidationProblem

logger = logging.getLogger(__name__)

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "ProblemError",
    "install_error_handlers",
    "internal_error",
    "problem_response",
    "problem_responses",
]

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"

TYPE_VALIDATION: Final = "urn:rbmrec:problem:validation-error"
TYPE_UNKNOWN_ITEM: Final = "urn:rbmrec:problem:unknown-item"
TYPE_DATABASE_UNAVAILABLE: Final = "urn:rbmrec:problem:database-unavailable"
TYPE_SCHEMA_OUTDATED: Final = "urn:rbmrec:problem:database-schema-outdated"
TYPE_NO_MODEL: Final = "urn:rbmrec:problem:no-model"
TYPE_CONFLICT: Final = "urn:rbmrec:problem:conflict"


class ProblemError(Exception):
    """An error that becomes a problem-details response.

    Parameters
    ----------
    status : int
        HTTP status code.
    detail : str
        What went wrong for this request, in words a client can act on.
    title : str, optional
        Short summary of the problem type; default: the status phrase.
    type : str, default "about:blank"
        URI identifying the problem type.
    errors : sequence of mapping, optional
        Per-field errors (``loc``, ``msg``, ``type``), for 422 responses.
    headers : mapping, optional
        Extra response headers (``WWW-Authenticate``, ``Retry-After``).
    """

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        type: str = "about:blank",
        errors: Sequence[Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title
        self.type = type
        self.errors = errors
        self.headers = headers


def field_error(loc: Sequence[str | int], msg: str, type: str) -> dict[str, Any]:
    """One entry of a validation problem's ``errors`` list."""
    return {"loc": list(loc), "msg": msg, "type": type}


def validation_problem(detail: str, errors: Sequence[Mapping[str, Any]]) -> ProblemError:
    """A 422 problem listing the wrong fields."""
    return ProblemError(
        422, detail, title="Invalid request", type=TYPE_VALIDATION, errors=list(errors)
    )


def problem_response(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    type: str = "about:blank",
    instance: str | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """Build an ``application/problem+json`` response.

    Parameters
    ----------
    status : int
        HTTP status code.
    detail : str
        Explanation specific to this occurrence.
    title : str, optional
        Default: the HTTP status phrase (as RFC 9457 asks for ``about:blank``).
    type : str, default "about:blank"
        Problem type URI.
    instance : str, optional
        The request path.
    errors : sequence of mapping, optional
        Per-field validation errors.
    headers : mapping, optional
        Extra headers.

    Returns
    -------
    JSONResponse
    """
    body: dict[str, Any] = {
        "type": type,
        "title": title or _phrase(status),
        "status": status,
        "detail": detail,
    }
    if instance is not None:
        body["instance"] = instance
    if errors is not None:
        body["errors"] = list(errors)
    return JSONResponse(
        body, status_code=status, headers=dict(headers or {}), media_type=PROBLEM_MEDIA_TYPE
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _instance(request: Request) -> str:
    return request.url.path


# -- handlers ----------------------------------------------------------------------------
async def _handle_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem_response(
        exc.status,
        exc.detail,
        title=exc.title,
        type=exc.type,
        instance=_instance(request),
        errors=exc.errors,
        headers=exc.headers,
    )


_HTTP_DETAILS: Final = {
    404: "no such resource: check the path (the API is described at /docs)",
    405: "this method is not allowed on this path (see the Allow header)",
}


async def _handle_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else _phrase(exc.status_code)
    # Starlette's own 404/405 details are just the status phrase: say more.
    if detail == _phrase(exc.status_code):
        detail = _HTTP_DETAILS.get(exc.status_code, detail)
    headers = dict(exc.headers or {})
    if exc.status_code == 405 and (allowed := _allowed_methods(request)):
        headers["Allow"] = ", ".join(allowed)
    return problem_response(exc.status_code, detail, instance=_instance(request), headers=headers)


_HTTP_METHODS: Final = frozenset({"get", "put", "post", "delete", "options", "head", "patch"})


def _allowed_methods(request: Request) -> list[str]:
    """Every method the OpenAPI document lists for this path.

    Starlette's own ``Allow`` names the methods of the first route whose path
    matched, where ``GET`` and ``POST`` of one path are two routes.
    """
    table: list[tuple[re.Pattern[str], set[str]]] | None = getattr(
        request.app.state, "allowed_methods", None
    )
    if table is None:
        table = [
            (compile_path(path)[0], {m.upper() for m in item if m in _HTTP_METHODS})
            for path, item in request.app.openapi().get("paths", {}).items()
        ]
        request.app.state.allowed_methods = table
    path = request.url.path
    return sorted({m for regex, methods in table if regex.match(path) for m in methods})


def _message(err: Mapping[str, Any]) -> str:
    """pydantic's message, except for ids: the rule in words rather than the regex."""
    ctx = err.get("ctx") or {}
    if err.get("type") == "string_pattern_mismatch" and ctx.get("pattern") == ID_PATTERN:
        return f"an id must be {ID_RULE}"
    return str(err.get("msg", ""))


def _clean_errors(raw: Sequence[Any]) -> list[dict[str, Any]]:
    # Only loc/msg/type: "input" would echo request data (possibly huge) and "ctx"
    # may hold exception objects that do not serialise.
    out: list[dict[str, Any]] = []
    for err in raw:
        loc = [part if isinstance(part, int) else str(part) for part in err.get("loc", ())]
        out.append(field_error(loc, _message(err), str(err.get("type", ""))))
    return out


MAX_LISTED_ERRORS: Final = 100
"""Most field errors listed in one 422 answer (a 10,000-entry batch can have 10,000)."""


async def _handle_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    raw = exc.errors()
    # Cleaned and listed up to a bound, so the answer stays small whatever was sent.
    errors = _clean_errors(raw[:MAX_LISTED_ERRORS])
    shown = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:3])
    more = f" (and {len(raw) - 3} more)" if len(raw) > 3 else ""
    listed = (
        f"; {len(raw)} errors, the first {MAX_LISTED_ERRORS} are listed"
        if len(raw) > MAX_LISTED_ERRORS
        else ""
    )
    return problem_response(
        422,
        f"the request is invalid: {shown}{more}{listed}",
        title="Invalid request",
        type=TYPE_VALIDATION,
        instance=_instance(request),
        errors=errors,
    )


async def _handle_domain(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, ItemsNotInStoreError):
        return problem_response(
            404, str(exc), title="Unknown item", type=TYPE_UNKNOWN_ITEM, instance=_instance(request)
        )
    # InvalidIdError / InvalidRatingError that slipped past the schema checks.
    return problem_response(
        422,
        str(exc),
        title="Invalid request",
        type=TYPE_VALIDATION,
        instance=_instance(request),
        errors=[field_error(["body"], str(exc), "value_error")],
    )


def database_unavailable(detail: str | None = None) -> ProblemError:
    """The 503 problem answered while the database cannot be reached."""
    return ProblemError(
        503,
        detail or "the ratings database is not reachable or timed out; retry in a few seconds",
        title="Database unavailable",
        type=TYPE_DATABASE_UNAVAILABLE,
        headers={"Retry-After": "5"},
    )


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


async def _handle_database(request: Request, exc: Exception) -> JSONResponse:
    where = f"{request.method} {request.url.path}"
    if isinstance(exc, PoolTimeoutError | OperationalError | InterfaceError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        logger.warning("database unavailable during %s: %s", where, _first_line(exc))
        return await _handle_problem(request, database_unavailable())
    if isinstance(exc, ProgrammingError) and (
        "no such table" in str(exc.orig) or "does not exist" in str(exc.orig)
    ):
        logger.error("database schema outdated during %s: %s", where, _first_line(exc))
        return problem_response(
            503,
            "the database schema is not up to date; an operator must run `rbmrec db upgrade`",
            title="Database schema outdated",
            type=TYPE_SCHEMA_OUTDATED,
            instance=_instance(request),
            headers={"Retry-After": "30"},
        )
    if isinstance(exc, IntegrityError):
        logger.warning("conflicting write during %s: %s", where, _first_line(exc))
        return problem_response(
            409,
            "the write conflicted with a concurrent change; retry it",
            title="Conflict",
            type=TYPE_CONFLICT,
            instance=_instance(request),
        )
    if isinstance(exc, DataError):
        logger.warning("database refused a value during %s: %s", where, _first_line(exc))
        return problem_response(
            422,
            "the database refused a value of this request",
            title="Invalid request",
            type=TYPE_VALIDATION,
            instance=_instance(request),
            errors=[],
        )
    logger.error("database error during %s", where, exc_info=exc)
    return internal_error(request.url.path)


async def _handle_response_validation(request: Request, exc: Exception) -> JSONResponse:
    logger.error(
        "response of %s %s does not match its schema",
        request.method,
        request.url.path,
        exc_info=exc,
    )
    return internal_error(request.url.path)


def internal_error(path: str) -> JSONResponse:
    """The generic 500 problem (the details go to the log, never to the client)."""
    return problem_response(
        500,
        "an unexpected error occurred; it has been logged",
        instance=path,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the problem-details handlers on ``app``."""
    app.add_exception_handler(ProblemError, _handle_problem)
    app.add_exception_handler(StarletteHTTPException, _handle_http)
    app.add_exception_handler(RequestValidationError, _handle_validation)
    app.add_exception_handler(ResponseValidationError, _handle_response_validation)
    for domain_error in (InvalidIdError, InvalidRatingError, ItemsNotInStoreError):
        app.add_exception_handler(domain_error, _handle_domain)
    for db_error in (DBAPIError, PoolTimeoutError):
        app.add_exception_handler(db_error, _handle_database)


# -- OpenAPI -------------------------------------------------------------------------
_RESPONSE_DESCRIPTIONS: Final = {
    400: "The request body is not valid JSON (e.g. not UTF-8).",
    401: "No API key (``Authorization: Bearer <key>``) was sent, or it is not a configured key.",
    403: "The API key is a configured key, but its role does not cover this operation.",
    404: "Not found.",
    409: "A concurrent write conflicted; retry.",
    413: "The request body is too large.",
    415: "The request body is not JSON.",
    422: "The request is invalid; ``errors`` lists each wrong field.",
    500: "Unexpected server error (logged; no details are returned).",
    503: "The database is unavailable (or its schema outdated); retry later.",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for error statuses, all problem details.

    Parameters
    ----------
    *statuses : int
        The statuses the operation can answer besides its success.

    Returns
    -------
    dict
        For ``FastAPI(responses=...)`` / ``APIRouter(responses=...)`` / a route.
    """
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        model = ValidationProblem if status == 422 else Problem
        out[status] = {
            "model": model,
            "description": _RESPONSE_DESCRIPTIONS.get(status, _phrase(status)),
        }
    return out


_WRITE_METHODS: Final = frozenset({"post", "put", "patch", "delete"})
_PROBLEM_REF: Final = "#/components/schemas/Problem"
_VALIDATION_PROBLEM_REF: Final = "#/components/schemas/ValidationProblem"


def document_common_statuses(schema: dict[str, Any]) -> None:
    """Add to each operation of an OpenAPI document the errors that the layers around
    its handler can answer, so that every status the server sends is documented.

    * an operation with a body: 400 (not JSON, or not UTF-8: FastAPI's parser), 413
      (:class:`app.api.middleware.BodySizeLimitMiddleware`), 415 (``require_json``) and
      422;
    * every write method: 413 (the size limit reads any body) and 409 (a concurrent
      write's integrity error, see ``_handle_database``).

    Parameters
    ----------
    schema : dict
        The document, changed in place; its components must hold ``Problem`` and
        ``ValidationProblem``.
    """
    for item in schema.get("paths", {}).values():
        for method, operation in item.items():
            statuses: set[int] = set()
            if "requestBody" in operation:
                statuses |= {400, 413, 415, 422}
            if method in _WRITE_METHODS:
                statuses |= {409, 413}
            responses = operation.setdefault("responses", {})
            for status in sorted(statuses):
                ref = _VALIDATION_PROBLEM_REF if status == 422 else _PROBLEM_REF
                responses.setdefault(
                    str(status),
                    {
                        "description": _RESPONSE_DESCRIPTIONS[status],
                        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": ref}}},
                    },
                )
