"""The operator dashboard (``/dashboard``): server-rendered pages and their static assets.

Pages: the overview, the model versions with their training curves, the retrain
runs, "try it" (recommendations with explanations for ratings given in the page or
for a stored user) and an item's page. They only read; the few actions (activate a
version, queue a retrain, store the page's ratings) are calls of the JSON API from
the page's script, with the key the operator typed in sent as ``Authorization:
Bearer`` (kept in the tab's ``sessionStorage``, never in a URL or a cookie).

Every page carries a Content-Security-Policy that allows only the app's own scripts,
styles, images and API (no inline script: data for the charts travels as JSON in
``<script type="application/json">``, which browsers never run). The assets, uPlot
included (vendored from npm with its licence), are served by the app from
``app/dashboard/static`` under ``/static``: the dashboard works offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from app.api.deps import (
    CatalogDep,
    ItemIdPath,
    MetricsDep,
    ModelHolderDep,
    ReadSessionDep,
    SettingsDep,
)
from app.api.security import auth_mode, protected
from app.services import dashboard as dashboard_service

__all__ = ["DASHBOARD_CSP", "STATIC_DIR", "mount_static", "router"]

PACKAGE_DIR: Final = Path(__file__).resolve().parent.parent / "dashboard"
STATIC_DIR: Final = PACKAGE_DIR / "static"
TEMPLATES_DIR: Final = PACKAGE_DIR / "templates"

DASHBOARD_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
"""Only the app's own assets and API; uPlot's and the page's inline ``style``
properties are set from script (CSSOM), which ``style-src 'self'`` allows."""

templates = Jinja2Templates(directory=str(TEMPLATES_DIR))

router = APIRouter(prefix="/dashboard", include_in_schema=False)

PAGES: Final = (
    ("overview", "Overview", ""),
    ("models", "Models", "/models"),
    ("runs", "Retrain runs", "/runs"),
    ("try", "Try it", "/try"),
)


@dataclass(frozen=True)
class _StaticRoute:
    path: str = "/static/{path}"


class _StaticFiles(StaticFiles):
    """The static assets; browsers revalidate them (ETag) rather than keep stale copies."""

    _route: Final = _StaticRoute()

    async def get_response(self, path: str, scope: Scope) -> Response:
        # the request metrics label requests by the matched route's template; a mount
        # names none, and the assets would count as unmatched paths
        scope["route"] = self._route
        response = await super().get_response(path, scope)
        response.headers.setdefault("cache-control", "no-cache")
        return response


def mount_static(app: FastAPI) -> None:
    """Serve the dashboard's and the API documentation's assets under ``/static``."""
    app.mount("/static", _StaticFiles(directory=str(STATIC_DIR)), name="static")


def _render(
    request: Request, page: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    response = templates.TemplateResponse(
        request,
        f"{page}.html",
        {
            "page": page,
            "pages": PAGES,
            "base": f"{root}/dashboard",
            "static": f"{root}/static",
            "api": root,
            **context,
        },
        status_code=status_code,
    )
    response.headers["content-security-policy"] = DASHBOARD_CSP
    return response


@router.get("", response_class=HTMLResponse)
def overview_page(
    request: Request,
    session: ReadSessionDep,
    holder: ModelHolderDep,
    metrics: MetricsDep,
    settings: SettingsDep,
) -> HTMLResponse:
    """Active model, its metrics beside the previous versions, health, keys, traffic."""
    view = dashboard_service.overview(
        session,
        request.app.state.session_factory,
        holder,
        metrics,
        auth_mode=auth_mode(settings),
        reads_open=not protected(settings, "read"),
        writes_open=not protected(settings, "write"),
        admin_open=not protected(settings, "admin"),
    )
    return _render(request, "overview", {"view": view})


@router.get("/models", response_class=HTMLResponse)
def models_page(request: Request, session: ReadSessionDep, holder: ModelHolderDep) -> HTMLResponse:
    """Every version: status, metrics, the gate's decision, training curves, activation."""
    rows = dashboard_service.version_rows(session, holder)
    charts = {row.info.id: row.charts for row in rows}
    return _render(request, "models", {"rows": rows, "charts": charts})


@router.get("/runs", response_class=HTMLResponse)
def runs_page(request: Request, session: ReadSessionDep) -> HTMLResponse:
    """The retrain runs: status, timings, outcome, errors; "retrain now"."""
    return _render(request, "runs", {"runs": dashboard_service.run_rows(session)})


@router.get("/try", response_class=HTMLResponse)
def try_page(request: Request, settings: SettingsDep) -> HTMLResponse:
    """Search the catalogue, rate items in the page or pick a user, see recommendations."""
    levels = [f"{value:g}" for value in settings.rating_scale.values]
    return _render(request, "try", {"levels": levels})


@router.get("/items/{item_id}", response_class=HTMLResponse)
def item_page(
    request: Request,
    item_id: ItemIdPath,
    session: ReadSessionDep,
    holder: ModelHolderDep,
    catalog: CatalogDep,
) -> HTMLResponse:
    """An item's details and the items most similar to it in the served model."""
    view = dashboard_service.item_view(session, holder, catalog, item_id)
    return _render(
        request,
        "item",
        {"view": view, "item_id": item_id},
        status_code=200 if view.item is not None else 404,
    )
