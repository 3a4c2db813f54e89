"""The workstation page in a real headless Chromium, against the real bridge and Asterisk.

A user logs in on the page the bridge serves (`GET /`), writes a forward rule with a
target outside the tenant, sees the API's refusal next to that very input, fixes it and
saves; a SIPp call to the user's number then rings the desk the rule names (1012), not
the user's own (1011); the page's call list shows the call with the rule that decided
it. Everything is done through the page's controls, found by the ids and data
attributes docs/workstation.md lists. The bridge, desks and caller are those of
tests/integration/test_personal_router.py (tenant acme, personal number 2101, desk
phones 1011-1013 as SIPp UASes). Screenshots go to the test's tmp_path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from harness.asterisk import Asterisk
from harness.bridge import BridgeProcess
from harness.browser import Browser, browser_problem
from tests.integration.test_personal_router import (
    PASSWORD,
    Personal,
    call,
    desk,
    free_port,
    write_config,
)

pytestmark = pytest.mark.asterisk
WAIT_S = 15.0  # a page action's answer (a login hashes a password on a busy box)
RULE = "to-desk2"
BAD_TARGET = "external:+1555"  # acme's external_prefixes are +49 and 0
GOOD_TARGET = "extension:1012"
T = TypeVar("T")


@pytest.fixture
def personal(asterisk: Asterisk, tmp_path: Path) -> Iterator[Personal]:
    port = free_port()
    config = write_config(tmp_path, port)
    with BridgeProcess(config, log_path=tmp_path / "bridge.log") as bridge:
        token = (tmp_path / "operator.token").read_text().strip()
        yield Personal(bridge, f"http://127.0.0.1:{port}", token)


@pytest.fixture
def browser(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Browser]:
    problem = browser_problem()
    if problem is not None:  # as for the sandbox: a missing browser fails, never skips
        pytest.fail(problem, pytrace=False)
    failed = request.session.testsfailed
    with Browser(log_path=tmp_path / "chromedriver.log") as started:
        yield started
        if request.session.testsfailed > failed:  # what the page showed when it failed
            started.screenshot(tmp_path / "failure.png")


def wait(driver: WebDriver, what: str, check: Callable[[WebDriver], T]) -> T:
    try:
        return WebDriverWait(driver, WAIT_S,
                             ignored_exceptions=(StaleElementReferenceException,)).until(check)
    except TimeoutException:
        raise AssertionError(f"the page did not show {what} within {WAIT_S} s") from None


def rule_input(driver: WebDriver, index: int, name: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f'[data-rule-index="{index}"] [name="{name}"]')


def log_in(driver: WebDriver, base: str, user: str) -> None:
    driver.get(base + "/")
    driver.find_element(By.ID, "login-tenant").send_keys("acme")
    driver.find_element(By.ID, "login-user").send_keys(user)
    driver.find_element(By.ID, "login-password").send_keys(PASSWORD)
    driver.find_element(By.ID, "login-submit").click()
    wait(driver, "the rules read", lambda d: "version 0" in d.find_element(
        By.ID, "rules-status").text)


def test_a_rule_written_on_the_page_decides_the_next_call(
        personal: Personal, browser: Browser, tmp_path: Path) -> None:
    alice = personal.create("alice", "2101", ["1011"])
    driver = browser.driver
    log_in(driver, personal.base, "alice")
    assert driver.find_element(By.ID, "whoami-name").text.startswith("Alice (alice@acme")

    # A forward rule to a number outside the tenant's prefixes: refused, next to the input.
    driver.find_element(By.ID, "rule-add").click()
    rule_input(driver, 0, "name").send_keys(RULE)
    Select(rule_input(driver, 0, "action")).select_by_value("forward")
    Select(rule_input(driver, 0, "on")).select_by_value("always")
    rule_input(driver, 0, "target").send_keys(BAD_TARGET)
    driver.find_element(By.ID, "rules-save").click()
    target = rule_input(driver, 0, "target")
    error = wait(driver, "the refusal next to the target", lambda d: d.find_element(
        By.CSS_SELECTOR, '[data-rule-index="0"] .field-error'))
    assert "prefix" in error.text, error.text
    assert error.get_attribute("role") == "alert"
    assert target.get_attribute("aria-invalid") == "true"
    assert (error.get_attribute("id") or "?") in (target.get_attribute("aria-describedby") or "")
    assert driver.switch_to.active_element == target  # focus moved to the field at fault
    browser.screenshot(tmp_path / "workstation-rules-refused.png")
    # The picture of docs/workstation.md and the README (docs/img/workstation-rules.png).
    browser.screenshot(tmp_path / "workstation-rules-form.png",
                       element=driver.find_element(By.ID, "rules-section"))
    assert alice.call("GET", "/api/v1/me/rules")["version"] == 0  # nothing stored

    # Fixed: saved as version 1, the error gone.
    target.clear()
    target.send_keys(GOOD_TARGET)
    driver.find_element(By.ID, "rules-save").click()
    wait(driver, "the save", lambda d: "version 1" in d.find_element(
        By.ID, "rules-status").text)
    assert driver.find_elements(By.CSS_SELECTOR, ".field-error") == []
    browser.screenshot(tmp_path / "workstation-rules.png")
    stored = alice.call("GET", "/api/v1/me/rules")
    assert stored["version"] == 1
    assert [(r["name"], r["action"], r["on"], r["target"]) for r in stored["rules"]] == [
        (RULE, "forward", "always", GOOD_TARGET)]

    # The next call goes where the page said: desk 1012, and 1011 does not even ring.
    mine, colleague = desk("1011"), desk("1012")
    stats, _ = call("acme-caller", "2101")
    assert (stats.successful, stats.failed) == (1, 0), stats.failure_reasons
    assert colleague.stop().successful == 1
    assert mine.stop().received("INVITE") == 0

    # The page's call list shows the call and the rule that decided it.
    # The reload re-renders the list after its fetch: everything is read in one look, and a
    # look that a re-render made stale is simply taken again (wait ignores staleness).
    def decided(d: WebDriver) -> tuple[str, str, str, str] | None:
        d.find_element(By.ID, "history-reload").click()  # traces are written in batches
        found = d.find_elements(By.CSS_SELECTOR, f'#history [data-outcome="route {GOOD_TARGET}"]')
        if not found:
            return None
        entry = found[0].find_element(By.XPATH, "ancestor::li[@data-uniqueid]")
        return (found[0].find_element(By.CSS_SELECTOR, ".trace-rule").text,
                found[0].find_element(By.CSS_SELECTOR, ".why").text,
                entry.get_attribute("data-uniqueid") or "",
                entry.find_element(By.TAG_NAME, "h3").text)

    shown = wait(driver, "the call in the call list", decided)
    assert shown is not None  # wait returns only a truthy look
    rule, why, uniqueid, heading = shown
    assert RULE in rule
    assert RULE in why
    assert uniqueid
    assert "to 2101" in heading
    browser.screenshot(tmp_path / "workstation-calls.png")
