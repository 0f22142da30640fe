"""Model artifacts: a versioned, self-describing directory of ``.npy`` arrays and JSON.

Layout of an artifact directory::

    metadata.json      format version, model class, hyperparameters, array shapes and
                       dtypes, the caller's own metadata ("user"), and the estimator's
                       learned metadata (for a SoftmaxRBM: rating scale, item ids,
                       training history, training-data fingerprint, ...)
    arrays/<name>.npy  one learned array each (loadable with mmap)
    checksums.json     SHA-256 of every other file

Any estimator of :mod:`rbm_core.base` can be saved: it names its learned arrays and
metadata (see :class:`~rbm_core.base.BaseEstimator`), and ``model_class`` records its
class (artifacts without it hold a :class:`~rbm_core.model.SoftmaxRBM`).

Artifacts are data, never code: nothing is pickled and arrays load with
``allow_pickle=False``. Writing is atomic: the files go to a temporary directory
beside the target, are fsynced, and the directory is renamed into place, so a reader
sees either nothing or a complete artifact. An existing directory is never
overwritten.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, TypeVar, overload

import numpy as np
from numpy.typing import NDArray

from rbm_core.base import BaseEstimator
from rbm_core.baselines import BiasBaseline, GlobalMean, Popularity
from rbm_core.bernoulli import BernoulliRBM
from rbm_core.item_rbm import ItemSoftmaxRBM
from rbm_core.model import SoftmaxRBM
from rbm_core.ranker import RBMRanker
from rbm_core.recommender import RBMRecommender
from rbm_core.references import EASE, ItemQualityPopularity
from rbm_core.scale import RatingScaleError

logger = logging.getLogger(__name__)

FORMAT_NAME: Final = "rbmrec-softmax-rbm"
FORMAT_VERSION: Final = 1
"""Bumped on any incompatible change of the layout; older readers refuse newer artifacts."""

METADATA_FILE: Final = "metadata.json"
CHECKSUM_FILE: Final = "checksums.json"
ARRAY_DIR: Final = "arrays"

ESTIMATORS: Final[dict[str, type[BaseEstimator]]] = {
    cls.__name__: cls
    for cls in (
        RBMRecommender,
        SoftmaxRBM,
        ItemSoftmaxRBM,
        RBMRanker,
        BiasBaseline,
        GlobalMean,
        Popularity,
        EASE,
        ItemQualityPopularity,
        BernoulliRBM,
    )
}
"""The estimators an artifact may hold, by the ``model_class`` it records."""

_DEFAULT_CLASS: Final = "SoftmaxRBM"
"""The class of artifacts written before ``model_class`` could name another."""

_ENVELOPE: Final = frozenset(
    {"format", "format_version", "model_class", "created_at", "hyperparameters", "arrays", "user"}
)
"""metadata.json keys of the format itself; an estimator's metadata uses others."""

E = TypeVar("E", bound=BaseEstimator)

_ARRAY_NAME: Final = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")
"""An array's name: a file name inside ``arrays/``, never a path (dots separate parts)."""


