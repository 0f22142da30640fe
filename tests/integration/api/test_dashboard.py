"""The dashboard's pages over HTTP, on both stores, with versions trained by the real job.

(The pages' scripts are exercised in a real browser by tests/browser.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from _api_support import SMALL_TRAINING, Subset, load_subset
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.api.dashboard import DASHBOARD_CSP
from app.services.registry import ModelVersionInfo
from app.services.retrain import run_retrain, train_and_activate
from app.settings import Settings

ADMIN = "dashboard-admin-key"
PAGES = [
    "/dashboard",
    "/dashboard/models",
    "/dashboard/runs",
    "/dashboard/try",
    "/dashboard/items/50",
]


@pytest.fixture
def trained(
    store: sessionmaker[Session], ml_subset: Subset, make_settings: Callable[..., Settings]
) -> list[ModelVersionInfo]:
    """The subset, and two versions trained by the retrain job (the second one active)."""
    load_subset(store, ml_subset)
    settings = make_settings()
    return [
        train_and_activate(store, settings, params={**SMALL_TRAINING, "random_state": seed})
        for seed in (1, 2)
    ]


@pytest.fixture
def dashboard(
    trained: list[ModelVersionInfo], make_client: Callable[..., TestClient]
) -> TestClient:
    return make_client(admin_api_keys=[ADMIN])


def _chart_data(html: str) -> dict[str, list[dict[str, Any]]]:
    found = re.search(r'<script type="application/json" id="chart-data">(.*?)</script>', html, re.S)
    assert found is not None
    data: dict[str, list[dict[str, Any]]] = json.loads(found.group(1))
    return data


def test_every_page_is_served_with_a_self_only_policy(dashboard: TestClient) -> None:
    for path in PAGES:
        page = dashboard.get(path)
        assert page.status_code == 200, (path, page.text)
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"] == DASHBOARD_CSP
        html = page.text
        # no inline script: only external files and JSON data
        for tag in re.findall(r"<script[^>]*>", html):
            assert 'src="/static/' in tag or 'type="application/json"' in tag, tag
        assert "style=" not in html
        # every asset is the app's own, and is served
        for url in re.findall(r'(?:src|href)="([^"#]+)"', html):
            assert url.startswith("/") or url == "data:,", url  # data:, the empty icon
            if url.startswith("/static/"):
                assert dashboard.get(url).status_code == 200, url


def test_the_models_page_charts_one_point_per_epoch(
    dashboard: TestClient, trained: list[ModelVersionInfo]
) -> None:
    html = dashboard.get("/dashboard/models").text
    data = _chart_data(html)
    for version in trained:
        assert version.id in html
        stored = dashboard.get(
            f"/models/{version.id}", headers={"Authorization": f"Bearer {ADMIN}"}
        )
        curves = stored.json()["training_curves"]
        charts = {chart["id"]: chart for chart in data[version.id]}
        assert set(charts) == {"reconstruction", "validation_rmse", "free_energy_gap"}
        for chart_id, names in (
            ("reconstruction", {"reconstruction_error", "train_rmse"}),
            ("validation_rmse", {"validation_rmse"}),
            ("free_energy_gap", {"free_energy_gap"}),
        ):
            chart = charts[chart_id]
            parts = {s["label"]: s for s in chart["series"]}
            assert "user_rbm" in parts, chart_id
            for part, series in parts.items():
                assert series["curve"] in names
                stored_values = curves[part][series["curve"]]
                assert series["values"][: len(stored_values)] == pytest.approx(stored_values)
            assert len(chart["epochs"]) == max(len(curves[p]["epoch"]) for p in parts)
            assert f'data-chart="{chart_id}" data-epochs="{len(chart["epochs"])}"' in html
    # the older version can be activated (rolled back to), the active one not
    assert f'class="activate" data-version="{trained[0].id}"' in html
    assert f'class="activate" data-version="{trained[1].id}"' not in html


def test_the_overview_shows_the_model_health_access_and_traffic(
    dashboard: TestClient, trained: list[ModelVersionInfo]
) -> None:
    for _ in range(3):
        assert dashboard.get("/users/1/recommendations").status_code == 200
    assert dashboard.get("/static/dashboard/dashboard.css").status_code == 200
    exposition = dashboard.get("/metrics").text
    assert 'route="/static/{path}"' in exposition  # assets are counted under a template
    assert "<unmatched>" not in exposition
    html = dashboard.get("/dashboard").text
    active = trained[1]
    assert active.id in html
    assert trained[0].id in html
    assert f"{active.n_ratings:,} ratings" in html
    # admin keys only: the API is keyed, writes and admin routes need a key, reads do not
    assert 'API</dt><dd><span class="badge badge-ok">keyed' in html
    assert "admin key required" in html
    assert 'Writes</dt><dd><span class="badge badge-ok">write key required' in html
    assert 'Users\' data</dt><dd><span class="badge badge-warn">public' in html
    assert "does not answer" not in html
    assert f"{active.metrics['validation_rmse']:.4f}" in html
    row = re.search(
        r"<code>GET /users/\{user_id\}/recommendations</code></td>\s*<td[^>]*>(\d+)<", html
    )
    assert row is not None
    assert int(row.group(1)) == 3


def test_the_runs_page_and_the_gate_reason(
    dashboard: TestClient,
    trained: list[ModelVersionInfo],
    store: sessionmaker[Session],
    make_settings: Callable[..., Settings],
) -> None:
    rated = dashboard.post(
        "/ratings",
        json={"user_id": "new", "item_id": "50", "rating": 5},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert rated.status_code == 201
    run = run_retrain(store, make_settings(), trigger="cli", params=SMALL_TRAINING)
    assert run.status in {"activated", "rejected"}
    assert run.reason
    runs = dashboard.get("/dashboard/runs").text
    assert run.id in runs
    assert run.status in runs
    assert run.reason.split(";")[0] in runs.replace("&#39;", "'")
    models = dashboard.get("/dashboard/models").text.replace("&#39;", "'")
    assert run.metrics["decision"] in models
    assert run.reason.split(";")[0] in models


def test_the_item_page_shows_details_and_similar_items(dashboard: TestClient) -> None:
    page = dashboard.get("/dashboard/items/50")
    assert "Star Wars (1977)" in page.text
    similar = dashboard.get("/items/50/similar", params={"n": 10}).json()["items"]
    for item in similar:
        assert f'href="/dashboard/items/{item["item_id"]}"' in page.text
    missing = dashboard.get("/dashboard/items/no-such-item")
    assert missing.status_code == 404
    assert "no item" in missing.text


def test_the_dashboard_can_be_turned_off(make_client: Callable[..., TestClient]) -> None:
    off = make_client(dashboard_enabled=False)
    assert off.get("/dashboard").status_code == 404
    assert off.get("/docs").status_code == 200  # its assets are still served
    assert off.get("/static/vendor/swagger-ui/swagger-ui-bundle.js").status_code == 200


def test_docs_load_swagger_ui_from_the_app(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in assets
    assert "/static/vendor/swagger-ui/swagger-ui.css" in assets
    assert all(url.startswith("/") for url in assets), assets
    assert "cdn" not in page.text
    for url in assets:
        assert client.get(url).status_code == 200, url
    assert client.get("/redoc").status_code == 404
    described = client.get("/openapi.json").json()
    assert "/dashboard" in described["info"]["description"]
    assert "/recommendations" in described["paths"]
