"""The contract every rbm_core estimator keeps, run against each of them.

A new estimator joins with one line in ``ESTIMATORS``: a name and a factory taking a
seed. The checks use what the estimator offers: ``recommend`` / ``score_items`` /
``score_batch`` (a :class:`~rbm_core.base.Recommender`), ``predict`` (a rating
predictor), ``transform`` / ``reconstruct`` / ``free_energy`` / ``score_samples`` /
``sample`` (the :class:`~rbm_core.BernoulliRBM`), and persistence (every estimator of
``rbm_core.artifact.ESTIMATORS``).

Data: the first 150 users of the ML-100K fold u1 for training; users 151-170 are
never seen in training and are folded in from their ratings. The BernoulliRBM is not
a rating estimator: it learns the same users' implicit "rated" vectors (a binary
users x items CSR matrix, as a top-N ranker over it would) and answers for the unseen
users' rated vectors. Of the contract, what is about item ids does not apply to it
(it knows columns, not items: no catalog, no unknown items to ignore, no top-N) and
those checks skip it, saying why; the rest (fit returns self, the unfitted check,
same seed same model, save/load, bad input, one row and a batch agree, inference
leaves inputs and model alone) applies with its own inputs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from rbm_core import (
    DEFAULT_SCALE,
    BernoulliRBM,
    NotFittedError,
    RatingMatrix,
    RatingScaleError,
    SoftmaxRBM,
    load_model,
    save_model,
)
from rbm_core.artifact import ESTIMATORS as PERSISTED
from rbm_core.base import BaseEstimator, RatingEstimator, Recommender
from rbm_core.baselines import BiasBaseline, GlobalMean, Popularity
from rbm_core.item_rbm import ItemSoftmaxRBM
from rbm_core.movielens import read_ratings
from rbm_core.ranker import RBMRanker
from rbm_core.recommender import RBMRecommender
from rbm_core.references import EASE, ItemQualityPopularity

_SMALL_PARTS = {"n_hidden": 8, "n_epochs": 3}

ESTIMATORS: dict[str, Callable[[int], BaseEstimator]] = {
    "SoftmaxRBM": lambda seed: SoftmaxRBM(n_hidden=16, n_epochs=4, random_state=seed),
    "SoftmaxRBM-implicit": lambda seed: SoftmaxRBM(
        n_hidden=16, n_epochs=4, implicit_input=True, random_state=seed
    ),
    "ItemSoftmaxRBM": lambda seed: ItemSoftmaxRBM(n_hidden=8, n_epochs=3, random_state=seed),
    "RBMRanker": lambda seed: RBMRanker(n_hidden=8, n_epochs=3, random_state=seed),
    "RBMRecommender": lambda seed: RBMRecommender(
        user_rbm_params=_SMALL_PARTS,
        item_rbm_params=_SMALL_PARTS,
        ranker_params=_SMALL_PARTS,
        search=False,
        random_state=seed,
    ),
    "EASE": lambda seed: EASE(l2_grid=[100.0, 400.0], random_state=seed),
    "ItemQualityPopularity": lambda seed: ItemQualityPopularity(),
    "BiasBaseline": lambda seed: BiasBaseline(),
    "Popularity": lambda seed: Popularity(),
    "GlobalMean": lambda seed: GlobalMean(),
    "BernoulliRBM": lambda seed: BernoulliRBM(
        n_hidden=16, n_epochs=4, persistent=True, random_state=seed
    ),
}

NO_ITEM_IDS = "has no item ids: it models columns of a matrix, not a catalog of items"

pytestmark = pytest.mark.parametrize("name", list(ESTIMATORS))


@pytest.fixture(scope="module")
def data(movielens_dir: Path) -> tuple[RatingMatrix, list[dict[str, float]]]:
    """(training matrix of users 1-150, the ratings of unseen users 151-170 of its items)."""
    frame = read_ratings(movielens_dir / "u1.base")
    user = frame["user_id"].astype(int)
    train = RatingMatrix.from_frame(frame[user <= 150], DEFAULT_SCALE)
    unseen = frame[(user > 150) & (user <= 170) & frame["item_id"].isin(train.item_ids)]
    users = [
        {str(i): float(r) for i, r in zip(g["item_id"], g["rating"], strict=True)}
        for _, g in unseen.groupby("user_id")
    ]
    return train, users


def _rated(train: RatingMatrix, users: list[dict[str, float]]) -> sp.csr_matrix:
    """The users' implicit feedback on ``train``'s items: 1 where rated (float32 CSR)."""
    column = {item: j for j, item in enumerate(train.item_ids.tolist())}
    rows = [r for r, user in enumerate(users) for item in user if item in column]
    cols = [column[item] for user in users for item in user if item in column]
    return sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(len(users), train.n_items)
    )


def _training_data(model: BaseEstimator, train: RatingMatrix) -> Any:
    """What the model is fitted on: the ratings, or for a BernoulliRBM who rated what."""
    if isinstance(model, RatingEstimator):
        return train
    return (train.codes > 0).astype(np.float32).tocsr()


def _queries(model: BaseEstimator, data) -> Any:
    """What the model answers for: the unseen users' ratings, or their rated vectors."""
    train, users = data
    return users if isinstance(model, RatingEstimator) else _rated(train, users)


