"""Recommendations, predictions, similar items and GET /model against a trained model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _api_support import Subset, load_subset, register
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from app.db.ratings import count_ratings, count_user_ratings
from rbm_core.recommender import RBMRecommender

# Popular movies of the subset, rated by the new users of these tests.
FIRST_RATINGS = {"50": 5, "181": 5, "1": 4, "100": 2, "98": 1}


def post_ratings(client: TestClient, user_id: str, ratings: dict[str, float]) -> None:
    for item_id, value in ratings.items():
        response = client.post(
            "/ratings", json={"user_id": user_id, "item_id": item_id, "rating": value}
        )
        assert response.status_code in (200, 201), response.text


def test_new_user_gets_rbm_recommendations_at_once(
    model_client: TestClient, model_artifacts: list[Path], ml_subset: Subset
) -> None:
    before = model_client.get("/users/newcomer/recommendations").json()
    assert before["strategy"] == "popular"

    post_ratings(model_client, "newcomer", FIRST_RATINGS)
    response = model_client.get("/users/newcomer/recommendations", params={"n": 50})
    assert response.status_code == 200
    body = response.json()
    assert body["strategy"] == "rbm"
    assert body["model_version"] == model_artifacts[0].name
    assert body["user_id"] == "newcomer"
    assert body["n"] == 50
    assert body["offset"] == 0
    ids = [item["item_id"] for item in body["items"]]
    assert len(ids) == 50 == len(set(ids))
    assert not set(ids) & set(FIRST_RATINGS)
    assert set(ids) <= ml_subset.item_ids
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)
    for item in body["items"]:
        assert item["title"]
        assert 1.0 <= item["predicted_rating"] <= 5.0


def test_existing_user_never_gets_rated_items(model_client: TestClient, ml_subset: Subset) -> None:
    rated = ml_subset.user_items("1")
    body = model_client.get("/users/1/recommendations", params={"n": 100}).json()
    assert body["strategy"] == "rbm"
    assert len(body["items"]) == 100
    assert not {item["item_id"] for item in body["items"]} & rated


def test_recommendations_follow_new_ratings_without_retraining(model_client: TestClient) -> None:
    post_ratings(model_client, "fan", FIRST_RATINGS)
    first = model_client.get("/users/fan/recommendations", params={"n": 10}).json()
    top = first["items"][0]["item_id"]
    post_ratings(model_client, "fan", {top: 1})
    second = model_client.get("/users/fan/recommendations", params={"n": 10}).json()
    assert second["model_version"] == first["model_version"]
    assert top not in {item["item_id"] for item in second["items"]}
    # a rating of an item outside the list changes the whole list: the model folded it in
    outside = next(
        i for i in ("200", "98", "127", "313", "56") if i not in {*before_ids(first), top}
    )
    post_ratings(model_client, "fan", {outside: 5})
    third = model_client.get("/users/fan/recommendations", params={"n": 10}).json()
    assert outside not in before_ids(third)
    # whole lists compared, scores included: every item still listed was re-scored
    assert third["items"] != second["items"]
    old_scores = {item["item_id"]: item["score"] for item in second["items"]}
    for item in third["items"]:
        if item["item_id"] in old_scores:
            assert item["score"] != old_scores[item["item_id"]]


def before_ids(body: dict[str, object]) -> list[str]:
    return [item["item_id"] for item in body["items"]]  # type: ignore[attr-defined]


def test_recommended_items_carry_the_predictions_of_the_predictions_route(
    model_client: TestClient,
) -> None:
    post_ratings(model_client, "consistent", FIRST_RATINGS)
    page = model_client.get("/users/consistent/recommendations", params={"n": 5}).json()
    assert page["strategy"] == "rbm"
    ids = [item["item_id"] for item in page["items"]]
    predicted = model_client.get("/users/consistent/predictions", params={"item_id": ids}).json()
    by_id = {p["item_id"]: p["predicted_rating"] for p in predicted["items"]}
    for item in page["items"]:
        assert item["predicted_rating"] == pytest.approx(by_id[item["item_id"]], abs=1e-3)


def test_predictions_change_after_a_new_rating(model_client: TestClient) -> None:
    post_ratings(model_client, "critic", FIRST_RATINGS)
    params = {"item_id": ["172", "174", "nope-item"]}
    before = model_client.get("/users/critic/predictions", params=params)
    assert before.status_code == 200
    body = before.json()
    assert body["levels"] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [p["item_id"] for p in body["items"]] == ["172", "174"]
    assert body["unknown_items"] == ["nope-item"]
    for prediction in body["items"]:
        assert sum(prediction["distribution"]) == pytest.approx(1.0, abs=1e-4)
        expected = sum(
            level * p for level, p in zip(body["levels"], prediction["distribution"], strict=False)
        )
        assert prediction["predicted_rating"] == pytest.approx(expected, abs=1e-3)

    duplicated = model_client.get(
        "/users/critic/predictions", params={"item_id": ["50", "50"]}
    ).json()
    assert [p["item_id"] for p in duplicated["items"]] == ["50"]

    post_ratings(model_client, "critic", {"173": 1, "176": 1, "210": 1})
    after = model_client.get("/users/critic/predictions", params=params).json()
    assert after["model_version"] == body["model_version"]
    assert after["items"][0]["predicted_rating"] != pytest.approx(
        body["items"][0]["predicted_rating"], abs=1e-6
    )


def test_predictions_validate_their_items(client: TestClient) -> None:
    missing = client.get("/users/u/predictions")
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["loc"] == ["query", "item_id"]
    too_many = client.get("/users/u/predictions", params={"item_id": [str(i) for i in range(101)]})
    assert too_many.status_code == 422
    bad = client.get("/users/u/predictions", params={"item_id": ["ok", "not ok"]})
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["loc"] == ["query", "item_id", 1]


def test_popular_for_an_unknown_user_with_a_model(
    model_client: TestClient, ml_subset: Subset
) -> None:
    body = model_client.get("/users/stranger/recommendations", params={"n": 5}).json()
    assert body["strategy"] == "popular"
    assert body["model_version"] is not None
    counts = ml_subset.ratings["item_id"].value_counts()
    assert [item["score"] for item in body["items"]] == [float(c) for c in counts.iloc[:5]]
    assert body["items"][0]["item_id"] == counts.index[0]


def test_ratings_the_model_cannot_use_give_popular_without_rated_items(
    model_client: TestClient, store: sessionmaker[Session], ml_subset: Subset
) -> None:
    # An item created after training: the model cannot fold this rating in.
    assert model_client.put("/items/brand-new", json={"title": "Brand new"}).status_code == 201
    top = ml_subset.ratings["item_id"].value_counts().index[0]
    post_ratings(model_client, "early", {"brand-new": 5, top: 3})
    post_ratings(model_client, "early", {top: 3})
    model_client.delete(f"/users/early/ratings/{top}")
    body = model_client.get("/users/early/recommendations", params={"n": 20}).json()
    assert body["strategy"] == "popular"
    ids = [item["item_id"] for item in body["items"]]
    assert ids[0] == top
    assert "brand-new" not in ids


def test_popular_without_a_model(
    client: TestClient, store: sessionmaker[Session], ml_subset: Subset
) -> None:
    empty = client.get("/users/anyone/recommendations")
    assert empty.status_code == 200
    assert empty.json() == {
        "user_id": "anyone",
        "strategy": "popular",
        "model_version": None,
        "offset": 0,
        "n": 10,
        "items": [],
    }
    load_subset(store, ml_subset)
    counts = ml_subset.ratings["item_id"].value_counts()
    means = ml_subset.ratings.groupby("item_id")["rating"].mean()
    # A rating through the API marks the cached popularity stale.
    post_ratings(client, "1", {counts.index[0]: 5})
    body = client.get("/users/anyone/recommendations", params={"n": 3}).json()
    assert body["strategy"] == "popular"
    assert body["model_version"] is None
    assert [item["score"] for item in body["items"]] == [float(c) for c in counts.iloc[:3]]
    top = body["items"][0]
    assert top["predicted_rating"] == pytest.approx(means[top["item_id"]])
    assert top["title"]
    # the user who rated the top item does not get it
    rated = ml_subset.user_items("1")
    mine = client.get("/users/1/recommendations", params={"n": 20}).json()
    assert mine["strategy"] == "popular"
    assert not {item["item_id"] for item in mine["items"]} & rated


def test_genre_exclude_and_offset(model_client: TestClient, ml_subset: Subset) -> None:
    post_ratings(model_client, "picky", FIRST_RATINGS)
    comedies = set(
        ml_subset.items.loc[ml_subset.items["genres"].map(lambda g: "Comedy" in g), "id"]
    )
    body = model_client.get(
        "/users/picky/recommendations", params={"n": 20, "genre": "comedy"}
    ).json()
    assert body["strategy"] == "rbm"
    assert len(body["items"]) == 20
    assert {item["item_id"] for item in body["items"]} <= comedies

    full = model_client.get("/users/picky/recommendations", params={"n": 20}).json()["items"]
    page2 = model_client.get("/users/picky/recommendations", params={"n": 10, "offset": 10}).json()[
        "items"
    ]
    assert [i["item_id"] for i in page2] == [i["item_id"] for i in full[10:20]]

    excluded = [full[0]["item_id"], full[3]["item_id"]]
    without = model_client.get(
        "/users/picky/recommendations", params={"n": 20, "exclude": excluded}
    ).json()["items"]
    ids = [i["item_id"] for i in without]
    assert not set(ids) & set(excluded)
    assert ids[:2] == [full[1]["item_id"], full[2]["item_id"]]

    nothing = model_client.get(
        "/users/picky/recommendations", params={"genre": "no-such-genre"}
    ).json()
    assert nothing["items"] == []
    popular_comedies = model_client.get(
        "/users/nobody/recommendations", params={"genre": "Comedy", "n": 5}
    ).json()
    assert popular_comedies["strategy"] == "popular"
    assert {item["item_id"] for item in popular_comedies["items"]} <= comedies


@pytest.mark.parametrize(
    "params",
    [
        {"n": 0},
        {"n": 101},
        {"n": "ten"},
        {"offset": -1},
        {"offset": 10_001},
        {"exclude": "bad id"},
        {"genre": ""},
        {"genre": "g" * 65},
    ],
)
def test_recommendation_parameters_are_bounded(
    client: TestClient, params: dict[str, object]
) -> None:
    response = client.get("/users/u1/recommendations", params=params)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["loc"][0] == "query"


def test_no_model_predictions_similar_and_model(
    client: TestClient, store: sessionmaker[Session]
) -> None:
    predictions = client.get("/users/u/predictions", params={"item_id": ["a", "b"]}).json()
    assert predictions["model_version"] is None
    assert predictions["items"] == []
    assert predictions["unknown_items"] == ["a", "b"]
    assert predictions["levels"] == [1.0, 2.0, 3.0, 4.0, 5.0]
    similar = client.get("/items/a/similar")
    assert similar.status_code == 404
    assert "no model" in similar.json()["detail"]
    model = client.get("/model")
    assert model.status_code == 404
    assert model.json()["type"] == "urn:rbmrec:problem:no-model"


def test_get_model_describes_the_served_version(
    model_client: TestClient, model_artifacts: list[Path], ml_subset: Subset
) -> None:
    response = model_client.get("/model")
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == model_artifacts[0].name
    assert body["status"] == "active"
    assert body["n_items"] == len(ml_subset.item_ids)
    assert body["hyperparameters"]["user_rbm_params"]["n_hidden"] == 16
    # both jobs and every part are described
    parts = body["parts"]
    assert set(parts) == {"user_rbm", "item_rbm", "bias", "ranker"}
    assert parts["ranker"]["model_class"] == "RBMRanker"
    assert parts["item_rbm"]["settings"]["n_hidden"] == 16
    assert "ranks the recommendations" in parts["ranker"]["role"]
    assert set(parts["ranker"]["validation"]) >= {"beta", "omega", "evidence_exponent"}
    assert body["trained_at"]
    assert body["loaded_at"]
    assert body["activated_at"]


def test_similar_items(model_client: TestClient, store: sessionmaker[Session]) -> None:
    response = model_client.get("/items/50/similar", params={"n": 7})
    assert response.status_code == 200
    body = response.json()
    assert body["item_id"] == "50"
    assert body["model_version"]
    ids = [item["item_id"] for item in body["items"]]
    assert len(ids) == 7
    assert "50" not in ids
    sims = [item["similarity"] for item in body["items"]]
    assert sims == sorted(sims, reverse=True)
    assert all(-1.0 <= s <= 1.0 for s in sims)
    assert all(item["title"] for item in body["items"])

    unknown = model_client.get("/items/not-an-item/similar")
    assert unknown.status_code == 404
    assert unknown.json()["type"] == "urn:rbmrec:problem:unknown-item"
    model_client.put("/items/unrated", json={"title": "Nobody rated me"})
    outside = model_client.get("/items/unrated/similar")
    assert outside.status_code == 404
    assert "not known to the model" in outside.json()["detail"]
    assert model_client.get("/items/50/similar", params={"n": 101}).status_code == 422


def test_strategy_and_model_metrics(model_client: TestClient, model_artifacts: list[Path]) -> None:
    post_ratings(model_client, "counted", FIRST_RATINGS)
    model_client.get("/users/counted/recommendations")
    model_client.get("/users/not-counted/recommendations")
    model_client.get("/users/counted/recommendations")
    text = model_client.get("/metrics").text
    assert 'rbmrec_recommendations_total{strategy="rbm"} 2.0' in text
    assert 'rbmrec_recommendations_total{strategy="popular"} 1.0' in text
    assert f'rbmrec_model_info{{version="{model_artifacts[0].name}"}} 1.0' in text
    assert "rbmrec_model_loaded 1.0" in text
    assert (
        'rbmrec_http_requests_total{method="GET",route="/users/{user_id}/recommendations",'
        'status="200"} 3.0' in text
    )
    assert "/users/counted/" not in text
    assert (
        'rbmrec_http_request_duration_seconds_bucket{le="0.25",method="GET",route="/users/{user_id}/recommendations"}'
        in text
    )


def test_explanations_name_the_users_own_ratings(
    model_client: TestClient, store: sessionmaker[Session]
) -> None:
    ratings = {"1": 5.0, "50": 5.0, "181": 4.0, "100": 2.0}
    post_ratings(model_client, "explained", ratings)
    plain = model_client.get("/users/explained/recommendations", params={"n": 5}).json()
    # without explain=true nothing is added to the answer
    assert all(
        set(item) == {"item_id", "title", "score", "predicted_rating"} for item in plain["items"]
    )
    body = model_client.get(
        "/users/explained/recommendations", params={"n": 5, "explain": "true"}
    ).json()
    assert [i["item_id"] for i in body["items"]] == [i["item_id"] for i in plain["items"]]
    assert any(item["explanations"] for item in body["items"])
    for item in body["items"]:
        for reason in item["explanations"]:
            assert reason["item_id"] in ratings
            assert reason["rating"] == ratings[reason["item_id"]]
            assert reason["contribution"] > 0
            assert reason["title"]
        if item["explanations"]:
            strongest = item["explanations"][0]
            assert (
                item["reason"] == f"because you rated {strongest['title']} {strongest['rating']:g}"
            )
    # the popular fallback has nothing to explain
    newcomer = model_client.get(
        "/users/newcomer/recommendations", params={"n": 3, "explain": "true"}
    ).json()
    assert newcomer["strategy"] == "popular"
    assert all(item["explanations"] == [] for item in newcomer["items"])


def test_a_version_trained_before_the_served_model_had_parts_still_serves(
    store: sessionmaker[Session],
    ml_subset: Subset,
    legacy_artifact: Path,
    make_client: Callable[..., TestClient],
) -> None:
    load_subset(store, ml_subset)
    register(store, legacy_artifact, active=True)
    client = make_client()
    post_ratings(client, "old-model", {"1": 5.0, "50": 4.0})
    body = client.get("/users/old-model/recommendations", params={"n": 5, "explain": "true"}).json()
    assert body["strategy"] == "rbm"
    assert body["model_version"] == legacy_artifact.name
    assert len(body["items"]) == 5
    assert all(item["explanations"] == [] for item in body["items"])
    assert client.get("/model").json()["parts"] == {}
    predictions = client.get("/users/old-model/predictions", params={"item_id": ["181"]})
    assert predictions.status_code == 200


def _score(client: TestClient, user_id: str, item_id: str) -> float:
    body = client.get(f"/users/{user_id}/recommendations", params={"n": 100}).json()
    scores = {item["item_id"]: item["score"] for item in body["items"]}
    assert item_id in scores, "the item left the top 100"
    return float(scores[item_id])


def test_removing_or_lowering_the_strongest_support_lowers_the_score(
    model_client: TestClient,
) -> None:
    ratings = {"1": 5.0, "50": 5.0, "181": 4.0, "172": 5.0, "100": 2.0}
    post_ratings(model_client, "supported", ratings)
    body = model_client.get(
        "/users/supported/recommendations", params={"n": 5, "explain": "true"}
    ).json()
    explained = [item for item in body["items"] if item["explanations"]]
    assert explained
    item = explained[0]
    strongest = item["explanations"][0]
    before = _score(model_client, "supported", item["item_id"])
    assert before == pytest.approx(item["score"])

    # lowered to the bottom of the scale
    post_ratings(model_client, "supported", {strongest["item_id"]: 1.0})
    lowered = _score(model_client, "supported", item["item_id"])
    assert lowered < before
    # left out: the score drops by the contribution the explanation gave
    deleted = model_client.delete(f"/users/supported/ratings/{strongest['item_id']}")
    assert deleted.status_code == 204
    removed = _score(model_client, "supported", item["item_id"])
    assert removed < before
    assert before - removed == pytest.approx(strongest["contribution"], rel=1e-3, abs=1e-4)


def test_explanations_are_not_computed_unless_asked(
    model_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = RBMRecommender.explain

    def counted(self: RBMRecommender, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(self, *args, **kwargs)

    # a spy: the real method still answers, the test only counts its calls
    monkeypatch.setattr(RBMRecommender, "explain", counted)
    post_ratings(model_client, "thrifty", FIRST_RATINGS)
    plain = model_client.get("/users/thrifty/recommendations", params={"n": 10}).json()
    given = model_client.post(
        "/recommendations",
        json={"ratings": [{"item_id": k, "rating": v} for k, v in FIRST_RATINGS.items()]},
    ).json()
    assert calls == []
    for answer in (plain, given):
        assert answer["strategy"] == "rbm"
        assert all("explanations" not in item and "reason" not in item for item in answer["items"])
    model_client.get("/users/thrifty/recommendations", params={"n": 10, "explain": "true"})
    assert len(calls) == 1


# -- POST /recommendations: ratings given in the body ---------------------------------
def test_ratings_in_the_body_get_what_a_stored_user_gets(
    model_client: TestClient, store: sessionmaker[Session]
) -> None:
    post_ratings(model_client, "stored", FIRST_RATINGS)
    stored = model_client.get(
        "/users/stored/recommendations", params={"n": 8, "explain": "true", "genre": "Drama"}
    ).json()
    response = model_client.post(
        "/recommendations",
        json={
            "ratings": [{"item_id": k, "rating": v} for k, v in FIRST_RATINGS.items()],
            "n": 8,
            "explain": True,
            "genre": "Drama",
        },
    )
    assert response.status_code == 200, response.text
    given = response.json()
    assert given["strategy"] == "rbm"
    assert given["model_version"] == stored["model_version"]
    assert given["items"] == stored["items"]
    # nothing was written
    with store() as session:
        assert count_ratings(session) == count_ratings_before(session, "stored")


def count_ratings_before(session: Session, user_id: str) -> int:
    """All ratings but the ones these tests posted for ``user_id``."""
    return count_ratings(session) - count_user_ratings(session, user_id) + len(FIRST_RATINGS)


def test_ratings_in_the_body_are_checked(model_client: TestClient) -> None:
    cases = [
        {"ratings": [{"item_id": "1", "rating": 7}]},
        {"ratings": [{"item_id": "1", "rating": 5}], "n": 0},
        {"ratings": [{"item_id": "1", "rating": 5}], "n": 5.5},
        {"ratings": [{"item_id": "1", "rating": 5}], "offset": False},
        {"ratings": [{"item_id": "1", "rating": 5}], "explain": 0},
        {"ratings": [{"item_id": "bad id", "rating": 5}]},
        {"ratings": [], "surprise": True},
        {},
    ]
    for payload in cases:
        response = model_client.post("/recommendations", json=payload)
        assert response.status_code == 422, (payload, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    off_scale = model_client.post(
        "/recommendations",
        json={"ratings": [{"item_id": "1", "rating": 5}, {"item_id": "2", "rating": 7}]},
    ).json()
    assert off_scale["errors"][0]["loc"] == ["body", "ratings", 1, "rating"]
    # an item given twice counts with its last rating, as a second POST /ratings would
    twice = model_client.post(
        "/recommendations",
        json={"ratings": [{"item_id": "50", "rating": 1}, {"item_id": "50", "rating": 5}]},
    )
    once = model_client.post("/recommendations", json={"ratings": [{"item_id": "50", "rating": 5}]})
    assert twice.status_code == 200, twice.text
    assert twice.json()["items"] == once.json()["items"]
    assert model_client.post("/recommendations", content=b"x=1").status_code in (415, 422)


def test_ratings_the_model_cannot_use_get_popular_items(model_client: TestClient) -> None:
    nothing_known = model_client.post(
        "/recommendations", json={"ratings": [{"item_id": "not-in-model", "rating": 5}], "n": 3}
    ).json()
    assert nothing_known["strategy"] == "popular"
    assert len(nothing_known["items"]) == 3


def test_ratings_in_the_body_without_a_model_get_popular_items(client: TestClient) -> None:
    no_model = client.post("/recommendations", json={"ratings": [{"item_id": "1", "rating": 5}]})
    assert no_model.status_code == 200
    assert no_model.json()["model_version"] is None
