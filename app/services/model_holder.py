"""The model an API process serves, swapped atomically when the active version changes.

:class:`ModelHolder` keeps one immutable :class:`LoadedModel` (registry row, the
model, an item index) behind a single reference. A request reads
:attr:`ModelHolder.current` once and uses that object to the end, so a swap never
changes a model under a running request, and nothing is ever locked on the request
path.

:meth:`ModelHolder.refresh` reads the registry (the source of truth for "which
model is active") and, if the active version changed, verifies the artifact's
SHA-256 against the registry row, loads it, warms it, and swaps it in. With a
:class:`~app.services.serving_cache.ServingCache` (``RBMREC_MODEL_MMAP``, the
default) the arrays are memory-mapped from a verified private copy, so the worker
processes of a host share one copy of the weights; without one, each process
reads them into its own memory.
It runs off the request path: at start-up, every ``RBMREC_MODEL_POLL_SECONDS``
(:func:`poll_forever`), after ``POST /models/{id}/activate`` and on ``SIGHUP``.

Failures never take the service down:

* the registry cannot be read (database down): keep the loaded model;
* the new version fails to load (missing, corrupt, wrong checksum): keep the old
  model, report why in ``/health/ready``, and retry only when its files change;
* the loaded version's files change on disk: re-verify them; if they fail the
  checksum, stop serving that model (recommendations fall back to ``popular``);
  if they were deleted, keep serving the copy already loaded and say so.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio.to_thread
import numpy as np
from numpy.typing import NDArray
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.services import registry
from app.services.artifacts import ArtifactIntegrityError, artifact_digest
from app.services.registry import ModelVersionInfo
from app.services.serving_cache import ServingCache, ServingCacheError
from rbm_core.artifact import ArtifactError, load_model
from rbm_core.base import BaseEstimator
from rbm_core.model import SoftmaxRBM
from rbm_core.recommender import RBMRecommender

logger = logging.getLogger(__name__)

__all__ = [
    "HolderStatus",
    "LoadedModel",
    "ModelHolder",
    "ServedModel",
    "load_version",
    "poll_forever",
]

ServedModel = RBMRecommender | SoftmaxRBM
"""What a version's artifact may hold: the served model, or a SoftmaxRBM alone (the
versions trained before the RBMRecommender, which stay loadable for rollback)."""

FileStamp = tuple[tuple[str, int, int, int], ...]
"""(relative path, size, mtime_ns, inode) of every file of an artifact, sorted."""


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model version ready to serve (never mutated once built).

    Attributes
    ----------
    version : ModelVersionInfo
        The registry row it was loaded from.
    model : RBMRecommender or SoftmaxRBM
        The fitted model (its arrays memory-mapped read-only from the serving copy
        when loaded through a :class:`ServingCache`).
    item_index : mapping of str to int
        Item id -> position in ``model.item_ids_``.
    item_ids : ndarray of str, shape (n_items,)
        ``model.item_ids_``.
    levels : tuple of float
        The model's rating levels.
    popular_order : ndarray of int, shape (n_items,)
        Item positions by training popularity, most rated first (ties by position).
    prior_expected : ndarray of shape (n_items,)
        Expected rating of each item for a user with no ratings.
    loaded_at : datetime
        When this process loaded it (UTC).
    stamp : tuple
        The artifact files' sizes, times and inodes when loaded (change detection).
    """

    version: ModelVersionInfo
    model: ServedModel
    item_index: Mapping[str, int]
    item_ids: NDArray[np.str_]
    levels: tuple[float, ...]
    popular_order: NDArray[np.intp]
    prior_expected: NDArray[np.floating]
    loaded_at: datetime
    stamp: FileStamp


@dataclass(frozen=True)
class HolderStatus:
    """What :class:`ModelHolder` serves and what it last saw (for ``/health/ready``)."""

    loaded: LoadedModel | None
    active_version_id: str | None
    last_check: datetime | None
    error: str | None


