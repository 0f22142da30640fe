"""Helpers of the registry and retrain tests: load an ML-100K subset, small settings.

Imported by tests/integration/test_registry.py, test_retrain.py and tests/e2e (the
test directories are on ``sys.path`` in pytest's default import mode).
"""

from __future__ import annotations

import logging
import shutil
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
from click.testing import Result
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from app.db.items import ItemIn, upsert_items
from app.db.ratings import RatingIn, upsert_ratings
from app.services.importer import import_movielens
from app.settings import Settings
from rbm_core.movielens import read_items, read_ratings
from rbm_core.scale import DEFAULT_SCALE

SMALL_PARAMS: dict[str, Any] = {
    "search": False,
    "random_state": 0,
    **{f"{part}.n_hidden": 8 for part in ("user_rbm", "item_rbm", "ranker")},
    **{f"{part}.n_epochs": 2 for part in ("user_rbm", "item_rbm", "ranker")},
}
"""A quick model: no search, small parts trained for two epochs, a fixed seed (so two
runs on the same data train the same model)."""
"""Tiny, fast hyperparameters: the tests check the machinery, not the model."""


@cache
def _ml100k(movielens_dir: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    ratings = read_ratings(Path(movielens_dir) / "u.data")
    items = read_items(Path(movielens_dir) / "u.item")
    return ratings, items


def movielens_subset(movielens_dir: Path, n_users: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ratings of ML-100K users ``1..n_users`` and the items they rated."""
    ratings, items = _ml100k(str(movielens_dir))
    subset = ratings[ratings["user_id"].astype(int) <= n_users]
    rated = set(subset["item_id"])
    return subset.reset_index(drop=True), items[items["id"].isin(rated)].reset_index(drop=True)


def write_subset(directory: Path, movielens_dir: Path, n_users: int) -> Path:
    """Write an ML-100K-format copy holding only users ``1..n_users``; returns it."""
    ratings, _ = movielens_subset(movielens_dir, n_users)
    directory.mkdir(parents=True, exist_ok=True)
    ratings[["user_id", "item_id", "rating", "timestamp"]].astype({"rating": int}).to_csv(
        directory / "u.data", sep="\t", header=False, index=False
    )
    for name in ("u.item", "u.genre"):
        shutil.copyfile(movielens_dir / name, directory / name)
    return directory


def import_subset(session_factory: sessionmaker[Session], subset_dir: Path) -> int:
    """Import a directory written by :func:`write_subset`; returns the number of ratings."""
    engine = session_factory.kw["bind"]
    report = import_movielens(engine, subset_dir, scale=Settings().rating_scale)
    return int(report.ratings_read)


def add_ratings(
    session_factory: sessionmaker[Session], user_id: str, ratings: dict[str, float]
) -> None:
    """Upsert one user's ratings."""
    with session_factory.begin() as session:
        upsert_ratings(
            session,
            [RatingIn(user_id, item, value) for item, value in ratings.items()],
            scale=DEFAULT_SCALE,
        )


def add_items(session_factory: sessionmaker[Session], item_ids: list[str]) -> None:
    """Create items (no metadata)."""
    with session_factory.begin() as session:
        upsert_items(session, [ItemIn(id=item_id) for item_id in item_ids])


def settings_for(database_url: str, model_dir: Path, **overrides: Any) -> Settings:
    """Settings of one test: its database and model directory."""
    return Settings(database_url=database_url, model_dir=model_dir, **overrides)


def invoke_cli(args: list[str], env: dict[str, str]) -> Result:
    """Run ``rbmrec ARGS`` in-process with ``env``; settings and logging reset after."""
    from app.cli import cli
    from app.settings import get_settings

    get_settings.cache_clear()
    try:
        return CliRunner().invoke(cli, args, env=env)
    finally:
        get_settings.cache_clear()
        # the CLI logs to the runner's (now closed) stderr: drop that handler
        root = logging.getLogger()
        for handler in [h for h in root.handlers if getattr(h, "_rbmrec", False)]:
            root.removeHandler(handler)
