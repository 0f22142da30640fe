"""What the OpenAPI document says that depends on the configuration, or that pydantic
cannot express: the document describes this server as configured.

* security: the bearer scheme of each operation whose role needs a key, and its 401
  and 403 answers; nothing for operations left open (:mod:`app.api.security`);
* the rating scale: ``rating`` of a request is one of ``RBMREC_RATING_SCALE``'s values;
* ``StorableJson``: the recursive schema of an item's ``attributes``.

And what the document says that the server must enforce itself: a query parameter
that is not an array takes one value (:func:`single_valued_query_parameters`, used by
:class:`app.api.middleware.RepeatedQueryMiddleware`; Starlette would keep the last).

A client (or Schemathesis) that follows the document then sends nothing the server
refuses, and the server accepts nothing the document rules out.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from app.api.security import apply_security
from app.schemas.items import STORABLE_JSON_SCHEMA
from app.settings import Settings

__all__ = ["document_contract", "single_valued_query_parameters"]

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


def single_valued_query_parameters(schema: dict[str, Any]) -> frozenset[str]:
    """The query parameters of an OpenAPI document that are never arrays.

    A name that is an array in some operation (``exclude``, ``item_id``) may be repeated
    everywhere.
    """
    single: set[str] = set()
    repeatable: set[str] = set()
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") != "query":
                    continue
                kinds = [parameter.get("schema", {}), *parameter.get("schema", {}).get("anyOf", [])]
                is_array = any(kind.get("type") == "array" for kind in kinds)
                (repeatable if is_array else single).add(parameter["name"])
    return frozenset(single - repeatable)
