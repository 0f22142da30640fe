"""Fixtures of the API tests: an ML-100K subset, small trained models, a running app.

Two small models are trained once per session on the first users of ML-100K and
saved as artifacts; each test that needs a model registers one into its own
database (SQLite and PostgreSQL, via ``database_url``) and starts the real app
(lifespan included) with ``TestClient``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _api_support import SCALE, Subset, load_subset, make_subset, register
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.api.main import create_app
from app.db.engine import make_engine, make_sessionmaker
from app.settings import Settings
from rbm_core import RatingMatrix, RBMRecommender, SoftmaxRBM, save_model


@pytest.fixture(scope="session")
def ml_subset(movielens_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Subset:
    """Ratings of ML-100K users 1..N_USERS and the items they rated."""
    return make_subset(movielens_dir, tmp_path_factory.mktemp("ml-subset"))


@pytest.fixture(scope="session")
def model_artifacts(ml_subset: Subset, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two small served models trained on the subset (different seeds), saved as artifacts."""
    root = tmp_path_factory.mktemp("models")
    matrix = RatingMatrix.from_frame(ml_subset.ratings, SCALE)
    paths = []
    for seed, version in ((1, "20260101T000000000Z-aaaaaa"), (2, "20260102T000000000Z-bbbbbb")):
        small = {"n_hidden": 16, "n_epochs": 3}
        model = RBMRecommender(
            user_rbm_params=small,
            item_rbm_params=small,
            ranker_params=small,
            search=False,
            random_state=seed,
        )
        model.fit(matrix)
        paths.append(save_model(model, root / version))
    return paths


@pytest.fixture(scope="session")
def legacy_artifact(ml_subset: Subset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SoftmaxRBM alone, as versions trained before the RBMRecommender hold."""
    matrix = RatingMatrix.from_frame(ml_subset.ratings, SCALE)
    model = SoftmaxRBM(n_hidden=16, n_epochs=3, batch_size=20, random_state=3).fit(matrix)
    return save_model(model, tmp_path_factory.mktemp("legacy") / "20251201T000000000Z-cccccc")


@pytest.fixture
def store(database_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on the test's (empty, migrated) database."""
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def make_settings(database_url: str, tmp_path: Path) -> Callable[..., Settings]:
    """Settings for the test's database; keyword arguments override fields."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "model_dir": tmp_path / "models",
            "model_poll_seconds": 30,
        }
        values.update(overrides)
        return Settings(**values)

    return build


@pytest.fixture
def make_client(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., TestClient]]:
    """Start apps (lifespan included) with test settings; all are stopped at the end."""
    clients: list[TestClient] = []

    def start(app: FastAPI | None = None, **overrides: Any) -> TestClient:
        client = TestClient(app if app is not None else create_app(make_settings(**overrides)))
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    """The app on an empty store, no model."""
    return make_client()


@pytest.fixture
def model_client(
    store: sessionmaker[Session],
    ml_subset: Subset,
    model_artifacts: list[Path],
    make_client: Callable[..., TestClient],
) -> TestClient:
    """The app on a store holding the subset, with the first model active."""
    load_subset(store, ml_subset)
    register(store, model_artifacts[0], active=True)
    return make_client()
