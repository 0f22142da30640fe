"""Logging set up once, at each entry point (CLI, server, worker)."""

from __future__ import annotations

import logging

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr at ``level``; idempotent."""
    root = logging.getLogger()
    if not any(getattr(h, "_rbmrec", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._rbmrec = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level.upper())
