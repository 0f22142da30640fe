"""The model registry: which model versions exist, which one is active, and their files.

A version is a directory under ``RBMREC_MODEL_DIR`` named by the version id (written
once by :func:`rbm_core.artifact.save_model`, never modified) plus a row in
``model_versions``. The row is the source of truth for "which model is active": the
partial unique index on ``status = 'active'`` lets the database hold at most one,
and :func:`activate_version` swaps the active row in one transaction, after checking
the artifact's SHA-256, so an artifact that fails its checksum is never activated.

Like the repository functions, these functions take a session and never commit:
the caller owns the transaction (the API's request dependency, a CLI command, or
the retrain job).
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import shutil
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from app.db.tables import ModelVersion

logger = logging.getLogger(__name__)

__all__ = [
    "ACTIVATABLE_STATUSES",
    "ArtifactIntegrityError",
    "ModelVersionInfo",
    "RegistryError",
    "VersionNotActivatableError",
    "VersionNotFoundError",
    "activate_version",
    "artifact_digest",
    "get_active_version",
    "get_version",
    "list_versions",
    "new_version_id",
    "prune_artifacts",
    "register_version",
    "set_version_status",
    "to_jsonable",
    "verify_artifact",
]

ACTIVATABLE_STATUSES: Final = frozenset({"candidate", "active", "rejected", "retired"})
"""Statuses of a version whose artifact is complete (it can be activated)."""

VERSION_ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
"""Version ids are directory names: letters, digits, ``_.-``, not starting with a dot."""

_ACTIVATION_LOCK_KEY: Final = 0x7262_6D72_6163_7476
"""PostgreSQL advisory lock (transaction scoped) that serialises activations."""

_DIGEST_CHUNK: Final = 1 << 20


class RegistryError(Exception):
    """Base class of the registry's errors."""


class VersionNotFoundError(RegistryError, LookupError):
    """No model version has this id."""

    def __init__(self, version_id: str) -> None:
        self.version_id = version_id
        super().__init__(f"no model version {version_id!r}")


class VersionNotActivatableError(RegistryError):
    """The version cannot be activated (still training, failed, or its files deleted)."""


class ArtifactIntegrityError(RegistryError):
    """An artifact is missing, incomplete, or fails its SHA-256 check."""


@dataclass(frozen=True)
class ModelVersionInfo:
    """A model version as the rest of the service sees it (a detached, immutable copy).

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
    note: str | None = field(default=None)

    @property
    def artifact_available(self) -> bool:
        """Whether the version has complete files on disk (as far as the registry knows)."""
        return self.status in ACTIVATABLE_STATUSES and self.artifact_deleted_at is None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (paths and times as strings)."""
        out = asdict(self)
        out["artifact_path"] = str(self.artifact_path)
        for key in ("created_at", "activated_at", "snapshot_max_rated_at", "artifact_deleted_at"):
            value = out[key]
            out[key] = value.isoformat() if value is not None else None
        out["artifact_available"] = self.artifact_available
        return out


def _info(row: ModelVersion) -> ModelVersionInfo:
    return ModelVersionInfo(
        id=row.id,
        status=row.status,
        artifact_path=Path(row.artifact_path),
        sha256=row.sha256,
        created_at=row.created_at,
        activated_at=row.activated_at,
        n_users=row.n_users,
        n_items=row.n_items,
        n_ratings=row.n_ratings,
        snapshot_max_rated_at=row.snapshot_max_rated_at,
        hyperparameters=dict(row.hyperparameters or {}),
        metrics=dict(row.metrics or {}),
        training_curves=dict(row.training_curves or {}),
        artifact_deleted_at=row.artifact_deleted_at,
        data_fingerprint=row.data_fingerprint,
        note=row.note,
    )


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


