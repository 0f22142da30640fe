"""Private, verified copies of model artifacts for the API to memory-map.

Memory-mapped weights are shared by every worker process on a host (one copy in
the page cache, whatever the number of workers), but a mapped file that is
truncated in place kills the process with ``SIGBUS`` at the next read of a page
past its new end. Published artifacts are immutable by contract, yet they live in
a directory that operators, backups and the retrain job write to. So the API never
maps them: :meth:`ServingCache.materialize` copies an artifact into a directory
only API processes write, ``<root>/<sha256>/``, verifies the copy against the
registry's SHA-256, makes its files read-only and renames it into place. Workers
loading the same version find the copy and map the same files; nothing ever
changes a copy in place (a damaged one is replaced by a new directory, and a
mapped file that is unlinked stays readable by the processes mapping it).

Copies not used for ``grace_seconds`` are removed when another version is loaded.

The default directory lies in the shared temporary directory, where another user
could plant a symlink under its name before the first start. So the directory is
opened with ``O_NOFOLLOW | O_DIRECTORY`` and its owner and mode are checked on that
descriptor (``fstat``), never by path; the pruning lists, inspects and deletes
entries relative to the same descriptor (``dir_fd``), never following a link. A
symlink in its place, or a directory of another user or writable by others, makes
the API read models into memory instead (logged), and nothing is deleted.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Final

from app.services.artifacts import ArtifactIntegrityError, artifact_digest

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_GRACE_SECONDS", "ServingCache", "ServingCacheError", "default_cache_root"]

DEFAULT_GRACE_SECONDS: Final = 3600.0
"""How long a copy no process has loaded is kept (a rollback within it copies nothing)."""

_TMP_PREFIX: Final = ".tmp-"


class ServingCacheError(OSError):
    """The cache directory cannot be used (not ours, not writable, disk full...)."""


def default_cache_root() -> Path:
    """``<system temp dir>/rbmrec-<uid>-serving``: per user, outside the model directory."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"rbmrec-{uid}-serving"


class ServingCache:
    """Verified, read-only copies of artifacts, keyed by their SHA-256.

    Parameters
    ----------
    root : Path
        The cache directory; created (mode 0700) if missing. It must belong to this
        process's user and be writable by nobody else.
    grace_seconds : float
        Copies unused for longer are removed when another one is materialized.
    """

    def __init__(self, root: Path, *, grace_seconds: float = DEFAULT_GRACE_SECONDS) -> None:
        self.root = Path(root)
        self.grace_seconds = grace_seconds

    def materialize(self, source: Path, sha256: str) -> Path:
        """The directory of a verified copy of ``source``, made if needed.

        Parameters
        ----------
        source : Path
            A published artifact directory.
        sha256 : str
            Its digest as recorded by the registry (:func:`.artifacts.artifact_digest`).

        Returns
        -------
        Path
            ``<root>/<sha256>``, whose files hash to ``sha256``.

        Raises
        ------
        ArtifactIntegrityError
            ``source`` is missing, or does not hash to ``sha256`` (it changed).
        ServingCacheError
            The cache directory cannot be used (a symlink, another user's, writable
            by others, not writable...).
        """
        root_fd = self._open_root()
        try:
            return self._materialize(root_fd, source, sha256)
        finally:
            os.close(root_fd)

    # -- internals -------------------------------------------------------------------
    def _materialize(self, root_fd: int, source: Path, sha256: str) -> Path:
        target = self.root / sha256
        if _is_real_dir(root_fd, sha256):
            if _digest_or_none(target) == sha256:
                _touch(target)
                self._prune(root_fd, keep=sha256)
                return target
            logger.warning("serving copy %s is damaged: replacing it", sha256)
            _remove(root_fd, sha256)
        try:
            staging = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{sha256[:16]}-", dir=self.root))
        except OSError as exc:
            raise ServingCacheError(f"cannot write to the model cache {self.root}: {exc}") from exc
        try:
            try:
                shutil.copytree(source, staging, dirs_exist_ok=True)
            except FileNotFoundError as exc:
                raise ArtifactIntegrityError(f"artifact {source} is missing: {exc}") from exc
            except OSError as exc:
                raise ServingCacheError(f"cannot copy {source} to the model cache: {exc}") from exc
            if _digest_or_none(staging) != sha256:
                raise ArtifactIntegrityError(
                    f"artifact {source} changed while it was copied (its SHA-256 differs "
                    "from the registry's)"
                )
            _make_read_only(staging)
            try:
                os.rename(staging.name, sha256, src_dir_fd=root_fd, dst_dir_fd=root_fd)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise ServingCacheError(f"cannot publish a serving copy: {exc}") from exc
                # Another worker published the same copy first: use theirs.
                if _digest_or_none(target) != sha256:
                    raise ServingCacheError(
                        f"the serving copy {target} changed while it was published"
                    ) from exc
        finally:
            if _exists(root_fd, staging.name):
                _remove(root_fd, staging.name)
        self._prune(root_fd, keep=sha256)
        return target

    def _open_root(self) -> int:
        """A descriptor of the cache directory, checked to be ours alone.

        Created (mode 0700) if missing; opened without following a symlink in its
        place, and checked through the descriptor, so the checks and every later
        operation concern the same directory.
        """
        try:
            self.root.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                self.root.mkdir(mode=0o700)
        except OSError as exc:
            raise ServingCacheError(f"cannot create the model cache {self.root}: {exc}") from exc
        flags = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.root, flags)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise ServingCacheError(
                    f"the model cache {self.root} is a symlink or not a directory; "
                    "refusing to use it"
                ) from exc
            raise ServingCacheError(f"cannot open the model cache {self.root}: {exc}") from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISDIR(info.st_mode):
                raise ServingCacheError(f"the model cache {self.root} is not a directory")
            if hasattr(os, "getuid") and info.st_uid != os.getuid():
                raise ServingCacheError(
                    f"the model cache {self.root} belongs to another user (uid {info.st_uid})"
                )
            if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise ServingCacheError(f"the model cache {self.root} is writable by other users")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _prune(self, root_fd: int, *, keep: str) -> None:
        """Remove copies and abandoned staging directories unused for the grace period."""
        cutoff = time.time() - self.grace_seconds
        try:
            names = os.listdir(root_fd)
        except OSError:
            return
        for name in names:
            if name == keep:
                continue
            try:
                info = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
                if info.st_mtime < cutoff:
                    # Processes that still map its files keep reading them: an unlinked
                    # file lives on until its last mapping goes.
                    _remove(root_fd, name)
                    logger.info("removed the unused serving copy %s", name)
            except OSError:
                continue


def _is_real_dir(root_fd: int, name: str) -> bool:
    try:
        info = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode)


def _exists(root_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=root_fd, follow_symlinks=False)
    except OSError:
        return False
    return True


def _digest_or_none(directory: Path) -> str | None:
    try:
        return artifact_digest(directory)
    except (ArtifactIntegrityError, OSError):
        return None


def _touch(directory: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(directory)


def _make_read_only(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            path.chmod(0o444)


def _remove(root_fd: int, name: str) -> None:
    """Delete the entry ``name`` of the cache directory, never following a symlink.

    A symlink (or file) is unlinked itself; a directory is removed by
    :func:`shutil.rmtree` relative to ``root_fd``, which does not follow links inside.
    """
    try:
        info = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(name, dir_fd=root_fd, ignore_errors=True)
        else:
            os.unlink(name, dir_fd=root_fd)
    except OSError:
        logger.debug("cannot remove %s from the model cache", name, exc_info=True)