@pytest.fixture(scope="module")
def fitted(data) -> dict[str, BaseEstimator]:
    """One model per estimator, fitted once (treat as read-only)."""
    train, _ = data
    fitted: dict[str, BaseEstimator] = {}
    for name, make in ESTIMATORS.items():
        model = make(0)
        fitted[name] = model.fit(_training_data(model, train))  # type: ignore[attr-defined]
    return fitted


def _scores(model: BaseEstimator, users: Any) -> dict[str, Any]:
    """Everything the model answers for these users, to compare two models."""
    out: dict[str, Any] = {}
    if isinstance(model, BernoulliRBM):
        out["transform"] = model.transform(users)
        out["reconstruct"] = model.reconstruct(users)
        out["free_energy"] = model.free_energy(users)
        out["score_samples"] = model.score_samples(users)
        out["sample"] = model.sample(3, n_steps=10, random_state=1)
    if isinstance(model, Recommender):
        out["scores"] = model.score_batch(users)[0]
        out["recommend"] = model.recommend(users, n=10)
    if hasattr(model, "predict"):
        out["predict"] = [model.predict(u).expected for u in users[:5]]
    return out


def _assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    assert a
    for key in ("transform", "reconstruct", "free_energy", "score_samples", "sample"):
        if key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    if "scores" in a:
        np.testing.assert_array_equal(a["scores"], b["scores"])
        assert a["recommend"] == b["recommend"]
    if "predict" in a:
        for x, y in zip(a["predict"], b["predict"], strict=True):
            np.testing.assert_array_equal(x, y)


# -- the contract -----------------------------------------------------------------------------
def test_fit_returns_self_and_learns_the_catalog(name: str, data) -> None:
    train, _ = data
    model = ESTIMATORS[name](0)
    assert not model.is_fitted
    assert model.fit(_training_data(model, train)) is model  # type: ignore[attr-defined]
    assert model.is_fitted
    if isinstance(model, RatingEstimator):
        np.testing.assert_array_equal(model.item_ids_, train.item_ids)
        assert model.scale_ == train.scale
        assert (model.n_items_, model.n_users_) == (train.n_items, train.n_users)
    else:  # no catalog: the columns of the training matrix
        assert isinstance(model, BernoulliRBM)
        assert model.n_features_in_ == train.n_items
        assert model.partial_fit(_training_data(model, train)) is model
    # hyperparameters are stored unchanged and round-trip through get/set_params
    assert type(model)(**model.get_params()).get_params() == model.get_params()


def test_unfitted_models_say_so(name: str) -> None:
    model = ESTIMATORS[name](0)
    calls: list[Callable[[], object]] = []
    if isinstance(model, Recommender):
        calls += [lambda: model.recommend({}), lambda: model.score_items({})]
        calls += [lambda: model.score_batch([{}])]
    if hasattr(model, "predict"):
        calls.append(lambda: model.predict({}))
    if isinstance(model, BernoulliRBM):
        rows = np.zeros((1, 3), np.float32)
        calls += [lambda: model.transform(rows), lambda: model.reconstruct(rows)]
        calls += [lambda: model.free_energy(rows), lambda: model.score_samples(rows)]
        calls += [lambda: model.sample(1), lambda: model.gibbs(rows)]
    assert calls
    for call in calls:
        with pytest.raises(NotFittedError, match="not fitted"):
            call()


