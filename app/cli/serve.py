"""``rbmrec serve``: run the HTTP API with uvicorn."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from app.cli.common import load_settings

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
    typer.echo(
        f"serving rbmrec on http://{bind_host}:{bind_port} "
        f"({n_workers} worker{'s' if n_workers > 1 else ''}; docs at /docs, "
        "dashboard at /dashboard)",
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
