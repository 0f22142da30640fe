"""Fixtures for the rbm_core unit tests: small rating matrices and fitted models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rbm_core import DEFAULT_SCALE, RatingMatrix, SoftmaxRBM


def read_ml100k(path: Path) -> pd.DataFrame:
    """An ML-100K ratings file (``u.data`` layout) as user_id, item_id, rating."""
    return pd.read_csv(
        path,
        sep="\t",
        names=["user_id", "item_id", "rating", "timestamp"],
        dtype={"user_id": str, "item_id": str, "rating": float, "timestamp": np.int64},
    )


def random_matrix(
    n_users: int = 60, n_items: int = 25, density: float = 0.3, seed: int = 0
) -> RatingMatrix:
    """A random matrix on the 1..5 scale where every user and item has a rating."""
    rng = np.random.default_rng(seed)
    mask = rng.random((n_users, n_items)) < density
    mask[np.arange(n_users), rng.integers(0, n_items, n_users)] = True
    mask[rng.integers(0, n_users, n_items), np.arange(n_items)] = True
    users, items = np.nonzero(mask)
    ratings = rng.integers(1, 6, size=len(users)).astype(float)
    return RatingMatrix.from_arrays(
        np.char.add("u", users.astype(str)),
        np.char.add("i", items.astype(str)),
        ratings,
        DEFAULT_SCALE,
    )


@pytest.fixture(scope="session")
def make_matrix() -> Callable[..., RatingMatrix]:
    """Factory of random matrices (see :func:`random_matrix`)."""
    return random_matrix


@pytest.fixture(scope="session")
def small_matrix() -> RatingMatrix:
    return random_matrix()


@pytest.fixture(scope="session")
def small_model(small_matrix: RatingMatrix) -> SoftmaxRBM:
    """A quickly fitted model (treat as read-only)."""
    return SoftmaxRBM(n_hidden=8, n_epochs=5, batch_size=16, random_state=0).fit(small_matrix)


@pytest.fixture(scope="session")
def ml100k_u1(movielens_dir: Path) -> tuple[RatingMatrix, RatingMatrix]:
    """The canonical ML-100K fold u1 (train, test)."""
    train = RatingMatrix.from_frame(read_ml100k(movielens_dir / "u1.base"), DEFAULT_SCALE)
    test = RatingMatrix.from_frame(read_ml100k(movielens_dir / "u1.test"), DEFAULT_SCALE)
    return train, test
