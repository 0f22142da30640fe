"""The stable hold-out: which ratings a retrain keeps out, and the split of a snapshot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app.db.snapshot import RatingsSnapshot
from app.services.retrain.holdout import holdout_mask, split_snapshot
from rbm_core.scale import DEFAULT_SCALE, RatingScale, RatingScaleError


def test_holdout_is_stable_and_keeps_every_user() -> None:
    rng = np.random.default_rng(0)
    users = np.array([f"u{u}" for u in rng.integers(0, 300, 20_000)], dtype=object)
    items = np.array([f"i{i}" for i in rng.integers(0, 2_000, 20_000)], dtype=object)
    held = holdout_mask(users, items)
    assert 0.08 < held.mean() < 0.12
    # the same rating is held out whatever else is in the data
    subset = slice(5_000, 15_000)
    assert np.array_equal(holdout_mask(users[subset], items[subset]), held[subset])
    # a user never loses all ratings to the hold-out
    single = holdout_mask(np.array(["solo"], dtype=object), np.array(["i"], dtype=object))
    assert not single.any()
    assert set(users[~held]) == set(users)


def test_the_fraction_must_be_a_share() -> None:
    users = np.array(["u"], dtype=object)
    for fraction in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="fraction"):
            holdout_mask(users, users, fraction)


def test_a_snapshot_splits_into_training_ratings_and_the_held_out_ones(
    ratings: pd.DataFrame, snapshot: RatingsSnapshot
) -> None:
    holdout = split_snapshot(snapshot, DEFAULT_SCALE)
    held = holdout_mask(ratings["user_id"].to_numpy(dtype=object), ratings["item_id"].to_numpy())
    assert holdout.n_held == int(held.sum()) > 0
    assert holdout.train.n_ratings + holdout.n_held == len(ratings)
    expected = ratings[held].reset_index(drop=True)
    assert holdout.held["user_id"].tolist() == expected["user_id"].tolist()
    assert holdout.held["item_id"].tolist() == expected["item_id"].tolist()
    assert np.array_equal(holdout.ratings, expected["rating"].to_numpy())
    # every held-out user can be folded in from training ratings
    assert set(holdout.held["user_id"]) <= set(holdout.train.user_ids.tolist())
    # the validation matrix is the held-out ratings of items the training set knows
    assert holdout.validation is not None
    assert list(holdout.validation.item_ids) == list(holdout.train.item_ids)
    known = holdout.held["item_id"].isin(set(holdout.train.item_ids.tolist()))
    assert holdout.validation.n_ratings == int(known.sum())


def test_a_rating_off_the_scale_stops_the_split(snapshot: RatingsSnapshot) -> None:
    with pytest.raises(RatingScaleError):
        split_snapshot(snapshot, RatingScale.parse("1,2,3"))