def test_recommend_never_returns_rated_or_excluded_items(name: str, fitted, data) -> None:
    model = fitted[name]
    if not isinstance(model, Recommender):
        pytest.skip(f"{name} does not rank")
    _, users = data
    exclude = [str(i) for i in model.item_ids_[:40:3]] + ["no-such-item"]
    for user, recs in zip(users, model.recommend(users, n=50, exclude=exclude), strict=True):
        got = [r.item_id for r in recs]
        assert len(got) == len(set(got)) == 50
        assert not set(got) & set(user)
        assert not set(got) & set(exclude)
        assert set(got) <= set(model.item_ids_.tolist())
        assert [r.score for r in recs] == sorted((r.score for r in recs), reverse=True)
    # the catalog runs out: every item not rated or excluded, and nothing more
    everything = model.recommend(users[0], n=model.n_items_ + 5, exclude=exclude)
    rest = set(model.item_ids_.tolist()) - set(users[0]) - set(exclude)
    assert {r.item_id for r in everything} == rest


def test_same_seed_gives_the_same_model(name: str, data) -> None:
    train, _ = data
    a, b = ESTIMATORS[name](7), ESTIMATORS[name](7)
    a.fit(_training_data(a, train))  # type: ignore[attr-defined]
    b.fit(_training_data(b, train))  # type: ignore[attr-defined]
    users = _queries(a, data)
    arrays_a, meta_a = a._artifact_state()
    arrays_b, meta_b = b._artifact_state()
    for key in arrays_a:
        np.testing.assert_array_equal(arrays_a[key], arrays_b[key])
    drop_time = [{k: v for k, v in e.items() if k != "seconds"} for e in meta_a.get("history", [])]
    assert drop_time == [
        {k: v for k, v in e.items() if k != "seconds"} for e in meta_b.get("history", [])
    ]
    _assert_same(_scores(a, users), _scores(b, users))


def test_unseen_users_fold_in_from_their_ratings(name: str, fitted, data) -> None:
    model = fitted[name]
    if not isinstance(model, RatingEstimator):
        pytest.skip(f"{name} {NO_ITEM_IDS}; any row of its columns is folded in alike")
    _, users = data
    newcomer = {**users[0], "not-in-the-catalog": 4.0}
    if hasattr(model, "predict"):
        pred = model.predict(newcomer, item_ids=[*model.item_ids_[:5].tolist(), "nope"])
        assert pred.ignored_ratings == ["not-in-the-catalog"]
        assert pred.unknown_items == ["nope"]
        assert len(pred.expected) == 5
        assert np.all((pred.expected >= 1.0) & (pred.expected <= 5.0))
    if isinstance(model, Recommender):
        scores = model.score_items(newcomer)
        assert scores.ignored_ratings == ["not-in-the-catalog"]
        assert scores.rated.sum() == len(users[0])
        assert np.isfinite(scores.score).all()
        assert np.isfinite(scores.expected).all()
        # a user is the ratings given: the same ratings, the same answer, whoever it is
        np.testing.assert_allclose(scores.score, model.score_items(dict(users[0])).score)
        assert model.recommend({}, n=5)  # nobody at all is a user too
        # the ranking alone, then the expected ratings of a page of it: those of all items
        ranked = model.score_items(newcomer, predicted=False)
        assert ranked.expected is None
        np.testing.assert_allclose(ranked.score, scores.score, rtol=1e-5)
        page = np.argsort(-ranked.score)[:10]
        np.testing.assert_allclose(
            ranked.expected_at(page), scores.expected[page], rtol=1e-5, atol=1e-4
        )


def test_save_and_load_give_identical_scores(name: str, fitted, data, tmp_path: Path) -> None:
    model = fitted[name]
    if type(model).__name__ not in PERSISTED:
        pytest.skip(f"{name} is not persisted")
    users = _queries(model, data)
    path = save_model(model, tmp_path / "model")
    for mmap in (True, False):
        loaded = load_model(path, mmap=mmap, estimator=type(model))
        assert type(loaded) is type(model)
        assert loaded.get_params() == model.get_params()
        _assert_same(_scores(model, users), _scores(loaded, users))


