"""`replay_tenant`: a candidate tenant routing protocol on the tenant venues' recorded
decisions. The records are made the way the bridge makes them: the current protocol is
evaluated as the VTS runtime does (a treatment, then the digits) and the decision is
spelled as the intermediary's `_record` spells it. Times are Europe/Berlin (UTC+1 in
January; 2026-01-14 is a Wednesday).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from collections.abc import Mapping, Sequence
from typing import Any
from zoneinfo import ZoneInfo

from ami_bridge.personal.model import TraceRecord
from ami_bridge.personal.replay import VTS_DEFAULT, replay_tenant
from ami_bridge.tenants.messages import Target
from ami_bridge.tenants.routing import CallInfo, RoutingProtocol, parse_protocol

BERLIN = ZoneInfo("Europe/Berlin")
CURRENT = [{"name": "vip", "ani_prefix": "0171", "targets": ["1003"]},
           {"name": "day", "dnis": "100", "targets": ["1001"]},
           {"name": "fax", "dnis": "109", "action": "reject", "cause": "congestion"},
           {"name": "overflow", "dnis": "200", "targets": ["1001", "1002"],
            "overflow_after": 15},
           {"name": "closed", "dnis": "300", "action": "default"}]


def protocol(rules: Sequence[Mapping[str, Any]]) -> RoutingProtocol:
    return parse_protocol(rules, timezone="Europe/Berlin", holidays=["2026-01-01"])


def at(hour: int, minute: int = 0, day: int = 14) -> float:
    return dt.datetime(2026, 1, day, hour, minute, tzinfo=BERLIN).timestamp()


def record(current: RoutingProtocol, uniqueid: str, when: float, *, ani: str = "03011",
           dnis: str = "100", previous: str = "", digits: str = "",
           rng: random.Random | None = None) -> TraceRecord:
    """What the bridge records for one route request decided by `current`."""
    call = CallInfo(ani=ani, dnis=dnis)
    if previous:
        target, status = previous.split(" ")
        call = dataclasses.replace(call, previous_target=Target.parse(target),
                                   previous_status=status)
    now = dt.datetime.fromtimestamp(when, dt.UTC)
    rng = rng or random.Random(7)
    decision = current.evaluate(call, now, rng)
    if decision.action == "treatment":
        call = dataclasses.replace(call, treated=True, digits=digits)
        decision = current.evaluate(call, now, rng)
    why = f"tenant rule {decision.rule!r} matched"
    if decision.action == "route":
        outcome = f"route {decision.target}"
    elif decision.action == "reject":
        outcome = f"reject {decision.cause}"
    else:
        outcome, why = "default vts", f"default route (vts): {why}"
    local = now.astimezone(BERLIN)
    return TraceRecord(
        tenant="acme", uniqueid=uniqueid, at=when, venue="acme-main", previous=previous,
        outcome=outcome, rule=decision.rule, why=why,
        inputs={"time": local.strftime("%Y-%m-%dT%H:%M"), "timezone": "Europe/Berlin",
                "day": local.strftime("%a").lower(), "dnis": dnis, "digits": call.digits},
        call={"ani": ani, "ani_name": "", "dnis": dnis})


def day_records(current: RoutingProtocol) -> list[TraceRecord]:
    return [record(current, "a.1", at(9)), record(current, "a.2", at(17, 59)),
            record(current, "a.3", at(18)), record(current, "a.4", at(21, 30)),
            record(current, "a.5", at(0, 30), ani="017155"),
            record(current, "a.6", at(12), dnis="109"),
            record(current, "a.7", at(12), dnis="200"),
            record(current, "a.7", at(12, 1), dnis="200", previous="extension:1001 NOANSWER"),
            record(current, "a.7", at(12, 2), dnis="200", previous="extension:1002 BUSY"),
            record(current, "a.8", at(12), dnis="300"),
            record(current, "a.9", at(12), dnis="555")]


def test_a_rule_for_the_evening_changes_exactly_the_evening_calls() -> None:
    current = protocol(CURRENT)
    evening = protocol([{"name": "evening", "dnis": "100", "hours": "18:00-24:00",
                         "targets": ["1002"]}, *CURRENT])
    result = replay_tenant(day_records(current), evening)
    assert result.replayed == 11
    assert [c.uniqueid for c in result.changed] == ["a.3", "a.4"]
    change = result.changed[0]
    assert (change.was, change.rule_was) == ("route extension:1001", "day")
    assert (change.would, change.rule_would) == ("route extension:1002", "evening")
    assert change.at == at(18) and not change.stateful and change.treatment == ""


def test_an_unchanged_file_changes_nothing() -> None:
    current = protocol(CURRENT)
    records = [*day_records(current), record(current, "b.1", at(12, day=1))]
    assert replay_tenant(records, protocol(CURRENT)).changed == ()
    assert replay_tenant(records, protocol(CURRENT)).replayed == len(records)


def test_default_decisions_compare_by_rule_and_the_overflow_walks_on() -> None:
    current = protocol(CURRENT)
    records = day_records(current)
    # "closed" becomes a reject; the overflow list grows by a third target.
    candidate = protocol([
        *CURRENT[:3],
        {"name": "overflow", "dnis": "200", "targets": ["1001", "1002", "1003"],
         "overflow_after": 15},
        {"name": "night", "dnis": "300", "action": "default"}])
    changed = {(c.uniqueid, c.was, c.would, c.rule_would)
               for c in replay_tenant(records, candidate).changed}
    assert changed == {("a.8", VTS_DEFAULT, VTS_DEFAULT, "night"),
                       ("a.7", VTS_DEFAULT, "route extension:1003", "overflow")}


def test_round_robin_and_split_are_marked_stateful() -> None:
    spread = [{"name": "spread", "dnis": "100", "targets": ["1001", "1002", "1003"],
               "strategy": "round_robin"}]
    current = protocol(spread)
    # The live cursor had moved on before the trace's oldest call.
    current.evaluate(CallInfo(ani="x", dnis="100"), dt.datetime.now(dt.UTC), random.Random())
    records = [record(current, f"c.{i}", at(10, i)) for i in range(3)]
    candidate = protocol(spread)
    result = replay_tenant(records, candidate)
    assert result.changed and all(c.stateful for c in result.changed)
    assert candidate._cursors == {}  # the caller's protocol keeps its own state
    split = protocol([{"name": "split", "dnis": "100", "targets": ["1001", "1002"],
                       "strategy": "split", "weights": [1, 1]}])
    records = [record(split, f"d.{i}", at(10, i), rng=random.Random(i)) for i in range(8)]
    again = replay_tenant(records, split)
    assert again.changed and all(c.stateful for c in again.changed)
    assert replay_tenant(records, split) == again  # a fixed seed: the same answer twice
    # Moving every call to one target is a real change, and not stateful.
    fixed = replay_tenant(records, protocol([{"name": "one", "targets": ["1003"]}]))
    assert len(fixed.changed) == 8 and not any(c.stateful for c in fixed.changed)


def test_agent_conditions_are_marked_stateful() -> None:
    current = protocol(CURRENT)
    candidate = protocol([{"name": "staffed", "dnis": "100", "agents_available": True,
                           "targets": ["1002"]}, *CURRENT])
    result = replay_tenant([record(current, "e.1", at(10))], candidate)
    assert [(c.would, c.stateful) for c in result.changed] == [("route extension:1002", True)]
    idle = protocol([{"name": "idle", "dnis": "100", "strategy": "longest_idle",
                      "targets": ["1002", "1003"]}])
    assert all(c.stateful for c in replay_tenant([record(current, "e.2", at(10))],
                                                 idle).changed)


MENU = {"name": "menu", "dnis": "100", "action": "treatment", "prompt": "acme-menu",
        "collect_digits": 1}
PRESSED = [{"name": "sales", "digits": "1", "targets": ["1002"]},
           {"name": "support", "digits": "2", "targets": ["1003"]}]


def test_treatments_follow_the_recorded_digits_or_say_treatment() -> None:
    with_menu = protocol([MENU, *PRESSED, *CURRENT])
    # Calls that went through the menu: replaying the same file changes nothing.
    treated = [record(with_menu, "f.1", at(10), digits="1"),
               record(with_menu, "f.2", at(11), digits="2")]
    assert replay_tenant(treated, with_menu).changed == ()
    # The candidate swaps the menu's choices: the answer follows the recorded digits.
    swapped = protocol([MENU, {**PRESSED[0], "digits": "2"}, {**PRESSED[1], "digits": "1"},
                        *CURRENT])
    result = replay_tenant(treated, swapped)
    assert [(c.uniqueid, c.would, c.treatment) for c in result.changed] == [
        ("f.1", "route extension:1003", "acme-menu"),
        ("f.2", "route extension:1002", "acme-menu")]
    # Calls recorded without digits: what the caller would press is unknown. A caller
    # pressing nothing gets the recorded route here (not listed) ...
    plain = [record(protocol(CURRENT), "f.3", at(10))]
    assert replay_tenant(plain, with_menu).changed == ()
    # ... but not here, so the menu itself is the change.
    strict = protocol([MENU, *PRESSED, {"name": "no-choice", "dnis": "100",
                                        "action": "reject"}, *CURRENT])
    result = replay_tenant(plain, strict)
    assert [(c.would, c.rule_would, c.treatment) for c in result.changed] == [
        ("treatment acme-menu", "menu", "acme-menu")]
    # Music on hold collects nothing: the replay goes on exactly.
    hold = protocol([{"name": "hold", "dnis": "100", "action": "treatment", "moh": True},
                     *CURRENT])
    assert replay_tenant(plain, hold).changed == ()


def test_records_the_protocol_did_not_decide_are_skipped() -> None:
    current = protocol(CURRENT)
    good = record(current, "g.1", at(10))
    records = [
        good,
        dataclasses.replace(good, uniqueid="g.2", user_id="ann"),  # a personal decision
        dataclasses.replace(good, uniqueid="g.3", rule="bridge", why="default route "
                            "(timeout)", outcome="default timeout"),
        dataclasses.replace(good, uniqueid="g.4", rule="", outcome="abandoned"),
        dataclasses.replace(good, uniqueid="g.5", previous="nonsense BUSY"),
        dataclasses.replace(good, uniqueid="g.6", call={}, inputs={}),  # no dnis at all
    ]
    result = replay_tenant(records, protocol([{"name": "all", "targets": ["1002"]}]))
    assert result.replayed == 1
    assert [c.uniqueid for c in result.changed] == ["g.1"]
