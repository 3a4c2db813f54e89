"""Routing-core semantics on the real Asterisk 22 with SIPp (issue: routing core).

Every scenario whose outcome goes through the driver runs once per routing driver
(tests/integration/drivers.py: the `driver` fixture renders the sandbox's venues for it;
ids `[fastagi]`, ...), the bridge config naming the same driver on both venues: the
default route and its timing, a reject's cause, a treatment, the walk down the default
targets and its cap, an abandon (each driver learns of a hang-up its own way), and a VTS
killed under load. The scenarios the intermediary decides whichever driver brought the
request (no VTS connected, a late reply refused, a foreign target refused, another
tenant's handle refused) run on one driver (`ONE_DRIVER`, fastagi): the driver only
delivers the default route they end in, which the per-driver scenarios assert. Each test runs
the bridge with its own config: the shipped VTS runtime with a fault behaviour where
needed (silent, late, foreign-target), recording on the VTS side every message it
receives (`--record`), so assertions about what a VTS was told are made where the VTS
is. Where a call ended is read at the SIPp UASes and in SIPp's own counters.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from harness.asterisk import Asterisk
from harness.sipp import SippUas, run_uac, start_uac
from tests.integration.drivers import FASTAGI, Driver
from tests.integration.helpers import arrived, of_type, records, vts_command, write_config

pytestmark = pytest.mark.asterisk

# A driver-independent scenario (see the module doc) runs on the first driver only.
ONE_DRIVER = pytest.mark.parametrize("driver", [FASTAGI], indirect=True, ids=str)


def routing_events(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The routing core's events to a VTS (default_routed, abandoned, treatment_done),
    without the call-progress events a driver over the AMI session also brings."""
    return [e for e in of_type(messages, "event") if e["event"] != "call"]


def test_silent_vts_default_target_within_router_timeout(
    asterisk: Asterisk, driver: Driver, uas: dict[str, SippUas], run_bridge: Any,
    tmp_path: Path,
) -> None:
    config = write_config(
        tmp_path, driver=driver,
        acme_vts=vts_command("acme", tmp_path / "acme.jsonl", "--behaviour", "silent"),
        acme_venue='router_timeout = 0.5\ndefault_targets = ["operator"]')
    run_bridge(config)
    stats = run_uac(from_user="acme-trunk", dnis="100", calls=3, rate=2)
    assert (stats.successful, stats.failed) == (3, 0), stats.failure_reasons
    # INVITE -> 200 OK includes reaching the default target; router timeout 0.5 s. The
    # margin covers the answer's way back (AsyncAGI: an AMI action, then Asterisk's turn).
    assert 0.5 <= stats.response_time_s <= 0.5 + 0.25, stats.response_time_s
    assert arrived(uas) == {"acme-agent": 0, "globex-agent": 0, "acme-operator": 3,
                            "globex-operator": 0}
    events = routing_events(records(tmp_path / "acme.jsonl"))
    assert [e["event"] for e in events] == ["default_routed"] * 3
    assert {e["reason"] for e in events} == {"timeout"}
    assert records(tmp_path / "globex.jsonl")[1:] == []  # nothing but its hello


@ONE_DRIVER
def test_no_vts_connected_defaults_at_once(
    asterisk: Asterisk, driver: Driver, uas: dict[str, SippUas], run_bridge: Any,
    tmp_path: Path,
) -> None:
    # acme's VTS program exits at once and never connects (supervisor keeps retrying).
    config = write_config(tmp_path, driver=driver, acme_vts='["/bin/false"]',
                          acme_venue='router_timeout = 3.0\ndefault_targets = ["operator"]')
    bridge = run_bridge(config, wait_for=["globex"])
    stats = run_uac(from_user="acme-trunk", dnis="100", calls=3, rate=5)
    assert (stats.successful, stats.failed) == (3, 0), stats.failure_reasons
    assert stats.response_time_s < 1.0  # not the 3 s router timeout
    assert arrived(uas)["acme-operator"] == 3
    assert "VTS acme: restart in" in bridge.log()


