"""The app's own ASGI middleware: the response guard, the URL and body size limits.

:class:`ResponseGuard` wraps everything the app does: it puts the security headers
on every response and answers a generic 500 problem for any unhandled exception.
Only the two middlewares of :mod:`app.api.proxy` sit outside it (the forwarded
client and scheme, the replica's name), so it sees the scheme a trusted proxy
forwarded and its 500 answers name the replica too.

:class:`BodySizeLimitMiddleware` enforces ``RBMREC_MAX_BODY_BYTES``: a declared
``Content-Length`` over the limit is refused before anything is read. Bodies
without one (chunked transfer encoding) are counted as they arrive, and reading
stops with 413 as soon as the count passes the limit, so an endless body never
fills memory.

:class:`UrlLengthLimitMiddleware` answers 414 to a request whose path and query
string together are longer than :data:`MAX_URL_BYTES`.

(Request metrics are counted by :class:`app.api.metrics.MetricsMiddleware`.)
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import parse_qsl

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.contract import single_valued_query_parameters
from app.api.errors import TYPE_VALIDATION, field_error, internal_error, problem_response

logger = logging.getLogger(__name__)

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "HSTS",
    "MAX_URL_BYTES",
    "SECURITY_HEADERS",
    "BodySizeLimitMiddleware",
    "BodyTooLargeError",
    "RepeatedQueryMiddleware",
    "ResponseGuard",
    "UrlLengthLimitMiddleware",
]

CONTENT_SECURITY_POLICY: Final = "default-src 'none'; frame-ancestors 'none'"
HSTS: Final = "max-age=63072000; includeSubDomains"

SECURITY_HEADERS: Final = (
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
)
"""Headers :class:`ResponseGuard` puts on every response (unless it has them)."""


class ResponseGuard:
    """Security headers on every HTTP response, and a generic 500 for what escapes.

    Adds, unless the response already has them:

    * ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY`` and
      ``Referrer-Policy: no-referrer``;
    * ``Cache-Control: no-store``: answers hold users' ratings and recommendations;
      neither browsers nor shared proxies keep them;
    * ``Content-Security-Policy: default-src 'none'; frame-ancestors 'none'``: a
      JSON API loads nothing and is framed by nobody; should a browser ever render
      one of its responses, no script runs. Pages that load scripts (``/docs``,
      ``/dashboard``) set a policy of their own that allows this origin only;
    * ``Strict-Transport-Security`` when the request came over HTTPS (directly, or
      through a proxy listed in ``RBMREC_TRUSTED_PROXIES``: :mod:`app.api.proxy`).

    An unhandled exception is logged with its traceback and answered with a 500
    problem document (with these headers). Unlike an ``Exception`` handler (which
    Starlette runs in its outermost middleware and then re-raises), this answers the
    request and stops there, so the server does not log the error twice.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    headers.setdefault(name, value)
                headers.setdefault("content-security-policy", CONTENT_SECURITY_POLICY)
                if https:
                    headers.setdefault("strict-transport-security", HSTS)
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            logger.exception(
                "unhandled error on %s %s", scope.get("method", "?"), scope.get("path", "?")
            )
            if started:
                raise
            await internal_error(str(scope.get("path", "")))(scope, receive, send_with_headers)


MAX_URL_BYTES: Final = 8192
"""Longest request target (path, ``?`` and query string, as sent) the API answers.

Below what the HTTP parsers take whole (uvicorn's h11 refuses request heads over 16
KiB; some proxies cut URLs past 8 KiB), so no URL is ever handled cut short: a longer
one is refused with 414. The query bounds are sized to fit under it
(:data:`app.api.users.MAX_EXCLUDE`)."""


class UrlLengthLimitMiddleware:
    """Answer 414 (problem details) to a request target longer than ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_URL_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw_path = scope.get("raw_path") or scope.get("path", "").encode()
            query = scope.get("query_string", b"")
            length = len(raw_path) + (1 + len(query) if query else 0)
            if length > self.max_bytes:
                response = problem_response(
                    414,
                    f"the URL is {length} bytes long; the limit is {self.max_bytes} bytes "
                    "(path and query string)",
                    instance=scope.get("path", "")[:200],
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class RepeatedQueryMiddleware:
    """Answer 422 (problem details) to a query parameter given more than once that takes
    one value (``?genre=a&genre=b``): Starlette would silently keep the last.

    Which parameters take one value comes from the app's OpenAPI document (every query
    parameter that is not an array: :func:`app.api.contract.single_valued_query_parameters`),
    read at the first request that has several parameters; a query string with one
    parameter is not parsed at all.
    """

    def __init__(self, app: ASGIApp, openapi: Callable[[], dict[str, Any]]) -> None:
        self.app = app
        self.openapi = openapi
        self._single: frozenset[str] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = scope.get("query_string", b"") if scope["type"] == "http" else b""
        repeated = self._repeated(query) if b"&" in query else {}
        if not repeated:
            await self.app(scope, receive, send)
            return
        response = problem_response(
            422,
            f"{len(repeated)} query parameter(s) given more than once; each takes one value",
            title="Invalid request",
            type=TYPE_VALIDATION,
            instance=scope.get("path", "")[:200],
            errors=[
                field_error(["query", name], f"given {count} times; give it once", "repeated")
                for name, count in sorted(repeated.items())
            ],
        )
        await response(scope, receive, send)

    def _repeated(self, query: bytes) -> dict[str, int]:
        """The single-valued parameters given more than once, with how often."""
        counts = Counter(
            name for name, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True)
        )
        several = {name: count for name, count in counts.items() if count > 1}
        if several and self._single is None:
            self._single = single_valued_query_parameters(self.openapi())
        return {name: count for name, count in several.items() if name in (self._single or ())}


_METHODS_WITH_BODY: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class BodyTooLargeError(HTTPException):
    """Raised from ``receive`` when the body passes the limit (FastAPI re-raises it as is)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"the request body is larger than the limit of {limit} bytes",
            headers={"Connection": "close"},
        )


class BodySizeLimitMiddleware:
    """Answer 413 (problem details) to request bodies larger than ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in _METHODS_WITH_BODY:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send, BodyTooLargeError(self.max_bytes))
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLargeError(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLargeError as exc:
            # Normally FastAPI turns it into a response itself; this covers code that
            # reads the body outside a route handler.
            if started:
                raise
            await self._refuse(scope, receive, send, exc)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, exc: BodyTooLargeError) -> None:
        response = problem_response(
            413, str(exc.detail), instance=str(scope.get("path", "")), headers=exc.headers
        )
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
