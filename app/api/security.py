"""API keys: ``Authorization: Bearer <key>`` for writes and admin routes.

* Writes need a key from ``RBMREC_API_KEYS`` (or an admin key) when that list is set.
* Admin routes need a key from ``RBMREC_ADMIN_API_KEYS``; when only
  ``RBMREC_API_KEYS`` is set, admin routes take those keys, so that setting write
  keys never leaves retraining and activation open to anyone.
* With no keys configured the API is open, and the app logs a warning at start.

No key is sent: 401 with ``WWW-Authenticate: Bearer``; a wrong key: 403. Keys are
compared as SHA-256 digests with :func:`hmac.compare_digest` against every
configured key (no early exit), so timing reveals neither a key nor its length.
Keys are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.errors import ProblemError, problem_responses
from app.settings import Settings

logger = logging.getLogger(__name__)

__all__ = ["admin_router", "log_security_posture", "require_admin_key", "require_write_key"]

_bearer = HTTPBearer(
    auto_error=False,
    description="An API key from RBMREC_API_KEYS (writes) or RBMREC_ADMIN_API_KEYS (admin).",
)

BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()


def key_matches(presented: str, keys: Sequence[str]) -> bool:
    """Whether ``presented`` equals one of ``keys``, in time independent of the keys.

    Parameters
    ----------
    presented : str
        The key sent by the client.
    keys : sequence of str
        The accepted keys.

    Returns
    -------
    bool
    """
    wanted = _digest(presented)
    results = [hmac.compare_digest(wanted, _digest(key)) for key in keys]
    return any(results)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _check(
    credentials: HTTPAuthorizationCredentials | None, keys: Sequence[str], what: str
) -> None:
    if not keys:
        return
    if credentials is None or not credentials.credentials:
        raise ProblemError(
            401,
            f"{what} need an API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": 'Bearer realm="rbmrec"'},
        )
    if not key_matches(credentials.credentials, keys):
        raise ProblemError(403, f"the API key is not valid for {what}")


def write_keys(settings: Settings) -> list[str]:
    """Keys accepted for writes; empty means writes are open."""
    if not settings.api_keys:
        return []
    return [*settings.api_keys, *settings.admin_api_keys]


def admin_keys(settings: Settings) -> list[str]:
    """Keys accepted for admin routes; empty means admin routes are open."""
    return list(settings.admin_api_keys or settings.api_keys)


async def require_write_key(request: Request, credentials: BearerCredentials) -> None:
    """Dependency of every write route: a valid write (or admin) key when keys are set.

    Raises
    ------
    ProblemError
        401 without a key, 403 with a wrong one.
    """
    _check(credentials, write_keys(_settings(request)), "writes")


async def require_admin_key(request: Request, credentials: BearerCredentials) -> None:
    """Dependency of the admin routes (model activation, retraining).

    Raises
    ------
    ProblemError
        401 without a key, 403 with a wrong one (a write-only key included).
    """
    _check(credentials, admin_keys(_settings(request)), "admin routes")


def admin_router(*, prefix: str, tag: str) -> APIRouter:
    """A router all of whose routes need an admin key (:func:`require_admin_key`)."""
    return APIRouter(
        prefix=prefix,
        tags=[tag],
        dependencies=[Depends(require_admin_key)],
        responses=problem_responses(401, 403, 422, 503),
    )


def log_security_posture(settings: Settings) -> None:
    """Warn at start-up about routes that are open to anyone."""
    if not write_keys(settings):
        logger.warning(
            "RBMREC_API_KEYS is not set: anyone who can reach the API can write ratings and items"
        )
    if not admin_keys(settings):
        logger.warning(
            "neither RBMREC_ADMIN_API_KEYS nor RBMREC_API_KEYS is set: admin routes "
            "(model activation, retraining) are open to anyone"
        )
    elif not settings.admin_api_keys:
        logger.info("RBMREC_ADMIN_API_KEYS is not set: admin routes accept the write keys")