def verify_artifact(artifact_dir: Path, sha256: str | None = None) -> str:
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
        The artifact's digest.

    Raises
    ------
    ArtifactIntegrityError
        Missing files, a digest different from ``sha256``, or an artifact that
        ``rbm_core`` refuses to load (its own per-file checksums).
    """
    from rbm_core.artifact import ArtifactError, load_model

    digest = artifact_digest(artifact_dir)
    if sha256 is not None and digest != sha256:
        raise ArtifactIntegrityError(
            f"artifact {artifact_dir} fails its checksum: SHA-256 is {digest}, "
            f"the registry recorded {sha256}"
        )
    try:
        load_model(artifact_dir, mmap=True)
    except (ArtifactError, OSError, ValueError) as exc:
        raise ArtifactIntegrityError(f"artifact {artifact_dir} cannot be loaded: {exc}") from exc
    return digest


# -- queries ---------------------------------------------------------------------------
def get_active_version(session: Session) -> ModelVersionInfo | None:
    """The active version, or ``None`` when no model has been activated yet."""
    row = session.scalars(select(ModelVersion).where(ModelVersion.status == "active")).first()
    return _info(row) if row is not None else None


def get_version(session: Session, version_id: str) -> ModelVersionInfo | None:
    """One version by id, or ``None``."""
    row = session.get(ModelVersion, version_id, populate_existing=True)
    return _info(row) if row is not None else None


def list_versions(session: Session, *, limit: int | None = None) -> list[ModelVersionInfo]:
    """Versions, newest first (``limit``: at most that many)."""
    stmt = (
        select(ModelVersion)
        .order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())
        .limit(limit)
    )
    return [_info(row) for row in session.scalars(stmt)]


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
    digest = verify_artifact(artifact_dir)
    meta = _artifact_metadata(artifact_dir)

    row = session.get(ModelVersion, version_id, with_for_update=True, populate_existing=True)
    if row is None:
        row = ModelVersion(id=version_id, status="candidate", artifact_path=str(artifact_dir))
        session.add(row)
    elif row.status != "training":
        raise ValueError(f"model version {version_id!r} is already registered ({row.status})")
    row.status = "candidate" if status == "active" else status
    row.artifact_path = str(artifact_dir)
    row.sha256 = digest
    row.n_users = _first_int(n_users, meta.get("n_users"), row.n_users)
    row.n_items = _first_int(n_items, meta.get("n_items"), row.n_items)
    row.n_ratings = _first_int(n_ratings, meta.get("n_ratings"), row.n_ratings)
    if snapshot_max_rated_at is not None:
        row.snapshot_max_rated_at = snapshot_max_rated_at
    if data_fingerprint is not None:
        row.data_fingerprint = data_fingerprint
    params = hyperparameters if hyperparameters is not None else meta.get("hyperparameters")
    row.hyperparameters = to_jsonable(params) if isinstance(params, dict) else {}
    row.metrics = to_jsonable(metrics or row.metrics or {})
    row.training_curves = to_jsonable(training_curves or row.training_curves or {})
    if note is not None:
        row.note = note
    session.flush()
    logger.info("registered model version %s (%s) at %s", version_id, row.status, artifact_dir)
    if status == "active":
        return activate_version(session, version_id, _verified_digest=digest)
    session.refresh(row)
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
    row = ModelVersion(
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
    session.add(row)
    session.flush()
    session.refresh(row)
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
    row = session.get(ModelVersion, version_id, with_for_update=True, populate_existing=True)
    if row is None:
        raise VersionNotFoundError(version_id)
    if row.status == "active":
        raise ValueError(f"model version {version_id!r} is active; activate another first")
    row.status = status
    if note is not None:
        row.note = note
    session.flush()
    return _info(row)


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
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _signed_key()})
    row = session.get(ModelVersion, version_id, with_for_update=True, populate_existing=True)
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
        verify_artifact(Path(row.artifact_path), row.sha256)
    if row.status == "active":
        return _info(row)
    previous = session.scalars(
        select(ModelVersion.id).where(ModelVersion.status == "active")
    ).first()
    # Retire first: the unique index is checked per statement.
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.status == "active")
        .values(status="retired")
        .execution_options(synchronize_session=False)
    )
    row.status = "active"
    row.activated_at = datetime.now(UTC)
    session.flush()
    session.refresh(row)
    logger.info("activated model version %s (previous: %s)", version_id, previous)
    return _info(row)


def prune_artifacts(session: Session, keep: int) -> list[str]:
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

    Returns
    -------
    list of str
        Ids of the versions whose files were deleted.
    """
    if keep < 1:
        raise ValueError("keep must be at least 1")
    rows = list(
        session.scalars(
            select(ModelVersion)
            .where(
                ModelVersion.status.in_(sorted(ACTIVATABLE_STATUSES)),
                ModelVersion.artifact_deleted_at.is_(None),
            )
            .order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())
        )
    )
    deleted: list[str] = []
    for row in rows[keep:]:
        if row.status == "active":
            continue
        path = Path(row.artifact_path)
        shutil.rmtree(path, ignore_errors=True)
        if path.exists():
            logger.warning("could not delete the artifact of version %s at %s", row.id, path)
            continue
        row.artifact_deleted_at = datetime.now(UTC)
        deleted.append(row.id)
    if deleted:
        session.flush()
        logger.info("retention deleted the artifacts of %d version(s): %s", len(deleted), deleted)
    return deleted


# -- helpers ---------------------------------------------------------------------------
def _signed_key() -> int:
    # PostgreSQL advisory lock keys are signed 64-bit integers.
    key = _ACTIVATION_LOCK_KEY
    return key - (1 << 64) if key >= 1 << 63 else key


def _artifact_metadata(artifact_dir: Path) -> dict[str, Any]:
    from rbm_core.artifact import read_artifact_metadata

    try:
        meta = read_artifact_metadata(artifact_dir)
    except Exception:  # metadata only supplies defaults; verify_artifact already passed
        logger.warning("cannot read the metadata of artifact %s", artifact_dir, exc_info=True)
        return {}
    return dict(meta) if isinstance(meta, dict) else {}


def _first_int(*values: object) -> int:
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return 0


def to_jsonable(value: Any) -> Any:
    """Plain JSON types (numpy scalars and arrays, paths and tuples converted)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if hasattr(value, "tolist"):
        return to_jsonable(value.tolist())
    if isinstance(value, Path | datetime):
        return str(value)
    return repr(value)
