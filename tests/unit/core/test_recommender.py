"""The served model on MovieLens 100K: what new users get, explanations, its records.

One RBMRecommender is trained on the u1 training fold (no search, so the test stays
quick) and shared by the tests of this module; new users are folded in from a few
ratings of well-known films, as a user trying the service would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rbm_core import RatingMatrix, RatingScale
from rbm_core.base import UnknownItemError
from rbm_core.movielens import read_items, read_ratings
from rbm_core.recommender import RBMRecommender, recommender_settings

SCALE = RatingScale.parse("1..5")


@pytest.fixture(scope="module")
def ratings(movielens_dir: Path):
    return read_ratings(movielens_dir / "u1.base")


@pytest.fixture(scope="module")
def model(ratings) -> RBMRecommender:
    train = RatingMatrix.from_frame(ratings, SCALE)
    return RBMRecommender(search=False, random_state=0).fit(train)


@pytest.fixture(scope="module")
def films(movielens_dir: Path, ratings):
    """Genres and titles by id, and the most rated children's films and horror films."""
    items = read_items(movielens_dir / "u.item")
    counts = ratings["item_id"].astype(str).value_counts()
    items["n"] = items["id"].map(counts).fillna(0)
    items = items.sort_values(["n", "id"], ascending=[False, True])

    def only(genre: str, other: str) -> list[str]:
        keep = items["genres"].apply(lambda g: genre in g and other not in g)
        return [str(i) for i in items.loc[keep, "id"]]

    return {
        "genres": dict(zip(items["id"], items["genres"], strict=True)),
        "title": dict(zip(items["id"], items["title"], strict=True)),
        "children": only("Children's", "Horror"),
        "horror": only("Horror", "Children's"),
    }


def _count(ids: list[str], genre: str, films) -> int:
    return sum(genre in films["genres"][i] for i in ids)


# -- what new users get ----------------------------------------------------------------------
def test_opposite_tastes_get_lists_that_favour_each_taste(model: RBMRecommender, films) -> None:
    # one rates six children's classics 5 and four horror films 1, the other the mirror
    children, horror = films["children"][:6], films["horror"][:4]
    kid = {**dict.fromkeys(children, 5.0), **dict.fromkeys(horror, 1.0)}
    fan = {**dict.fromkeys(children, 1.0), **dict.fromkeys(horror, 5.0)}
    kid_list = [r.item_id for r in model.recommend(kid, n=20)]
    fan_list = [r.item_id for r in model.recommend(fan, n=20)]
    assert _count(kid_list, "Children's", films) > _count(fan_list, "Children's", films)
    assert _count(fan_list, "Horror", films) > _count(kid_list, "Horror", films)
    # the lists are the users' own: at most a quarter in common (measured for more pairs
    # of genres by benchmarks/experiments/new_user_tastes.py)
    assert len(set(kid_list) & set(fan_list)) <= 5


def test_a_few_high_ratings_raise_the_predictions_of_similar_items(
    model: RBMRecommender, films
) -> None:
    horror = films["horror"][:4]
    fan = dict.fromkeys(horror, 5.0)
    hater = dict.fromkeys(horror, 1.0)
    # the horror films closest to the ones rated (by the ranker's item weights), and
    # Scream 2, the sequel of the most rated one
    close = [i for i, _ in model.similar_items(horror[0], n=30) if i in films["horror"]]
    targets = ["895", *[i for i in close if i not in horror][:6]]
    assert films["title"]["895"] == "Scream 2 (1997)"
    liked = model.predict(fan, targets).expected
    disliked = model.predict(hater, targets).expected
    assert np.all(liked > disliked + 0.5), list(zip(targets, liked, disliked, strict=True))


def test_a_new_users_ratings_change_the_whole_list(model: RBMRecommender, films) -> None:
    user = dict.fromkeys(films["children"][:5], 5.0)
    before = [r.item_id for r in model.recommend(user, n=20)]
    after = [r.item_id for r in model.recommend({**user, films["horror"][0]: 5.0}, n=20)]
    assert films["horror"][0] not in after
    assert before != after
    assert after[:-1] != before[1:]  # not merely the rated item taken out


def test_the_pages_expected_ratings_are_the_predictions_expected_ratings(
    model: RBMRecommender, films
) -> None:
    user = {**dict.fromkeys(films["children"][:4], 5.0), films["horror"][0]: 1.0}
    page = [r.item_id for r in model.recommend(user, n=10)]
    served = model.predict(user, page).expected
    np.testing.assert_allclose(model.expected_ratings(user, page), served, atol=1e-4)
    with pytest.raises(UnknownItemError):
        model.expected_ratings(user, ["no-such-item"])
    # the ranking's own fold-in answers for the page (what the service shows): the same
    scores = model.score_items(user, predicted=False)
    assert scores.expected is None
    columns = np.array([list(model.item_ids_).index(i) for i in page])
    np.testing.assert_allclose(scores.expected_at(columns), served, atol=1e-4)


