"""The model registry: which model versions exist, which one is active, how they change.

A version is a directory under ``RBMREC_MODEL_DIR`` named by the version id (written
once by :func:`rbm_core.artifact.save_model`, never modified) plus a row in
``model_versions``. The row is the source of truth for "which model is active": the
partial unique index on ``status = 'active'`` lets the database hold at most one,
and :func:`activate_version` swaps the active row in one transaction, after checking
the artifact's SHA-256, so an artifact that fails its checksum is never activated.

Like the query functions of :mod:`app.db`, these functions take a session and never
commit: the caller owns the transaction (the API's request dependency, a CLI
command, or the retrain job). The artifact files themselves (digest, integrity
check, deletion) are :mod:`app.services.artifacts`.
"""

from __future__ import annotations

import logging
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, field_validator
from sqlalchemy.orm import Session

from app.db import model_versions as version_rows
from app.db.base import insert_row, update_row
from app.db.tables import ModelVersion
from app.jsonable import record_to_dict, to_jsonable
from app.services.artifacts import check_artifact, remove_artifact
from rbm_core.artifact import read_artifact_metadata

logger = logging.getLogger(__name__)

__all__ = [
    "ACTIVATABLE_STATUSES",
    "VERSION_ID_PATTERN",
    "ModelVersionInfo",
    "RegistryError",
    "VersionNotActivatableError",
    "VersionNotFoundError",
    "activate_version",
    "get_active_version",
    "get_version",
    "list_versions",
    "new_version_id",
    "prune_artifacts",
    "register_version",
    "reserve_version",
    "set_version_status",
    "validate_version_id",
    "versions_with_status",
]

ACTIVATABLE_STATUSES: Final = frozenset({"candidate", "active", "rejected", "retired"})
"""Statuses of a version whose artifact is complete (it can be activated)."""

VERSION_ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
"""Version ids are directory names: letters, digits, ``_.-``, not starting with a dot."""


class RegistryError(Exception):
    """Base class of the registry's errors."""


class VersionNotFoundError(RegistryError, LookupError):
    """No model version has this id."""

    def __init__(self, version_id: str) -> None:
        self.version_id = version_id
        super().__init__(f"no model version {version_id!r}")


class VersionNotActivatableError(RegistryError):
    """The version cannot be activated (still training, failed, or its files deleted)."""


class ModelVersionInfo(BaseModel):
    """A model version as the rest of the service sees it (a detached, immutable record).

    Built from its ``model_versions`` row with ``model_validate`` (``from_attributes``).

    Attributes
    ----------
    id : str
        Version id; also the artifact's directory name.
    status : str
        ``training``, ``candidate``, ``active``, ``rejected``, ``retired`` or ``failed``.
    artifact_path : Path
        The artifact directory.
    sha256 : str
        SHA-256 of the artifact (:func:`artifact_digest`); empty while training.
    created_at, activated_at : datetime
        When it was registered and when it was last activated (UTC).
    n_users, n_items, n_ratings : int
        Size of the data the model was trained on.
    snapshot_max_rated_at : datetime or None
        The newest rating time in the training snapshot.
    hyperparameters, metrics, training_curves : dict
        The model's parameters, its evaluation (validation RMSE/MAE, comparison with
        the model it replaced) and per-epoch curves (lists keyed by curve name).
    artifact_deleted_at : datetime or None
        When retention removed its files; such a version cannot be activated.
    data_fingerprint : str or None
        What the ratings store looked like when the snapshot was read.
    note : str or None
        Why it was rejected or failed, if it was.
    """

    model_config = ConfigDict(from_attributes=True, frozen=True)

    id: str
    status: str
    artifact_path: Path
    sha256: str
    created_at: datetime
    activated_at: datetime | None
    n_users: int
    n_items: int
    n_ratings: int
    snapshot_max_rated_at: datetime | None
    hyperparameters: dict[str, Any]
    metrics: dict[str, Any]
    training_curves: dict[str, Any]
    artifact_deleted_at: datetime | None = None
    data_fingerprint: str | None = None
    note: str | None = None

    @field_validator("hyperparameters", "metrics", "training_curves", mode="before")
    @classmethod
    def _null_as_empty(cls, value: object) -> object:
        return {} if value is None else value

    @property
    def artifact_available(self) -> bool:
        """Whether the version has complete files on disk (as far as the registry knows)."""
        return self.status in ACTIVATABLE_STATUSES and self.artifact_deleted_at is None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (paths and times as strings), for ``--json`` output."""
        return record_to_dict(self, artifact_available=self.artifact_available)


def _info(row: ModelVersion) -> ModelVersionInfo:
    return ModelVersionInfo.model_validate(row)


# -- ids and files ---------------------------------------------------------------------
def new_version_id(now: datetime | None = None) -> str:
    """A new version id: UTC time to the millisecond and a random suffix.

    Ids sort by creation time, are unique across hosts (the suffix), and are valid
    directory names, e.g. ``20261129T030000123Z-9f2c1a``.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


