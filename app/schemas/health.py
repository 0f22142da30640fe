"""Bodies of the health probes (``/health/live``, ``/health/ready``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.fields import EXAMPLE_TIME
from app.schemas.problems import Problem

AuthModeField = Annotated[
    Literal["open", "keyed"],
    Field(
        description="open: no API key is configured, anyone who reaches the API may read "
        "and change everything; keyed: API keys are required (docs/security.md)."
    ),
]

__all__ = ["DatabaseStatus", "Liveness", "ModelStatus", "NotReady", "Readiness"]


class Liveness(BaseModel):
    """The process is up."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "alive"}]})

    status: Literal["alive"] = "alive"


class DatabaseStatus(BaseModel):
    """Whether the ratings store answers."""

    ok: bool
    error: str | None = None


class ModelStatus(BaseModel):
    """Which model is loaded, and why not, if it could not be."""

    model_config = ConfigDict(protected_namespaces=())

    loaded: bool
    version: str | None = Field(description="The version served (null: none).")
    active_version: str | None = Field(
        description="The version the registry marks active, as last seen."
    )
    last_check: datetime | None = Field(description="When the registry was last read.")
    error: str | None = Field(
        description="Why the active version is not the one served (load failure, "
        "corrupt artifact), if so."
    )


class Readiness(BaseModel):
    """Whether the service can answer requests (503 while the database is down)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "ready",
                    "database": {"ok": True, "error": None},
                    "model": {
                        "loaded": True,
                        "version": "20261129T030000123Z-9f2c1a",
                        "active_version": "20261129T030000123Z-9f2c1a",
                        "last_check": EXAMPLE_TIME,
                        "error": None,
                    },
                    "strategy": "rbm",
                    "replica": "3f2a9c1d7e4b",
                    "auth": "keyed",
                }
            ]
        }
    )

    status: Literal["ready", "unavailable"]
    database: DatabaseStatus
    model: ModelStatus
    strategy: Literal["rbm", "popular"] = Field(
        description="What recommendations use now: rbm with a model, else popular."
    )
    replica: str = Field(
        description="The replica that answered (its host name; also the Rbmrec-Replica "
        "header of every response).",
        examples=["3f2a9c1d7e4b"],
    )
    auth: AuthModeField


class NotReady(Problem):
    """The 503 answer of ``/health/ready``: a problem document with the readiness fields."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:rbmrec:problem:not-ready",
                    "title": "Not ready",
                    "status": 503,
                    "detail": "the ratings database does not answer; the service recovers "
                    "by itself when it is back",
                    "instance": "/health/ready",
                    "database": {"ok": False, "error": "the database does not answer"},
                    "model": {
                        "loaded": True,
                        "version": "20261129T030000123Z-9f2c1a",
                        "active_version": "20261129T030000123Z-9f2c1a",
                        "last_check": EXAMPLE_TIME,
                        "error": "cannot read the model registry: connection refused",
                    },
                    "strategy": "rbm",
                    "replica": "3f2a9c1d7e4b",
                    "auth": "keyed",
                }
            ]
        }
    )

    type: str = "urn:rbmrec:problem:not-ready"
    database: DatabaseStatus
    model: ModelStatus
    strategy: Literal["rbm", "popular"]
    replica: str
    auth: AuthModeField
