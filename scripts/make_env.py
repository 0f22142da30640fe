"""Write .env from .env.example with fresh secrets: ``make env``.

    python scripts/make_env.py [--output .env] [--force]

Fills in the two PostgreSQL passwords of docker-compose.yml (``POSTGRES_PASSWORD``, the
owner's, and ``POSTGRES_APP_PASSWORD``, the api's and worker's) and one key of each
role (``RBMREC_ADMIN_API_KEYS``, ``RBMREC_API_KEYS``, ``RBMREC_READ_API_KEYS``), each from
:func:`secrets.token_urlsafe` (URL-safe, so they fit in a database URL unquoted). Every
other line is copied as it is. The file is created readable by its owner only, and an
existing one is kept unless ``--force``: its passwords are those of the database volume.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECRETS = (
    "POSTGRES_PASSWORD",
    "POSTGRES_APP_PASSWORD",
    "RBMREC_ADMIN_API_KEYS",
    "RBMREC_API_KEYS",
    "RBMREC_READ_API_KEYS",
)


def render(example: str) -> str:
    """``example`` with a fresh secret on the line of each name in :data:`SECRETS`."""
    out = example
    for name in SECRETS:
        out, count = re.subn(
            rf"^{name}=.*$", f"{name}={secrets.token_urlsafe(32)}", out, flags=re.MULTILINE
        )
        if count != 1:
            raise SystemExit(f"make_env: .env.example has no single {name}= line")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / ".env")
    parser.add_argument("--force", action="store_true", help="replace an existing file")
    args = parser.parse_args()
    if args.output.exists() and not args.force:
        print(
            f"make_env: {args.output} exists; its passwords are those of the database "
            "volume. Keeping it (--force replaces it).",
            file=sys.stderr,
        )
        return 1
    text = render((ROOT / ".env.example").read_text())
    fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    print(f"wrote {args.output} with new database passwords and API keys (mode 600)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
