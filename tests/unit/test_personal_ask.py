"""The `ask` action: the first step pops the call up on workstations; what follows is the
rules after it, carried in `otherwise`; a call that comes back is never asked again."""

from __future__ import annotations

import datetime as dt

import pytest

from ami_bridge.tenants.messages import Target
from ami_bridge.tenants.personal import PersonalCall, PortionError, evaluate, parse_portion

NOW = dt.datetime(2026, 11, 30, 10, 0, tzinfo=dt.UTC)  # a Monday


def rules(*items: dict[str, object]) -> object:
    return parse_portion({"rules": list(items), "saved": ["extension:1003"]},
                         extensions={"1001", "1002", "1003"}, external_prefixes=("+49",),
                         ring_time=20)


def step(rule_set: object, previous: tuple[Target, str] | None = None) -> object:
    call = PersonalCall(ani="+4930222", number="2101", bindings=("1001",), previous=previous)
    return evaluate(rule_set, call, NOW, timezone="Europe/Berlin",  # type: ignore[arg-type]
                    holidays=(), ring_time=20)


def test_ask_pops_first_and_carries_what_the_rules_after_it_say() -> None:
    rs = rules({"name": "pop", "action": "ask", "timeout": 10, "group": "sales"},
               {"name": "fwd", "action": "forward", "target": "extension:1002"})
    first = step(rs)
    assert (first.action, first.ask_timeout, first.group) == ("ask", 10, "sales")
    assert first.otherwise is not None and first.otherwise.target == Target("extension", "1002")
    assert first.trace.rule == "#1 pop" and "ask pickup group 'sales' for 10 s" in first.trace.why


def test_a_call_that_comes_back_is_not_asked_again() -> None:
    rs = rules({"action": "ask"}, {"action": "forward", "target": "extension:1002"})
    again = step(rs, (Target("phones", "1001"), "NOANSWER"))
    assert again.action == "route" and again.otherwise is None


def test_ask_without_later_rules_falls_back_to_ring_my_phones() -> None:
    first = step(rules({"action": "ask"}))
    assert first.ask_timeout == 15
    assert first.otherwise is not None and first.otherwise.target == Target("phones", "1001")


@pytest.mark.parametrize(("rule", "field"), [
    ({"action": "ask", "timeout": 2}, "rules[0].timeout"),
    ({"action": "ask", "timeout": 61}, "rules[0].timeout"),
    ({"action": "ask", "group": "Sales Team"}, "rules[0].group"),
    ({"action": "ask", "target": "extension:1002"}, "rules[0].target"),
])
def test_bad_ask_rules_name_the_field(rule: dict[str, object], field: str) -> None:
    with pytest.raises(PortionError) as info:
        rules(rule)
    assert info.value.field == field


def test_ask_round_trips() -> None:
    rs = rules({"name": "pop", "action": "ask", "timeout": 20, "group": "sales"})
    again = parse_portion(rs.to_json(), extensions=None, external_prefixes=(),  # type: ignore[attr-defined]
                          ring_time=20)
    assert again == rs
