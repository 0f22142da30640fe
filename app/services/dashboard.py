"""What the dashboard's pages show, gathered from the registry, the runs, the model
holder and the process's metrics (plain functions; the pages only render it).

Everything here reads; the dashboard's only writes (activate a version, queue a
retrain, store ratings) go through the JSON API from the page, with the key the
operator typed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.api.metrics import ApiMetrics, RouteTraffic
from app.db.engine import ping
from app.db.ratings import item_rating_summary
from app.db.tables import Item
from app.services import registry, retrain
from app.services.catalog import CatalogCache
from app.services.model_holder import ModelHolder
from app.services.recommend import ItemNotInModelError, NoModelError, similar_items
from app.services.registry import ModelVersionInfo
from app.services.retrain import TrainingRunInfo

__all__ = [
    "CHARTS",
    "ItemView",
    "Overview",
    "VersionRow",
    "item_view",
    "overview",
    "run_rows",
    "version_rows",
]

CHARTS: Final = (
    (
        "reconstruction",
        "Reconstruction error",
        "RMSE of the contrastive-divergence reconstructions of the training ratings",
        ("reconstruction_error", "train_rmse"),
    ),
    (
        "validation_rmse",
        "Validation RMSE",
        "RMSE of the held-out ratings predicted from the training ratings",
        ("validation_rmse",),
    ),
    (
        "free_energy_gap",
        "Free-energy gap",
        "Mean validation minus mean training free energy: growing means overfitting",
        ("free_energy_gap",),
    ),
)
"""The training-curve charts of a version: (id, title, what it shows, curve names
tried in order: the first one a part recorded is charted)."""

VERSIONS_SHOWN: Final = 50
RUNS_SHOWN: Final = 50


@dataclass(frozen=True)
class VersionRow:
    """One model version as the pages show it."""

    info: ModelVersionInfo
    rmse: float | None
    ndcg: float | None
    decision: str | None
    reason: str | None
    charts: list[dict[str, Any]]
    served: bool

    @property
    def activatable(self) -> bool:
        return self.info.status != "active" and self.info.artifact_available


@dataclass(frozen=True)
class Overview:
    """The overview page."""

    active: VersionRow | None
    served_version: str | None
    model_error: str | None
    model_checked: datetime | None
    versions: list[VersionRow]
    database_ok: bool
    auth_mode: str
    reads_open: bool
    writes_open: bool
    admin_open: bool
    traffic: list[RouteTraffic]
    total_per_second: float
    uptime_seconds: float


@dataclass(frozen=True)
class ItemView:
    """The item page."""

    item: Item | None
    n_ratings: int = 0
    mean_rating: float | None = None
    similar: list[dict[str, Any]] = field(default_factory=list)
    similar_error: str | None = None


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _parts(curves: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The curves of each part; versions trained before the model had parts hold one set."""
    if curves and all(isinstance(value, dict) for value in curves.values()):
        return {str(name): value for name, value in curves.items()}
    return {"model": curves} if curves else {}


def _as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else [value]


def chart_data(curves: dict[str, Any]) -> list[dict[str, Any]]:
    """The charts of :data:`CHARTS` for one version: x = epochs, one series per part.

    Each series has one point per epoch its part trained (``None`` where it recorded
    no value); parts that stopped early are padded with ``None`` to the longest.
    """
    charts = []
    parts = _parts(curves)
    for chart_id, title, description, names in CHARTS:
        found: list[tuple[str, str, list[float | None]]] = []
        for part, part_curves in parts.items():
            for name in names:
                values = [_number(v) for v in _as_list(part_curves.get(name, []))]
                if any(v is not None for v in values):
                    found.append((part, name, values))
                    break
        if not found:
            continue
        epochs = max(len(values) for _, _, values in found)
        series = [
            {"label": part, "curve": name, "values": values + [None] * (epochs - len(values))}
            for part, name, values in found
        ]
        charts.append(
            {
                "id": chart_id,
                "title": title,
                "description": description,
                "epochs": list(range(1, epochs + 1)),
                "series": series,
            }
        )
    return charts


def _row(
    info: ModelVersionInfo, reasons: dict[str, str], served: str | None, *, charts: bool
) -> VersionRow:
    metrics = info.metrics
    decision = metrics.get("decision")
    return VersionRow(
        info=info,
        rmse=_number(metrics.get("validation_rmse")),
        ndcg=_number(metrics.get("validation_ndcg_at_10")),
        decision=str(decision) if decision is not None else None,
        reason=info.note or reasons.get(info.id),
        charts=chart_data(info.training_curves) if charts else [],
        served=info.id == served,
    )


def _gate_reasons(session: Session) -> dict[str, str]:
    """The gate's reason for each version, from the run that produced it."""
    reasons: dict[str, str] = {}
    for run in retrain.list_runs(session, limit=4 * VERSIONS_SHOWN):
        if run.model_version_id and run.reason and run.model_version_id not in reasons:
            reasons[run.model_version_id] = run.reason
    return reasons


def version_rows(
    session: Session, holder: ModelHolder, *, charts: bool = True, limit: int = VERSIONS_SHOWN
) -> list[VersionRow]:
    """The newest versions with their metrics, gate decision and reason, and charts."""
    loaded = holder.current
    served = loaded.version.id if loaded is not None else None
    reasons = _gate_reasons(session)
    return [
        _row(info, reasons, served, charts=charts)
        for info in registry.list_versions(session, limit=limit)
    ]


def run_rows(session: Session) -> list[TrainingRunInfo]:
    """The newest retrain runs."""
    return retrain.list_runs(session, limit=RUNS_SHOWN)


def overview(
    session: Session,
    session_factory: sessionmaker[Session],
    holder: ModelHolder,
    metrics: ApiMetrics,
    *,
    auth_mode: str,
    reads_open: bool,
    writes_open: bool,
    admin_open: bool,
) -> Overview:
    """The overview page's facts; a database that does not answer is shown, not raised."""
    status = holder.status()
    served = status.loaded.version.id if status.loaded is not None else None
    database_ok = True
    versions: list[VersionRow] = []
    try:
        ping(session_factory)
        versions = version_rows(session, holder, charts=False, limit=10)
    except SQLAlchemyError:
        database_ok = False
    active = next((row for row in versions if row.info.status == "active"), None)
    traffic = metrics.traffic()
    uptime = metrics.uptime()
    return Overview(
        active=active,
        served_version=served,
        model_error=status.error,
        model_checked=status.last_check,
        versions=versions,
        database_ok=database_ok,
        auth_mode=auth_mode,
        reads_open=reads_open,
        writes_open=writes_open,
        admin_open=admin_open,
        traffic=traffic,
        total_per_second=sum(t.requests for t in traffic) / uptime,
        uptime_seconds=uptime,
    )


def item_view(
    session: Session, holder: ModelHolder, catalog: CatalogCache, item_id: str, n: int = 10
) -> ItemView:
    """An item, its ratings' count and mean, and its most similar items in the served model."""
    item = session.get(Item, item_id)
    if item is None:
        return ItemView(item=None)
    count, mean = item_rating_summary(session, item_id)
    similar: list[dict[str, Any]] = []
    error = None
    try:
        similar = [
            s.model_dump() for s in similar_items(session, holder.current, catalog, item_id, n)
        ]
    except (NoModelError, ItemNotInModelError) as exc:
        error = str(exc)
    return ItemView(
        item=item, n_ratings=count, mean_rating=mean, similar=similar, similar_error=error
    )