def validate_version_id(version_id: str) -> str:
    """Check that ``version_id`` can be a version id (a safe directory name)."""
    if not isinstance(version_id, str) or not VERSION_ID_PATTERN.fullmatch(version_id):
        raise ValueError(
            f"invalid model version id {version_id!r}: use 1-64 letters, digits or "
            "'_', '.', '-', not starting with '.'"
        )
    return version_id


# -- queries ---------------------------------------------------------------------------
def get_active_version(session: Session) -> ModelVersionInfo | None:
    """The active version, or ``None`` when no model has been activated yet."""
    row = version_rows.get_active(session)
    return _info(row) if row is not None else None


def get_version(session: Session, version_id: str) -> ModelVersionInfo | None:
    """One version by id, or ``None``."""
    row = version_rows.get(session, version_id)
    return _info(row) if row is not None else None


def list_versions(session: Session, *, limit: int | None = None) -> list[ModelVersionInfo]:
    """Versions, newest first (``limit``: at most that many)."""
    return [_info(row) for row in version_rows.newest(session, limit)]


def versions_with_status(session: Session, status: str) -> list[ModelVersionInfo]:
    """Every version with this status (e.g. ``training``, to find abandoned ones)."""
    return [_info(row) for row in version_rows.with_status(session, status)]