@ONE_DRIVER
def test_reply_after_default_is_refused_and_not_acted_on(
    asterisk: Asterisk, driver: Driver, uas: dict[str, SippUas], run_bridge: Any,
    tmp_path: Path,
) -> None:
    record = tmp_path / "acme.jsonl"
    config = write_config(
        tmp_path, driver=driver,
        acme_vts=vts_command("acme", record, "--behaviour", "late", "--late-by", "0.8"),
        acme_venue='router_timeout = 0.3\ndefault_targets = ["operator"]')
    run_bridge(config)
    stats = run_uac(from_user="acme-trunk", dnis="100", calls=2, rate=2, hold_ms=1500)
    assert (stats.successful, stats.failed) == (2, 0), stats.failure_reasons
    got = arrived(uas)
    assert (got["acme-operator"], got["acme-agent"]) == (2, 0)  # the late route was not used
    messages = records(record)
    errors = of_type(messages, "error")
    assert len(errors) == 2 and {e["code"] for e in errors} == {"not-pending"}
    assert all("default:timeout" in e["message"] for e in errors)


def test_abandon_while_pending(
    asterisk: Asterisk, driver: Driver, uas: dict[str, SippUas], run_bridge: Any,
    tmp_path: Path,
) -> None:
    record, timeout = tmp_path / "acme.jsonl", 2.5  # the CANCEL comes at 0.8 s
    config = write_config(
        tmp_path, driver=driver,
        acme_vts=vts_command("acme", record, "--behaviour", "silent"),
        acme_venue=f'router_timeout = {timeout}\ndefault_targets = ["operator"]')
    bridge = run_bridge(config)
    stats = run_uac(from_user="acme-trunk", dnis="100", calls=3, rate=3, hold_ms=800,
                    scenario="uac_cancel.xml")
    assert (stats.successful, stats.failed) == (3, 0), stats.failure_reasons
    # Past every call's router timeout (the last INVITE went out >= 0.8 s before SIPp
    # ended, with its CANCEL): no default route may fire for them.
    time.sleep(timeout)
    assert arrived(uas)["acme-operator"] == 0
    messages = records(record)
    handles = [m["handle"] for m in of_type(messages, "route_request")]
    events = routing_events(messages)
    assert len(handles) == 3
    assert [(e["handle"], e["event"]) for e in events] == [(h, "abandoned") for h in handles]
    assert asterisk.channel_count() == 0
    assert "router timeout" not in bridge.log()


def test_treatment_collects_digits_then_routes(
    asterisk: Asterisk, driver: Driver, uas: dict[str, SippUas], run_bridge: Any,
    tmp_path: Path,
) -> None:
    rules = """
[[tenants.acme.rules]]
name = "menu"
action = "treatment"
prompt = "hello-world"
collect_digits = 4
timeout_ms = 4000

[[tenants.acme.rules]]
name = "by-digits"
digits = "1002"
targets = ["1002"]

[[tenants.acme.rules]]
name = "else"
action = "default"
"""
    record = tmp_path / "acme.jsonl"
    config = write_config(tmp_path, driver=driver, acme_venue="router_timeout = 10.0",
                          acme_rules=rules)
    run_bridge(config)
    stats = run_uac(from_user="acme-trunk", dnis="100", calls=1, rate=1, dtmf="1002",
                    hold_ms=500, timeout_s=30)
    assert (stats.successful, stats.failed) == (1, 0), stats.failure_reasons
    assert arrived(uas)["acme-agent"] == 1  # 1002 rings acme's agent phone
    messages = records(record)
    done = [m for m in of_type(messages, "event") if m["event"] == "treatment_done"]
    assert [(d["ok"], d["digits"]) for d in done] == [(True, "1002")]


def test_default_list_exhausted_ends_in_reject(
    asterisk: Asterisk, driver: Driver, uas: dict[str, SippUas], run_bridge: Any,
    tmp_path: Path,
) -> None:
    rules = '[[tenants.acme.rules]]\nname = "always-default"\naction = "default"'
    config = write_config(tmp_path, driver=driver, acme_rules=rules,
                          acme_venue='default_targets = ["91", "92"]')
    bridge = run_bridge(config)
    stats = run_uac(from_user="acme-trunk", dnis="100", calls=2, rate=2,
                    scenario="uac_reject.xml")
    assert (stats.successful, stats.failed) == (2, 0), stats.failure_reasons
    # The bridge rejects with cause congestion: Congestion() is 503 Service Unavailable.
    assert (stats.received("503"), stats.received("486")) == (2, 0), stats.counts
    assert arrived(uas)["acme-operator"] == 0
    assert bridge.log().count("every default target tried; call rejected") == 2


