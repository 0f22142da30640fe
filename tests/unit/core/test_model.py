"""SoftmaxRBM: the estimator contract, inference API and every bad input."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
from scipy.special import expit

from rbm_core import (
    DEFAULT_SCALE,
    DTYPE,
    NotFittedError,
    RatingMatrix,
    RatingScaleError,
    SoftmaxRBM,
    TrainingDivergedError,
    UnknownItemError,
    training,
)
from rbm_core import functional as fn


def fit_small(matrix: RatingMatrix, **params) -> SoftmaxRBM:
    defaults = {"n_hidden": 8, "n_epochs": 3, "batch_size": 16, "random_state": 0}
    return SoftmaxRBM(**{**defaults, **params}).fit(matrix)


def test_same_seed_gives_identical_weights(small_matrix: RatingMatrix) -> None:
    a = fit_small(small_matrix, random_state=7, cd_steps=[[0, 1], [2, 2]])
    b = fit_small(small_matrix, random_state=7, cd_steps=[[0, 1], [2, 2]])
    c = fit_small(small_matrix, random_state=8, cd_steps=[[0, 1], [2, 2]])
    for name in ("weights_", "visible_bias_", "hidden_bias_", "offset_weights_"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.weights_, c.weights_)


def test_fit_and_partial_fit_return_self(small_matrix: RatingMatrix) -> None:
    model = SoftmaxRBM(n_hidden=4, n_epochs=1, random_state=0)
    assert model.fit(small_matrix) is model
    assert model.partial_fit(small_matrix) is model
    assert model.n_epochs_ == 2
    fresh = SoftmaxRBM(n_hidden=4, random_state=0)
    assert fresh.partial_fit(small_matrix) is fresh
    assert fresh.n_epochs_ == 1


def test_fit_does_not_mutate_its_input(small_matrix: RatingMatrix) -> None:
    before = copy.deepcopy(small_matrix)
    fit_small(small_matrix)
    np.testing.assert_array_equal(before.codes.toarray(), small_matrix.codes.toarray())
    np.testing.assert_array_equal(before.user_ids, small_matrix.user_ids)
    assert before.fingerprint() == small_matrix.fingerprint()


def test_learned_attributes(small_matrix: RatingMatrix, small_model: SoftmaxRBM) -> None:
    m = small_model
    assert m.weights_.shape == (small_matrix.n_items, 5, 8)
    assert m.weights_.dtype == DTYPE
    assert m.visible_bias_.shape == (small_matrix.n_items, 5)
    assert m.hidden_bias_.shape == (8,)
    np.testing.assert_array_equal(m.item_ids_, small_matrix.item_ids)
    assert m.scale_ == DEFAULT_SCALE
    assert (m.n_items_, m.n_users_) == (small_matrix.n_items, small_matrix.n_users)
    assert m.training_fingerprint_ == small_matrix.fingerprint()
    np.testing.assert_array_equal(m.item_popularity_, small_matrix.codes.getnnz(axis=0))
    assert [h["epoch"] for h in m.history_] == [1, 2, 3, 4, 5]
    for entry in m.history_:
        assert entry["validation_rmse"] is None
        assert np.isfinite(entry["train_rmse"])
        assert np.isfinite(entry["train_free_energy"])


def test_history_with_validation_and_cd_schedule(small_matrix: RatingMatrix) -> None:
    train, val = small_matrix.split(0.2, random_state=1)
    model = SoftmaxRBM(
        n_hidden=6, n_epochs=4, batch_size=20, cd_steps=[[0, 1], [2, 3]], random_state=0
    ).fit(train, val)
    assert [h["cd_steps"] for h in model.history_] == [1, 1, 3, 3]
    for entry in model.history_:
        assert 0 < entry["validation_mae"] <= entry["validation_rmse"] < 4
        assert np.isfinite(entry["validation_free_energy"])


def test_visible_biases_start_at_log_rating_frequencies() -> None:
    # one item rated 5 by everybody, one rated 1 by everybody: before training, the
    # model already predicts each item's usual rating
    users = [f"u{i}" for i in range(40)]
    matrix = RatingMatrix.from_arrays(
        users + users, ["hit"] * 40 + ["flop"] * 40, [5.0] * 40 + [1.0] * 40, DEFAULT_SCALE
    )
    model = SoftmaxRBM(n_hidden=4, n_epochs=1, learning_rate=1e-6, random_state=0)
    model.fit(matrix)
    pred = model.predict({}, ["hit", "flop"])
    assert pred.expected[0] > 4.5
    assert pred.expected[1] < 1.5


def test_early_stopping_keeps_the_best_epoch(make_matrix) -> None:
    matrix = make_matrix(n_users=80, n_items=20, density=0.5, seed=3)
    train, val = matrix.split(0.25, random_state=0)
    model = SoftmaxRBM(
        n_hidden=30,
        n_epochs=40,
        learning_rate=1.0,
        momentum=0.9,
        weight_decay=0.0,
        batch_size=10,
        early_stopping=True,
        n_iter_no_change=3,
        random_state=0,
    ).fit(train, val)
    scores = [h["validation_rmse"] for h in model.history_]
    assert len(scores) < 40  # random ratings: validation stops improving quickly
    best = int(np.argmin(scores))
    assert len(scores) - 1 - best == 3
    # the kept weights are the best epoch's: recompute its validation RMSE
    held_out = training.held_out_ratings(train, val, model.item_ids_)
    assert model._validation_scores(held_out)[0] == pytest.approx(scores[best], rel=1e-5)


def test_early_stopping_without_validation_carves_one(small_matrix: RatingMatrix) -> None:
    model = fit_small(small_matrix, early_stopping=True, n_epochs=3)
    assert all(h["validation_rmse"] is not None for h in model.history_)


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
    ("params", "message"),
    [
        ({"n_hidden": 0}, "n_hidden"),
        ({"n_hidden": 2.5}, "n_hidden"),
        ({"batch_size": True}, "batch_size"),
        ({"n_epochs": -1}, "n_epochs"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"momentum": 1.0}, "momentum"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"hidden_dropout": 1.0}, "hidden_dropout"),
        ({"cd_steps": 0}, "cd_steps"),
        ({"cd_steps": [[1, 2]]}, "start at epoch 0"),
        ({"cd_steps": [[0, 1], [0, 2]]}, "increase"),
        ({"cd_steps": "many"}, "cd_steps"),
        ({"prediction": "guess"}, "prediction"),
        ({"ranking": "random"}, "ranking"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"user_offset": "yes"}, "user_offset"),
        ({"random_state": "seed"}, "random_state"),
        ({"blas_threads": 0}, "blas_threads"),
    ],
)
def test_bad_hyperparameters_are_rejected(small_matrix: RatingMatrix, params, message) -> None:
    with pytest.raises(ValueError, match=message):
        SoftmaxRBM(**params).fit(small_matrix)


def test_set_params_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        SoftmaxRBM().set_params(n_hiden=3)
    assert SoftmaxRBM().set_params(n_hidden=3).get_params()["n_hidden"] == 3


def test_bad_training_data_is_rejected(small_matrix: RatingMatrix) -> None:
    with pytest.raises(TypeError, match="RatingMatrix"):
        SoftmaxRBM().fit([[1, 2]])  # type: ignore[arg-type]
    empty = RatingMatrix.from_arrays([], [], [], DEFAULT_SCALE)
    with pytest.raises(ValueError, match="no ratings"):
        SoftmaxRBM().fit(empty)
    other = RatingMatrix.from_arrays(["u"], ["i0"], [4.5], DEFAULT_SCALE.parse("1..5:0.5"))
    with pytest.raises(RatingScaleError, match="scale"):
        SoftmaxRBM(n_epochs=1).fit(small_matrix, other)


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


def test_partial_fit_aligns_new_data_with_the_model_items(small_matrix: RatingMatrix) -> None:
    model = fit_small(small_matrix)
    extra = RatingMatrix.from_arrays(
        ["new1", "new1", "new2"],
        [str(small_matrix.item_ids[0]), "brand-new-item", str(small_matrix.item_ids[1])],
        [5.0, 4.0, 1.0],
        DEFAULT_SCALE,
    )
    before = model.weights_.copy()
    model.partial_fit(extra)
    assert model.n_items_ == small_matrix.n_items
    assert not np.array_equal(before, model.weights_)
    with pytest.raises(RatingScaleError):
        model.partial_fit(
            RatingMatrix.from_arrays(["u"], ["i0"], [4.5], DEFAULT_SCALE.parse("1..5:0.5"))
        )


def test_divergence_raises_a_named_error(small_matrix: RatingMatrix) -> None:
    with pytest.raises(TrainingDivergedError, match="non-finite"):
        SoftmaxRBM(n_hidden=8, learning_rate=1e30, momentum=0.9, n_epochs=5, random_state=0).fit(
            small_matrix
        )


def test_verbose_training_logs_each_epoch(small_matrix: RatingMatrix, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="rbm_core.training"):
        fit_small(small_matrix, verbose=True, n_epochs=2)
    assert sum("epoch" in r.getMessage() for r in caplog.records) == 2


def test_blas_thread_limit_applies_during_fit_only(small_matrix: RatingMatrix) -> None:
    from threadpoolctl import threadpool_info

    def blas_threads() -> list[int]:
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    before = blas_threads()
    seen: list[list[int]] = []

    class Spy(SoftmaxRBM):
        def _apply_update(self, *args, **kwargs) -> None:
            seen.append(blas_threads())
            super()._apply_update(*args, **kwargs)

    Spy(n_hidden=4, n_epochs=1, batch_size=30, blas_threads=1, random_state=0).fit(small_matrix)
    assert seen
    assert all(threads == [1] * len(before) for threads in seen)
    assert blas_threads() == before


@pytest.mark.parametrize("prediction", ["mean_field", "exact"])
def test_predict_with_no_known_item_asked_for(small_model: SoftmaxRBM, prediction: str) -> None:
    m = copy.deepcopy(small_model).set_params(prediction=prediction)
    for asked in ([], ["ghost", "phantom"]):
        pred = m.predict({m.item_ids_[0]: 3.0}, asked)
        assert pred.item_ids == []
        assert pred.expected.shape == (0,)
        assert pred.distribution.shape == (0, 5)
        assert pred.unknown_items == asked