def _stamp(directory: Path) -> FileStamp:
    """Cheap fingerprint of a directory's files; empty when it does not exist."""
    entries: list[tuple[str, int, int, int]] = []
    try:
        for root, _dirs, files in os.walk(directory):
            for name in files:
                path = Path(root, name)
                st = path.stat()
                rel = path.relative_to(directory).as_posix()
                entries.append((rel, st.st_size, st.st_mtime_ns, st.st_ino))
    except OSError:
        return ()
    return tuple(sorted(entries))


def load_version(version: ModelVersionInfo, *, cache: ServingCache | None = None) -> LoadedModel:
    """Verify and load a registered version's artifact.

    Parameters
    ----------
    version : ModelVersionInfo
        A registry row with a complete artifact.
    cache : ServingCache, optional
        Memory-map the arrays from a verified private copy made there (processes
        share the pages; see :mod:`app.services.serving_cache`). Without one, or
        when the cache directory cannot be used, the arrays are read into memory.

    Returns
    -------
    LoadedModel

    Raises
    ------
    ArtifactIntegrityError
        The files are missing or their SHA-256 differs from the registry's.
    ArtifactError
        ``rbm_core`` refuses the artifact (its per-file checksums, format, shapes).
    """
    path = Path(version.artifact_path)
    stamp = _stamp(path)
    digest = artifact_digest(path)
    if digest != version.sha256:
        raise ArtifactIntegrityError(
            f"artifact {path} fails its checksum (SHA-256 {digest[:12]}..., the registry "
            f"recorded {version.sha256[:12]}...)"
        )
    model = _read_model(path, version.sha256, cache)
    item_ids = np.asarray(model.item_ids_)
    index = {item: i for i, item in enumerate(item_ids.tolist())}
    # Scoring an empty user once also fills the model's lazy caches, so the first
    # requests do not pay for them (and threads do not race to build them).
    prior = model.score_items({})
    popularity = np.asarray(model.item_popularity_)
    return LoadedModel(
        version=version,
        model=model,
        item_index=index,
        item_ids=item_ids,
        levels=tuple(float(v) for v in model.scale_.values),
        popular_order=np.argsort(-popularity, kind="stable"),
        prior_expected=np.asarray(prior.expected),
        loaded_at=datetime.now(UTC),
        stamp=stamp,
    )


def _read_model(path: Path, sha256: str, cache: ServingCache | None) -> ServedModel:
    model: BaseEstimator | None = None
    if cache is not None:
        try:
            model = load_model(cache.materialize(path, sha256), mmap=True, estimator=BaseEstimator)
        except ServingCacheError as exc:
            logger.warning("%s; reading the model into memory instead of mapping it", exc)
    if model is None:
        model = load_model(path, mmap=False, estimator=BaseEstimator)
    if not isinstance(model, RBMRecommender | SoftmaxRBM):
        raise ArtifactError(
            f"artifact {path.name} holds a {type(model).__name__}, which the service does "
            "not serve (an RBMRecommender or a SoftmaxRBM)"
        )
    return model


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _reason(exc: BaseException) -> str:
    """Why an artifact failed, in words fit for clients (no file system paths)."""
    if isinstance(exc, ArtifactIntegrityError):
        return "its artifact is missing, incomplete or fails its checksum"
    if isinstance(exc, ArtifactError):
        return "its artifact is corrupt or invalid (see the server log)"
    return "its artifact cannot be read (see the server log)"