def test_rule_reject_is_busy_here(
    asterisk: Asterisk, driver: Driver, uas: dict[str, SippUas], run_bridge: Any,
    tmp_path: Path,
) -> None:
    rules = '[[tenants.acme.rules]]\nname = "closed"\naction = "reject"\ncause = "busy"'
    record = tmp_path / "acme.jsonl"
    run_bridge(write_config(tmp_path, driver=driver, acme_rules=rules))
    stats = run_uac(from_user="acme-trunk", dnis="100", calls=2, rate=2,
                    scenario="uac_reject.xml")
    assert (stats.successful, stats.failed) == (2, 0), stats.failure_reasons
    # The caller heard busy: SIPp's own counters saw 486 Busy Here, and no 503.
    assert (stats.received("486"), stats.received("503")) == (2, 0), stats.counts
    assert sum(arrived(uas).values()) == 0
    assert len(of_type(records(record), "route_request")) == 2


def test_redirection_loop_is_capped(
    asterisk: Asterisk, driver: Driver, uas: dict[str, SippUas], run_bridge: Any,
    tmp_path: Path,
) -> None:
    rules = '[[tenants.acme.rules]]\nname = "always-default"\naction = "default"'
    config = write_config(tmp_path, driver=driver, acme_rules=rules, acme_venue=(
        'default_targets = ["91", "92", "93", "94", "95"]\nredirect_limit = 3'))
    bridge = run_bridge(config)
    stats = run_uac(from_user="acme-trunk", dnis="100", calls=1, rate=1,
                    scenario="uac_reject.xml")
    assert (stats.successful, stats.failed) == (1, 0), stats.failure_reasons
    assert (stats.received("503"), stats.received("486")) == (1, 0), stats.counts
    log = bridge.log()
    assert "3 redirections in a row; call rejected" in log
    assert "every default target tried" not in log


@ONE_DRIVER
def test_foreign_target_refused_and_default_routed(
    asterisk: Asterisk, driver: Driver, uas: dict[str, SippUas], run_bridge: Any,
    tmp_path: Path,
) -> None:
    record = tmp_path / "acme.jsonl"
    config = write_config(
        tmp_path, driver=driver,
        acme_vts=vts_command("acme", record, "--behaviour", "foreign-target",
                             "--foreign-target", "2001"),
        acme_venue='default_targets = ["operator"]')
    bridge = run_bridge(config)
    stats = run_uac(from_user="acme-trunk", dnis="100", calls=2, rate=2)
    assert (stats.successful, stats.failed) == (2, 0), stats.failure_reasons
    assert arrived(uas) == {"acme-agent": 0, "globex-agent": 0, "acme-operator": 2,
                            "globex-operator": 0}
    errors = of_type(records(record), "error")
    assert [e["code"] for e in errors] == ["invalid-disposition"] * 2
    refusals = [line for line in bridge.log().splitlines()
                if "ami_bridge.intermediary ERROR" in line and "refused" in line]
    assert len(refusals) == 2
    assert all("tenant acme" in line and "tenant globex" in line for line in refusals)


