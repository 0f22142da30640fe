"""Error bodies: RFC 9457 problem details, and the 422 variant that lists wrong fields."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["FieldError", "Problem", "ValidationProblem"]


class Problem(BaseModel):
    """RFC 9457 problem details: the body of every error response."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:rbmrec:problem:unknown-item",
                    "title": "Unknown item",
                    "status": 404,
                    "detail": "unknown item id '99999'",
                    "instance": "/ratings",
                }
            ]
        }
    )

    type: str = Field(default="about:blank", description="URI of the problem type.")
    title: str = Field(description="Short summary of the problem type.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong with this request.")
    instance: str | None = Field(default=None, description="The request path.")


class FieldError(BaseModel):
    """One wrong field of a request."""

    loc: list[str | int] = Field(description="Where: e.g. ['body', 'ratings', 3, 'rating'].")
    msg: str = Field(description="What is wrong with it.")
    type: str = Field(description="Machine-readable error kind.")


class ValidationProblem(Problem):
    """A 422 problem: the request is invalid; ``errors`` names each wrong field."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:rbmrec:problem:validation-error",
                    "title": "Invalid request",
                    "status": 422,
                    "detail": "the request is invalid: body.rating: rating 6 is not on "
                    "the rating scale; allowed values: 1, 2, 3, 4, 5",
                    "instance": "/ratings",
                    "errors": [
                        {
                            "loc": ["body", "rating"],
                            "msg": "rating 6 is not on the rating scale; "
                            "allowed values: 1, 2, 3, 4, 5",
                            "type": "rating_scale",
                        }
                    ],
                }
            ]
        }
    )

    errors: list[FieldError] = Field(default_factory=list)
