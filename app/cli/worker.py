"""``rbmrec worker``: the retrain scheduler, running until SIGTERM."""

from __future__ import annotations

import typer

from app.cli.common import fail, load_settings, model_params, open_store
from app.cli.train import EPOCHS_OPTION, HIDDEN_OPTION, PARAM_OPTION, SEED_OPTION


def worker(
    poll_seconds: float = typer.Option(
        5.0, "--poll-seconds", min=0.05, help="How often to look for queued retrains."
    ),
    epochs: int | None = EPOCHS_OPTION,
    hidden: int | None = HIDDEN_OPTION,
    seed: int | None = SEED_OPTION,
    param: list[str] | None = PARAM_OPTION,
) -> None:
    """Run retrains on RBMREC_RETRAIN_CRON (UTC) and as requested by POST /admin/retrain."""
    from app.worker import StopController, Worker

    settings = load_settings()
    params = model_params(epochs, hidden, seed, param)
    stop = StopController()
    with open_store(settings) as session_factory:
        try:
            loop = Worker(
                session_factory, settings, poll_seconds=poll_seconds, params=params, stop=stop
            )
        except ValueError as exc:
            fail(str(exc))
        with stop.installed():
            loop.run_forever()


def register(cli: typer.Typer) -> None:
    """Add ``rbmrec worker`` to the CLI."""
    cli.command("worker")(worker)
