"""``rbmrec serve``: run the HTTP API with uvicorn."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

import typer

from app.api.security import auth_mode
from app.cli.common import fail, load_settings
from app.settings import Settings

APP_FACTORY = "app.api.main:create_app"

KEEP_ALIVE_SECONDS = 5
"""How long an idle HTTP connection stays open (uvicorn's default, pinned): a proxy
that keeps connections to the API must close its idle ones sooner
(``keepalive_timeout`` in deploy/nginx/rbmrec.conf.template), or it may send a
request on a connection the server is closing at that moment."""

# Same format as app.logging_config, applied by uvicorn in every worker process.
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_config(level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for uvicorn: one stderr handler on the root logger.

    uvicorn applies it in each worker process, so the app's own loggers (which
    propagate to the root) and uvicorn's share one format and one handler.
    """
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"format": _LOG_FORMAT}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            "uvicorn": {"level": level},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"level": level},
        },
    }


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def auth_banner(settings: Settings) -> str:
    """The line of the start banner that says who may use the API (never a key)."""
    if auth_mode(settings) == "open":
        return (
            "auth: OPEN - no API key is set: anyone who can reach this address can read "
            "every user's ratings, write, activate models and retrain (docs/security.md)"
        )
    roles = [
        f"{what} ({len(keys)})"
        for what, keys in (
            ("admin", settings.admin_api_keys),
            ("write", settings.api_keys),
            ("read", settings.read_api_keys),
        )
        if keys
    ]
    reads = "keyed" if settings.read_api_keys else "public (RBMREC_READ_API_KEYS is not set)"
    return f"auth: keyed - keys for {', '.join(roles)}; per-user reads {reads}"


def check_open_bind(settings: Settings, host: str) -> None:
    """Refuse to serve an open API beyond loopback unless ``RBMREC_ALLOW_OPEN`` says so."""
    if auth_mode(settings) == "open" and not is_loopback(host) and not settings.allow_open:
        fail(
            f"refusing to serve an open API on {host}: no API key is set, so anyone who "
            "can reach that address could read and change everything. Set "
            "RBMREC_ADMIN_API_KEYS / RBMREC_API_KEYS / RBMREC_READ_API_KEYS, bind "
            "127.0.0.1, or set RBMREC_ALLOW_OPEN=true to serve it open on purpose"
        )


def serve(
    host: Annotated[
        str | None,
        typer.Option(
            "--host", help="Bind address (default: RBMREC_HOST, 127.0.0.1).", show_default=False
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            min=1,
            max=65535,
            help="Port (default: RBMREC_PORT, 8000).",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            help="Worker processes (default: RBMREC_WORKERS, 1). Each loads the model "
            "(memory-mapped from a verified copy, so they share its pages).",
            show_default=False,
        ),
    ] = None,
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log every request.")
    ] = True,
) -> None:
    """Serve the recommendation API (uvicorn, app factory app.api.main:create_app).

    The database must be migrated (`rbmrec db upgrade`); the active model is loaded
    at start and followed as it changes (every RBMREC_MODEL_POLL_SECONDS, and on
    SIGHUP, which reaches every worker). OpenAPI docs at /docs, the operator
    dashboard at /dashboard. Retrains run in `rbmrec worker`, not here.
    """
    import uvicorn

    from app.cli.supervisor import WorkerSupervisor, supports_reuse_port

    settings = load_settings()
    bind_host = host or settings.host
    bind_port = port or settings.port
    n_workers = workers or settings.workers
    check_open_bind(settings, bind_host)
    typer.echo(
        f"serving rbmrec on http://{bind_host}:{bind_port} "
        f"({n_workers} worker{'s' if n_workers > 1 else ''}; docs at /docs, "
        f"dashboard at /dashboard)\n{auth_banner(settings)}",
        err=True,
    )
    options: dict[str, Any] = {
        "factory": True,
        "host": bind_host,
        "port": bind_port,
        "log_config": log_config(settings.log_level),
        "access_log": access_log,
        "timeout_graceful_shutdown": 10,
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        # The app applies X-Forwarded-* itself, from RBMREC_TRUSTED_PROXIES only
        # (app/api/proxy.py); uvicorn's own handling would also trust 127.0.0.1.
        "proxy_headers": False,
    }
    if n_workers > 1 and supports_reuse_port():
        # One socket per worker, so that connections spread over them (see
        # app/cli/supervisor.py); uvicorn's own supervisor shares one.
        code = WorkerSupervisor(uvicorn.Config(APP_FACTORY, **options), n_workers).run()
        if code:
            raise typer.Exit(code)
        return
    uvicorn.run(APP_FACTORY, workers=n_workers, **options)


def register(cli: typer.Typer) -> None:
    """Add ``rbmrec serve`` to the CLI."""
    cli.command("serve")(serve)
