"""Service configuration, read once from the environment (prefix ``RBMREC_``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.api.proxy import parse_proxy_entry
from rbm_core.scale import RatingScale


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _parse_scale(value: object) -> object:
    return RatingScale.parse(value) if isinstance(value, str) else value


MIN_KEY_LENGTH = 16
"""Shortest API key accepted: shorter ones are guessable, and refused at start-up."""

ScaleSetting = Annotated[
    RatingScale,
    NoDecode,
    BeforeValidator(_parse_scale),
]
"""A rating scale given as text (``"1,2,3,4,5"`` or ``"lo..hi:step"``), parsed once when
the settings are read; everything downstream receives the :class:`RatingScale`."""


class Settings(BaseSettings):
    """All settings of the service, the CLI and the worker.

    Every field is read from the environment variable ``RBMREC_<FIELD NAME>``
    (or a ``.env`` file in the working directory). README.md lists them.
    """

    # hide_input_in_errors: a refused setting is named in the error, never echoed (keys).
    model_config = SettingsConfigDict(
        env_prefix="RBMREC_",
        env_file=".env",
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
    )

    database_url: str = Field(
        default="sqlite:///./rbmrec.db",
        description="SQLAlchemy URL of the ratings store (sqlite:/// or postgresql+psycopg://).",
    )
    model_dir: Path = Field(
        default=Path("./models"), description="Directory holding the model artifacts."
    )
    rating_scale: ScaleSetting = Field(
        default=RatingScale.parse("1,2,3,4,5"),
        description="Allowed rating values, comma separated, or a range 'lo..hi:step'.",
    )
    movielens_dir: Path | None = Field(
        default=None,
        description="Unpacked MovieLens directory used by `make demo` instead of downloading.",
    )
    auto_create_items: bool = Field(
        default=False, description="Create unknown items on POST /ratings instead of 404."
    )
    # -- API keys and open mode (app/api/security.py, docs/security.md) ------------
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Keys accepted for writes and per-user reads (comma separated, "
        f"each at least {MIN_KEY_LENGTH} characters).",
    )
    admin_api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Keys accepted for everything, admin routes included (comma separated).",
    )
    read_api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Keys accepted for per-user reads (comma separated); once any key is "
        "set here, every /users/{id} read needs a read, write or admin key.",
    )
    allow_open: bool = Field(
        default=False,
        description="Let `rbmrec serve` bind a non-loopback address with no API keys set.",
    )
    model_mmap: bool = Field(
        default=True,
        description="Memory-map the served model from a verified private copy in "
        "RBMREC_MODEL_CACHE_DIR, so the worker processes of a host share one copy of "
        "the weights; false: each process reads the model into its own memory.",
    )
    model_cache_dir: Path | None = Field(
        default=None,
        description="Where API processes keep the copies of model artifacts they "
        "memory-map (only they write there; default: rbmrec-<uid>-serving in the "
        "system temporary directory).",
    )
    model_poll_seconds: float = Field(
        default=10.0, gt=0, le=30, description="How often the API checks for a new model."
    )
    db_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Connect and statement timeout for the database."
    )
    max_body_bytes: int = Field(
        default=2_000_000, gt=0, description="Largest request body accepted."
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Allowed CORS origins (comma separated); empty = off."
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.1", "::1"],
        description="Peers whose X-Forwarded-For and X-Forwarded-Proto are believed "
        "(comma separated IP addresses, networks such as 10.0.0.0/8, or host names, "
        "looked up as their addresses change); other peers' are ignored.",
    )
    docs_enabled: bool = Field(default=True, description="Serve /docs and /openapi.json.")
    dashboard_enabled: bool = Field(
        default=True,
        description="Serve the operator dashboard at /dashboard (read-only pages; its "
        "actions need the admin key as the JSON API does).",
    )
    log_level: str = Field(default="INFO", description="Logging level.")
    retrain_cron: str = Field(
        default="0 3 * * *", description="Cron schedule (UTC) of the worker's retrain."
    )
    keep_versions: int = Field(
        default=5, ge=1, description="Model versions kept on disk (the active one always)."
    )
    promotion_tolerance: float = Field(
        default=0.005,
        ge=0,
        description="A candidate is activated unless its RMSE is worse than the active "
        "model's by more than this.",
    )
    ndcg_tolerance: float = Field(
        default=0.01,
        ge=0,
        description="A candidate is activated unless its NDCG@10 on the held-out ratings is "
        "lower than the active model's by more than this.",
    )
    host: str = Field(default="127.0.0.1", description="Bind address of `rbmrec serve`.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port of `rbmrec serve`.")
    workers: int = Field(
        default=1,
        ge=1,
        description="API worker processes; use one per core (each listens on its own "
        "`SO_REUSEPORT` socket on Linux).",
    )

    # -- load shedding and rate limits (docs/reliability.md) --------------------------
    max_concurrency: int = Field(
        default=64,
        ge=1,
        description="Requests one worker process handles at once (health and metrics "
        "excepted); more are answered 503 with Retry-After at once.",
    )
    max_queue: int = Field(
        default=6,
        ge=0,
        description="Recommendation requests waiting for a scoring thread, per worker "
        "process; more are answered 503 with Retry-After at once.",
    )
    rate_limit_per_second: float = Field(
        default=0.0,
        ge=0,
        description="Requests per second allowed to each API key (or client address "
        "without one), as a token bucket; 0 = no rate limit. Over it: 429 with Retry-After.",
    )
    rate_limit_burst: int = Field(
        default=20, ge=1, description="Requests a client may send at once above its rate."
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis (redis://host:port/db) holding the rate limits' buckets, so "
        "that every worker and replica shares them; unset: each process keeps its own.",
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator(
        "api_keys",
        "admin_api_keys",
        "read_api_keys",
        "cors_origins",
        "trusted_proxies",
        mode="before",
    )
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("api_keys", "admin_api_keys", "read_api_keys")
    @classmethod
    def _long_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        # Only positions are named: the error text must not reveal a key.
        short = [
            i + 1 for i, key in enumerate(value) if len(key.get_secret_value()) < MIN_KEY_LENGTH
        ]
        if short:
            raise ValueError(
                f"API keys must be at least {MIN_KEY_LENGTH} characters; key number(s) "
                f"{', '.join(map(str, short))} of the list are shorter (generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_proxies(cls, value: list[str]) -> list[str]:
        for entry in value:
            parse_proxy_entry(entry)
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
