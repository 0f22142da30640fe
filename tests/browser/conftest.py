"""Fixtures of the browser tests: a real server with trained versions, and headless Chromium.

Each module's server runs uvicorn in a thread of the test process on a free port,
against SQLite and against PostgreSQL (the session's throwaway databases, emptied
afterwards), with the ML-100K subset of the API tests and two versions trained by
the real retrain job. The browser is Debian's ``chromium`` driven through its
``chromium-driver`` (Selenium); without them the tests skip and say why.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "api"))

from _api_support import SMALL_TRAINING, free_port, load_subset, make_subset
from _browser_support import ADMIN_KEY, SCREENSHOTS, Served

from app.api.main import create_app
from app.db.engine import make_engine, make_sessionmaker
from app.services.retrain import train_and_activate
from app.settings import Settings

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
_TABLES = ["ratings", "items", "training_runs", "model_versions"]


def _find_browser() -> tuple[str, str] | None:
    binary = next((path for name in CHROMIUM if (path := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    return (binary, driver) if binary and driver else None


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def served(
    request: pytest.FixtureRequest,
    movielens_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    """The dashboard's server on a store holding the subset and two trained versions."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    root = tmp_path_factory.mktemp(f"browser-{request.param}")
    subset_dir = root / "ml-subset"
    subset_dir.mkdir()
    subset = make_subset(movielens_dir, subset_dir)
    engine = make_engine(url)
    try:
        store = make_sessionmaker(engine)
        load_subset(store, subset)
        settings = Settings(
            database_url=url,
            model_dir=root / "models",
            model_poll_seconds=30,
            admin_api_keys=[ADMIN_KEY],
        )
        versions = [
            train_and_activate(store, settings, params={**SMALL_TRAINING, "random_state": seed})
            for seed in (1, 2)
        ]
        port = free_port()
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="browser-test-server", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                pytest.fail("the test server did not start")
            time.sleep(0.05)
        try:
            yield Served(f"http://127.0.0.1:{port}", request.param, versions)
        finally:
            server.should_exit = True
            thread.join(timeout=15)
    finally:
        with engine.begin() as conn:
            for table in _TABLES:
                conn.execute(text(f"DELETE FROM {table}"))  # noqa: S608 (fixed names)
        engine.dispose()


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Headless Chromium through chromedriver (one for the session)."""
    found = _find_browser()
    if found is None:
        pytest.skip(
            "no headless browser: install Debian's chromium and chromium-driver "
            "(apt-get install -y chromium chromium-driver) to run the browser tests"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[dev]')")
    binary, driver_path = found
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        "--hide-scrollbars",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    SCREENSHOTS.mkdir(exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()
