"""``rbmrec db``: schema migrations."""

from __future__ import annotations

from collections.abc import Callable

import typer
from sqlalchemy.exc import OperationalError

from app.cli.common import fail, load_settings
from app.db import migrate

db_app = typer.Typer(help="Manage the database schema (Alembic migrations).", no_args_is_help=True)


def _migrate(step: Callable[[str, str], None], revision: str) -> None:
    """Run one migration command against the configured database and say where it is now."""
    settings = load_settings()
    try:
        step(settings.database_url, revision)
    except OperationalError as exc:
        fail(f"cannot reach the database: {exc.orig}")
    typer.echo(f"database at revision {migrate.current(settings.database_url)}")


@db_app.command("upgrade")
def upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Migrate the database to REVISION (default: the latest)."""
    _migrate(migrate.upgrade, revision)


@db_app.command("downgrade")
def downgrade(revision: str = typer.Argument(..., help="Target revision, e.g. -1.")) -> None:
    """Migrate the database down to REVISION."""
    _migrate(migrate.downgrade, revision)


@db_app.command("current")
def current() -> None:
    """Print the database's current revision."""
    settings = load_settings()
    try:
        typer.echo(migrate.current(settings.database_url) or "empty (not migrated)")
    except OperationalError as exc:
        fail(f"cannot reach the database: {exc.orig}")


def register(cli: typer.Typer) -> None:
    cli.add_typer(db_app, name="db")
