"""``rbmrec train`` (train and activate, no gating) and ``rbmrec retrain`` (one gated run)."""

from __future__ import annotations

import json

import typer

from app.cli.common import fail, load_settings, model_params, open_store
from app.db.retrain_lock import LockBusyError
from app.services.retrain import RetrainError, TrainingRunInfo, run_retrain, train_and_activate

EPOCHS_OPTION = typer.Option(
    None,
    "--epochs",
    min=1,
    help="Epochs of every RBM part (with the search: the most early stopping may use).",
)
HIDDEN_OPTION = typer.Option(
    None, "--hidden", min=1, help="Hidden units of every RBM part (default: each part's)."
)
SEED_OPTION = typer.Option(None, "--seed", help="Random seed (default: a random one, recorded).")
PARAM_OPTION = typer.Option(
    None,
    "--param",
    help="A model setting as NAME=VALUE (JSON value), a part's as PART.NAME=VALUE, e.g. "
    "search=false or user_rbm.n_hidden=200 (parts: user_rbm, item_rbm, ranker); repeatable.",
)
JSON_OPTION = typer.Option(False, "--json", help="Print the result as JSON.")


def train(
    epochs: int | None = EPOCHS_OPTION,
    hidden: int | None = HIDDEN_OPTION,
    seed: int | None = SEED_OPTION,
    param: list[str] | None = PARAM_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Train a model on all ratings in the store and activate it (no comparison)."""
    settings = load_settings()
    params = model_params(epochs, hidden, seed, param)
    with open_store(settings) as session_factory:
        try:
            version = train_and_activate(session_factory, settings, trigger="cli", params=params)
        except LockBusyError as exc:
            fail(f"{exc}; try again when it has finished")
        except RetrainError as exc:
            fail(str(exc))
    if as_json:
        typer.echo(json.dumps(version.to_dict(), indent=2))
        return
    rmse = version.metrics.get("validation_rmse")
    ndcg = version.metrics.get("validation_ndcg_at_10")
    shown = f", validation RMSE {rmse:.4f}" if isinstance(rmse, float) else ""
    shown += f", NDCG@10 {ndcg:.4f}" if isinstance(ndcg, float) else ""
    typer.echo(
        f"trained and activated model version {version.id} "
        f"({version.n_users} users, {version.n_items} items, {version.n_ratings} ratings{shown})"
    )


def retrain(
    epochs: int | None = EPOCHS_OPTION,
    hidden: int | None = HIDDEN_OPTION,
    seed: int | None = SEED_OPTION,
    param: list[str] | None = PARAM_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Run one retrain now: train a candidate and activate it if it is not worse."""
    from app.worker import StopController, StopRequested

    settings = load_settings()
    params = model_params(epochs, hidden, seed, param)
    stop = StopController()
    with open_store(settings) as session_factory, stop.installed():
        try:
            info = run_retrain(
                session_factory,
                settings,
                trigger="cli",
                params=params,
                interrupt_guard=stop.interruptible,
            )
        except StopRequested as exc:
            fail(f"{exc}; the run is recorded as failed, nothing was published")
    if as_json:
        typer.echo(json.dumps(info.to_dict(), indent=2))
    else:
        typer.echo(describe_run(info))
    if info.status == "failed":
        fail(f"retrain run {info.id} failed: {info.error}")


def describe_run(info: TrainingRunInfo) -> str:
    """One line about a run's outcome."""
    if info.status == "activated":
        return f"run {info.id}: activated model version {info.model_version_id} ({info.reason})"
    if info.status == "rejected":
        return f"run {info.id}: rejected model version {info.model_version_id}: {info.reason}"
    if info.status == "skipped":
        return f"run {info.id}: skipped: {info.reason}"
    if info.status == "failed":
        return f"run {info.id}: failed: {info.error}"
    return f"run {info.id}: {info.status}"


def register(cli: typer.Typer) -> None:
    """Add ``rbmrec train`` and ``rbmrec retrain`` to the CLI."""
    cli.command("train")(train)
    cli.command("retrain")(retrain)
