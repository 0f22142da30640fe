"""``rbmrec models``: list the registered model versions, activate one (rollback)."""

from __future__ import annotations

import json

import typer

from app.cli.common import fail, load_settings, open_store
from app.services import registry
from app.services.artifacts import ArtifactIntegrityError

models_app = typer.Typer(help="Model versions: list them, activate one.", no_args_is_help=True)


def _metric(version: registry.ModelVersionInfo, key: str) -> str:
    value = version.metrics.get(key)
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


@models_app.command("list")
def list_command(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    limit: int = typer.Option(50, min=1, help="Show at most this many versions."),
) -> None:
    """List model versions, newest first (the active one is marked with *)."""
    settings = load_settings()
    with open_store(settings) as session_factory, session_factory() as session:
        versions = registry.list_versions(session, limit=limit)
    if as_json:
        typer.echo(json.dumps([v.to_dict() for v in versions], indent=2))
        return
    if not versions:
        typer.echo("no model versions yet: run `rbmrec train` or `rbmrec retrain`")
        return
    header = (
        f"  {'id':<28} {'status':<10} {'created (UTC)':<20} {'ratings':>8} {'val_rmse':>9}  files"
    )
    typer.echo(header)
    for v in versions:
        mark = "*" if v.status == "active" else " "
        files = "yes" if v.artifact_available else "deleted" if v.artifact_deleted_at else "-"
        typer.echo(
            f"{mark} {v.id:<28} {v.status:<10} {v.created_at:%Y-%m-%d %H:%M:%S} "
            f"{v.n_ratings:>8} {_metric(v, 'validation_rmse'):>9}  {files}"
        )


@models_app.command("activate")
def activate_command(
    version_id: str = typer.Argument(..., help="The version to activate (e.g. to roll back)."),
) -> None:
    """Activate VERSION_ID; the API processes switch to it within RBMREC_MODEL_POLL_SECONDS."""
    settings = load_settings()
    with open_store(settings) as session_factory:
        try:
            with session_factory.begin() as session:
                previous = registry.get_active_version(session)
                version = registry.activate_version(session, version_id)
        except (registry.RegistryError, ArtifactIntegrityError) as exc:
            fail(str(exc))
    before = f" (was {previous.id})" if previous is not None and previous.id != version.id else ""
    typer.echo(f"active model version: {version.id}{before}")


def register(cli: typer.Typer) -> None:
    """Add ``rbmrec models`` to the CLI."""
    cli.add_typer(models_app, name="models")