# -- writes ----------------------------------------------------------------------------
def register_version(
    session: Session,
    artifact_dir: Path,
    *,
    status: str = "candidate",
    version_id: str | None = None,
    n_users: int | None = None,
    n_items: int | None = None,
    n_ratings: int | None = None,
    snapshot_max_rated_at: datetime | None = None,
    data_fingerprint: str | None = None,
    hyperparameters: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    training_curves: dict[str, Any] | None = None,
    note: str | None = None,
) -> ModelVersionInfo:
    """Record a complete artifact as a version (and activate it if asked).

    The artifact is verified first (it loads, and its SHA-256 is recorded), so a
    registered version always had complete files. A version reserved with status
    ``training`` under the same id is completed in place.

    Parameters
    ----------
    session : Session
        The unit of work; not committed here.
    artifact_dir : Path
        The directory written by ``save_model``; stored as an absolute path.
    status : {"candidate", "active", "rejected"}, default "candidate"
        The new version's status; ``"active"`` activates it (see
        :func:`activate_version`).
    version_id : str, optional
        Default: the directory's name.
    n_users, n_items, n_ratings : int, optional
        Training data sizes; default: what the artifact's metadata says, else 0.
    snapshot_max_rated_at : datetime, optional
        Newest rating time in the training snapshot.
    data_fingerprint : str, optional
        The store's fingerprint taken before the snapshot (used to skip retrains
        when nothing changed).
    hyperparameters, metrics, training_curves : dict, optional
        Stored with the version and returned by the API. ``hyperparameters``
        defaults to the artifact's recorded parameters.
    note : str, optional
        A remark, e.g. why it was rejected.

    Returns
    -------
    ModelVersionInfo
        The registered version.

    Raises
    ------
    ArtifactIntegrityError
        The artifact is missing, incomplete or does not load.
    ValueError
        A bad status or version id, or the id is already a complete version.
    """
    if status not in {"candidate", "active", "rejected"}:
        raise ValueError(f"cannot register a version as {status!r}")
    artifact_dir = Path(artifact_dir).resolve()
    version_id = validate_version_id(version_id or artifact_dir.name)
    digest = check_artifact(artifact_dir)
    meta = _artifact_metadata(artifact_dir)

    # A version reserved while training is completed in place; any other is final.
    reserved = version_rows.get(session, version_id, for_update=True)
    if reserved is not None and reserved.status != "training":
        raise ValueError(f"model version {version_id!r} is already registered ({reserved.status})")
    params = hyperparameters if hyperparameters is not None else meta.get("hyperparameters")
    values: dict[str, Any] = {
        "status": "candidate" if status == "active" else status,
        "artifact_path": str(artifact_dir),
        "sha256": digest,
        "n_users": _first_int(n_users, meta.get("n_users"), reserved and reserved.n_users),
        "n_items": _first_int(n_items, meta.get("n_items"), reserved and reserved.n_items),
        "n_ratings": _first_int(n_ratings, meta.get("n_ratings"), reserved and reserved.n_ratings),
        "hyperparameters": to_jsonable(params) if isinstance(params, dict) else {},
        "metrics": to_jsonable(metrics or (reserved and reserved.metrics) or {}),
        "training_curves": to_jsonable(
            training_curves or (reserved and reserved.training_curves) or {}
        ),
    }
    optional = {
        "snapshot_max_rated_at": snapshot_max_rated_at,
        "data_fingerprint": data_fingerprint,
        "note": note,
    }
    values.update({key: value for key, value in optional.items() if value is not None})
    if reserved is None:
        row = insert_row(session, ModelVersion, id=version_id, **values)
    else:
        row = update_row(session, reserved, **values)
    logger.info("registered model version %s (%s) at %s", version_id, row.status, artifact_dir)
    if status == "active":
        return activate_version(session, version_id, _verified_digest=digest)
    return _info(row)


def reserve_version(
    session: Session,
    version_id: str,
    artifact_dir: Path,
    *,
    hyperparameters: dict[str, Any] | None = None,
) -> ModelVersionInfo:
    """Insert a version in status ``training`` before its artifact exists.

    The row shows an operator what is being trained; :func:`register_version`
    completes it, or :func:`set_version_status` marks it ``failed``.
    """
    validate_version_id(version_id)
    row = insert_row(
        session,
        ModelVersion,
        id=version_id,
        status="training",
        artifact_path=str(Path(artifact_dir).resolve()),
        sha256="",
        n_users=0,
        n_items=0,
        n_ratings=0,
        hyperparameters=to_jsonable(hyperparameters or {}),
        metrics={},
        training_curves={},
    )
    return _info(row)


def set_version_status(
    session: Session, version_id: str, status: str, *, note: str | None = None
) -> ModelVersionInfo:
    """Mark a version ``rejected`` or ``failed`` (with the reason in ``note``).

    Raises
    ------
    VersionNotFoundError
        No such version.
    ValueError
        Another status (activation goes through :func:`activate_version`), or the
        version is the active one.
    """
    if status not in {"rejected", "failed"}:
        raise ValueError(f"cannot set a version's status to {status!r} directly")
    row = version_rows.get(session, version_id, for_update=True)
    if row is None:
        raise VersionNotFoundError(version_id)
    if row.status == "active":
        raise ValueError(f"model version {version_id!r} is active; activate another first")
    changes: dict[str, Any] = {"status": status}
    if note is not None:
        changes["note"] = note
    return _info(update_row(session, row, **changes))


