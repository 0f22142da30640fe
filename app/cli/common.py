"""Helpers shared by the CLI commands: settings, clean error exits, the store, hyperparameters."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any, NoReturn

import typer
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from app.db.engine import engine_from_settings, make_sessionmaker
from app.logging_config import configure_logging
from app.settings import Settings, get_settings
from rbm_core.recommender import RBMRecommender, recommender_settings

RBM_PARTS = ("user_rbm", "item_rbm", "ranker")
"""The parts ``--epochs`` and ``--hidden`` apply to."""


def load_settings() -> Settings:
    """Read settings (and set up logging); a bad setting is a clear error, not a traceback."""
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


@contextlib.contextmanager
def open_store(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """A session factory on the configured store; database trouble becomes ``error: ...``."""
    engine = engine_from_settings(settings)
    try:
        yield make_sessionmaker(engine)
    except (ProgrammingError, OperationalError) as exc:
        message = str(exc.orig)
        if "no such table" in message or "does not exist" in message:
            fail(
                "the database schema is not up to date "
                f"({message.splitlines()[0]}); run `rbmrec db upgrade`"
            )
        fail(f"cannot reach the database: {message.splitlines()[0] if message else exc}")
    except DBAPIError as exc:
        fail(f"database error: {str(exc.orig).splitlines()[0]}")
    finally:
        engine.dispose()


def model_params(
    epochs: int | None, hidden: int | None, seed: int | None, params: list[str] | None
) -> dict[str, Any]:
    """Model settings from the command line, checked before anything runs.

    ``--param NAME=VALUE`` (JSON values) sets a setting of the served model
    (``search=false``, ``validation_fraction=0.2``, ...) or of one of its parts as
    ``PART.NAME`` (``user_rbm.n_hidden=200``, ``item_rbm.weight_decay=0.02``,
    ``ranker.learning_rate=0.02``). ``--epochs`` and ``--hidden`` set ``n_epochs`` and
    ``n_hidden`` of every RBM part. The result is the flat form the retrain job takes.
    """
    out: dict[str, Any] = {}
    for item in params or []:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            fail(f"--param expects NAME=VALUE, got {item!r}")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[name.strip()] = value
    for part in RBM_PARTS:
        if epochs is not None:
            out.setdefault(f"{part}.n_epochs", epochs)
        if hidden is not None:
            out.setdefault(f"{part}.n_hidden", hidden)
    if seed is not None:
        out["random_state"] = seed
    try:
        RBMRecommender(**recommender_settings(out))._validate_params()
    except (TypeError, ValueError) as exc:
        fail(str(exc))
    return out
