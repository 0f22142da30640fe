"""The item-based RBM: training on the transposed ratings and the fold-in of users."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rbm_core import RatingMatrix, RatingScale, SoftmaxRBM
from rbm_core.item_rbm import FoldInMemory, ItemSoftmaxRBM
from rbm_core.metrics import rmse
from rbm_core.movielens import read_ratings
from rbm_core.training import held_out_ratings

SCALE = RatingScale.parse("1..5")


@pytest.fixture(scope="module")
def split(movielens_dir: Path) -> tuple[RatingMatrix, RatingMatrix]:
    frame = read_ratings(movielens_dir / "u1.base")
    frame = frame[frame["user_id"].astype(int) <= 400]
    return RatingMatrix.from_frame(frame, SCALE).split(0.1, 0)


@pytest.fixture(scope="module")
def model(split) -> ItemSoftmaxRBM:
    kept, _ = split
    return ItemSoftmaxRBM(n_hidden=32, n_epochs=15, random_state=0).fit(kept)


def test_transposing_swaps_users_and_items(split) -> None:
    kept, _ = split
    flipped = kept.transposed()
    assert flipped.n_users == kept.n_items
    assert flipped.n_items == kept.n_users
    assert list(flipped.user_ids) == sorted(flipped.user_ids)
    user, item = str(kept.user_ids[3]), next(iter(kept.user_ratings(str(kept.user_ids[3]))))
    assert flipped.user_ratings(item)[user] == kept.user_ratings(user)[item]


def test_it_predicts_held_out_ratings_better_than_the_item_means(model, split) -> None:
    kept, held = split
    data = held_out_ratings(kept, held, model.item_ids_)
    pred = model.distribution_at(data.inputs, data.rows, data.items) @ SCALE.values
    means = np.asarray(kept.values.sum(axis=0)).ravel() / np.maximum(kept.codes.getnnz(axis=0), 1)
    assert rmse(data.targets, pred) < rmse(data.targets, np.clip(means[data.items], 1, 5)) - 0.02


def test_predict_and_the_batch_path_agree(model, split) -> None:
    kept, _ = split
    user = str(kept.user_ids[0])
    ratings = kept.user_ratings(user)
    asked = [str(i) for i in model.item_ids_[:25]]
    one = model.predict(ratings, asked)
    rows = np.zeros(25, dtype=np.int64)
    batch = model.distribution_at(kept.codes[:1], rows, np.arange(25))
    np.testing.assert_allclose(one.distribution, batch, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one.distribution.sum(axis=1), 1.0, rtol=1e-5)


def test_a_user_without_ratings_gets_the_population_answer(model) -> None:
    empty = model.predict({}, [str(i) for i in model.item_ids_[:10]])
    again = model.predict({"no-such-item": 5.0}, [str(i) for i in model.item_ids_[:10]])
    np.testing.assert_allclose(empty.expected, again.expected)
    assert again.ignored_ratings == ["no-such-item"]


def test_implicit_input_trains_the_who_rated_weights(split) -> None:
    kept, _ = split
    machine = SoftmaxRBM(n_hidden=8, n_epochs=2, implicit_input=True, random_state=0)
    machine.fit(kept.transposed())
    assert machine.implicit_weights_.shape == (kept.n_users, 8)
    assert np.abs(machine.implicit_weights_).sum() > 0
    plain = SoftmaxRBM(n_hidden=8, n_epochs=2, random_state=0).fit(kept.transposed())
    assert plain.implicit_weights_.shape == (0, 8)


def test_a_fold_in_is_remembered_by_its_ratings_only(model, split) -> None:
    kept, _ = split
    ratings = kept.user_ratings(str(kept.user_ids[1]))
    asked = [str(i) for i in model.item_ids_[:5]]
    first = model.predict(ratings, asked).expected
    np.testing.assert_array_equal(model.predict(dict(ratings), asked).expected, first)
    # one more rating is another key: a new fold-in
    extra = next(i for i in map(str, model.item_ids_) if i not in ratings)
    assert not np.allclose(model.predict({**ratings, extra: 1.0}, asked).expected, first)
    # new settings forget what was remembered
    model.set_params(fold_in_l2=1.0)
    try:
        assert not np.allclose(model.predict(ratings, asked).expected, first)
    finally:
        model.set_params(fold_in_l2=10.0)
    np.testing.assert_allclose(model.predict(ratings, asked).expected, first, rtol=1e-6)


def test_the_fold_in_memory_is_bounded() -> None:
    memory = FoldInMemory(2)
    value = (np.zeros(1), np.zeros(1))
    for key in (b"a", b"b", b"c"):
        memory.put(key, value)
    assert memory.get(b"a") is None
    assert memory.get(b"b") is value
    memory.put(b"d", value)  # "b" was used last, so "c" goes
    assert memory.get(b"c") is None
    assert memory.get(b"b") is value
