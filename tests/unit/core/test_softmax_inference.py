"""SoftmaxRBM inference (rbm_core.softmax_inference): predictions, scores, samples, bad input."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from scipy.special import expit

from rbm_core import (
    DEFAULT_SCALE,
    NotFittedError,
    RatingScaleError,
    SoftmaxRBM,
    UnknownItemError,
)
from rbm_core import functional as fn


def test_predict_reports_unknown_and_ignored_items(small_model: SoftmaxRBM) -> None:
    items = small_model.item_ids_.tolist()
    pred = small_model.predict({items[0]: 5.0, "ghost": 3.0}, [items[1], "nowhere", items[2]])
    assert pred.item_ids == [items[1], items[2]]
    assert pred.unknown_items == ["nowhere"]
    assert pred.ignored_ratings == ["ghost"]
    assert pred.distribution.shape == (2, 5)
    np.testing.assert_allclose(pred.distribution.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(pred.expected, pred.distribution @ DEFAULT_SCALE.values, rtol=1e-5)
    assert np.all((pred.expected >= 1) & (pred.expected <= 5))
    # an unknown rated item changes nothing
    same = small_model.predict({items[0]: 5.0}, [items[1], items[2]])
    np.testing.assert_allclose(same.distribution, pred.distribution)


def test_predict_all_items_by_default(small_model: SoftmaxRBM) -> None:
    pred = small_model.predict({})
    assert pred.item_ids == small_model.item_ids_.tolist()
    assert pred.expected.shape == (small_model.n_items_,)


def test_predict_matches_the_formula(small_model: SoftmaxRBM) -> None:
    # mean field: softmax_k(b_q^k + a^k z + sum_j sigmoid(x_j) W_qj^k)
    m = small_model
    ratings = {m.item_ids_[0]: 4.0, m.item_ids_[3]: 1.0}
    x = m.hidden_bias_ + m.weights_[0, 3] + m.weights_[3, 0]
    z = ((4.0 - m.item_means_[0]) + (1.0 - m.item_means_[3])) / (2 + m.offset_shrinkage)
    logits = m.visible_bias_ + z * m.offset_weights_ + m.weights_ @ expit(x)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(m.predict(ratings).distribution, expected, rtol=1e-4, atol=1e-6)


def test_exact_prediction_mode(small_model: SoftmaxRBM) -> None:
    m = copy.deepcopy(small_model).set_params(prediction="exact")
    ratings = {m.item_ids_[0]: 4.0}
    pred = m.predict(ratings)
    items, levels, _ = m._encode_one(ratings)
    fold = m._fold_in_one(items, levels)
    expected = fn.exact_marginal_distribution(
        fold.x.astype(np.float64), m.weights_.astype(np.float64), m.visible_bias_, fold.user_bias
    )[0]
    np.testing.assert_allclose(pred.distribution, expected, rtol=1e-4, atol=1e-6)
    # exact and mean field are different approximations of nearby numbers
    mf = small_model.predict(ratings)
    assert np.abs(mf.expected - pred.expected).max() < 0.5


def test_score_items_covers_every_item(small_model: SoftmaxRBM) -> None:
    ids = small_model.item_ids_
    scores = small_model.score_items({ids[2]: 5.0, "ghost": 1.0})
    assert scores.score.shape == scores.expected.shape == (small_model.n_items_,)
    assert scores.rated.tolist() == [i == 2 for i in range(len(ids))]
    assert scores.ignored_ratings == ["ghost"]
    np.testing.assert_allclose(scores.expected, small_model.predict({ids[2]: 5.0}).expected)


@pytest.mark.parametrize("ranking", ["expected", "p_high", "p_high_popularity"])
def test_ranking_scores(small_model: SoftmaxRBM, ranking: str) -> None:
    m = copy.deepcopy(small_model).set_params(ranking=ranking)
    ratings = {m.item_ids_[0]: 2.0}
    scores = m.score_items(ratings)
    dist = m.predict(ratings).distribution
    p_high = dist[:, 3:].sum(axis=1)
    expected = {
        "expected": dist @ DEFAULT_SCALE.values,
        "p_high": p_high,
        "p_high_popularity": p_high * (m.item_popularity_ + 1.0),
    }[ranking]
    np.testing.assert_allclose(scores.score, expected, rtol=1e-5)
    recs = m.recommend(ratings, n=5)
    assert [r.score for r in recs] == sorted((r.score for r in recs), reverse=True)


def test_recommend_never_returns_rated_or_excluded_items(small_model: SoftmaxRBM) -> None:
    ids = small_model.item_ids_.tolist()
    rated = {ids[0]: 5.0, ids[1]: 4.0, ids[2]: 1.0}
    recs = small_model.recommend(rated, n=len(ids), exclude=[ids[3], "not-an-item"])
    got = [r.item_id for r in recs]
    assert len(got) == len(ids) - 4 == len(set(got))
    assert not set(got) & {ids[0], ids[1], ids[2], ids[3]}
    scores = small_model.score_items(rated)
    top = small_model.recommend(rated, n=3)
    for r in top:
        i = ids.index(r.item_id)
        assert r.score == pytest.approx(float(scores.score[i]), rel=1e-6)
        assert r.predicted_rating == pytest.approx(float(scores.expected[i]), rel=1e-6)
    assert [r.item_id for r in top] == got[:3]


def test_recommend_is_deterministic(small_model: SoftmaxRBM) -> None:
    ratings = {small_model.item_ids_[4]: 3.0}
    assert small_model.recommend(ratings, n=7) == small_model.recommend(ratings, n=7)


def test_batch_and_single_user_answers_agree(small_model: SoftmaxRBM) -> None:
    ids = small_model.item_ids_.tolist()
    users = [
        {ids[0]: 5.0, ids[5]: 2.0},
        {},
        {ids[7]: 1.0, "ghost": 4.0},
        {i: 3.0 for i in ids[:20]},
    ]
    batch = small_model.recommend(users, n=4, exclude=[ids[9]])
    assert len(batch) == len(users)
    for user, recs in zip(users, batch, strict=True):
        single = small_model.recommend(user, n=4, exclude=[ids[9]])
        assert [r.item_id for r in recs] == [r.item_id for r in single]
        np.testing.assert_allclose([r.score for r in recs], [r.score for r in single], rtol=1e-5)
    np.testing.assert_allclose(
        small_model.transform(users), np.stack([small_model.transform(u) for u in users]), rtol=1e-5
    )
    fe = small_model.free_energy(users)
    np.testing.assert_allclose(fe, [small_model.free_energy(u) for u in users], rtol=1e-5)
    scores, codes = small_model.score_batch(users)
    for row, user in enumerate(users):
        np.testing.assert_allclose(scores[row], small_model.score_items(user).score, rtol=1e-5)
    assert codes.getnnz(axis=1).tolist() == [2, 0, 1, 20]


def test_recommend_with_fewer_candidates_than_n(small_model: SoftmaxRBM) -> None:
    ids = small_model.item_ids_.tolist()
    recs = small_model.recommend({i: 4.0 for i in ids[:-2]}, n=10)
    assert sorted(r.item_id for r in recs) == sorted(ids[-2:])
    assert small_model.recommend({i: 4.0 for i in ids}, n=3) == []


def test_inference_does_not_mutate_inputs(small_model: SoftmaxRBM) -> None:
    ratings = {small_model.item_ids_[0]: 5.0, "ghost": 2.0}
    exclude = [small_model.item_ids_[1]]
    frozen = (dict(ratings), list(exclude))
    weights = small_model.weights_.copy()
    small_model.predict(ratings)
    small_model.recommend(ratings, n=3, exclude=exclude)
    small_model.recommend([ratings, ratings], n=3, exclude=exclude)
    small_model.sample(ratings, n_samples=2, n_steps=2, random_state=0)
    assert (ratings, exclude) == (frozen[0], frozen[1])
    np.testing.assert_array_equal(weights, small_model.weights_)


def test_transform_gives_hidden_probabilities(small_model: SoftmaxRBM) -> None:
    m = small_model
    h = m.transform({m.item_ids_[1]: 2.0})
    np.testing.assert_allclose(h, expit(m.hidden_bias_ + m.weights_[1, 1]), rtol=1e-5)
    assert m.transform([{}]).shape == (1, 8)


def test_free_energy_matches_definition(small_model: SoftmaxRBM) -> None:
    m = small_model
    ratings = {m.item_ids_[0]: 5.0, m.item_ids_[1]: 1.0}
    x = m.hidden_bias_ + m.weights_[0, 4] + m.weights_[1, 0]
    z = ((5.0 - m.item_means_[0]) + (1.0 - m.item_means_[1])) / (2 + m.offset_shrinkage)
    vb = (
        m.visible_bias_[0, 4]
        + m.visible_bias_[1, 0]
        + z * (m.offset_weights_[4] + m.offset_weights_[0])
    )
    expected = -vb - np.logaddexp(0, x).sum()
    assert m.free_energy(ratings) == pytest.approx(float(expected), rel=1e-5)


def test_sample_generates_ratings_on_the_scale(small_model: SoftmaxRBM) -> None:
    ids = small_model.item_ids_.tolist()
    s = small_model.sample({ids[0]: 5.0, ids[1]: 1.0}, n_samples=4, n_steps=3, random_state=0)
    assert s.shape == (4, 2)
    assert set(np.unique(s)) <= set(DEFAULT_SCALE.levels)
    again = small_model.sample({ids[0]: 5.0, ids[1]: 1.0}, n_samples=4, n_steps=3, random_state=0)
    np.testing.assert_array_equal(s, again)
    assert small_model.sample(item_ids=ids[:3], n_samples=2, random_state=1).shape == (2, 3)


def test_gibbs_samples_of_one_item_follow_the_exact_marginal(small_model: SoftmaxRBM) -> None:
    # with a single visible unit the chain's stationary law is the exact p(v_q) given
    # nothing else: compare frequencies over many chains with the formula
    m = small_model
    q = 3
    samples = m.sample(item_ids=[m.item_ids_[q]], n_samples=6000, n_steps=15, random_state=0)
    freq = np.array([(samples[:, 0] == v).mean() for v in DEFAULT_SCALE.levels])
    exact = fn.exact_marginal_distribution(
        m.hidden_bias_[None, :].astype(np.float64), m.weights_[[q]], m.visible_bias_[[q]]
    )[0, 0]
    np.testing.assert_allclose(freq, exact, atol=0.025)


def test_similar_items(small_model: SoftmaxRBM) -> None:
    ids = small_model.item_ids_.tolist()
    sims = small_model.similar_items(ids[0], n=5)
    assert len(sims) == 5
    assert ids[0] not in [i for i, _ in sims]
    values = [s for _, s in sims]
    assert values == sorted(values, reverse=True)
    assert all(-1.0 - 1e-6 <= v <= 1.0 + 1e-6 for v in values)
    with pytest.raises(UnknownItemError) as err:
        small_model.similar_items("no-such-item")
    assert isinstance(err.value, KeyError)
    assert "no-such-item" in str(err.value)


def test_unfitted_model_says_so() -> None:
    model = SoftmaxRBM()
    for call in (
        lambda: model.predict({}),
        lambda: model.score_items({}),
        lambda: model.recommend({}),
        lambda: model.similar_items("x"),
        lambda: model.transform({}),
        lambda: model.free_energy({}),
        lambda: model.sample({}),
    ):
        with pytest.raises(NotFittedError, match="not fitted"):
            call()


@pytest.mark.parametrize(
    ("ratings", "error", "message"),
    [
        ({"i0": 7.0}, RatingScaleError, "not on the rating scale"),
        ({"i0": 2.5}, RatingScaleError, "not on the rating scale"),
        ({"i0": float("nan")}, RatingScaleError, "not on the rating scale"),
        ({"i0": "5"}, RatingScaleError, "not a number"),
        ({"i0": True}, RatingScaleError, "not a number"),
        ({1: 5.0}, TypeError, "strings"),
        ([("i0", 5.0)], TypeError, "mapping"),
    ],
)
def test_bad_user_ratings_are_rejected(small_model: SoftmaxRBM, ratings, error, message) -> None:
    with pytest.raises(error, match=message):
        small_model.predict(ratings)
    with pytest.raises(error, match=message):
        small_model.recommend([{}, ratings])


def test_bad_inference_arguments_are_rejected(small_model: SoftmaxRBM) -> None:
    with pytest.raises(ValueError, match="positive integer"):
        small_model.recommend({}, n=0)
    with pytest.raises(ValueError, match="positive integer"):
        small_model.similar_items(small_model.item_ids_[0], n=-3)
    with pytest.raises(TypeError, match="single string"):
        small_model.recommend({}, exclude="i0")
    with pytest.raises(TypeError, match="single string"):
        small_model.predict({}, item_ids="i0")
    with pytest.raises(UnknownItemError):
        small_model.sample(item_ids=["ghost"])
    with pytest.raises(ValueError, match="nothing to sample"):
        small_model.sample({})
    with pytest.raises(ValueError, match="n_steps"):
        small_model.sample(item_ids=[small_model.item_ids_[0]], n_steps=0)


@pytest.mark.parametrize("prediction", ["mean_field", "exact"])
def test_predict_with_no_known_item_asked_for(small_model: SoftmaxRBM, prediction: str) -> None:
    m = copy.deepcopy(small_model).set_params(prediction=prediction)
    for asked in ([], ["ghost", "phantom"]):
        pred = m.predict({m.item_ids_[0]: 3.0}, asked)
        assert pred.item_ids == []
        assert pred.expected.shape == (0,)
        assert pred.distribution.shape == (0, 5)
        assert pred.unknown_items == asked


def test_no_shrinkage_is_well_defined_for_a_user_without_ratings(small_matrix) -> None:
    # z_u = sum_i (r_ui - mean_i) / (n_u + lambda) is 0/0 for lambda = 0 and no ratings:
    # such a user has no offset (z_u = 0), in the batched and the single-user path
    model = SoftmaxRBM(n_hidden=8, n_epochs=3, offset_shrinkage=0.0, random_state=0)
    model.fit(small_matrix)
    with np.errstate(all="raise"):
        alone = model.score_items({})
        scores, _ = model.score_batch([{}, {model.item_ids_[0]: 4.0}])
        pred = model.predict({})
    assert np.isfinite(alone.score).all()
    assert np.isfinite(scores).all()
    np.testing.assert_allclose(scores[0], alone.score, rtol=1e-6)
    assert np.isfinite(pred.expected).all()
    assert len(model.recommend([{}], n=5)[0]) == 5
    assert len(model.recommend({}, n=5)) == 5
    # no offset: the prediction of a user without offset weights' help
    plain = copy.deepcopy(model).set_params(user_offset=False)
    np.testing.assert_allclose(pred.distribution, plain.predict({}).distribution, rtol=1e-6)


@pytest.mark.parametrize("prediction", ["mean_field", "exact"])
def test_hidden_dropout_shapes_both_kinds_of_prediction(small_matrix, prediction: str) -> None:
    # a unit kept with probability 1 - d: mean field scales p(h | V) by 1 - d, the exact
    # marginal scales each unit's log-term softplus(x_j + W_qj^k) by 1 - d
    model = SoftmaxRBM(
        n_hidden=8, n_epochs=3, hidden_dropout=0.5, prediction=prediction, random_state=0
    ).fit(small_matrix)
    m = model
    ratings = {m.item_ids_[0]: 4.0, m.item_ids_[3]: 1.0}
    x = (m.hidden_bias_ + m.weights_[0, 3] + m.weights_[3, 0]).astype(np.float64)
    z = ((4.0 - m.item_means_[0]) + (1.0 - m.item_means_[3])) / (2 + m.offset_shrinkage)
    if prediction == "exact":
        hidden_term = np.logaddexp(0.0, x + m.weights_).sum(axis=-1)
    else:
        hidden_term = m.weights_ @ expit(x)
    logits = m.visible_bias_ + z * m.offset_weights_ + 0.5 * hidden_term
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(m.predict(ratings).distribution, expected, rtol=1e-4, atol=1e-6)
    scores, _ = m.score_batch([ratings])
    np.testing.assert_allclose(scores[0], m.score_items(ratings).score, rtol=1e-5)
