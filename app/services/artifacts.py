"""The files of a model version as the registry sees them: their digest, their integrity.

The registry's digest covers a whole artifact directory: every file's relative path
and content. It is what ``model_versions.sha256`` records, and what the service
checks before it activates, evaluates or serves a version. It is not
:func:`rbm_core.artifact.verify_artifact`, which checks each file against the
checksums of the artifact's own manifest: :func:`check_artifact` does both.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from typing import Final

from rbm_core.artifact import ArtifactError, load_model
from rbm_core.base import BaseEstimator

logger = logging.getLogger(__name__)

__all__ = [
    "STAGING_DIR",
    "ArtifactIntegrityError",
    "artifact_digest",
    "check_artifact",
    "remove_artifact",
]

STAGING_DIR: Final = ".staging"
"""Subdirectory of the model directory where runs write artifacts before publishing."""

_DIGEST_CHUNK: Final = 1 << 20


class ArtifactIntegrityError(Exception):
    """An artifact is missing, incomplete, or fails its SHA-256 check.

    The message names the artifact's path (for the log); ``found`` and ``expected``
    hold the two digests when they differ, so that an answer to a client can report
    the mismatch without the path.
    """

    def __init__(
        self, message: str, *, found: str | None = None, expected: str | None = None
    ) -> None:
        super().__init__(message)
        self.found = found
        self.expected = expected

    def public_reason(self) -> str:
        """Why, in words fit for clients: no file system path."""
        if self.found is not None and self.expected is not None:
            return (
                f"its artifact fails its checksum (SHA-256 {self.found}; the registry "
                f"recorded {self.expected})"
            )
        return "its artifact is missing, incomplete or cannot be loaded (see the server log)"


def artifact_digest(artifact_dir: Path) -> str:
    """SHA-256 of an artifact directory: every file's relative path and content.

    Parameters
    ----------
    artifact_dir : Path
        The directory written by ``save_model``.

    Returns
    -------
    str
        Hex digest; any changed, added, removed or renamed file changes it.

    Raises
    ------
    ArtifactIntegrityError
        If the directory does not exist or holds no file.
    """
    root = Path(artifact_dir)
    if not root.is_dir():
        raise ArtifactIntegrityError(f"artifact directory {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    if not files:
        raise ArtifactIntegrityError(f"artifact directory {root} is empty")
    digest = hashlib.sha256(b"rbmrec-artifact-v1\0")
    for path in files:
        file_hash = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(_DIGEST_CHUNK):
                file_hash.update(chunk)
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0" + file_hash.hexdigest().encode() + b"\n")
    return digest.hexdigest()


def check_artifact(artifact_dir: Path, sha256: str | None = None) -> str:
    """Check that an artifact is complete, loads, and (if given) matches ``sha256``.

    Parameters
    ----------
    artifact_dir : Path
        The artifact directory.
    sha256 : str, optional
        The digest recorded when the version was registered.

    Returns
    -------
    str
        The artifact's digest (:func:`artifact_digest`).

    Raises
    ------
    ArtifactIntegrityError
        Missing files, a digest different from ``sha256``, or an artifact that
        ``rbm_core`` refuses to load (its own per-file checksums).
    """
    digest = artifact_digest(artifact_dir)
    if sha256 is not None and digest != sha256:
        raise ArtifactIntegrityError(
            f"artifact {artifact_dir} fails its checksum: SHA-256 is {digest}, "
            f"the registry recorded {sha256}",
            found=digest,
            expected=sha256,
        )
    try:
        load_model(artifact_dir, mmap=True, estimator=BaseEstimator)
    except (ArtifactError, OSError, ValueError) as exc:
        raise ArtifactIntegrityError(f"artifact {artifact_dir} cannot be loaded: {exc}") from exc
    return digest


def remove_artifact(path: Path | str, model_dir: Path | str) -> bool:
    """Delete an artifact directory (or a staging leftover); ``True`` when it is gone.

    Every deletion of model files goes through here: retention, the recovery of
    abandoned runs, the clean-up after a failed run. The paths come from the
    database, so a row changed by mistake or by an attacker could name any
    directory: nothing is deleted unless the path, symlinks resolved, lies strictly
    inside ``model_dir`` (refused with an error in the log, and ``False``).
    """
    target = Path(path)
    if target == Path():  # an empty path names no artifact (and "." is the working directory)
        return False
    root = Path(model_dir).resolve()
    resolved = target.resolve()
    if resolved == root or not resolved.is_relative_to(root):
        logger.error("refusing to delete %s: it is not inside the model directory %s", target, root)
        return False
    shutil.rmtree(resolved, ignore_errors=True)
    return not resolved.exists()