class ArtifactError(Exception):
    """An artifact is missing, corrupt, truncated, incompatible or cannot be written."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _hyperparameters(model: BaseEstimator) -> dict[str, Any]:
    # a Generator is run-time state, not a reproducible setting; tuples become lists
    params = {
        name: None if isinstance(value, np.random.Generator) else value
        for name, value in model.get_params().items()
    }
    loaded: dict[str, Any] = json.loads(json.dumps(params, default=_json_default))
    return loaded


def save_model(
    model: BaseEstimator, directory: Path | str, *, metadata: Mapping[str, Any] | None = None
) -> Path:
    """Write a fitted model to a new artifact directory, atomically.

    Parameters
    ----------
    model : BaseEstimator
        A fitted model of one of the :data:`ESTIMATORS`.
    directory : path
        The artifact directory to create; it must not exist (its parent must).
    metadata : mapping, optional
        JSON-serialisable caller metadata, stored under ``"user"`` in metadata.json.

    Returns
    -------
    pathlib.Path
        ``directory``.

    Raises
    ------
    ArtifactError
        If the directory exists, the parent is missing, the model is not fitted, the
        metadata is not JSON-serialisable or writing fails (nothing is left behind).
    """
    target = Path(directory)
    # a subclass is saved as the estimator it extends
    saved_as = next((c for c in type(model).__mro__ if ESTIMATORS.get(c.__name__) is c), None)
    if saved_as is None:
        known = ", ".join(ESTIMATORS)
        raise ArtifactError(f"can only save a {known}; got a {type(model).__name__}")
    if not model.is_fitted:
        raise ArtifactError("cannot save a model that is not fitted")
    if target.exists():
        raise ArtifactError(f"refusing to overwrite existing path {target}")
    parent = target.parent
    if not parent.is_dir():
        raise ArtifactError(f"parent directory {parent} does not exist")
    try:
        user_meta = json.loads(json.dumps(dict(metadata or {}), default=_json_default))
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"metadata is not JSON-serialisable: {exc}") from None
    try:
        params = _hyperparameters(model)
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"hyperparameters are not JSON-serialisable: {exc}") from None

    learned_arrays, learned_meta = model._artifact_state()
    arrays = {name: np.ascontiguousarray(arr) for name, arr in learned_arrays.items()}
    clash = _ENVELOPE & set(learned_meta)
    if clash:
        raise ArtifactError(f"{type(model).__name__} metadata uses reserved keys {sorted(clash)}")
    meta: dict[str, Any] = {
        **learned_meta,
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model_class": saved_as.__name__,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "hyperparameters": params,
        "arrays": {
            name: {"shape": list(arr.shape), "dtype": str(arr.dtype)}
            for name, arr in arrays.items()
        },
        "user": user_meta,
    }

    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    try:
        (tmp / ARRAY_DIR).mkdir()
        files: list[Path] = []
        for name, arr in arrays.items():
            path = tmp / ARRAY_DIR / f"{name}.npy"
            np.save(path, arr, allow_pickle=False)
            files.append(path)
        meta_path = tmp / METADATA_FILE
        meta_path.write_text(
            json.dumps(meta, indent=2, sort_keys=True, default=_json_default, allow_nan=True)
        )
        files.append(meta_path)
        sums = {str(p.relative_to(tmp).as_posix()): _sha256(p) for p in files}
        sum_path = tmp / CHECKSUM_FILE
        sum_path.write_text(json.dumps({"sha256": sums}, indent=2, sort_keys=True))
        files.append(sum_path)
        for path in files:
            _fsync_path(path)
        _fsync_path(tmp / ARRAY_DIR)
        _fsync_path(tmp)
        os.rename(tmp, target)
        _fsync_path(parent)
    except FileExistsError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ArtifactError(f"refusing to overwrite existing path {target}") from None
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if target.exists():
            raise ArtifactError(f"refusing to overwrite existing path {target}") from None
        # numpy reports a short write ("N requested and M written") without errno:
        # the free space tells an operator whether the disk is full.
        try:
            free = f"; {shutil.disk_usage(parent).free} bytes free on its filesystem"
        except OSError:
            free = ""
        raise ArtifactError(f"could not write artifact {target}: {exc}{free}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("saved model artifact %s", target)
    return target


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"not a model artifact: {path.name} missing in {path.parent}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"unreadable {path.name} in {path.parent}: {exc}") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path.name} in {path.parent} is not a JSON object")
    return data


def _check_format(meta: Mapping[str, Any], directory: Path) -> None:
    if meta.get("format") != FORMAT_NAME:
        raise ArtifactError(f"{directory} is not a {FORMAT_NAME} artifact")
    version = meta.get("format_version")
    if not isinstance(version, int) or version != FORMAT_VERSION:
        raise ArtifactError(
            f"artifact {directory} has format version {version!r}; "
            f"this rbmrec reads version {FORMAT_VERSION}"
        )


def read_artifact_metadata(directory: Path | str) -> dict[str, Any]:
    """The metadata.json of an artifact (without loading arrays or verifying them).

    Includes the caller's metadata under ``"user"``.

    Raises
    ------
    ArtifactError
        If the directory is not an artifact of a readable format version.
    """
    path = Path(directory)
    if not path.is_dir():
        raise ArtifactError(f"model artifact {path} does not exist")
    meta = _read_json(path / METADATA_FILE)
    _check_format(meta, path)
    return meta


def verify_artifact(directory: Path | str) -> None:
    """Check every file of an artifact against its recorded SHA-256.

    Raises
    ------
    ArtifactError
        On a missing, extra-short, altered or unlisted file.
    """
    path = Path(directory)
    if not path.is_dir():
        raise ArtifactError(f"model artifact {path} does not exist")
    sums = _read_json(path / CHECKSUM_FILE).get("sha256")
    if not isinstance(sums, dict) or METADATA_FILE not in sums:
        raise ArtifactError(f"{CHECKSUM_FILE} in {path} is malformed")
    for rel, expected in sums.items():
        file = path / rel
        if not file.resolve().is_relative_to(path.resolve()):
            raise ArtifactError(f"{CHECKSUM_FILE} in {path} names a path outside it: {rel}")
        if not file.is_file():
            raise ArtifactError(f"artifact {path} is incomplete: {rel} missing")
        if _sha256(file) != expected:
            raise ArtifactError(f"checksum mismatch for {rel} in {path}: the file is corrupt")


def mapped_file(array: NDArray[Any]) -> Path | None:
    """The file ``array`` is memory-mapped from, or None when it lives in memory."""
    current: Any = array
    while current is not None:
        if isinstance(current, np.memmap):
            return None if current.filename is None else Path(current.filename)
        current = getattr(current, "base", None)
    return None


@overload
def load_model(directory: Path | str, *, mmap: bool = True) -> SoftmaxRBM: ...


@overload
def load_model(directory: Path | str, *, mmap: bool = True, estimator: type[E]) -> E: ...


def load_model(
    directory: Path | str, *, mmap: bool = True, estimator: type[BaseEstimator] = SoftmaxRBM
) -> BaseEstimator:
    """Load a model saved by :func:`save_model`, verifying its checksums first.

    Parameters
    ----------
    directory : path
        The artifact directory.
    mmap : bool
        Memory-map the arrays read-only (processes loading the same artifact share
        the pages) instead of reading them into private memory.
    estimator : type
        The class the caller expects (a :class:`~rbm_core.base.BaseEstimator` accepts
        any); an artifact of another class is refused.

    Returns
    -------
    SoftmaxRBM, or an instance of ``estimator``
        A fitted model, ready for inference (and for ``partial_fit`` if not mmapped).

    Raises
    ------
    ArtifactError
        If the artifact is missing, corrupt, truncated, of another format version or
        holds another class than ``estimator``.
    """
    path = Path(directory)
    verify_artifact(path)
    meta = read_artifact_metadata(path)
    name = meta.get("model_class", _DEFAULT_CLASS)
    cls = ESTIMATORS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ArtifactError(f"artifact {path} holds an unknown model class {name!r}")
    if not issubclass(cls, estimator):
        raise ArtifactError(f"artifact {path} holds a {name}, not a {estimator.__name__}")
    try:
        model = cls().set_params(**dict(meta["hyperparameters"]))
        arrays = {}
        for key, spec in dict(meta["arrays"]).items():
            if not isinstance(key, str) or not _ARRAY_NAME.fullmatch(key):
                raise ArtifactError(f"artifact {path} lists an invalid array name {key!r}")
            file = path / ARRAY_DIR / f"{key}.npy"
            try:
                arr = np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
            except OSError as exc:
                raise ArtifactError(f"cannot read array {key} in {path}: {exc}") from None
            if list(arr.shape) != list(spec["shape"]) or str(arr.dtype) != spec["dtype"]:
                raise ArtifactError(
                    f"array {key} in {path} has shape {arr.shape} / {arr.dtype}, "
                    f"expected {spec['shape']} / {spec['dtype']}"
                )
            # a plain ndarray over the mapping: indexing a np.memmap subclass costs
            # Python calls on every access of the request path (about 5 % of it)
            arrays[key] = arr.view(np.ndarray) if isinstance(arr, np.memmap) else arr
        model._restore_artifact_state(arrays, meta)
    except ArtifactError:
        raise
    except (KeyError, TypeError, ValueError, RatingScaleError) as exc:
        raise ArtifactError(f"artifact {path} has invalid metadata: {exc!r}") from None
    try:
        model._check_restored()
    except ValueError as exc:
        raise ArtifactError(f"artifact {path} is inconsistent: {exc}") from None
    try:
        model._validate_params()
    except ValueError as exc:
        raise ArtifactError(f"artifact {path} has invalid hyperparameters: {exc}") from None
    return model