def activate_version(
    session: Session, version_id: str, *, _verified_digest: str | None = None
) -> ModelVersionInfo:
    """Make ``version_id`` the active version, in the caller's transaction.

    Activations are serialised (a transaction-scoped advisory lock on PostgreSQL;
    SQLite's write lock), the artifact is verified against its recorded SHA-256 and
    loaded once, then the previously active version is retired and this one marked
    active. The partial unique index guarantees that no two versions are ever
    active, whatever the callers do. Activating the active version is a no-op.

    Parameters
    ----------
    session : Session
        The unit of work; the caller commits (or rolls back: nothing changes).
    version_id : str
        The version to activate (a rollback is the activation of an older one).

    Returns
    -------
    ModelVersionInfo
        The now active version.

    Raises
    ------
    VersionNotFoundError
        No such version.
    VersionNotActivatableError
        It is still training, failed, or its files were deleted by retention.
    ArtifactIntegrityError
        Its files are missing or fail the checksum.
    """
    version_rows.lock_activations(session)
    row = version_rows.get(session, version_id, for_update=True)
    if row is None:
        raise VersionNotFoundError(version_id)
    if row.status not in ACTIVATABLE_STATUSES:
        raise VersionNotActivatableError(
            f"model version {version_id!r} is {row.status}; only a version with a "
            "complete artifact can be activated"
        )
    if row.artifact_deleted_at is not None:
        raise VersionNotActivatableError(
            f"model version {version_id!r}: its artifact was deleted by retention "
            f"(RBMREC_KEEP_VERSIONS) on {row.artifact_deleted_at.isoformat()}"
        )
    if _verified_digest is None or _verified_digest != row.sha256:
        check_artifact(Path(row.artifact_path), row.sha256)
    if row.status == "active":
        return _info(row)
    # Retire first: the unique index is checked per statement.
    previous = version_rows.retire_active(session)
    row = update_row(session, row, status="active", activated_at=datetime.now(UTC))
    logger.info("activated model version %s (previous: %s)", version_id, previous)
    return _info(row)


def prune_artifacts(session: Session, keep: int, model_dir: Path) -> list[str]:
    """Delete the files of all but the newest ``keep`` versions; never the active one.

    Only versions with complete artifacts count (``training`` and ``failed`` ones
    never do). The rows stay, with ``artifact_deleted_at`` set, so the history is
    kept; such a version can no longer be activated. Files are deleted before the
    rows are marked: if the process dies in between, activation of that version
    fails its checksum check cleanly.

    Parameters
    ----------
    session : Session
        The unit of work; not committed here.
    keep : int
        How many versions keep their files (``RBMREC_KEEP_VERSIONS``, at least 1).
    model_dir : Path
        The model directory: files outside it are never deleted (the version is
        skipped, with an error in the log).

    Returns
    -------
    list of str
        Ids of the versions whose files were deleted.
    """
    if keep < 1:
        raise ValueError("keep must be at least 1")
    deleted: list[str] = []
    for row in version_rows.with_files(session, ACTIVATABLE_STATUSES)[keep:]:
        if row.status == "active":
            continue
        if not remove_artifact(row.artifact_path, model_dir):
            logger.warning(
                "could not delete the artifact of version %s at %s", row.id, row.artifact_path
            )
            continue
        update_row(session, row, artifact_deleted_at=datetime.now(UTC))
        deleted.append(row.id)
    if deleted:
        logger.info("retention deleted the artifacts of %d version(s): %s", len(deleted), deleted)
    return deleted


# -- helpers ---------------------------------------------------------------------------
def _artifact_metadata(artifact_dir: Path) -> dict[str, Any]:
    try:
        meta = read_artifact_metadata(artifact_dir)
    except Exception:  # metadata only supplies defaults; check_artifact already passed
        logger.warning("cannot read the metadata of artifact %s", artifact_dir, exc_info=True)
        return {}
    return dict(meta) if isinstance(meta, dict) else {}


def _first_int(*values: object) -> int:
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return 0
