"""API keys: ``Authorization: Bearer <key>``, and who may do what with one.

Three roles, each a set of keys (settings, comma separated, 16 characters at least):

* ``RBMREC_READ_API_KEYS``: per-user reads (everything under ``/users/{id}`` that
  reads: ratings, recommendations, predictions);
* ``RBMREC_API_KEYS``: writes (ratings, items), and per-user reads;
* ``RBMREC_ADMIN_API_KEYS``: everything, the admin routes (model registry,
  retraining) included. A write key is not an admin key.

With no key set at all the API is **open** (:func:`auth_mode`): anyone who reaches it
may do anything. ``rbmrec serve`` says so, ``/health/ready`` reports
``"auth": "open"``, and ``rbmrec serve`` refuses to bind a non-loopback address in that
mode unless ``RBMREC_ALLOW_OPEN=true``. Once any key is set the API is **keyed**:
writes and admin routes need a key of their role (there is no open fallback: with
only read keys set, nobody may write through the API), and per-user reads need one
as soon as ``RBMREC_READ_API_KEYS`` is set. The catalogue (``/items``), ``/model``
and the health probes stay public.

No key sent, or a key that is none of the configured ones: 401 with
``WWW-Authenticate: Bearer``; a configured key whose role does not cover the route:
403. The presented key is compared as a SHA-256 digest with
:func:`hmac.compare_digest` against every configured key (no early exit), so timing
reveals neither a key nor its length. Keys are ``SecretStr`` in the settings and
never logged or echoed.

The OpenAPI document says the same thing as the server: each protected operation
names its role's HTTP bearer scheme (``ReadKey``, ``WriteKey``, ``AdminKey``) and
documents 401 and 403; an operation that the configuration leaves open declares no
security at all (:func:`apply_security`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Sequence
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from app.api.errors import ProblemError, problem_responses
from app.settings import Settings

logger = logging.getLogger(__name__)

__all__ = [
    "AuthMode",
    "Role",
    "admin_router",
    "apply_security",
    "auth_mode",
    "key_matches",
    "log_security_posture",
    "presented_role",
    "protected",
    "require_admin_key",
    "require_read_key",
    "require_write_key",
]

Role = Literal["read", "write", "admin"]
AuthMode = Literal["open", "keyed"]

_RANK: Final[dict[Role, int]] = {"read": 0, "write": 1, "admin": 2}
_HIGHEST_FIRST: Final[tuple[Role, ...]] = ("admin", "write", "read")
_SCHEME: Final[dict[Role, str]] = {"read": "ReadKey", "write": "WriteKey", "admin": "AdminKey"}
_ROLE_OF_SCHEME: Final[dict[str, Role]] = {name: role for role, name in _SCHEME.items()}
_WHAT: Final[dict[Role, str]] = {
    "read": "a user's ratings, recommendations and predictions",
    "write": "writes",
    "admin": "admin routes",
}
CHALLENGE: Final = 'Bearer realm="rbmrec"'
"""The ``WWW-Authenticate`` value of a 401 without a key."""

_read_bearer = HTTPBearer(
    auto_error=False,
    scheme_name=_SCHEME["read"],
    description="A key from RBMREC_READ_API_KEYS, RBMREC_API_KEYS or RBMREC_ADMIN_API_KEYS "
    "(per-user reads, required once RBMREC_READ_API_KEYS is set).",
)
_write_bearer = HTTPBearer(
    auto_error=False,
    scheme_name=_SCHEME["write"],
    description="A key from RBMREC_API_KEYS or RBMREC_ADMIN_API_KEYS (writes).",
)
_admin_bearer = HTTPBearer(
    auto_error=False,
    scheme_name=_SCHEME["admin"],
    description="A key from RBMREC_ADMIN_API_KEYS (admin routes).",
)


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


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


def _plain(keys: Sequence[SecretStr]) -> list[str]:
    return [key.get_secret_value() for key in keys]


def auth_mode(settings: Settings) -> AuthMode:
    """``"open"`` when no API key of any role is configured, else ``"keyed"``.

    For anything that reports the posture (``rbmrec serve``, ``/health/ready``, the
    dashboard).
    """
    if settings.api_keys or settings.admin_api_keys or settings.read_api_keys:
        return "keyed"
    return "open"


def protected(settings: Settings, role: Role) -> bool:
    """Whether routes of ``role`` need a key in this configuration."""
    if role == "read":
        return bool(settings.read_api_keys)
    return auth_mode(settings) == "keyed"


def presented_role(presented: str, settings: Settings) -> Role | None:
    """The highest role of the configured key equal to ``presented`` (None: no such key).

    Every configured key of every role is compared, whatever matched first.
    """
    matched = [
        key_matches(presented, _plain(settings.admin_api_keys)),
        key_matches(presented, _plain(settings.api_keys)),
        key_matches(presented, _plain(settings.read_api_keys)),
    ]
    for role, hit in zip(_HIGHEST_FIRST, matched, strict=True):
        if hit:
            return role
    return None


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _check(
    request: Request, credentials: HTTPAuthorizationCredentials | None, needed: Role
) -> None:
    settings = _settings(request)
    if not protected(settings, needed):
        return
    what = _WHAT[needed]
    if credentials is None or not credentials.credentials:
        raise ProblemError(
            401,
            f"{what} need an API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": CHALLENGE},
        )
    role = presented_role(credentials.credentials, settings)
    if role is None:
        raise ProblemError(
            401,
            "the API key is not valid: it is none of the configured keys",
            headers={"WWW-Authenticate": f'{CHALLENGE}, error="invalid_token"'},
        )
    if _RANK[role] < _RANK[needed]:
        raise ProblemError(403, f"this {role} key is not valid for {what}")


ReadCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_read_bearer)]
WriteCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_write_bearer)]
AdminCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_admin_bearer)]


async def require_read_key(request: Request, credentials: ReadCredentials) -> None:
    """Dependency of every per-user read: a read, write or admin key once read keys are set.

    Raises
    ------
    ProblemError
        401 without a key or with an unknown one.
    """
    _check(request, credentials, "read")


async def require_write_key(request: Request, credentials: WriteCredentials) -> None:
    """Dependency of every write route: a write or admin key in keyed mode.

    Raises
    ------
    ProblemError
        401 without a key or with an unknown one, 403 with a read key.
    """
    _check(request, credentials, "write")


async def require_admin_key(request: Request, credentials: AdminCredentials) -> None:
    """Dependency of the admin routes (model registry, retraining): an admin key.

    Raises
    ------
    ProblemError
        401 without a key or with an unknown one, 403 with a read or write key.
    """
    _check(request, credentials, "admin")


def admin_router(*, prefix: str, tag: str) -> APIRouter:
    """A router all of whose routes need an admin key (:func:`require_admin_key`)."""
    return APIRouter(
        prefix=prefix,
        tags=[tag],
        dependencies=[Depends(require_admin_key)],
        responses=problem_responses(401, 403, 422, 503),
    )


_AUTH_RESPONSES: Final = problem_responses(401, 403)


def _auth_response(status: int, schema_ref: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _AUTH_RESPONSES[status]["description"],
        "content": {"application/problem+json": {"schema": {"$ref": schema_ref}}},
    }
    if status == 401:
        response["headers"] = {
            "WWW-Authenticate": {
                "description": "The Bearer challenge.",
                "required": True,
                "schema": {"type": "string"},
            }
        }
    return response


def apply_security(schema: dict[str, Any], settings: Settings) -> None:
    """Declare in an OpenAPI document exactly the keys ``settings`` require.

    Each operation names the bearer scheme of its role and documents 401 and 403 when
    that role needs a key; an operation left open declares no security and neither
    status. Schemes no operation uses are dropped.
    """
    used: set[str] = set()
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            requirements = operation.get("security") or []
            roles = {_ROLE_OF_SCHEME[n] for r in requirements for n in r if n in _ROLE_OF_SCHEME}
            responses = operation.setdefault("responses", {})
            if not roles:
                continue
            role = max(roles, key=_RANK.__getitem__)
            if not protected(settings, role):
                # open in this configuration: no key is needed, none is refused
                del operation["security"]
                responses.pop("401", None)
                responses.pop("403", None)
                continue
            operation["security"] = [{_SCHEME[role]: []}]
            used.add(_SCHEME[role])
            for status in (401, 403):
                responses[str(status)] = _auth_response(status, "#/components/schemas/Problem")
    schemes = schema.get("components", {}).get("securitySchemes", {})
    for name in [n for n in schemes if n not in used]:
        del schemes[name]
    if not schemes:
        schema.get("components", {}).pop("securitySchemes", None)


def log_security_posture(settings: Settings) -> None:
    """Warn at start-up about routes that are open to anyone."""
    if auth_mode(settings) == "open":
        logger.warning(
            "auth: open. No API key is set (RBMREC_API_KEYS, RBMREC_ADMIN_API_KEYS, "
            "RBMREC_READ_API_KEYS): anyone who can reach the API can read every user's "
            "ratings, write ratings and items, activate models and retrain"
        )
        return
    if not settings.read_api_keys:
        logger.warning(
            "auth: keyed, but RBMREC_READ_API_KEYS is not set: anyone who can reach the "
            "API can read every user's ratings, recommendations and predictions"
        )
    if not settings.admin_api_keys:
        logger.warning(
            "auth: keyed, but RBMREC_ADMIN_API_KEYS is not set: the admin routes "
            "(model registry, retraining) refuse every request"
        )
    if not settings.api_keys and not settings.admin_api_keys:
        logger.warning("auth: keyed, but no write key is set: writes refuse every request")
