"""Recommendations, predictions and similar items (app.services.recommend) from a real
model and real SQLite and PostgreSQL stores."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.db.ratings import user_rating_map
from app.services import recommend
from app.services.artifacts import artifact_digest
from app.services.catalog import CatalogCache
from app.services.model_holder import LoadedModel, load_version
from app.services.registry import ModelVersionInfo


@pytest.fixture(scope="module")
def loaded(artifact: Path) -> LoadedModel:
    version = ModelVersionInfo(
        id="v1",
        status="active",
        artifact_path=artifact,
        sha256=artifact_digest(artifact),
        created_at=datetime.now(UTC),
        activated_at=None,
        n_users=60,
        n_items=30,
        n_ratings=900,
        snapshot_max_rated_at=None,
        hyperparameters={},
        metrics={},
        training_curves={},
    )
    return load_version(version)


def test_a_user_with_ratings_gets_the_models_ranking(
    store: sessionmaker[Session], loaded: LoadedModel
) -> None:
    catalog = CatalogCache()
    with store() as session:
        rated = set(user_rating_map(session, "u0"))
        result = recommend.recommend(session, loaded, catalog, "u0", n=10, exclude=["i29"])
        deeper = recommend.recommend(session, loaded, catalog, "u0", n=5, offset=5, exclude=["i29"])
    assert (result.strategy, result.model_version) == ("rbm", "v1")
    ids = [r.item_id for r in result.items]
    assert len(ids) == 10
    assert not set(ids) & (rated | {"i29"})
    assert all(r.title == f"Title of {r.item_id}" for r in result.items)
    scores = [r.score for r in result.items]
    assert scores == sorted(scores, reverse=True)
    assert all(1 <= (r.predicted_rating or 0) <= 5 for r in result.items)
    assert [r.item_id for r in deeper.items] == ids[5:10]


def test_the_genre_filter(store: sessionmaker[Session], loaded: LoadedModel) -> None:
    with store() as session:
        result = recommend.recommend(session, loaded, CatalogCache(), "u1", n=30, genre="high")
    assert result.items
    assert all(int(r.item_id[1:]) >= 15 for r in result.items)


def test_a_user_the_model_cannot_fold_in_gets_the_popular_items(
    store: sessionmaker[Session], loaded: LoadedModel
) -> None:
    with store() as session:
        result = recommend.recommend(session, loaded, CatalogCache(), "stranger", n=5)
    assert result.strategy == "popular"
    counts = [r.score for r in result.items]
    assert counts == sorted(counts, reverse=True)


def test_without_a_model_the_store_s_popular_items_answer(store: sessionmaker[Session]) -> None:
    with store() as session:
        rated = set(user_rating_map(session, "u0"))
        everything = recommend.recommend(session, None, CatalogCache(), "stranger", n=100)
        result = recommend.recommend(session, None, CatalogCache(), "u0", n=100, exclude=["i3"])
    assert (result.strategy, result.model_version) == ("popular", None)
    assert len(everything.items) == 30  # every rated item; i99 was never rated
    ids = [r.item_id for r in result.items]
    assert ids == [r.item_id for r in everything.items if r.item_id not in rated | {"i3"}]


def test_predictions_name_the_items_the_model_does_not_know(
    store: sessionmaker[Session], loaded: LoadedModel
) -> None:
    with store() as session:
        result = recommend.predict(session, loaded, "u0", ["i1", "i99", "i1"], levels=[1, 2])
        nothing = recommend.predict(session, None, "u0", ["i1"], levels=[1, 2, 3])
    assert result.item_ids == ["i1"]
    assert result.unknown_items == ["i99"]
    assert result.distribution.shape == (1, 5)
    assert result.levels == (1.0, 2.0, 3.0, 4.0, 5.0)
    assert nothing.unknown_items == ["i1"]
    assert nothing.levels == (1, 2, 3)
    assert nothing.distribution.shape == (0, 3)


def test_similar_items_and_their_errors(store: sessionmaker[Session], loaded: LoadedModel) -> None:
    catalog = CatalogCache()
    with store() as session:
        similar = recommend.similar_items(session, loaded, catalog, "i1", 5)
        assert len(similar) == 5
        assert "i1" not in {s.item_id for s in similar}
        assert all(s.title == f"Title of {s.item_id}" for s in similar)
        with pytest.raises(recommend.NoModelError):
            recommend.similar_items(session, None, catalog, "i1", 5)
        with pytest.raises(recommend.ItemNotInModelError) as in_store:
            recommend.similar_items(session, loaded, catalog, "i99", 5)
        assert in_store.value.in_store
        with pytest.raises(recommend.ItemNotInModelError) as unknown:
            recommend.similar_items(session, loaded, catalog, "nowhere", 5)
        assert not unknown.value.in_store
