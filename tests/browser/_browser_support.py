"""What the browser tests share with their fixtures: the admin key, the screenshots'
folder and the running server's description (a module of its own: test modules import
it by a name no other test folder uses)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx

from app.services.registry import ModelVersionInfo

ADMIN_KEY = "browser-admin-key"
SCREENSHOTS = Path(__file__).resolve().parents[2] / ".pytest_screenshots"


@dataclass(frozen=True)
class Served:
    """A running server: its URL, database and the versions trained for it."""

    url: str
    database: str
    versions: list[ModelVersionInfo]

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
        )