def test_sigkill_one_vts_under_load(
    asterisk: Asterisk, driver: Driver, uas: dict[str, SippUas], run_bridge: Any,
    tmp_path: Path,
) -> None:
    """50 calls/s for 8 s (25 per tenant); acme's VTS is SIGKILLed 3 s in (it runs once
    per driver: 8 s keeps 75 calls per tenant of load before the kill and 125 after it,
    with the restart, 0.1 s after the kill, in between).

    acme's VTS answers after 0.3 s, so several acme calls are always pending when it dies.
    """
    config = write_config(
        tmp_path, driver=driver,
        acme_vts=vts_command("acme", tmp_path / "acme.jsonl", "--behaviour", "late",
                             "--late-by", "0.3"),
        acme_venue='router_timeout = 1.5\ndefault_targets = ["operator"]')
    bridge = run_bridge(config)
    [victim] = bridge.vts_pids("acme")
    calls = 25 * 8
    acme = start_uac(from_user="acme-trunk", dnis="100", calls=calls, rate=25, hold_ms=200,
                     port=5081, timeout_s=120)
    globex = start_uac(from_user="globex-trunk", dnis="100", calls=calls, rate=25,
                       hold_ms=200, port=5082, timeout_s=120)
    time.sleep(3)
    os.kill(victim, signal.SIGKILL)
    acme_stats, globex_stats = acme.wait(), globex.wait()
    assert (globex_stats.successful, globex_stats.failed) == (calls, 0), globex_stats.raw
    assert (acme_stats.successful, acme_stats.failed) == (calls, 0), acme_stats.raw
    got = arrived(uas)
    assert got["globex-agent"] == calls and got["globex-operator"] == 0
    assert got["acme-agent"] + got["acme-operator"] == calls
    assert got["acme-operator"] >= 1  # its pending calls were default-routed
    log = bridge.log()
    assert f"VTS acme (pid {victim}) exited with signal 9" in log
    lost = [line for line in log.splitlines() if "default-routing its" in line]
    assert lost and int(lost[0].split("default-routing its ")[1].split()[0]) >= 1
    [restarted] = bridge.vts_pids("acme")
    assert restarted != victim
    assert log.count("VTS acme connected") == 2
    assert asterisk.channel_count() == 0


@ONE_DRIVER
def test_acting_on_another_tenants_handle_is_refused(
    asterisk: Asterisk, driver: Driver, uas: dict[str, SippUas], run_bridge: Any,
    tmp_path: Path,
) -> None:
    """acme's VTS, a stand-alone program written from the protocol document, tries to
    route a pending globex call it learnt the handle of; the bridge refuses, logs both
    tenants, and the globex call leaves by its own venue's default route."""
    import json
    import sys

    steal, acme_record = tmp_path / "steal.txt", tmp_path / "acme.jsonl"
    script = Path(__file__).with_name("scripted_vts.py")
    acme_vts = json.dumps([sys.executable, str(script), str(acme_record), str(steal), "1001"])
    globex_vts = vts_command("globex", tmp_path / "globex.jsonl", "--behaviour", "silent")
    config = write_config(tmp_path, driver=driver, acme_vts=acme_vts)
    text = config.read_text().replace(
        f'command = {vts_command("globex", tmp_path / "globex.jsonl")}',
        f"command = {globex_vts}")
    config.write_text(text.replace('[tenants.globex.venues.globex-venue]\nvts = "globex"',
                                   '[tenants.globex.venues.globex-venue]\nvts = "globex"\n'
                                   'router_timeout = 4.0'))
    bridge = run_bridge(config)
    globex = start_uac(from_user="globex-trunk", dnis="100", calls=1, rate=1, port=5082)
    deadline = time.monotonic() + 3
    while not of_type(records(tmp_path / "globex.jsonl"), "route_request"):
        assert time.monotonic() < deadline, "globex's call never reached its VTS"
        time.sleep(0.05)
    [pending] = of_type(records(tmp_path / "globex.jsonl"), "route_request")
    steal.write_text(pending["handle"])  # the leak the isolation must survive
    acme = run_uac(from_user="acme-trunk", dnis="100", calls=1, rate=1, port=5081)
    globex_stats = globex.wait()
    assert (acme.successful, globex_stats.successful) == (1, 1)
    got = arrived(uas)
    assert got == {"acme-agent": 1, "globex-agent": 0, "acme-operator": 0,
                   "globex-operator": 1}  # globex's call was not moved by acme
    assert [e["code"] for e in of_type(records(acme_record), "error")] == ["not-yours"]
    [line] = [ln for ln in bridge.log().splitlines() if "isolation:" in ln]
    assert "VTS acme (tenant acme)" in line and "tenant globex" in line
    events = routing_events(records(tmp_path / "globex.jsonl"))
    assert [(e["event"], e.get("reason")) for e in events] == [("default_routed", "timeout")]