def test_the_pages_expected_ratings_are_the_users_own(model: RBMRecommender, films) -> None:
    # every part answers for this user: the ratings of a user who loves what the other
    # hates give other predictions for the same items
    kid = {**dict.fromkeys(films["children"][:6], 5.0), **dict.fromkeys(films["horror"][:4], 1.0)}
    fan = {item: 6.0 - value for item, value in kid.items()}
    columns = np.arange(40)
    for user in (kid, fan):
        expected = model.score_items(user, predicted=False).expected_at(columns)
        np.testing.assert_allclose(expected, model.score_items(user).expected[columns], atol=1e-4)
    assert not np.allclose(
        model.score_items(kid, predicted=False).expected_at(columns),
        model.score_items(fan, predicted=False).expected_at(columns),
        atol=0.05,
    )


# -- explanations ----------------------------------------------------------------------------
def test_explanations_name_only_the_users_ratings_and_their_weight(
    model: RBMRecommender, films
) -> None:
    user = {**dict.fromkeys(films["children"][:6], 5.0), films["horror"][0]: 2.0}
    top = [r.item_id for r in model.recommend(user, n=10)]
    reasons = model.explain(user, top, n_reasons=3)
    assert len(reasons) == len(top)
    assert any(reasons)
    for support in reasons:
        assert len(support) <= 3
        weights = [w for _, _, w in support]
        assert weights == sorted(weights, reverse=True)
        for item, rating, weight in support:
            assert item in user
            assert rating == user[item]
            assert weight > 0


def test_leaving_out_or_lowering_the_strongest_support_lowers_the_score(
    model: RBMRecommender, films
) -> None:
    user = {**dict.fromkeys(films["children"][:6], 5.0), **dict.fromkeys(films["horror"][:2], 4.0)}
    top = [r.item_id for r in model.recommend(user, n=5)]
    reasons = model.explain(user, top, n_reasons=1)
    col = {item: i for i, item in enumerate(model.item_ids_.tolist())}
    full = model.score_items(user, predicted=False).score
    checked = 0
    for item, support in zip(top, reasons, strict=True):
        if not support:
            continue
        strongest, _, weight = support[0]
        without = {k: v for k, v in user.items() if k != strongest}
        dropped = model.score_items(without, predicted=False).score[col[item]]
        # the contribution is exactly what leaving the rating out takes away
        assert full[col[item]] - dropped == pytest.approx(weight, rel=1e-3, abs=1e-4)
        assert dropped < full[col[item]]
        lowered = model.score_items({**user, strongest: 1.0}, predicted=False).score[col[item]]
        assert lowered < full[col[item]]
        checked += 1
    assert checked >= 3


def test_unknown_items_and_no_ratings_explain_nothing(model: RBMRecommender, films) -> None:
    assert model.explain({}, ["50"]) == [[]]
    assert model.explain({"50": 5.0}, ["no-such-item"]) == [[]]


# -- records ---------------------------------------------------------------------------------
def test_the_model_records_its_choices(model: RBMRecommender) -> None:
    assert model.validation_["mode"] == "validated"
    assert model.validation_["blend_rmse"] < model.validation_["bias_rmse"]
    assert model.validation_["ranking_ndcg"] >= model.validation_["ranker_ndcg"] - 1e-12
    assert set(model.search_["chosen"]) == {"user_rbm", "item_rbm", "ranker", "bias"}
    assert [t["part"] for t in model.search_["trials"]] == ["user_rbm", "item_rbm", "ranker"]
    for part in ("user_rbm", "item_rbm", "ranker"):
        epochs = [entry["epoch"] for entry in model.curves_[part]]
        assert epochs == list(range(1, len(epochs) + 1))
    beta, omega, alpha = model.ranking_weights_
    assert beta >= 1.0
    assert omega >= 0.0
    assert alpha >= 0.0


def test_too_few_ratings_train_with_the_settings_given() -> None:
    rng = np.random.default_rng(0)
    users = [f"u{i}" for i in range(12) for _ in range(6)]
    items = [f"i{j}" for _ in range(12) for j in rng.choice(20, 6, replace=False)]
    values = rng.integers(1, 6, len(users)).astype(float)
    train = RatingMatrix.from_arrays(users, items, values, SCALE)
    small = {"n_hidden": 4, "n_epochs": 2}
    model = RBMRecommender(
        user_rbm_params=small, item_rbm_params=small, ranker_params=small, random_state=0
    ).fit(train)
    assert model.validation_["mode"] == "fixed"
    assert "held-out ratings" in model.validation_["reason"]
    assert model.search_["trials"] == []
    assert len(model.recommend({"i1": 5.0}, n=5)) == 5


def test_flat_settings_address_the_parts() -> None:
    assert recommender_settings({"search": False, "user_rbm.n_hidden": 50}) == {
        "search": False,
        "user_rbm_params": {"n_hidden": 50},
    }
    with pytest.raises(ValueError, match="unknown setting 'n_hidden'"):
        recommender_settings({"n_hidden": 50})
    with pytest.raises(ValueError, match="PART one of user_rbm, item_rbm, ranker"):
        recommender_settings({"bias.reg_user": 5})
    with pytest.raises(ValueError, match="item_rbm: fold_in_l2 must be"):
        RBMRecommender(item_rbm_params={"fold_in_l2": 0})._validate_params()
    with pytest.raises(ValueError, match="set random_state on the RBMRecommender"):
        RBMRecommender(ranker_params={"random_state": 3})._validate_params()
