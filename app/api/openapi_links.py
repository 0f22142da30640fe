"""OpenAPI links: how values in one response feed the next request.

They document the API's workflows in the schema (``responses.<status>.links``): the
rating just stored leads to that user's ratings, recommendations and predictions,
and to its deletion; an item just stored leads to the item and its similar items;
a queued retrain leads to its run; the served model leads to its registry record
and its (re)activation.
Tools that follow links (Schemathesis' stateful tests among them) chain requests
the way a client does.

Targets are named by method and path and resolved to FastAPI's generated
``operationId`` when the schema is built, so renaming a handler cannot break a link.
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import FastAPI

__all__ = ["LINKS", "add_openapi_links"]

Operation = tuple[str, str]
"""(HTTP method, path template)."""

_USER_RATINGS: Final = ("GET", "/users/{user_id}/ratings")
_RECOMMENDATIONS: Final = ("GET", "/users/{user_id}/recommendations")
_PREDICTIONS: Final = ("GET", "/users/{user_id}/predictions")
_DELETE_RATING: Final = ("DELETE", "/users/{user_id}/ratings/{item_id}")
_ITEM: Final = ("GET", "/items/{item_id}")
_SIMILAR: Final = ("GET", "/items/{item_id}/similar")
_RUN: Final = ("GET", "/admin/retrain/{run_id}")
_VERSION: Final = ("GET", "/models/{version_id}")
_ACTIVATE: Final = ("POST", "/models/{version_id}/activate")

_RATING_LINKS: Final[dict[str, tuple[Operation, dict[str, str]]]] = {
    "UserRatings": (_USER_RATINGS, {"path.user_id": "$response.body#/user_id"}),
    "Recommendations": (_RECOMMENDATIONS, {"path.user_id": "$response.body#/user_id"}),
    "Predictions": (
        _PREDICTIONS,
        {"path.user_id": "$response.body#/user_id", "query.item_id": "$response.body#/item_id"},
    ),
    "DeleteRating": (
        _DELETE_RATING,
        {"path.user_id": "$response.body#/user_id", "path.item_id": "$response.body#/item_id"},
    ),
}
_ITEM_LINKS: Final[dict[str, tuple[Operation, dict[str, str]]]] = {
    "Item": (_ITEM, {"path.item_id": "$response.body#/id"}),
    "SimilarItems": (_SIMILAR, {"path.item_id": "$response.body#/id"}),
}

# Each target has at most one incoming link per status code: Schemathesis' stateful
# mode names its steps "<target> -> <status>", and two such links would collide.
LINKS: Final[dict[tuple[str, str, str], dict[str, tuple[Operation, dict[str, str]]]]] = {
    ("POST", "/ratings", "201"): _RATING_LINKS,
    ("POST", "/ratings", "200"): _RATING_LINKS,
    ("PUT", "/items/{item_id}", "201"): _ITEM_LINKS,
    ("PUT", "/items/{item_id}", "200"): _ITEM_LINKS,
    ("POST", "/admin/retrain", "202"): {
        "RetrainRun": (_RUN, {"path.run_id": "$response.body#/id"})
    },
    ("GET", "/model", "200"): {
        "ModelVersion": (_VERSION, {"path.version_id": "$response.body#/version"}),
        "Activate": (_ACTIVATE, {"path.version_id": "$response.body#/version"}),
    },
}
"""(method, path, status) of a response -> its links: name -> (target, parameters)."""


def _apply(schema: dict[str, Any]) -> None:
    operations = {
        (method.upper(), path): operation
        for path, item in schema.get("paths", {}).items()
        for method, operation in item.items()
    }
    for (method, path, status), links in LINKS.items():
        source = operations.get((method, path))
        response = (source or {}).get("responses", {}).get(status)
        if response is None:  # the operation is not served (e.g. a router left out)
            continue
        out: dict[str, Any] = {}
        for name, (target, parameters) in links.items():
            operation = operations.get(target)
            if operation is None or "operationId" not in operation:
                continue
            out[name] = {"operationId": operation["operationId"], "parameters": dict(parameters)}
        if out:
            response["links"] = out


def add_openapi_links(app: FastAPI) -> None:
    """Add :data:`LINKS` to ``app``'s OpenAPI schema when it is first built.

    Parameters
    ----------
    app : FastAPI
        The app, with all its routers included.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        _apply(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
