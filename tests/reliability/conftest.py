"""Fixtures of the reliability tests: an ML-100K subset, a small model, PostgreSQL stores.

Tests marked ``soak`` are the long, on-demand variants (bigger fuzzing budgets, the
60 s soak): they are skipped unless ``RBMREC_TEST_SOAK=1``. Every point also has a
bounded variant that runs in the default suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _reliability_support import (
    SCALE,
    SOAK_ENV,
    Store,
    empty_database,
    seed_store,
    soak_enabled,
    write_subset,
)

from rbm_core import RatingMatrix, SoftmaxRBM, save_model
from rbm_core.movielens import read_ratings

N_USERS = 100
"""Users of the ML-100K subset the reliability tests load (about 10,000 ratings)."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if soak_enabled():
        return
    skip = pytest.mark.skip(reason=f"long on-demand run: set {SOAK_ENV}=1 to run it")
    for item in items:
        if item.get_closest_marker("soak") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def subset_dir(movielens_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ML-100K users 1..N_USERS in ML-100K layout."""
    return write_subset(tmp_path_factory.mktemp("rel-subset"), movielens_dir, N_USERS)


@pytest.fixture(scope="session")
def small_artifact(subset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model trained once on the subset, saved as an artifact."""
    matrix = RatingMatrix.from_frame(read_ratings(subset_dir / "u.data"), SCALE)
    model = SoftmaxRBM(n_hidden=16, n_epochs=3, batch_size=50, random_state=7)
    model.fit(matrix)
    return save_model(model, tmp_path_factory.mktemp("rel-models") / "20260101T000000000Z-a1b2c3")


@pytest.fixture
def pg_url(postgres_url: str) -> Iterator[str]:
    """The session's PostgreSQL database, emptied after the test."""
    yield postgres_url
    empty_database(postgres_url)


@pytest.fixture
def pg_store(
    pg_url: str, subset_dir: Path, small_artifact: Path, tmp_path: Path
) -> Iterator[Store]:
    """PostgreSQL holding the subset, with the small model active (in tmp_path/models)."""
    store = seed_store(pg_url, subset_dir, small_artifact, tmp_path / "models")
    yield store
    store.session_factory.kw["bind"].dispose()


@pytest.fixture
def any_store(
    database_url: str, subset_dir: Path, small_artifact: Path, tmp_path: Path
) -> Iterator[Store]:
    """SQLite, then PostgreSQL, holding the subset with the small model active."""
    store = seed_store(database_url, subset_dir, small_artifact, tmp_path / "models")
    yield store
    store.session_factory.kw["bind"].dispose()
