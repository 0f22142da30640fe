"""Artifacts: round trip, memory mapping, atomicity and every kind of corruption."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from rbm_core import (
    FORMAT_VERSION,
    ArtifactError,
    RatingMatrix,
    SoftmaxRBM,
    load_model,
    read_artifact_metadata,
    save_model,
    verify_artifact,
)
from rbm_core.artifact import mapped_file
from rbm_core.base import BaseEstimator
from rbm_core.baselines import BiasBaseline, GlobalMean, Popularity


@pytest.fixture
def saved(small_model: SoftmaxRBM, tmp_path: Path) -> Path:
    return save_model(small_model, tmp_path / "model", metadata={"run": "test", "n": 3})


def test_round_trip_gives_identical_predictions(small_model: SoftmaxRBM, saved: Path) -> None:
    for mmap in (True, False):
        loaded = load_model(saved, mmap=mmap)
        for name in ("weights_", "visible_bias_", "hidden_bias_", "offset_weights_", "item_means_"):
            np.testing.assert_array_equal(getattr(loaded, name), getattr(small_model, name))
        assert (mapped_file(loaded.weights_) is not None) is mmap
        assert type(loaded.weights_) is np.ndarray  # no memmap subclass on the request path
        ids = small_model.item_ids_.tolist()
        ratings = {ids[0]: 5.0, ids[4]: 2.0}
        np.testing.assert_array_equal(
            loaded.predict(ratings).distribution, small_model.predict(ratings).distribution
        )
        assert loaded.recommend(ratings, n=5) == small_model.recommend(ratings, n=5)
        assert loaded.similar_items(ids[1], 3) == small_model.similar_items(ids[1], 3)
        assert loaded.get_params() == small_model.get_params()
        assert loaded.history_ == small_model.history_
        assert loaded.scale_ == small_model.scale_
        np.testing.assert_array_equal(loaded.item_ids_, small_model.item_ids_)
        assert (loaded.n_items_, loaded.n_users_, loaded.n_epochs_) == (
            small_model.n_items_,
            small_model.n_users_,
            small_model.n_epochs_,
        )
        assert loaded.training_fingerprint_ == small_model.training_fingerprint_


def test_metadata_is_self_describing(small_model: SoftmaxRBM, saved: Path) -> None:
    meta = read_artifact_metadata(saved)
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["user"] == {"run": "test", "n": 3}
    assert meta["rating_scale"] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert meta["item_ids"] == small_model.item_ids_.tolist()
    assert meta["hyperparameters"]["n_hidden"] == 8
    assert meta["training_fingerprint"] == small_model.training_fingerprint_
    assert meta["arrays"]["weights"]["shape"] == list(small_model.weights_.shape)
    assert len(meta["history"]) == small_model.n_epochs_
    # plain data only: every array is a .npy file loadable without pickle
    for name in meta["arrays"]:
        np.load(saved / "arrays" / f"{name}.npy", allow_pickle=False)


def test_loaded_model_can_keep_training(saved: Path, small_matrix: RatingMatrix) -> None:
    loaded = load_model(saved)  # memory-mapped, read-only arrays
    before = np.array(loaded.weights_)
    loaded.partial_fit(small_matrix)
    assert not np.array_equal(before, loaded.weights_)
    np.testing.assert_array_equal(load_model(saved).weights_, before)  # the file is untouched


def test_refuses_to_overwrite(small_model: SoftmaxRBM, saved: Path) -> None:
    before = (saved / "checksums.json").read_bytes()
    with pytest.raises(ArtifactError, match="refusing to overwrite"):
        save_model(small_model, saved)
    assert (saved / "checksums.json").read_bytes() == before
    (saved.parent / "a-file").write_text("x")
    with pytest.raises(ArtifactError, match="refusing to overwrite"):
        save_model(small_model, saved.parent / "a-file")


def test_failed_save_leaves_nothing_behind(small_model: SoftmaxRBM, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="JSON"):
        save_model(small_model, tmp_path / "m", metadata={"bad": object()})
    with pytest.raises(ArtifactError, match="parent directory"):
        save_model(small_model, tmp_path / "missing" / "m")
    with pytest.raises(ArtifactError, match="not fitted"):
        save_model(SoftmaxRBM(), tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_parent_is_a_clear_error(small_model: SoftmaxRBM, tmp_path: Path) -> None:
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        if os.access(parent, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(ArtifactError, match="could not write"):
            save_model(small_model, parent / "m")
    finally:
        parent.chmod(0o700)


def test_corrupted_array_fails_the_checksum(saved: Path) -> None:
    path = saved / "arrays" / "weights.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"checksum mismatch for arrays/weights\.npy"):
        load_model(saved)


def test_truncated_array_is_detected(saved: Path) -> None:
    path = saved / "arrays" / "visible_bias.npy"
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(ArtifactError, match="corrupt"):
        load_model(saved)


def test_missing_file_is_detected(saved: Path) -> None:
    (saved / "arrays" / "hidden_bias.npy").unlink()
    with pytest.raises(ArtifactError, match=r"incomplete: arrays/hidden_bias\.npy missing"):
        load_model(saved)
    (saved / "checksums.json").unlink()
    with pytest.raises(ArtifactError, match=r"checksums\.json missing"):
        load_model(saved)


def _rewrite_metadata(saved: Path, change) -> None:
    """Edit metadata.json and re-sign it, so only the content check can object."""
    import hashlib

    meta_path = saved / "metadata.json"
    meta = json.loads(meta_path.read_text())
    change(meta)
    meta_path.write_text(json.dumps(meta))
    sums_path = saved / "checksums.json"
    sums = json.loads(sums_path.read_text())
    sums["sha256"]["metadata.json"] = hashlib.sha256(meta_path.read_bytes()).hexdigest()
    sums_path.write_text(json.dumps(sums))


def test_incompatible_format_version_is_refused(saved: Path) -> None:
    _rewrite_metadata(saved, lambda m: m.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(ArtifactError, match="format version"):
        load_model(saved)
    with pytest.raises(ArtifactError, match="format version"):
        read_artifact_metadata(saved)


def test_other_directories_are_not_artifacts(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        load_model(tmp_path / "nothing")
    with pytest.raises(ArtifactError, match=r"metadata\.json missing"):
        read_artifact_metadata(tmp_path)
    (tmp_path / "metadata.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="unreadable"):
        read_artifact_metadata(tmp_path)
    (tmp_path / "metadata.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ArtifactError, match="not a rbmrec-softmax-rbm artifact"):
        read_artifact_metadata(tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop("item_ids"), "invalid metadata"),
        (lambda m: m.update(rating_scale=[3, 2]), "invalid metadata"),
        (lambda m: m.update(item_ids=m["item_ids"][:-1]), "inconsistent"),
        (lambda m: m["hyperparameters"].update(n_hidden=-1), "invalid hyperparameters"),
        (lambda m: m["arrays"]["weights"].update(shape=[1, 2, 3]), "expected"),
        (lambda m: m["hyperparameters"].update(bogus=1), "invalid metadata"),
    ],
)
def test_inconsistent_metadata_is_refused(saved: Path, change, message: str) -> None:
    _rewrite_metadata(saved, change)
    with pytest.raises(ArtifactError, match=message):
        load_model(saved)


def test_checksum_listing_cannot_point_outside(saved: Path, tmp_path: Path) -> None:
    sums_path = saved / "checksums.json"
    sums = json.loads(sums_path.read_text())
    sums["sha256"]["../elsewhere"] = "0" * 64
    sums_path.write_text(json.dumps(sums))
    with pytest.raises(ArtifactError, match="outside"):
        verify_artifact(saved)


def test_generator_random_state_is_not_persisted(
    small_matrix: RatingMatrix, tmp_path: Path
) -> None:
    model = SoftmaxRBM(
        n_hidden=4, n_epochs=1, random_state=np.random.default_rng(0), cd_steps=[[0, 1], [1, 2]]
    ).fit(small_matrix)
    loaded = load_model(save_model(model, tmp_path / "g"))
    assert loaded.random_state is None
    assert loaded.cd_steps == [[0, 1], [1, 2]]


def test_artifacts_without_a_model_class_hold_a_softmax_rbm(saved: Path) -> None:
    # artifacts written before model_class could name another estimator
    _rewrite_metadata(saved, lambda m: m.pop("model_class"))
    assert isinstance(load_model(saved), SoftmaxRBM)


@pytest.mark.parametrize("cls", [BiasBaseline, GlobalMean, Popularity])
def test_baselines_persist_too(cls, small_matrix: RatingMatrix, tmp_path: Path) -> None:
    model = cls().fit(small_matrix)
    path = save_model(model, tmp_path / "baseline")
    assert read_artifact_metadata(path)["model_class"] == cls.__name__
    loaded = load_model(path, estimator=cls)
    assert type(loaded) is cls
    assert loaded.get_params() == model.get_params()
    for name in cls._array_attributes:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
    assert loaded.global_mean_ == model.global_mean_
    # a caller expecting the RBM is refused, one accepting any estimator is not
    with pytest.raises(ArtifactError, match=f"holds a {cls.__name__}, not a SoftmaxRBM"):
        load_model(path)
    assert type(load_model(path, estimator=BaseEstimator)) is cls


def test_unknown_model_classes_are_refused(saved: Path) -> None:
    _rewrite_metadata(saved, lambda m: m.update(model_class="os.system"))
    with pytest.raises(ArtifactError, match=r"unknown model class 'os\.system'"):
        load_model(saved, estimator=BaseEstimator)


def test_a_subclass_is_saved_as_the_estimator_it_extends(
    small_matrix: RatingMatrix, tmp_path: Path
) -> None:
    class Tuned(SoftmaxRBM):
        pass

    model = Tuned(n_hidden=4, n_epochs=1, random_state=0).fit(small_matrix)
    loaded = load_model(save_model(model, tmp_path / "t"))
    assert type(loaded) is SoftmaxRBM

    class NotAnEstimator:
        is_fitted = True

    with pytest.raises(
        ArtifactError, match=r"can only save a RBMRecommender, SoftmaxRBM, .*; got a NotAnEstimator"
    ):
        save_model(NotAnEstimator(), tmp_path / "x")  # type: ignore[arg-type]
