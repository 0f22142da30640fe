"""The dashboard in a real browser (headless Chromium): every page at 1280 and 390 px,
the training charts, "try it", and a rollback with and without the admin key.

Each page's screenshot is saved to ``.pytest_screenshots/`` (ignored by git).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from _browser_support import ADMIN_KEY, SCREENSHOTS, Served

Keys = pytest.importorskip(
    "selenium.webdriver.common.keys", reason="selenium is not installed (pip install -e '.[dev]')"
).Keys

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

PAGES = [
    ("overview", "/dashboard"),
    ("models", "/dashboard/models"),
    ("runs", "/dashboard/runs"),
    ("try", "/dashboard/try"),
    ("item", "/dashboard/items/50"),
]
WIDTHS = (1280, 390)


def _wait(driver: Any, condition: Callable[[Any], Any], timeout: float = 15) -> Any:
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
        WebDriverException,
    )
    from selenium.webdriver.support.ui import WebDriverWait

    def settled(d: Any) -> Any:
        # a page that reloads (after an action) leaves stale elements for a moment;
        # Chromium then reports the node as gone from the document: look again
        try:
            return condition(d)
        except (NoSuchElementException, StaleElementReferenceException):
            return False
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc):
                return False
            raise

    return WebDriverWait(driver, timeout).until(settled)


def _viewport(driver: Any, width: int, height: int = 900) -> None:
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
    )


def _open(driver: Any, url: str) -> None:
    driver.get(url)
    # the page's script ran: it fills in the key state
    _wait(driver, lambda d: d.find_element("id", "key-state").text.strip() != "")


def _console_errors(driver: Any) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _screenshot(driver: Any, name: str, width: int) -> None:
    _viewport(driver, width)
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    _viewport(driver, width, min(max(height, 600), 6000))
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
    _viewport(driver, width)


def _charts_rendered(driver: Any) -> list[Any]:
    charts = driver.find_elements("css selector", "details.version[open] .chart")
    _wait(
        driver,
        lambda d: (
            len(d.find_elements("css selector", "details.version[open] .chart[data-rendered]"))
            == len(charts)
        ),
    )
    return charts


def test_every_page_at_1280_and_390_pixels(served: Served, browser: Any) -> None:
    driver = browser
    driver.get_log("browser")  # drop what earlier tests left
    with httpx.Client(base_url=served.url, timeout=10) as api:  # traffic for the overview
        for user in ("1", "2", "3", "new-user"):
            assert api.get(f"/users/{user}/recommendations").status_code == 200
        assert api.get("/items", params={"q": "star"}).status_code == 200
    for width in WIDTHS:
        _viewport(driver, width)
        for name, path in PAGES:
            _open(driver, served.url + path)
            if name == "models":
                _charts_rendered(driver)
            assert driver.find_element("tag name", "h1").text
            unlabelled = driver.execute_script(
                "return Array.from(document.querySelectorAll('input, select, button'))"
                ".filter(function (c) { return !(c.labels && c.labels.length) && "
                "!c.getAttribute('aria-label') && !c.textContent.trim(); })"
                ".map(function (c) { return c.outerHTML; })"
            )
            assert unlabelled == [], path
            overflow = driver.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 1, f"{path} is {overflow} px wider than {width} px"
            _screenshot(driver, f"{served.database}-{name}-{width}", width)
            assert _console_errors(driver) == [], path
    assert (SCREENSHOTS / f"{served.database}-models-390.png").stat().st_size > 10_000


def test_charts_have_one_point_per_epoch(served: Served, browser: Any) -> None:
    driver = browser
    _viewport(driver, 1280)
    _open(driver, served.url + "/dashboard/models")
    charts = _charts_rendered(driver)
    with served.admin() as api:
        curves = {
            v.id: api.get(f"/models/{v.id}").json()["training_curves"] for v in served.versions
        }
    assert len(charts) == 3 * len(served.versions)
    for chart in charts:
        version = chart.get_attribute("data-version")
        epochs = max(len(part["epoch"]) for part in curves[version].values())
        assert int(chart.get_attribute("data-points")) == epochs
        # what uPlot holds: x and every part's series, each one point per epoch
        lengths = driver.execute_script(
            "return arguments[0]._plot.data.map(function (s) { return s.length; })", chart
        )
        assert lengths == [epochs] * len(lengths)
        assert len(lengths) >= 2
        assert chart.find_elements("css selector", "canvas")
    assert _console_errors(driver) == []


def test_try_it_rates_in_the_page_and_explains(served: Served, browser: Any) -> None:
    driver = browser
    _viewport(driver, 1280)
    _open(driver, served.url + "/dashboard/try")
    search = driver.find_element("id", "q")
    search.send_keys("star")
    search.submit()
    _wait(driver, lambda d: d.find_elements("css selector", "#search-results li[data-item]"))
    rated: set[str] = set()
    for row in driver.find_elements("css selector", "#search-results li[data-item]")[:3]:
        row.find_element("css selector", "button").click()  # the highest rating is preselected
        rated.add(row.get_attribute("data-item"))
    _wait(driver, lambda d: len(d.find_elements("css selector", "#rated li")) == len(rated))
    driver.find_element("id", "recommend-rated").click()
    items = _wait(driver, lambda d: d.find_elements("css selector", "#recommendations > li"))
    assert len(items) == 10
    assert "strategy rbm" in driver.find_element("id", "recs-meta").text
    assert not {item.get_attribute("data-item") for item in items} & rated
    supports = driver.find_elements("css selector", "#recommendations .why li[data-item]")
    assert supports, "no recommendation is explained"
    assert {support.get_attribute("data-item") for support in supports} <= rated
    assert "predicted rating" in items[0].text
    _screenshot(driver, f"{served.database}-try-results-1280", 1280)
    _screenshot(driver, f"{served.database}-try-results-390", 390)
    _viewport(driver, 1280)

    # written to the store when asked, and only with a key: this server is keyed
    driver.find_element("id", "forget-key").click()
    saved_as = driver.find_element("id", "save-user")
    saved_as.send_keys("browser-visitor")
    saved_as.submit()
    _wait(driver, lambda d: "401" in d.find_element("id", "flash").text)
    with httpx.Client(base_url=served.url, timeout=10) as api:
        assert api.get("/users/browser-visitor/ratings").json()["items"] == []
    driver.get_log("browser")  # the refused call is logged by the browser as an error
    key = driver.find_element("id", "api-key")
    key.send_keys(ADMIN_KEY)
    key.submit()
    _wait(driver, lambda d: "is set" in d.find_element("id", "key-state").text)
    driver.find_element("id", "save-user").submit()
    _wait(driver, lambda d: "Saved" in d.find_element("id", "flash").text)
    driver.find_element("id", "forget-key").click()
    with httpx.Client(base_url=served.url, timeout=10) as api:
        stored = api.get("/users/browser-visitor/ratings").json()["items"]
    assert {r["item_id"] for r in stored} == rated
    assert {r["rating"] for r in stored} == {5.0}

    # an existing user of the store
    user = driver.find_element("id", "user-id")
    user.send_keys("1")
    user.submit()
    _wait(driver, lambda d: "user 1" in d.find_element("id", "recs-meta").text)
    assert len(driver.find_elements("css selector", "#recommendations > li")) == 10
    assert _console_errors(driver) == []


def test_keyboard_reaches_the_skip_link_and_the_navigation(served: Served, browser: Any) -> None:
    driver = browser
    _viewport(driver, 390)
    _open(driver, served.url + "/dashboard")
    body = driver.find_element("tag name", "body")
    body.send_keys(Keys.TAB)
    skip = driver.switch_to.active_element
    assert skip.text == "Skip to content"
    skip.send_keys(Keys.TAB)
    assert driver.switch_to.active_element.text == "rbmrec"
    driver.switch_to.active_element.send_keys(Keys.TAB)
    first = driver.switch_to.active_element
    assert first.text == "Overview"
    assert first.get_attribute("aria-current") == "page"


def test_api_docs_render_offline_under_their_policy(served: Served, browser: Any) -> None:
    driver = browser
    _viewport(driver, 1280)
    driver.get_log("browser")
    driver.get(served.url + "/docs")
    operations = _wait(driver, lambda d: d.find_elements("css selector", ".swagger-ui .opblock"))
    assert len(operations) > 10
    assert "/dashboard" in driver.find_element("css selector", ".swagger-ui .info").text
    loaded = driver.execute_script(
        "return performance.getEntriesByType('resource').map(function (e) { return e.name; })"
    )
    assert all(url.startswith(served.url) or url.startswith("data:") for url in loaded), loaded
    assert _console_errors(driver) == []


def test_rollback_needs_the_admin_key(served: Served, browser: Any) -> None:
    driver = browser
    _viewport(driver, 1280)
    older, newer = served.versions
    with served.admin() as api:
        assert api.get("/models").json()["active_version"] == newer.id
    _open(driver, served.url + "/dashboard/models")
    driver.find_element("id", "forget-key").click()
    driver.find_element("css selector", f'button.activate[data-version="{older.id}"]').click()
    flash = _wait(
        driver,
        lambda d: (box := d.find_element("id", "flash")).text and box,
    )
    assert "401" in flash.text
    assert "error" in flash.get_attribute("class")
    with served.admin() as api:
        assert api.get("/models").json()["active_version"] == newer.id
    driver.get_log("browser")  # the refused call is logged by the browser as an error

    key = driver.find_element("id", "api-key")
    key.send_keys(ADMIN_KEY)
    key.submit()
    _wait(driver, lambda d: "is set" in d.find_element("id", "key-state").text)
    # kept in this tab's session storage, never in the URL or a cookie
    assert ADMIN_KEY not in driver.current_url
    assert driver.get_cookies() == []
    # by keyboard: focus the button and press Enter
    button = driver.find_element("css selector", f'button.activate[data-version="{older.id}"]')
    driver.execute_script("arguments[0].focus()", button)
    assert driver.switch_to.active_element == button
    button.send_keys(Keys.ENTER)
    _wait(driver, lambda d: "Activated" in d.find_element("id", "flash").text)
    with served.admin() as api:
        assert api.get("/models").json()["active_version"] == older.id
        assert api.get("/model").json()["version"] == older.id
    row = driver.find_element("id", f"row-{older.id}")
    assert "active" in row.text
    assert _console_errors(driver) == []
    _open(driver, served.url + "/dashboard/runs")
    driver.find_element("id", "retrain-now").click()
    _wait(driver, lambda d: "queued" in d.find_element("id", "flash").text)
    assert "queued" in driver.find_element("id", "runs").text