class ModelHolder:
    """The process's loaded model, replaced atomically (see the module docstring).

    Parameters
    ----------
    session_factory : sessionmaker
        Sessions on the store holding the registry.
    on_change : callable, optional
        Called with the new :class:`LoadedModel` (or ``None``) after each swap, in the
        thread that swapped (used to update the metrics).
    serving_cache : ServingCache, optional
        Memory-map artifacts from verified copies there (see :func:`load_version`);
        without one, models are read into memory.
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        on_change: Callable[[LoadedModel | None], None] | None = None,
        serving_cache: ServingCache | None = None,
    ) -> None:
        self._session_factory = session_factory
        self._serving_cache = serving_cache
        self._on_change = on_change
        self._state: LoadedModel | None = None
        self._refresh_lock = threading.Lock()
        self._active_id: str | None = None
        self._last_check: datetime | None = None
        self._error: str | None = None
        self._failed: tuple[str, FileStamp] | None = None

    @property
    def current(self) -> LoadedModel | None:
        """The model to serve now (``None``: no model); read it once per request."""
        return self._state

    def status(self) -> HolderStatus:
        """The loaded model, the registry's active version as last seen, the last error."""
        return HolderStatus(self._state, self._active_id, self._last_check, self._error)

    def refresh(self) -> LoadedModel | None:
        """Follow the registry: load and swap in the active version if it changed.

        Safe to call from any thread; concurrent calls run one after the other.
        Never raises for database or artifact trouble: the error is logged and
        reported by :meth:`status`, and the previous model keeps serving.

        Returns
        -------
        LoadedModel or None
            The model served after the refresh.
        """
        with self._refresh_lock:
            try:
                with self._session_factory() as session:
                    active = registry.get_active_version(session)
            except SQLAlchemyError as exc:
                # The reported error is shown to clients: no addresses or paths in it.
                message = "cannot read the model registry: the database does not answer"
                if message != self._error:
                    logger.warning(
                        "cannot read the model registry (%s); keeping the loaded model",
                        _first_line(exc),
                    )
                self._error = message
                return self._state
            self._last_check = datetime.now(UTC)
            self._active_id = active.id if active is not None else None
            current = self._state
            if active is None:
                self._error = None
                if current is not None:
                    logger.warning(
                        "the registry has no active model version any more: unloading %s",
                        current.version.id,
                    )
                    self._swap(None)
                return None
            if current is not None and current.version.id == active.id:
                self._check_files(current)
            else:
                self._load(active)
            return self._state

    # -- internals ---------------------------------------------------------------------
    def _swap(self, new: LoadedModel | None) -> None:
        self._state = new
        if self._on_change is not None:
            try:
                self._on_change(new)
            except Exception:  # a metrics hook must never break serving
                logger.exception("model change callback failed")

    def _load(self, active: ModelVersionInfo) -> None:
        path = Path(active.artifact_path)
        key = (active.id, _stamp(path))
        if self._failed == key:
            return  # same broken files as last time: wait until they change
        try:
            loaded = load_version(active, cache=self._serving_cache)
        except (ArtifactIntegrityError, ArtifactError, OSError, ValueError) as exc:
            self._failed = key
            served = self._state.version.id if self._state is not None else "none"
            self._error = f"model version {active.id} could not be loaded: {_reason(exc)}"
            logger.error(
                "model version %s could not be loaded: %s; still serving: %s",
                active.id,
                _first_line(exc),
                served,
            )
            return
        previous = self._state.version.id if self._state is not None else None
        self._failed = None
        self._error = None
        self._swap(loaded)
        logger.info(
            "serving model version %s (%d items; previous: %s)",
            active.id,
            len(loaded.item_ids),
            previous,
        )

    def _check_files(self, current: LoadedModel) -> None:
        path = Path(current.version.artifact_path)
        stamp = _stamp(path)
        if stamp == current.stamp:
            self._error = None
            return
        if not stamp:
            message = (
                f"the artifact files of model version {current.version.id} are gone "
                "from disk; serving the copy already loaded"
            )
            if message != self._error:
                logger.warning("%s (%s)", message, path)
            self._error = message
            return
        try:
            digest = artifact_digest(path)
        except (ArtifactIntegrityError, OSError) as exc:
            digest = f"unreadable: {exc}"
        if digest == current.version.sha256:
            self._state = dataclasses.replace(current, stamp=stamp)
            self._error = None
            return
        self._failed = (current.version.id, stamp)
        self._error = (
            f"the artifact of model version {current.version.id} changed on disk and "
            "fails its checksum; it is no longer served"
        )
        logger.error("%s", self._error)
        self._swap(None)


async def poll_forever(holder: ModelHolder, interval: float) -> None:
    """Call :meth:`ModelHolder.refresh` every ``interval`` seconds (in a worker thread).

    Runs until cancelled; an unexpected error is logged and the loop goes on.
    """
    while True:
        await asyncio.sleep(interval)
        try:
            await anyio.to_thread.run_sync(holder.refresh)
        except Exception:
            logger.exception("model refresh failed")
