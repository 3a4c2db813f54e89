"""Routing protocols: treatments, overflow after N seconds, queue and external targets."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest

from ami_bridge.tenants.messages import Target
from ami_bridge.tenants.routing import (
    AgentView,
    CallInfo,
    Decision,
    RuleError,
    parse_protocol,
    valid_target,
)


def ext(value: str) -> Target:
    return Target.extension(value)


NOON = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
RNG = random.Random(7)

MENU: list[dict[str, Any]] = [
    {"name": "menu", "action": "treatment", "prompt": "acme/welcome", "collect_digits": 1,
     "timeout_ms": 3000},
    {"name": "sales", "digits": "1", "targets": ["queue:sales"]},
    {"name": "out", "digits": "9", "targets": ["external:+4930123456"]},
    {"name": "else", "action": "default"},
]


def decide(rules: list[dict[str, Any]], **call: Any) -> Decision:
    protocol = parse_protocol(rules, timezone="UTC")
    return protocol.evaluate(CallInfo(**{"ani": "1", "dnis": "100", **call}), NOON, RNG)


def test_treatment_first_then_digits_decide() -> None:
    first = decide(MENU)
    assert (first.action, first.prompt, first.collect_digits, first.timeout_ms) == (
        "treatment", "acme/welcome", 1, 3000)
    assert decide(MENU, digits="1", treated=True) == Decision(
        "route", target=Target("queue", "sales"), rule="sales")
    assert decide(MENU, digits="9", treated=True).target == Target("external", "+4930123456")
    # A treatment applies once per call: no digits after it -> the next rules decide.
    assert decide(MENU, digits="", treated=True).action == "default"


def test_music_on_hold_treatment() -> None:
    rules = [{"name": "hold", "action": "treatment", "moh": True}]
    decision = decide(rules)
    assert (decision.action, decision.moh, decision.prompt) == ("treatment", True, "")


@pytest.mark.parametrize(("rule", "message"), [
    ({"action": "treatment"}, "either prompt or moh"),
    ({"action": "treatment", "prompt": "a", "moh": True}, "either prompt or moh"),
    ({"action": "treatment", "moh": True, "collect_digits": 2}, "collects no digits"),
    ({"action": "treatment", "prompt": "../etc/passwd"}, "not a safe sound name"),
    ({"action": "treatment", "prompt": "a,b"}, "not a safe sound name"),
    ({"action": "treatment", "prompt": "a&b"}, "not a safe sound name"),
    ({"action": "treatment", "prompt": "a", "collect_digits": 33}, "collect_digits"),
    ({"action": "treatment", "prompt": "a", "timeout_ms": 0}, "timeout_ms"),
    ({"targets": ["1001"], "overflow_after": -1}, "overflow_after"),
    ({"targets": ["queue:a b"]}, "queue:NAME"),
    ({"targets": ["external:12ab"]}, r"external:\+NUMBER"),
    ({"targets": ["pstn:123"]}, "queue:NAME"),
])
def test_bad_v2_rules(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(RuleError, match=message):
        parse_protocol([{"name": "x", **rule}], timezone="UTC")


@pytest.mark.parametrize(("target", "ok"), [
    ("1001", True), ("queue:sales", True), ("external:+4930123", True), ("external:0301", True),
    ("extension:1001", True), ("queues:sales", False), ("internal:1001", False),
    ("queue:", False), ("external:+", False), ("1001\n", False), ("queue:sales\n", False),
])
def test_valid_target(target: str, ok: bool) -> None:
    assert valid_target(target) is ok


OVERFLOW: list[dict[str, Any]] = [
    {"name": "hunt", "targets": ["1001", "1002", "1003"], "overflow_after": 15},
    {"name": "last", "action": "reject", "cause": "busy"},
]


def test_overflow_moves_through_the_targets_then_falls_through() -> None:
    assert decide(OVERFLOW) == Decision("route", target=ext("1001"), rule="hunt", dial_timeout=15)
    assert decide(OVERFLOW, previous_target=ext("1001"),
                  previous_status="NOANSWER") == Decision("route", target=ext("1002"),
                                                          rule="hunt", dial_timeout=15)
    assert decide(OVERFLOW, previous_target=ext("1002"),
                  previous_status="BUSY").target == ext("1003")
    # a rule-written target and its KIND:VALUE spelling are the same Target
    assert decide(OVERFLOW, previous_target=Target.parse("extension:1002"),
                  previous_status="BUSY").target == ext("1003")
    assert decide(OVERFLOW, previous_target=ext("1003"),
                  previous_status="CHANUNAVAIL") == Decision("reject", cause="busy", rule="last")


def test_overflow_ignores_a_previous_target_it_does_not_own() -> None:
    assert decide(OVERFLOW, previous_target=ext("2001"),
                  previous_status="NOANSWER").target == ext("1001")
    # a queue named like one of the rule's extensions is not that extension
    assert decide(OVERFLOW, previous_target=Target("queue", "1001"),
                  previous_status="NOANSWER").target == ext("1001")


AGENTS_RULES: list[dict[str, Any]] = [
    {"name": "idle", "targets": ["1001", "1002", "1003"], "strategy": "longest_idle"},
    {"name": "all-busy", "action": "reject", "cause": "busy"},
]


def decide_with(rules: list[dict[str, Any]], agents: dict[str, AgentView]) -> Decision:
    protocol = parse_protocol(rules, timezone="UTC")
    return protocol.evaluate(CallInfo(ani="1", dnis="100"), NOON, RNG, agents)


def test_longest_idle_picks_the_available_agent_idle_longest() -> None:
    agents = {"1001": AgentView(True, 300.0), "1002": AgentView(True, 100.0),
              "1003": AgentView(False, 10.0)}
    assert decide_with(AGENTS_RULES, agents).target == ext("1002")
    # never called counts as idle longest; ties keep the list order
    assert decide_with(AGENTS_RULES, {"1001": AgentView(True, 5.0)}).target == ext("1002")
    assert decide_with(AGENTS_RULES, {}).target == ext("1001")


def test_nobody_available_falls_through() -> None:
    busy = {t: AgentView(False, 1.0) for t in ("1001", "1002", "1003")}
    assert decide_with(AGENTS_RULES, busy) == Decision("reject", cause="busy", rule="all-busy")


def test_agents_available_condition() -> None:
    rules: list[dict[str, Any]] = [
        {"name": "staffed", "targets": ["1001"], "agents_available": True},
        {"name": "unstaffed", "targets": ["queue:sales"], "agents_available": False},
    ]
    assert decide_with(rules, {"1001": AgentView(True)}).rule == "staffed"
    assert decide_with(rules, {"1001": AgentView(False)}).action == "default"
    # unknown state counts as available, so routing works without an AMI session
    assert decide_with(rules, {}).rule == "staffed"
