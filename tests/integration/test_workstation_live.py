"""Live call disposition on the workstation page, in two real headless Chromiums.

Alice and Bob (acme's pickup group `sales`) each have the page open; a call to Alice,
whose rule says "ask the group", pops up on both pages; Alice clicks *Take it here*:
the call rings Alice's desk phone (1011), not Bob's (1012); Bob's click that follows is
refused and his page shows the call as taken by alice. A screenshot of the pop is
written to the test's directory (`workstation-pop.png`; the copy in docs/img/ comes
from it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from harness.asterisk import Asterisk
from harness.bridge import BridgeProcess
from harness.browser import Browser, browser_problem
from harness.sipp import start_uac
from tests.integration.test_personal_router import Personal, desk, free_port, write_config
from tests.integration.test_workstation_page import log_in, wait
from tests.integration.test_workstation_page import personal as personal

pytestmark = pytest.mark.asterisk
# The compressed token lifetime: the page refreshes a short-lived token 5 s after it got
# it (ami_bridge/web/static/app.js, MIN_REFRESH_S), so 7 s leaves 2 s for the refresh to
# reach the bridge on a loaded machine; three lifetimes take 21 s of the test.
TOKEN_TTL_S = 7


@pytest.fixture
def browsers(tmp_path: Path) -> Iterator[tuple[Browser, Browser]]:
    problem = browser_problem()
    if problem is not None:  # a missing browser fails, never skips
        pytest.fail(problem, pytrace=False)
    with Browser(log_path=tmp_path / "chromedriver-a.log") as one, \
            Browser(log_path=tmp_path / "chromedriver-b.log") as two:
        yield one, two


def pop(driver: WebDriver) -> str:
    """The id of the call waiting on this page."""
    element = wait(driver, "a live pop", lambda d: d.find_element(
        By.CSS_SELECTOR, '#calls [data-call-id][data-state="waiting"]'))
    return str(element.get_attribute("data-call-id"))


def test_two_pages_of_a_group_show_the_pop_and_the_first_take_rings_its_phone(
        personal: Personal, browsers: tuple[Browser, Browser], tmp_path: Path) -> None:
    alice = personal.create("alice", "2101", ["1011"])
    personal.create("bob", "2102", ["1012"])
    page_a, page_b = browsers[0].driver, browsers[1].driver
    log_in(page_a, personal.base, "alice")
    log_in(page_b, personal.base, "bob")
    personal.set_rules(alice, [{"name": "pop", "action": "ask", "timeout": 25,
                                "group": "sales"}])
    for page in (page_a, page_b):
        wait(page, "the live socket", lambda d: d.find_element(
            By.ID, "calls-empty").is_displayed())
    alices_phone, bobs_phone = desk("1011"), desk("1012")
    uac = start_uac(from_user="acme-caller", dnis="2101", calls=1, rate=1, hold_ms=500,
                    port=5081, timeout_s=60)
    call_a, call_b = pop(page_a), pop(page_b)
    assert call_a == call_b
    entry = page_a.find_element(By.CSS_SELECTOR, f'[data-call-id="{call_a}"]')
    assert "+4930222" in entry.find_element(By.CSS_SELECTOR, ".pop-caller").text
    assert "2101" in entry.find_element(By.CSS_SELECTOR, ".pop-number").text
    browsers[0].screenshot(tmp_path / "workstation-pop.png", element=page_a.find_element(
        By.ID, "live-section"))
    entry.find_element(By.CSS_SELECTOR, "button[data-choice=take]").click()
    # accepted, then gone (taken by alice) as for every page of the pop
    wait(page_a, "the take accepted", lambda d: d.find_element(
        By.CSS_SELECTOR, f'[data-call-id="{call_a}"]').get_attribute("data-state")
        in ("accepted", "gone"))
    taken = wait(page_b, "the call shown as taken", lambda d: d.find_element(
        By.CSS_SELECTOR, f'[data-call-id="{call_b}"][data-state="gone"]'))
    assert taken.get_attribute("data-reason") == "taken"
    assert "alice" in taken.find_element(By.CSS_SELECTOR, ".pop-status").text
    # Bob's page offers no choice any more; a late choice over his socket is refused
    # (test_live_disposition.py asserts the refusal frame on the wire).
    assert all(not b.is_enabled() for b in taken.find_elements(By.CSS_SELECTOR, "button"))
    stats = uac.wait()
    assert (stats.successful, stats.failed) == (1, 0), stats.failure_reasons
    assert (alices_phone.stop().successful, bobs_phone.stop().successful) == (1, 0)


def test_a_page_left_open_past_its_token_lifetime_keeps_working(
        asterisk: Asterisk, tmp_path: Path, browsers: tuple[Browser, Browser]) -> None:
    """A day-long page, compressed: with 7 s tokens the page refreshes its session on its
    own (every 5 s, app.js MIN_REFRESH_S); after three lifetimes it still reads the API
    and still gets its pops."""
    port = free_port()
    config = write_config(tmp_path, port)
    config.write_text(config.read_text().replace(
        "[api]\n", f"[api]\ntoken_ttl = {TOKEN_TTL_S}\n", 1))
    base = f"http://127.0.0.1:{port}"
    with BridgeProcess(config, log_path=tmp_path / "bridge.log") as bridge:
        personal = Personal(bridge, base, (tmp_path / "operator.token").read_text().strip())
        personal.create("alice", "2101", ["1011"])
        page = browsers[0].driver
        log_in(page, personal.base, "alice")
        # Three token lifetimes: only the page's own refreshes keep it in.
        time.sleep(3 * TOKEN_TTL_S)
        assert page.find_element(By.ID, "whoami").is_displayed()
        assert not page.find_element(By.ID, "login-section").is_displayed()
        page.find_element(By.ID, "history-reload").click()
        wait(page, "the call list read", lambda d: "No calls yet" in d.find_element(
            By.ID, "history-status").text)
        assert not page.find_element(By.ID, "login-section").is_displayed()
        # (the test's own token has expired by now: the operator writes alice's rule)
        personal.operator.call("PUT", "/api/v1/tenants/acme/users/alice/rules", {
            "version": 0, "rules": [{"name": "pop", "action": "ask", "timeout": 5}]})
        uac = start_uac(from_user="acme-caller", dnis="2101", calls=1, rate=1, hold_ms=2000,
                        port=5081, timeout_s=60, scenario="uac_cancel.xml")
        call_id = pop(page)
        assert uac.wait().successful == 1
        gone = wait(page, "the call gone", lambda d: d.find_element(
            By.CSS_SELECTOR, f'[data-call-id="{call_id}"][data-state="gone"]'))
        assert gone.get_attribute("data-reason") == "abandoned"