def test_bad_input_raises_the_documented_errors(name: str, fitted) -> None:
    model = fitted[name]
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        ESTIMATORS[name](0).set_params(no_such_parameter=1)
    if isinstance(model, BernoulliRBM):
        with pytest.raises(TypeError, match="array of numbers"):
            ESTIMATORS[name](0).fit("ratings.csv")  # type: ignore[attr-defined]
        with pytest.raises(ValueError, match="0 rows"):
            ESTIMATORS[name](0).fit(sp.csr_matrix((0, 5), dtype=np.float32))  # type: ignore[attr-defined]
        with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
            model.transform(np.full((1, model.n_features_in_), 5.0))
        with pytest.raises(ValueError, match="features, but the model has"):
            model.transform(np.zeros((1, model.n_features_in_ + 1)))
        return
    assert isinstance(model, RatingEstimator)
    with pytest.raises(TypeError, match="RatingMatrix"):
        ESTIMATORS[name](0).fit("ratings.csv")  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="no ratings"):
        ESTIMATORS[name](0).fit(RatingMatrix.from_arrays([], [], [], DEFAULT_SCALE))  # type: ignore[attr-defined]
    item = str(model.item_ids_[0])
    bad_users: list[tuple[Any, type[Exception], str]] = [
        ({item: 7.0}, RatingScaleError, "not on the rating scale"),
        ({item: "5"}, RatingScaleError, "not a number"),
        ({1: 5.0}, TypeError, "strings"),
        ([(item, 5.0)], TypeError, "mapping"),
    ]
    answer: list[Callable[[Any], object]] = []
    if isinstance(model, Recommender):
        answer += [model.score_items, lambda u: model.recommend([{}, u])]
    if hasattr(model, "predict"):
        answer.append(model.predict)
    for user, error, message in bad_users:
        for call in answer:
            with pytest.raises(error, match=message):
                call(user)
    if isinstance(model, Recommender):
        with pytest.raises(ValueError, match="positive integer"):
            model.recommend({}, n=0)
        with pytest.raises(TypeError, match="single string"):
            model.recommend({}, exclude=item)


def test_one_user_and_a_batch_agree(name: str, fitted, data) -> None:
    model = fitted[name]
    if isinstance(model, BernoulliRBM):
        rows = _queries(model, data)[:6]
        together = (model.transform(rows), model.reconstruct(rows), model.free_energy(rows))
        for r in range(rows.shape[0]):
            alone = (model.transform(rows[r]), model.reconstruct(rows[r]))
            np.testing.assert_allclose(alone[0][0], together[0][r], rtol=1e-5)
            np.testing.assert_allclose(alone[1][0], together[1][r], rtol=1e-5)
            np.testing.assert_allclose(model.free_energy(rows[r])[0], together[2][r], rtol=1e-5)
        return
    if not isinstance(model, Recommender):
        pytest.skip(f"{name} does not rank")
    _, users = data
    batch = [*users[:6], {}]
    together = model.recommend(batch, n=8, exclude=[str(model.item_ids_[3])])
    scores, rated = model.score_batch(batch)
    assert scores.shape == (len(batch), model.n_items_)
    assert rated.getnnz(axis=1).tolist() == [len(u) for u in batch]
    for row, user in enumerate(batch):
        alone = model.recommend(user, n=8, exclude=[str(model.item_ids_[3])])
        assert [r.item_id for r in alone] == [r.item_id for r in together[row]]
        np.testing.assert_allclose(
            [r.score for r in alone], [r.score for r in together[row]], rtol=1e-5
        )
        np.testing.assert_allclose(model.score_items(user).score, scores[row], rtol=1e-5)


def test_inference_leaves_inputs_and_model_alone(name: str, fitted, data) -> None:
    model = fitted[name]
    _, users = data
    user: Any = {**users[1], "ghost": 2.0}
    batch: Any = [user, user]
    if isinstance(model, BernoulliRBM):
        batch = user = _queries(model, data)
    frozen = copy.deepcopy(user)
    before, _ = model._artifact_state()
    before = {k: np.array(v) for k, v in before.items()}
    _scores(model, batch)
    if isinstance(model, Recommender):
        model.recommend(user, n=3, exclude=["ghost"])
    if isinstance(model, BernoulliRBM):
        assert (user != frozen).nnz == 0
    else:
        assert user == frozen
    after, _ = model._artifact_state()
    for key, arr in before.items():
        np.testing.assert_array_equal(arr, after[key])
