"""Security headers on every response, as pure ASGI middleware.

Adds, unless the response already has them:

* ``Content-Security-Policy: default-src 'none'; frame-ancestors 'none'``: a JSON
  API loads nothing and is framed by nobody; should a browser ever render one of
  its responses, no script runs. The documentation pages (``/docs``, ``/redoc``)
  are left without it, since they load Swagger UI and ReDoc from a CDN.
* ``Cache-Control: no-store``: answers hold users' ratings and recommendations;
  neither browsers nor shared proxies keep them.
* ``Strict-Transport-Security`` when the request came over HTTPS (directly, or
  through a proxy listed in ``RBMREC_TRUSTED_PROXIES``: :mod:`app.api.proxy`).

``X-Content-Type-Options``, ``X-Frame-Options`` and ``Referrer-Policy`` come from
:class:`app.api.errors.ServerErrorGuard`.
"""

from __future__ import annotations

from typing import Final

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DOCS_PATHS", "SecurityHeadersMiddleware"]

CONTENT_SECURITY_POLICY: Final = "default-src 'none'; frame-ancestors 'none'"
HSTS: Final = "max-age=63072000; includeSubDomains"
DOCS_PATHS: Final = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})


class SecurityHeadersMiddleware:
    """Add the headers listed in the module docstring to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope.get("path") in DOCS_PATHS
        https = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if not docs:
                    headers.setdefault("content-security-policy", CONTENT_SECURITY_POLICY)
                headers.setdefault("cache-control", "no-store")
                if https:
                    headers.setdefault("strict-transport-security", HSTS)
            await send(message)

        await self.app(scope, receive, send_with_headers)
