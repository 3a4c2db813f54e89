"""The bridge's AMI link on the real Asterisk 22 with SIPp (issue: AMI link).

Events are asserted where they arrive: in each VTS's own record of what the bridge sent
it. The AMI session is dropped from Asterisk's side (`manager kick session`) and
Asterisk itself is restarted while SIPp calls flow.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from harness.asterisk import Asterisk
from harness.bridge import BridgeProcess
from harness.sipp import SippUas, run_uac, start_uac
from tests.integration.helpers import arrived, of_type, records, write_config

pytestmark = pytest.mark.asterisk


def call_events(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in of_type(messages, "event") if m["event"] == "call"]


def wait_for(predicate: Any, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{what} not within {timeout} s")


def test_each_vts_gets_all_its_call_events_and_none_of_the_others(
    asterisk: Asterisk, uas: dict[str, SippUas], run_bridge: Any, tmp_path: Path
) -> None:
    run_bridge(write_config(tmp_path, ami=True))
    acme = start_uac(from_user="acme-trunk", dnis="100", calls=10, rate=5, port=5081)
    globex = start_uac(from_user="globex-trunk", dnis="100", calls=10, rate=5, port=5082)
    for stats in (acme.wait(), globex.wait()):
        assert (stats.successful, stats.failed) == (10, 0), stats.failure_reasons
    assert arrived(uas)["acme-agent"] == 10
    time.sleep(1.0)  # let the last hangups' events arrive
    for tenant, other in (("acme", "globex"), ("globex", "acme")):
        messages = records(tmp_path / f"{tenant}.jsonl")
        calls = {m["call"]["uniqueid"] for m in of_type(messages, "route_request")}
        events = call_events(messages)
        assert len(calls) == 10
        assert {e["uniqueid"] for e in events} == calls  # every call has events...
        for call in calls:  # ...and the whole story of each
            kinds = [e["kind"] for e in events if e["uniqueid"] == call]
            for kind in ("dial_begin", "dial_end", "answer", "bridge_enter", "hangup",
                         "call_end"):
                assert kind in kinds, (tenant, call, kinds)
            statuses = [e["detail"].get("status") for e in events
                        if e["uniqueid"] == call and e["kind"] == "dial_end"]
            assert "ANSWER" in statuses
        leaked = [e for e in events if other in e["channel"] or other in str(e["detail"])]
        assert leaked == [], leaked[:3]
        assert all(e["venue"] == f"{tenant}-venue" for e in events)


def kick_ami_session(asterisk: Asterisk) -> None:
    out = asterisk.rx("manager show connected")
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("ami-bridge"))
    fd = re.split(r"\s+", line.strip())[4]  # Username IP Start Elapsed FileDes ...
    asterisk.rx(f"manager kick session {fd}")


def resyncs(bridge: BridgeProcess) -> int:
    """How often the bridge's AMI session (re)connected and resynced (`ctl status`)."""
    return int(bridge.status()["ami"]["resyncs"])


def open_calls(messages: list[dict[str, Any]]) -> set[str]:
    """Calls routed by this VTS whose call_end it has not been sent (yet)."""
    routed = {m["call"]["uniqueid"] for m in of_type(messages, "route_request")}
    return routed - {e["uniqueid"] for e in call_events(messages) if e["kind"] == "call_end"}


