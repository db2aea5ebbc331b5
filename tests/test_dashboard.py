"""The dashboard in a real browser: Debian's headless Chromium, driven by Selenium through Debian's chromedriver.

The page is served by a real `smmf gateway` over real etcd, with a sim
worker behind a real sidecar.  The test registers an API from the page's
form and sees its row appear, drains the worker from its row and sees the
state change, and stops etcd and sees the outage shown over the last known
fleet, all without reloading the page.  Screenshots of each step are saved
under `test-artifacts/dashboard/`.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.etcd import EtcdCluster
from tests.support.fleet import Fleet
from tests.support.gateway import start_gateway
from tests.support.processes import ROOT, SmmfProcess
from tests.support.upstream_app import Upstream

ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
#: Seconds any one thing may take to show on the page: a deadline for a loaded 2-core machine, not a speed claim.
DEADLINE = 30

#: The flags a sandboxed root machine with no network needs; without the background-networking ones,
#: Chromium keeps trying to reach Google's hosts.
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1440,900",
)  # fmt: skip


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    assert not missing, f"{missing} not installed: `make packages` installs Debian's chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    # The driver is named, so Selenium Manager never runs (it would try to download one).
    service = Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


def shot(browser: WebDriver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def wait(browser: WebDriver, what: str, check: Callable[[WebDriver], object]) -> None:
    try:
        WebDriverWait(browser, DEADLINE, poll_frequency=0.1).until(check)
    except TimeoutException:
        shot(browser, f"failed-{what}")
        raise AssertionError(f"the page did not show {what} within {DEADLINE}s") from None


def cell(browser: WebDriver, row_prefix: str, column: str) -> str:
    rows = browser.find_elements(By.CSS_SELECTOR, f'tr[data-id^="{row_prefix}"] td[data-col="{column}"]')
    return rows[0].text if rows else ""


async def test_the_dashboard_is_live_and_acts(
    browser: WebDriver,
    start_etcd: Callable[..., EtcdCluster],
    start_smmf: Callable[..., SmmfProcess],
    upstream: Upstream,
    tmp_path: Path,
) -> None:
    etcd = start_etcd()
    url = etcd.url(f"/d-{uuid.uuid4().hex[:6]}")
    fleet = Fleet(url, "gemma", [1], tmp_path, ("--ttft-ms", "0", "--tpot-ms", "1")).start()
    try:
        gateway = start_gateway(start_smmf, url)
        worker = fleet.instance_of(fleet.members[0])
        browser.get(gateway.url + "/")
        browser.execute_script("window.notReloaded = true")
        wait(browser, "the worker's row", lambda b: cell(b, worker, "state") == "up")
        assert "writes: admin token ($SMMF_TEST_ADMIN_TOKEN)" in browser.find_element(By.ID, "writes").text
        browser.find_element(By.ID, "token").send_keys(gateway.token)
        shot(browser, "1-fleet")

        form = browser.find_element(By.ID, "register")
        for name, value in (
            ("model_name", "search-api"),
            ("req_url_template", f"{upstream.url}/template"),
            ("owner", "team-a"),
            ("response_extract", "data.items.0.attributes.answer"),
        ):
            form.find_element(By.NAME, name).send_keys(value)
        body = form.find_element(By.NAME, "body")
        body.clear()
        body.send_keys('{"query": {"text": "{USER_PROMPT}"}}')
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait(browser, "the registered API's row", lambda b: cell(b, "tpl-", "state") == "up")
        log = browser.find_element(By.ID, "log")
        wait(browser, "the register acknowledgement", lambda b: "register LLM search-api succeed!" in log.text)
        assert browser.find_element(By.CSS_SELECTOR, 'article[data-model="search-api"]')
        shot(browser, "2-registered")

        browser.find_element(By.CSS_SELECTOR, f'tr[data-id^="{worker}"] button[data-action="drain"]').click()
        wait(browser, "the drained state", lambda b: cell(b, worker, "state") == "offline")
        wait(browser, "the sidecar's acknowledgement", lambda b: "drain done; now offline" in log.text)
        assert "acknowledged" in log.text
        shot(browser, "3-drained")

        etcd.stop()
        banner = browser.find_element(By.ID, "banner")
        wait(browser, "the registry outage", lambda b: banner.is_displayed() and "Registry unreachable" in banner.text)
        assert cell(browser, worker, "state") == "offline", "the last known fleet stays on screen"
        assert cell(browser, "tpl-", "state") == "up"
        assert browser.execute_script("return window.notReloaded") is True
        assert gateway.token not in browser.page_source
        shot(browser, "4-registry-down")
    finally:
        fleet.stop()
