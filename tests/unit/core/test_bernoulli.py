"""BernoulliRBM: training, inference, reproducibility, persistence and bad input.

The formulas are checked by enumeration in test_bernoulli_functional.py; here the
estimator is trained on the handwritten digits that ship with scikit-learn (an extra
of the dev install) and on small random binary matrices, dense and sparse.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import expit

from rbm_core import (
    ArtifactError,
    BernoulliRBM,
    NotFittedError,
    TrainingDivergedError,
    load_model,
    save_model,
)
from rbm_core import bernoulli_functional as bf


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 digits scaled to [0, 1]: (1,437 training images, 360 held-out images)."""
    from sklearn.datasets import load_digits

    images = (load_digits().data / 16.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(images))
    return images[order[:1437]], images[order[1437:]]


def binary_matrix(n: int = 120, m: int = 30, density: float = 0.3, seed: int = 0) -> np.ndarray:
    """A random binary matrix whose columns are correlated in two blocks."""
    rng = np.random.default_rng(seed)
    group = rng.random(n) < 0.5
    p = np.where(group[:, None], np.r_[np.full(m // 2, 0.7), np.full(m - m // 2, 0.05)], density)
    return (rng.random((n, m)) < p).astype(np.float32)


def without_time(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in entry.items() if k != "seconds"} for entry in history]


def answers(model: BernoulliRBM, X: Any) -> dict[str, np.ndarray]:
    """Everything a fitted model computes for ``X`` (deterministic given the seeds)."""
    return {
        "transform": model.transform(X),
        "reconstruct": model.reconstruct(X),
        "free_energy": model.free_energy(X),
        "score_samples": model.score_samples(X),
        "sample": model.sample(4, n_steps=5, random_state=1),
        "gibbs": model.gibbs(X, n_steps=2, random_state=2),
    }


def assert_same_answers(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# -- fitting ----------------------------------------------------------------------------------
def test_fit_and_partial_fit_return_self_and_learn_the_documented_state() -> None:
    X = binary_matrix()
    model = BernoulliRBM(n_hidden=7, n_epochs=3, random_state=0)
    assert not model.is_fitted
    assert model.fit(X) is model
    assert model.weights_.shape == (30, 7)
    assert model.visible_bias_.shape == (30,)
    assert model.hidden_bias_.shape == (7,)
    assert model.weights_.dtype == model.visible_bias_.dtype == model.hidden_bias_.dtype
    assert model.weights_.dtype == np.float32
    assert (model.n_features_in_, model.n_epochs_, len(model.history_)) == (30, 3, 3)
    assert model.partial_fit(X) is model
    assert (model.n_epochs_, len(model.history_)) == (4, 4)
    assert model.history_[-1]["epoch"] == 4
    assert BernoulliRBM(n_hidden=3).partial_fit(X).n_epochs_ == 1


def test_initial_state_follows_hintons_guide() -> None:
    # W ~ N(0, 0.01^2), c = 0, b = log(p / (1 - p)) of the feature means
    X = binary_matrix(n=400, m=60)
    model = BernoulliRBM(n_hidden=50, random_state=3)
    model._initialise(X, np.random.default_rng(3))
    assert abs(float(model.weights_.std()) - 0.01) < 0.001
    assert abs(float(model.weights_.mean())) < 0.001
    np.testing.assert_array_equal(model.hidden_bias_, 0.0)
    np.testing.assert_allclose(expit(model.visible_bias_), (X.sum(0) + 0.5) / 401, rtol=1e-5)


def test_partial_fit_continues_training_as_fit_does() -> None:
    # momentum buffers, persistent chains and the generator carry over between calls:
    # k calls of partial_fit are k epochs of fit
    X = binary_matrix()
    for persistent in (False, True):
        params: dict[str, Any] = dict(
            n_hidden=6,
            batch_size=16,
            momentum=0.7,
            weight_decay=0.01,
            persistent=persistent,
            random_state=5,
        )
        fitted = BernoulliRBM(**params, n_epochs=3).fit(X)
        stepped = BernoulliRBM(**params)
        for _ in range(3):
            stepped.partial_fit(X)
        for name in ("weights_", "visible_bias_", "hidden_bias_"):
            np.testing.assert_array_equal(getattr(stepped, name), getattr(fitted, name))
        assert without_time(stepped.history_) == without_time(fitted.history_)


def test_same_seed_gives_the_same_model_and_answers() -> None:
    X = binary_matrix()
    a = BernoulliRBM(n_hidden=5, n_epochs=3, persistent=True, random_state=11).fit(X)
    b = BernoulliRBM(n_hidden=5, n_epochs=3, persistent=True, random_state=11).fit(X)
    c = BernoulliRBM(n_hidden=5, n_epochs=3, persistent=True, random_state=12).fit(X)
    np.testing.assert_array_equal(a.weights_, b.weights_)
    assert without_time(a.history_) == without_time(b.history_)
    assert_same_answers(answers(a, X), answers(b, X))
    assert not np.array_equal(a.weights_, c.weights_)
    # with the model's seed, score_samples and sample give the same answer on every call
    np.testing.assert_array_equal(a.score_samples(X), a.score_samples(X))
    np.testing.assert_array_equal(a.sample(3, n_steps=4), a.sample(3, n_steps=4))
    assert not np.array_equal(a.score_samples(X), a.score_samples(X, random_state=99))


def test_sparse_and_dense_data_train_the_same_model() -> None:
    X = binary_matrix(density=0.1)
    dense = BernoulliRBM(n_hidden=6, n_epochs=2, random_state=0).fit(X)
    sparse = BernoulliRBM(n_hidden=6, n_epochs=2, random_state=0).fit(sp.csr_matrix(X))
    np.testing.assert_allclose(sparse.weights_, dense.weights_, atol=1e-5)
    for key, value in answers(dense, X).items():
        np.testing.assert_allclose(answers(dense, sp.csr_matrix(X))[key], value, atol=1e-5)
    # other sparse formats and sparse arrays are accepted too
    BernoulliRBM(n_hidden=2, n_epochs=1).fit(sp.coo_array(X)).partial_fit(sp.csc_matrix(X))


def test_a_sparse_matrix_is_only_made_dense_one_batch_at_a_time() -> None:
    # 2,000 x 20,000 at 0.5 % density: 80 MB dense in float64, 160 MB as float32. Fitting
    # with batches of 50 rows must stay far below that.
    X = sp.random(2000, 20000, density=0.005, format="csr", random_state=0, dtype=np.float32)
    X.data[:] = 1.0
    dense_bytes = X.shape[0] * X.shape[1] * 4
    model = BernoulliRBM(n_hidden=8, batch_size=50, n_epochs=1, random_state=0)
    tracemalloc.start()
    try:
        model.fit(X, validation=X[:300])
        model.partial_fit(X)
        model.transform(X)
        model.free_energy(X)
        model.score_samples(X)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < dense_bytes / 5


def test_history_reports_reconstruction_error_and_the_free_energy_gap(digits) -> None:
    train, held_out = digits
    model = BernoulliRBM(n_hidden=32, n_epochs=3, random_state=0).fit(train, validation=held_out)
    first, *_, last = model.history_
    assert list(first) == [
        "epoch",
        "cd_steps",
        "train_rmse",
        "reconstruction_error",
        "train_free_energy",
        "validation_reconstruction_error",
        "validation_free_energy",
        "free_energy_gap",
        "seconds",
    ]
    assert last["reconstruction_error"] < first["reconstruction_error"]
    assert last["train_rmse"] < first["train_rmse"]
    probe = train[np.unique(np.linspace(0, len(train) - 1, 500).astype(np.int64))]
    assert last["reconstruction_error"] == pytest.approx(
        float(np.mean((model.reconstruct(probe) - probe) ** 2)), rel=1e-5
    )
    assert last["validation_free_energy"] == pytest.approx(
        float(np.mean(model.free_energy(held_out))), rel=1e-5
    )
    assert last["train_free_energy"] == pytest.approx(
        float(np.mean(model.free_energy(probe))), rel=1e-5
    )
    assert last["validation_reconstruction_error"] == pytest.approx(
        float(np.mean((model.reconstruct(held_out) - held_out) ** 2)), rel=1e-5
    )
    assert last["free_energy_gap"] == pytest.approx(
        last["validation_free_energy"] - last["train_free_energy"]
    )
    # without validation the free energies and validation figures are None; PCD
    # measures no train_rmse
    pcd = BernoulliRBM(n_hidden=8, n_epochs=1, persistent=True, random_state=0).fit(train)
    entry = pcd.history_[0]
    assert entry["train_rmse"] is None
    assert entry["train_free_energy"] is entry["free_energy_gap"] is None
    assert entry["validation_reconstruction_error"] is None
    assert entry["reconstruction_error"] > 0.0


def test_training_on_digits_reconstructs_them_far_better_than_the_untrained_model(
    digits,
) -> None:
    train, held_out = digits
    untrained = BernoulliRBM(n_hidden=64, random_state=0)
    untrained._initialise(train, np.random.default_rng(0))
    model = BernoulliRBM(n_hidden=64, n_epochs=5, random_state=0)
    model.fit(train)

    def error(m: BernoulliRBM) -> float:
        return float(np.mean((m.reconstruct(held_out) - held_out) ** 2))

    assert error(model) < 0.4 * error(untrained)
    # held-out images become more probable (mean pseudo-likelihood over 20 draws)
    pl = [
        np.mean(m.score_samples(held_out, random_state=s))
        for m in (untrained, model)
        for s in range(20)
    ]
    assert np.mean(pl[20:]) > np.mean(pl[:20]) + 5.0


def test_sample_and_gibbs_return_states_or_probabilities(digits) -> None:
    train, _ = digits
    model = BernoulliRBM(n_hidden=32, n_epochs=2, random_state=0).fit(train)
    states = model.sample(6, n_steps=20)
    assert states.shape == (6, 64)
    assert states.dtype == np.float32
    assert set(np.unique(states)) <= {0.0, 1.0}
    means = model.sample(6, n_steps=20, probabilities=True)
    assert np.all((means >= 0.0) & (means <= 1.0))
    assert len(np.unique(means)) > 2
    chains = model.gibbs(train[:5], n_steps=3)
    assert chains.shape == (5, 64)
    assert set(np.unique(chains)) <= {0.0, 1.0}
    # generated digits look like digits to the model: far lower free energy than noise
    noise = (np.random.default_rng(0).random((200, 64)) < 0.3).astype(np.float32)
    generated = model.sample(200, n_steps=200, random_state=0)
    assert model.free_energy(generated).mean() < model.free_energy(noise).mean() - 10.0


def test_score_samples_estimates_the_pseudo_likelihood() -> None:
    # the mean over random units is (1/M) sum_i of M log p(v_i | v_-i)
    X = binary_matrix(n=40, m=12)
    model = BernoulliRBM(n_hidden=4, n_epochs=2, random_state=0).fit(X)
    full = np.mean(
        [
            bf.pseudo_log_likelihood(
                X, model.weights_, model.visible_bias_, model.hidden_bias_, np.full(40, i)
            )
            for i in range(12)
        ],
        axis=0,
    )
    draws = np.mean([model.score_samples(X, random_state=s) for s in range(600)], axis=0)
    np.testing.assert_allclose(draws, full, rtol=0.1)
    assert np.all(full < 0.0)


def test_inference_leaves_the_inputs_and_the_model_alone() -> None:
    X = binary_matrix()
    model = BernoulliRBM(n_hidden=5, n_epochs=1, random_state=0).fit(X)
    before = {k: v.copy() for k, v in model._artifact_state()[0].items()}
    dense = X.copy()
    # a sparse matrix with a duplicate entry (summed to 1.0) and unsorted indices
    odd = sp.csr_matrix(
        (np.array([0.5, 0.5, 1.0], np.float32), np.array([3, 3, 1]), np.array([0, 3])),
        shape=(1, 30),
    )
    odd_data, odd_indices = odd.data.copy(), odd.indices.copy()
    answers(model, dense)
    answers(model, odd)
    BernoulliRBM(n_hidden=2, n_epochs=1).fit(odd)
    np.testing.assert_array_equal(dense, X)
    np.testing.assert_array_equal(odd.data, odd_data)
    np.testing.assert_array_equal(odd.indices, odd_indices)
    for key, value in model._artifact_state()[0].items():
        np.testing.assert_array_equal(value, before[key])
    summed = np.zeros((1, 30), np.float32)
    summed[0, [1, 3]] = 1.0
    np.testing.assert_array_equal(model.transform(odd), model.transform(summed))


def test_a_too_high_learning_rate_is_a_named_error() -> None:
    X = binary_matrix()
    with pytest.raises(TrainingDivergedError, match="non-finite weights"):
        BernoulliRBM(n_hidden=4, learning_rate=1e30, n_epochs=2, random_state=0).fit(X)


# -- persistence ------------------------------------------------------------------------------
def test_save_and_load_give_the_same_answers_and_training_resumes(tmp_path: Path) -> None:
    X = binary_matrix()
    model = BernoulliRBM(
        n_hidden=6, n_epochs=2, cd_steps=[[0, 1], [1, 2]], persistent=True, random_state=4
    ).fit(X, validation=X[:20])
    path = save_model(model, tmp_path / "rbm", metadata={"data": "toy"})
    for mmap in (True, False):
        loaded = load_model(path, mmap=mmap, estimator=BernoulliRBM)
        assert type(loaded) is BernoulliRBM
        assert loaded.get_params() == model.get_params()
        assert loaded.history_ == model.history_
        assert (loaded.n_features_in_, loaded.n_epochs_) == (30, 2)
        assert_same_answers(answers(loaded, X), answers(model, X))
    # a loaded (memory-mapped, read-only) model trains on private copies
    loaded = load_model(path, estimator=BernoulliRBM)
    loaded.partial_fit(X)
    assert loaded.n_epochs_ == 3
    assert not np.array_equal(loaded.weights_, model.weights_)
    np.testing.assert_array_equal(load_model(path, estimator=BernoulliRBM).weights_, model.weights_)


def test_an_artifact_of_another_class_or_shape_is_refused(tmp_path: Path, small_model) -> None:
    model = BernoulliRBM(n_hidden=3, n_epochs=1, random_state=0).fit(binary_matrix())
    path = save_model(model, tmp_path / "rbm")
    with pytest.raises(ArtifactError, match="holds a BernoulliRBM, not a SoftmaxRBM"):
        load_model(path)
    softmax = save_model(small_model, tmp_path / "softmax")
    with pytest.raises(ArtifactError, match="not a BernoulliRBM"):
        load_model(softmax, estimator=BernoulliRBM)
    with pytest.raises(ArtifactError, match="not fitted"):
        save_model(BernoulliRBM(), tmp_path / "unfitted")
    # hyperparameters that contradict the arrays
    contradicting = save_model(model.set_params(n_hidden=4), tmp_path / "contradicting")
    with pytest.raises(ArtifactError, match=r"inconsistent.*do not match 30 features and 4 hidden"):
        load_model(contradicting, estimator=BernoulliRBM)


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("X", "error", "message"),
    [
        (np.ones(5), ValueError, r"2-D array .* got shape \(5,\) \(use X.reshape\(1, -1\)"),
        (np.ones((2, 3, 4)), ValueError, "2-D array"),
        (np.ones((0, 30)), ValueError, "0 rows; at least 1"),
        (np.ones((3, 0)), ValueError, "no features"),
        (np.full((2, 30), 1.5), ValueError, r"values in \[0, 1\].*from 1.5 to 1.5"),
        (np.full((2, 30), -0.1), ValueError, r"values in \[0, 1\]"),
        (np.full((2, 30), np.nan), ValueError, "NaN or infinite"),
        (sp.csr_matrix(np.full((2, 30), 2.0)), ValueError, r"values in \[0, 1\]"),
        (sp.csr_matrix(np.full((2, 30), np.inf)), ValueError, "NaN or infinite"),
        ("digits.csv", TypeError, "array of numbers"),
        (np.array([["a", "b"]]), TypeError, "array of numbers, got an array of dtype <U1"),
        (None, TypeError, "array of numbers"),
    ],
)
def test_bad_data_is_a_clear_error(X: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        BernoulliRBM(n_hidden=2).fit(X)


def test_data_must_match_the_fitted_features() -> None:
    model = BernoulliRBM(n_hidden=2, n_epochs=1).fit(binary_matrix())
    wrong = np.zeros((2, 29), np.float32)
    for call in (
        model.transform,
        model.reconstruct,
        model.free_energy,
        model.score_samples,
        model.gibbs,
        model.partial_fit,
    ):
        with pytest.raises(ValueError, match="has 29 features, but the model has 30"):
            call(wrong)
    with pytest.raises(ValueError, match="validation has 29 features"):
        BernoulliRBM(n_hidden=2).fit(binary_matrix(), validation=wrong)
    with pytest.raises(ValueError, match=r"validation must hold values in \[0, 1\]"):
        BernoulliRBM(n_hidden=2).fit(binary_matrix(), validation=np.full((1, 30), 3.0))
    # zero rows are fine at inference
    assert model.transform(np.zeros((0, 30))).shape == (0, 2)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_hidden": 0}, "n_hidden must be a positive integer"),
        ({"batch_size": 2.5}, "batch_size must be a positive integer"),
        ({"learning_rate": 0.0}, "learning_rate must be a finite number > 0"),
        ({"momentum": 1.0}, "momentum must be a finite number >= 0 and < 1"),
        ({"weight_decay": -1.0}, "weight_decay must be a finite number >= 0"),
        ({"cd_steps": 0}, "cd_steps must be >= 1"),
        ({"persistent": "yes"}, "persistent must be True or False"),
        ({"random_state": "seed"}, "random_state must be an int"),
        ({"blas_threads": 0}, "blas_threads must be a positive integer"),
    ],
)
def test_bad_hyperparameters_say_the_rule(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BernoulliRBM(**params).fit(binary_matrix())
    with pytest.raises(ValueError, match=message):
        BernoulliRBM(**params).partial_fit(binary_matrix())


def test_an_unfitted_model_says_so() -> None:
    model = BernoulliRBM()
    X = binary_matrix()
    for call in (
        lambda: model.transform(X),
        lambda: model.reconstruct(X),
        lambda: model.free_energy(X),
        lambda: model.score_samples(X),
        lambda: model.sample(2),
        lambda: model.gibbs(X),
    ):
        with pytest.raises(NotFittedError, match="not fitted yet"):
            call()


def test_bad_sampling_arguments_say_the_rule() -> None:
    model = BernoulliRBM(n_hidden=2, n_epochs=1).fit(binary_matrix())
    with pytest.raises(ValueError, match="n_samples must be a positive integer"):
        model.sample(0)
    with pytest.raises(ValueError, match="n_steps must be a positive integer"):
        model.sample(2, n_steps=0)
    with pytest.raises(ValueError, match="probabilities must be True or False"):
        model.gibbs(binary_matrix(), probabilities="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="random_state must be an int"):
        model.score_samples(binary_matrix(), random_state=1.5)  # type: ignore[arg-type]
