"""Fixtures of the app's unit tests: a small synthetic rating set and a model fitted on it.

The ratings have structure (two groups of users who like opposite halves of the
catalog), so a model fitted on them predicts something worth checking.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.db.items import ItemIn, upsert_items
from app.db.ratings import RatingIn, upsert_ratings
from app.db.snapshot import RatingsSnapshot
from rbm_core.artifact import save_model
from rbm_core.data import RatingMatrix
from rbm_core.model import SoftmaxRBM
from rbm_core.scale import DEFAULT_SCALE

N_USERS = 60
N_ITEMS = 30


def synthetic_ratings(seed: int = 0) -> pd.DataFrame:
    """About 900 ratings: users ``u0..`` rate items ``i0..``; even users like the low items."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(N_USERS):
        items = rng.choice(N_ITEMS, size=15, replace=False)
        for item in items:
            likes = (item < N_ITEMS // 2) == (user % 2 == 0)
            rating = rng.choice([4, 5]) if likes else rng.choice([1, 2])
            rows.append((f"u{user}", f"i{item}", float(rating)))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])


@pytest.fixture(scope="session")
def ratings() -> pd.DataFrame:
    return synthetic_ratings()


@pytest.fixture(scope="session")
def snapshot(ratings: pd.DataFrame) -> RatingsSnapshot:
    """The synthetic ratings as the store's snapshot reader returns them."""
    return RatingsSnapshot(
        ratings["user_id"].to_numpy(dtype=object),
        ratings["item_id"].to_numpy(dtype=object),
        ratings["rating"].to_numpy(dtype=np.float64),
        None,
        len(ratings),
    )


@pytest.fixture(scope="session")
def fitted_model(ratings: pd.DataFrame) -> SoftmaxRBM:
    """A small SoftmaxRBM fitted on every synthetic rating."""
    matrix = RatingMatrix.from_arrays(
        ratings["user_id"], ratings["item_id"], ratings["rating"], DEFAULT_SCALE
    )
    return SoftmaxRBM(n_hidden=8, n_epochs=5, random_state=0).fit(matrix)


@pytest.fixture(scope="session")
def artifact(fitted_model: SoftmaxRBM, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fitted model saved as an artifact directory (do not modify it)."""
    return save_model(
        fitted_model, tmp_path_factory.mktemp("artifact") / "20260101T000000000Z-aaaaaa"
    )


def item_title(item: str) -> str:
    return f"Title of {item}"


@pytest.fixture
def store(session_factory: sessionmaker[Session], ratings: pd.DataFrame) -> sessionmaker[Session]:
    """A store holding the synthetic catalog (``i0..i29``, and ``i99`` that nobody rated)
    and ratings. Items below 15 are ``Low``, the others ``High``."""
    items = [*(f"i{i}" for i in range(N_ITEMS)), "i99"]
    with session_factory.begin() as session:
        upsert_items(
            session,
            [ItemIn(id=item, title=item_title(item), genres=[_genre(item)]) for item in items],
        )
        upsert_ratings(
            session,
            [RatingIn(u, i, r) for u, i, r in ratings.itertuples(index=False)],
            scale=DEFAULT_SCALE,
        )
    return session_factory


def _genre(item: str) -> str:
    return "Low" if int(item[1:]) < N_ITEMS // 2 else "High"
