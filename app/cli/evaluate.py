"""``rbmrec evaluate``: the RBM and the baselines side by side on held-out ratings.

Reads rating files only (no database). Results go to stdout (a table, or one JSON
object with ``--json``); progress and logs go to stderr.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer

from app.cli.common import fail, model_params
from app.logging_config import configure_logging
from rbm_core.recommender import recommender_settings

_DATA = typer.Option(
    None,
    "--data",
    help="ML-100K directory with the canonical folds u1.base/u1.test .. u5.base/u5.test.",
)
_FOLDS = typer.Option(
    None, "--folds", help="Comma-separated ML-100K folds to run with --data [default: 1,2,3,4,5]."
)
_TRAIN = typer.Option(
    None, "--train", help="Training ratings (ML-100K tab format, or MovieLens *.csv)."
)
_TEST = typer.Option(None, "--test", help="Test ratings, same formats as --train.")
_SCALE = typer.Option(
    None,
    "--rating-scale",
    help='Rating levels, e.g. "1,2,3,4,5" or "0.5..5:0.5" (default: detected from the data).',
)
_MODELS = typer.Option(
    "rbm,ease,item_quality,bias,popularity,global_mean",
    "--models",
    help="Comma-separated models: rbm (what the service serves), its parts alone "
    "(user_rbm, item_rbm, ranker: listed after rbm), and the references ease, "
    "item_quality, bias, popularity, global_mean.",
)
_K = typer.Option(10, "--k", min=1, help="Cut-off of the top-N metrics.")
_THRESHOLD = typer.Option(
    4.0, "--relevance-threshold", help="Test ratings at or above it count as relevant."
)
_PARAM = typer.Option(
    None,
    "--param",
    help="A setting of the served model as NAME=VALUE (JSON value), a part's as "
    "PART.NAME=VALUE, e.g. search=false or user_rbm.n_hidden=200; repeatable.",
)
_EPOCHS = typer.Option(
    None, "--epochs", min=1, help="Epochs of every RBM part (with the search: the most allowed)."
)
_HIDDEN = typer.Option(None, "--hidden", min=1, help="Hidden units of every RBM part.")
_SEED = typer.Option(0, "--seed", help="Random seed of the RBM.")
_JSON = typer.Option(False, "--json", help="Print one JSON object (and nothing else) to stdout.")
_VERBOSE = typer.Option(
    False, "--verbose", "-v", help="Log at INFO level and show the RBM's training progress."
)


def evaluate(
    data: Path | None = _DATA,
    folds: str | None = _FOLDS,
    train: Path | None = _TRAIN,
    test: Path | None = _TEST,
    rating_scale: str | None = _SCALE,
    models: str = _MODELS,
    k: int = _K,
    relevance_threshold: float = _THRESHOLD,
    param: list[str] | None = _PARAM,
    epochs: int | None = _EPOCHS,
    hidden: int | None = _HIDDEN,
    seed: int = _SEED,
    as_json: bool = _JSON,
    verbose: bool = _VERBOSE,
) -> None:
    """Evaluate the RBM beside the baselines: RMSE, MAE and top-N metrics per fold.

    Either --data DIR [--folds 1,2,3,4,5] for the ML-100K canonical folds, or
    --train FILE --test FILE for one split (reported as fold 1).
    """
    from rbm_core import datasets, evaluation, lineup
    from rbm_core.movielens import DataFormatError
    from rbm_core.scale import RatingScale, RatingScaleError

    configure_logging("INFO" if verbose else "WARNING")
    if data is not None and (train is not None or test is not None):
        fail("give either --data or --train/--test, not both")
    if data is None and (train is None or test is None):
        fail("give --data DIR (ML-100K folds) or both --train FILE and --test FILE")
    if data is None and folds is not None:
        fail("--folds goes with --data (a --train/--test pair is one fold)")
    if not math.isfinite(relevance_threshold):
        fail("--relevance-threshold must be a finite number")
    scale = None
    if rating_scale is not None:
        try:
            scale = RatingScale.parse(rating_scale)
        except RatingScaleError as exc:
            fail(f"bad --rating-scale {rating_scale!r}: {exc}")
    params = recommender_settings(model_params(epochs, hidden, seed, param))
    if verbose:
        params.setdefault("verbose", True)
    names = [name.strip() for name in models.split(",") if name.strip()]

    def progress(line: str) -> None:
        typer.echo(line, err=True)

    try:
        factories = lineup.default_models(params, names=names)
        if train is not None and test is not None:
            splits = [datasets.load_train_test(train, test)]
        else:
            splits = datasets.load_ml100k_folds(data or Path(), _parse_folds(folds or "1,2,3,4,5"))
        report = evaluation.evaluate(
            splits,
            factories,
            scale=scale,
            k=k,
            relevance_threshold=relevance_threshold,
            progress=progress,
        )
    except (
        FileNotFoundError,
        DataFormatError,
        datasets.DatasetError,
        evaluation.EvaluationError,
        lineup.LineupError,
    ) as exc:
        fail(str(exc))
    result = report.to_dict()
    if as_json:
        typer.echo(json.dumps(result, allow_nan=False))
    else:
        typer.echo(format_report(result, k))


def _parse_folds(text: str) -> list[int]:
    folds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit():
            fail(f"bad --folds {text!r}: expected fold numbers like 1,2,3,4,5")
        folds.append(int(part))
    if not folds:
        fail("--folds lists no fold")
    return folds


_COLUMNS = (
    ("rmse", "RMSE"),
    ("mae", "MAE"),
    ("precision_at_{k}", "P@{k}"),
    ("recall_at_{k}", "R@{k}"),
    ("ndcg_at_{k}", "NDCG@{k}"),
    ("map_at_{k}", "MAP@{k}"),
    ("coverage_at_{k}", "Cov@{k}"),
    ("novelty_at_{k}", "Nov@{k}"),
    ("personalisation_at_{k}", "Pers@{k}"),
    ("fit_seconds", "fit s"),
)


def format_report(result: dict[str, Any], k: int) -> str:
    """The report as a plain-text table: one row per model and fold, then the means."""
    keys = [key.format(k=k) for key, _ in _COLUMNS]
    titles = [title.format(k=k) for _, title in _COLUMNS]
    header = f"{'model':<12} {'fold':>5} " + " ".join(f"{t:>8}" for t in titles)
    lines = [header, "-" * len(header)]
    models: dict[str, Any] = result["models"]
    for name, entry in models.items():
        rows = [(str(row["fold"]), row) for row in entry["folds"]]
        if len(rows) > 1:
            rows.append(("mean", entry["mean"]))
        for fold, row in rows:
            cells = " ".join(_cell(row.get(key), key) for key in keys)
            lines.append(f"{name:<12} {fold:>5} {cells}")
    first = next(iter(models.values()))["folds"]
    lines.append("")
    for row in first:
        lines.append(
            f"fold {row['fold']}: {row['n_train']} training ratings, {row['n_test']} test "
            f"ratings ({row['n_test_new_user']} by users and {row['n_test_new_item']} of items "
            "unseen in training; unseen items get the mean training rating)"
        )
    ranked = [row.get("n_ranked_users") for row in first]
    protocol = result.get("protocol", {})
    if any(r is not None for r in ranked):
        lines.append(
            f"top-N: users with a test rating >= {protocol.get('relevance_threshold')} "
            f"per fold: {', '.join('-' if r is None else str(r) for r in ranked)}"
        )
    lines.append(f"rating scale: {protocol.get('rating_scale')}")
    return "\n".join(lines)


def _cell(value: Any, key: str) -> str:
    if value is None:
        return f"{'-':>8}"
    if key == "fit_seconds":
        return f"{value:>8.2f}"
    return f"{value:>8.4f}"


def register(cli: typer.Typer) -> None:
    """Add ``rbmrec evaluate`` to the CLI."""
    cli.command("evaluate")(evaluate)
