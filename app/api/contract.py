"""What the OpenAPI document says that depends on the configuration, or that pydantic
cannot express: the document describes this server as configured.

* security: the bearer scheme of each operation whose role needs a key, and its 401
  and 403 answers; nothing for operations left open (:mod:`app.api.security`);
* the rating scale: ``rating`` of a request is one of ``RBMREC_RATING_SCALE``'s values;
* ``StorableJson``: the recursive schema of an item's ``attributes``.

A client (or Schemathesis) that follows the document then sends nothing the server
refuses, and the server accepts nothing the document rules out.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from app.api.security import apply_security
from app.schemas.items import STORABLE_JSON_SCHEMA
from app.settings import Settings

__all__ = ["document_contract"]

_RATING_REQUESTS = ("RatingCreate", "GivenRating")


def _apply(schema: dict[str, Any], settings: Settings) -> None:
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["StorableJson"] = STORABLE_JSON_SCHEMA
    values = [float(v) for v in settings.rating_scale.values]
    for name in _RATING_REQUESTS:
        rating = schemas.get(name, {}).get("properties", {}).get("rating")
        if rating is not None:
            rating["enum"] = values
            rating["description"] = f"One of the rating scale's values: {settings.rating_scale}."
    apply_security(schema, settings)


def document_contract(app: FastAPI, settings: Settings) -> None:
    """Make ``app``'s OpenAPI document describe the server configured by ``settings``.

    Parameters
    ----------
    app : FastAPI
        The app, with all its routers included.
    settings : Settings
        Its configuration (keys, rating scale).
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        _apply(schema, settings)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