def test_ami_session_drop_fails_no_call(
    asterisk: Asterisk, uas: dict[str, SippUas], run_bridge: Any, tmp_path: Path
) -> None:
    """The AMI session is kicked while calls of 3 s are up: no call fails, the session is
    back within 5 s, and the calls that were up across the drop still have their events
    reach their VTS: a call_end for every one, and live hangups after the reconnect.
    Calls that *enter* a venue during the drop (their route request needs no AMI) get
    their call_end too, and those still up at the reconnect their live hangup."""
    bridge: BridgeProcess = run_bridge(write_config(tmp_path, ami=True))
    tenants = ("acme", "globex")
    acme = start_uac(from_user="acme-trunk", dnis="100", calls=80, rate=10, hold_ms=3000,
                     port=5081)
    globex = start_uac(from_user="globex-trunk", dnis="100", calls=80, rate=10,
                       hold_ms=3000, port=5082)
    time.sleep(4)
    at_kick = {t: records(tmp_path / f"{t}.jsonl") for t in tenants}
    kick_ami_session(asterisk)
    back = wait_for(lambda: resyncs(bridge) >= 2, 5.0, "AMI reconnect")
    at_back = {t: len(records(tmp_path / f"{t}.jsonl")) for t in tenants}
    for stats in (acme.wait(), globex.wait()):
        assert (stats.successful, stats.failed) == (80, 0), stats.failure_reasons
    got = arrived(uas)
    assert (got["acme-agent"], got["globex-agent"]) == (80, 80)
    assert "AMI session lost" in bridge.log()
    assert back < 5.0
    was_up = {t: open_calls(at_kick[t]) for t in tenants}
    wait_for(lambda: not any(was_up[t] & open_calls(records(tmp_path / f"{t}.jsonl"))
                             for t in tenants), 5.0, "a call_end for every call up at the kick")
    for tenant in tenants:
        up_at_kick = was_up[tenant]
        assert len(up_at_kick) >= 10, up_at_kick  # 3 s calls at 10/s: about 30 are up
        messages = records(tmp_path / f"{tenant}.jsonl")
        after_kick = call_events(messages[len(at_kick[tenant]):])
        assert up_at_kick <= {e["uniqueid"] for e in after_kick if e["kind"] == "call_end"}
        # Up when the session was back (no call_end by then): their live events follow.
        up_at_back = up_at_kick & open_calls(messages[:at_back[tenant]])
        assert up_at_back, "no call outlived the reconnect; the check would be empty"
        after_back = call_events(messages[at_back[tenant]:])
        for kind in ("hangup", "call_end"):
            seen = {e["uniqueid"] for e in after_back if e["kind"] == kind}
            assert up_at_back <= seen, (tenant, kind, up_at_back - seen)
        assert all(e["venue"] == f"{tenant}-venue" for e in after_kick)
    # Routed between the kick and the reconnect: known to the bridge only by the route
    # request; each still gets its call_end (a live one unless it ended before the
    # resync), in its own venue.
    entered = {t: {m["call"]["uniqueid"] for m in of_type(
        records(tmp_path / f"{t}.jsonl")[len(at_kick[t]):at_back[t]], "route_request")}
        for t in tenants}
    wait_for(lambda: not any(entered[t] & open_calls(records(tmp_path / f"{t}.jsonl"))
                             for t in tenants), 5.0, "a call_end for every call entering "
             "during the drop")
    for tenant in tenants:
        assert entered[tenant], "no call entered during the drop; the check would be empty"
        after_kick = call_events(records(tmp_path / f"{tenant}.jsonl")[len(at_kick[tenant]):])
        ends = {e["uniqueid"] for e in after_kick if e["kind"] == "call_end"}
        assert entered[tenant] <= ends, (tenant, entered[tenant] - ends)
        messages = records(tmp_path / f"{tenant}.jsonl")
        live = entered[tenant] & open_calls(messages[:at_back[tenant]])
        hangups = {e["uniqueid"] for e in call_events(messages[at_back[tenant]:])
                   if e["kind"] == "hangup"}
        assert live <= hangups, (tenant, live - hangups)
        assert all(e["venue"] == f"{tenant}-venue" for e in after_kick
                   if e["uniqueid"] in entered[tenant])


def test_asterisk_restart_reconnects_and_routing_continues(
    asterisk: Asterisk, uas: dict[str, SippUas], run_bridge: Any, tmp_path: Path
) -> None:
    bridge: BridgeProcess = run_bridge(write_config(tmp_path, ami=True))
    before = run_uac(from_user="acme-trunk", dnis="100", calls=5, rate=5)
    assert (before.successful, before.failed) == (5, 0)
    asterisk.stop(keep_lock=True)
    down_since = time.monotonic()
    time.sleep(4.0)  # the bridge retries with backoff meanwhile
    attempts_log = bridge.log()
    asterisk.start()
    back = wait_for(lambda: resyncs(bridge) >= 2, 5.0, "AMI reconnect after the restart")
    down_for = time.monotonic() - down_since
    # One attempt per backoff step (0.5 s doubling to 4 s, with jitter): the client logs
    # each failed attempt with the delay before the next one.
    delays = [float(d) for d in re.findall(r"next attempt in ([0-9.]+) s", attempts_log)]
    assert 1 <= len(delays) <= 6, delays
    assert sum(delays[:-1]) <= down_for, (delays, down_for)  # no attempt before its step
    assert all(later >= 0.25 for later in delays), delays
    after = run_uac(from_user="acme-trunk", dnis="100", calls=5, rate=5)
    assert (after.successful, after.failed) == (5, 0), after.failure_reasons
    assert arrived(uas)["acme-agent"] == 10
    assert back < 5.0


def test_longest_idle_agent_from_ami_device_state(
    asterisk: Asterisk, uas: dict[str, SippUas], run_bridge: Any, tmp_path: Path
) -> None:
    """acme's two phones (agent and operator) take calls in turn: after each call the
    phone that just hung up has been idle the shortest, as Asterisk's device states say."""
    rules = """
[[tenants.acme.rules]]
name = "idle"
targets = ["1001", "operator"]
strategy = "longest_idle"
"""
    extra = ('[tenants.acme.extensions]\n1001 = "PJSIP/acme-agent"\n'
             'operator = "PJSIP/acme-operator"')
    run_bridge(write_config(tmp_path, ami=True, acme_rules=rules, acme_extra=extra))
    for _ in range(6):  # one call at a time, so each sees the previous one's hang-up
        stats = run_uac(from_user="acme-trunk", dnis="100", calls=1, rate=1, hold_ms=300)
        assert (stats.successful, stats.failed) == (1, 0), stats.failure_reasons
        time.sleep(0.3)
    got = arrived(uas)
    assert (got["acme-agent"], got["acme-operator"]) == (3, 3)
    states = [m for m in records(tmp_path / "acme.jsonl") if m["type"] == "agent_state"]
    assert {m["device"] for m in states} >= {"PJSIP/acme-agent", "PJSIP/acme-operator"}
    assert all(m["tenant"] == "acme" for m in states)
    assert not any(m["type"] == "agent_state" for m in records(tmp_path / "globex.jsonl")
                   if "acme" in str(m))
