"""Helpers shared by the CLI commands: settings, logging, clean error exits."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer

from app.logging_config import configure_logging
from app.settings import Settings, get_settings


def load_settings() -> Settings:
    """Read settings (and set up logging); a bad setting is a clear error, not a traceback."""
    from pydantic import ValidationError

    try:
        settings = get_settings()
    except ValidationError as exc:
        fail(f"invalid configuration: {exc}")
    configure_logging(settings.log_level)
    return settings


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` to stderr and exit non-zero."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def info(message: str) -> None:
    typer.echo(message, err=not sys.stdout.isatty() and False)
