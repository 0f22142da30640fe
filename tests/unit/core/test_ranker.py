"""The RBM ranker: its visible layer, evidence scaling and leave-one-out scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from rbm_core import RatingMatrix, RatingScale
from rbm_core.movielens import read_ratings
from rbm_core.ranker import RBMRanker, visible_matrix

SCALE = RatingScale.parse("1..5")


@pytest.fixture(scope="module")
def data(movielens_dir: Path) -> tuple[RatingMatrix, RatingMatrix]:
    frame = read_ratings(movielens_dir / "u1.base")
    frame = frame[frame["user_id"].astype(int) <= 300]
    train = RatingMatrix.from_frame(frame, SCALE)
    return train.split(0.2, 0)


@pytest.fixture(scope="module")
def ranker(data) -> RBMRanker:
    kept, held = data
    return RBMRanker(n_hidden=16, n_epochs=10, evaluate_every=2, random_state=0).fit(kept, held)


def test_the_visible_layer_is_rated_then_liked() -> None:
    codes = sp.csr_matrix(np.array([[5, 0, 2], [0, 4, 0]], dtype=np.int8))
    visible = visible_matrix(codes, liked_code=4).toarray()
    np.testing.assert_array_equal(visible, [[1, 0, 1, 1, 0, 0], [0, 1, 0, 0, 1, 0]])


def test_early_stopping_keeps_the_best_measured_epoch(ranker: RBMRanker) -> None:
    measured = [(e["epoch"], e["validation_ndcg"]) for e in ranker.history_ if e["validation_ndcg"]]
    assert [epoch for epoch, _ in measured] == list(range(2, 2 * len(measured) + 1, 2))
    best_epoch = max(measured, key=lambda pair: pair[1])[0]
    assert ranker.n_epochs_ == best_epoch
    assert ranker.liked_level_ == 3  # 4 on 1..5
    assert ranker.reference_count_ == pytest.approx(ranker.item_popularity_.sum() / ranker.n_users_)


def test_short_profiles_are_scaled_long_ones_are_not(ranker: RBMRanker) -> None:
    n_ref = ranker.reference_count_
    kappa = ranker._evidence_scale(np.array([n_ref * 2, n_ref, n_ref / 4]), 0.5)
    np.testing.assert_allclose(kappa, [1.0, 1.0, 2.0], rtol=1e-6)
    # alpha = 0 is the plain mean field
    np.testing.assert_array_equal(ranker._evidence_scale(np.array([1.0]), 0.0), [1.0])


def test_one_user_and_a_batch_agree(ranker: RBMRanker, data) -> None:
    kept, _ = data
    codes = kept.codes[:5]
    batch = ranker.personal_scores(codes, evidence_exponent=1.0)
    for row in range(5):
        items = codes[row].indices.astype(np.int64)
        levels = codes[row].data.astype(np.int64) - 1
        one = ranker.personal_scores_one(items, levels, evidence_exponent=1.0)
        np.testing.assert_allclose(one, batch[row], rtol=1e-4, atol=1e-4)


def test_leave_one_out_equals_folding_in_without_the_rating(ranker: RBMRanker, data) -> None:
    kept, _ = data
    row = kept.codes[0]
    items = row.indices.astype(np.int64)[:12]
    levels = row.data.astype(np.int64)[:12] - 1
    targets = np.array([3, 10, 40], dtype=np.int64)
    loo = ranker.leave_one_out_personal(items, levels, targets, evidence_exponent=1.0)
    for r in range(len(items)):
        keep = np.arange(len(items)) != r
        direct = ranker.personal_scores_one(items[keep], levels[keep], evidence_exponent=1.0)
        np.testing.assert_allclose(loo[r], direct[targets], rtol=1e-4, atol=1e-4)


def test_liking_an_item_changes_the_scores_rating_it_low_does_not_like(
    ranker: RBMRanker, data
) -> None:
    kept, _ = data
    items = kept.codes[0].indices.astype(np.int64)[:8]
    liked = ranker.personal_scores_one(items, np.full(8, 4), evidence_exponent=0.5)
    disliked = ranker.personal_scores_one(items, np.full(8, 0), evidence_exponent=0.5)
    assert not np.allclose(liked, disliked)


def test_low_ratings_are_read_as_no_evidence_of_interest(ranker: RBMRanker, data) -> None:
    kept, _ = data
    assert ranker.disliked_level_ == 1  # 2 on 1..5
    items = kept.codes[0].indices.astype(np.int64)[:9]
    liked = items[:6]
    # three more items rated 1 or 2 leave the personal scores of six liked ones as they
    # were (evidence scaling aside: the profile length counts every rating)
    alone = ranker.personal_scores_one(liked, np.full(6, 4), evidence_exponent=0.0)
    levels = np.array([4] * 6 + [0, 1, 0])
    with_low = ranker.personal_scores_one(items, levels, evidence_exponent=0.0)
    np.testing.assert_allclose(with_low, alone, rtol=1e-5, atol=1e-5)
    # ... and a rating of 3 is evidence of interest, as is any rating with weight 0
    assert not np.allclose(
        ranker.personal_scores_one(items, np.array([4] * 6 + [2, 2, 2]), evidence_exponent=0.0),
        alone,
    )
    plain = RBMRanker(**{**ranker.get_params(), "dislike_weight": 0.0})
    plain.__dict__.update({k: v for k, v in vars(ranker).items() if k.endswith("_")})
    assert not np.allclose(plain.personal_scores_one(items, levels, evidence_exponent=0.0), alone)
    # the batched path reads low ratings the same way
    codes = sp.csr_matrix(
        ((levels + 1).astype(np.int8), (np.zeros(9, dtype=int), items)),
        shape=(1, ranker.n_items_),
    )
    batch = ranker.personal_scores(codes, evidence_exponent=0.0)[0]
    np.testing.assert_allclose(batch, with_low, rtol=1e-4, atol=1e-4)


def test_the_fold_in_input_reads_low_ratings_as_less() -> None:
    codes = sp.csr_matrix(np.array([[5, 0, 2], [1, 4, 0]], dtype=np.int8))
    visible = visible_matrix(codes, liked_code=4, disliked_code=2, dislike_weight=1.0)
    np.testing.assert_array_equal(visible.toarray(), [[1, 0, 0, 1, 0, 0], [0, 1, 0, 0, 1, 0]])
    against = visible_matrix(codes, liked_code=4, disliked_code=2, dislike_weight=2.0)
    np.testing.assert_array_equal(against.toarray()[1], [-1, 1, 0, 0, 1, 0])


def test_artifacts_saved_before_low_ratings_were_read_count_every_rating(
    ranker: RBMRanker, data
) -> None:
    arrays, metadata = ranker._artifact_state()
    del metadata["disliked_level"]
    old = RBMRanker(**ranker.get_params())
    old._restore_artifact_state(arrays, metadata)
    assert old.disliked_level_ == -1
    kept, _ = data
    items = kept.codes[0].indices.astype(np.int64)[:6]
    levels = np.array([4, 4, 4, 0, 0, 1])
    plain = RBMRanker(**{**ranker.get_params(), "dislike_weight": 0.0})
    plain.__dict__.update({k: v for k, v in vars(ranker).items() if k.endswith("_")})
    np.testing.assert_allclose(
        old.personal_scores_one(items, levels), plain.personal_scores_one(items, levels)
    )


def test_bad_low_rating_settings_are_refused(data) -> None:
    kept, _ = data
    with pytest.raises(ValueError, match="dislike_weight"):
        RBMRanker(dislike_weight=-1.0).fit(kept)
    with pytest.raises(ValueError, match="disliked_rating"):
        RBMRanker(disliked_rating=4.0, n_epochs=1).fit(kept)


def test_similar_items_leave_the_item_out(ranker: RBMRanker) -> None:
    item = str(ranker.item_ids_[0])
    similar = ranker.similar_items(item, n=5)
    assert len(similar) == 5
    assert item not in [i for i, _ in similar]
    sims = [s for _, s in similar]
    assert sims == sorted(sims, reverse=True)
