"""A user's own routing rules (tenants/personal.py): validation, normalisation, evaluation.

Pure tests: `now` is passed in (fixed instants in weeks chosen for their DST changes or
lack of them), so nothing reads the clock or depends on the host's timezone.
"""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ami_bridge.namespace import REJECT_CAUSES
from ami_bridge.tenants.messages import Target
from ami_bridge.tenants.personal import (
    FORBIDDEN_CHARS,
    PersonalCall,
    PortionError,
    RuleSet,
    Step,
    evaluate,
    parse_portion,
)
from tests.conftest import examples

UTC = dt.UTC
BERLIN = "Europe/Berlin"
EXTENSIONS = frozenset({"1001", "1002", "1003", "1004", "1005"})
PREFIXES = ("+49", "0")
RING = 20
NUMBER = "2001"  # the user's personal number (the mailbox)
# 2026-01-05 is a Monday; the week Mon 5 .. Sun 11 January 2026 has no DST change anywhere.
MONDAY = dt.date(2026, 1, 5)
DAY = {name: MONDAY + dt.timedelta(days=i)
       for i, name in enumerate(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))}
FAST = settings(max_examples=examples(200), deadline=None, database=None)

PHONES = Target("phones", "1001")
VOICEMAIL = Target("voicemail", NUMBER)


def parse(body: Any, *, extensions: Any = EXTENSIONS, prefixes: tuple[str, ...] = PREFIXES
          ) -> RuleSet:
    return parse_portion(body, extensions=extensions, external_prefixes=prefixes, ring_time=RING)


def refused(body: Any, **kw: Any) -> PortionError:
    with pytest.raises(PortionError) as caught:
        parse(body, **kw)
    assert str(caught.value) == f"{caught.value.field}: {caught.value.reason}"
    return caught.value


def at(day: str | dt.date, hhmm: str, tz: str = "UTC") -> dt.datetime:
    """The UTC instant of a wall-clock time in `tz`."""
    date = DAY[day] if isinstance(day, str) else day
    hour, minute = (int(x) for x in hhmm.split(":"))
    wall = dt.datetime(date.year, date.month, date.day, hour, minute, tzinfo=ZoneInfo(tz))
    return wall.astimezone(UTC)


NOON = at("mon", "12:00")


def run(rules: list[dict[str, Any]] | RuleSet, *, ani: str = "0301234",
        bindings: tuple[str, ...] = ("1001",), previous: tuple[Target, str] | None = None,
        now: dt.datetime = NOON, timezone: str = "UTC", holidays: tuple[str, ...] = (),
        vip: tuple[str, ...] = (), blocked: tuple[str, ...] = (), number: str = NUMBER
        ) -> Step:
    rule_set = rules if isinstance(rules, RuleSet) else parse(
        {"rules": rules, "vip": list(vip), "blocked": list(blocked)})
    call = PersonalCall(ani=ani, number=number, bindings=bindings, previous=previous)
    return evaluate(rule_set, call, now, timezone=timezone, holidays=holidays, ring_time=RING)


def route(step: Step) -> tuple[str, int]:
    """A route step as 'KIND:VALUE' and its dial timeout."""
    assert step.action == "route" and step.target is not None, step
    return str(step.target), step.dial_timeout


def walk(rules: list[dict[str, Any]], statuses: list[str], **kw: Any) -> list[str]:
    """A call through its plan: each step's target comes back with the next status."""
    seen: list[str] = []
    previous: tuple[Target, str] | None = None
    for status in [*statuses, *["NOANSWER"] * 12]:
        step = run(rules, previous=previous, **kw)
        if step.action == "reject":
            seen.append(f"reject {step.cause}")
            return seen
        assert step.target is not None
        seen.append(f"{step.target} {step.dial_timeout}")
        previous = (step.target, status)
    pytest.fail(f"the call never ended: {seen}")


# -- parsing: shapes and normalisation -------------------------------------------------

def test_an_empty_portion_is_every_list_empty_and_the_version_is_ignored() -> None:
    assert parse({}) == RuleSet()
    assert parse({"version": 7}) == RuleSet()
    assert parse({"version": "anything"}).to_json() == {
        "rules": [], "vip": [], "blocked": [], "saved": []}


@pytest.mark.parametrize(("rule", "normal"), [
    ({"action": "ring"}, {"action": "ring", "ring": RING}),
    ({"action": "ring", "ring": 7}, {"action": "ring", "ring": 7}),
    ({"action": "forward", "target": "extension:1002"},
     {"action": "forward", "target": "extension:1002", "on": "always"}),
    ({"action": "forward", "target": "external:+4930999", "on": "busy"},
     {"action": "forward", "target": "external:+4930999", "on": "busy"}),
    ({"action": "forward", "target": "voicemail", "on": "no_answer"},
     {"action": "forward", "target": "voicemail", "on": "no_answer", "after": RING}),
    ({"action": "follow_me", "steps": [{"target": "extension:1002"}]},
     {"action": "follow_me", "mode": "sequential",
      "steps": [{"target": "extension:1002", "ring": RING}]}),
    ({"action": "dnd"}, {"action": "dnd", "then": "voicemail"}),
    ({"action": "voicemail"}, {"action": "voicemail"}),
    ({"action": "reject"}, {"action": "reject", "cause": "busy"}),
    ({"action": "reject", "cause": "congestion"}, {"action": "reject", "cause": "congestion"}),
])
def test_defaults_are_written_out(rule: dict[str, Any], normal: dict[str, Any]) -> None:
    stored = parse({"rules": [rule]}).to_json()["rules"]
    assert stored == [{"name": "", "when": {}, **normal}]


def test_days_are_normalised_to_week_order_lower_case_once_each() -> None:
    rs = parse({"rules": [{"action": "voicemail", "when": {"days": ["Tue", "mon", "TUE"]}}]})
    assert rs.rules[0]["when"] == {"days": ["mon", "tue"]}


BIG = {
    "version": 3,
    "vip": ["+4930111", "0172*"],
    "blocked": ["withheld", "0900*"],
    "saved": ["external:+4930999", "extension:1003", "voicemail"],
    "rules": [
        {"name": "night", "when": {"days": ["mon", "tue"], "time": "18:00-08:00",
                                   "holiday": False, "callers": ["@vip", "0171*", "withheld"]},
         "action": "forward", "on": "no_answer", "after": 5, "target": "extension:1002"},
        {"name": "Quiet hours.", "when": {"time": "22:00-24:00"}, "action": "dnd",
         "then": "reject"},
        {"action": "follow_me", "mode": "ring_all",
         "steps": [{"target": "extension:1002", "ring": 15}, {"target": "extension:1003"}]},
        {"name": "x", "action": "forward", "target": "external:0301234", "on": "busy"},
        {"action": "reject", "cause": "congestion", "when": {"holiday": True}},
    ],
}


def test_a_rule_set_round_trips_through_its_json() -> None:
    rs = parse(BIG)
    assert parse(rs.to_json()) == rs
    assert parse_portion(rs.to_json(), extensions=None, external_prefixes=(),
                         ring_time=RING) == rs
    assert rs.to_json()["rules"][2]["steps"][1] == {"target": "extension:1003", "ring": RING}


def test_to_json_is_a_copy() -> None:
    rs = parse(BIG)
    body = rs.to_json()
    body["rules"][0]["when"]["days"].append("sun")
    body["vip"].clear()
    assert rs == parse(BIG)


def test_a_bad_ring_time_is_the_callers_error_not_the_portions() -> None:
    for ring_time in (0, 301, True):
        with pytest.raises(ValueError, match="ring_time") as caught:
            parse_portion({}, extensions=None, external_prefixes=(), ring_time=ring_time)
        assert not isinstance(caught.value, PortionError)


# -- parsing: refusals name the field ----------------------------------------------------

def rule(**fields: Any) -> dict[str, Any]:
    return {"rules": [{"action": "voicemail", **fields}]}


@pytest.mark.parametrize(("body", "field", "reason"), [
    ([], "", "JSON object"),
    ({"colour": 1}, "colour", "unknown key"),
    ({"rules": {}}, "rules", "must be a list"),
    ({"rules": ["x"]}, "rules[0]", "JSON object"),
    ({"rules": [{}]}, "rules[0].action", "missing"),
    ({"rules": [{"action": "fly"}]}, "rules[0].action", "must be one of"),
    ({"rules": [{"action": 3}]}, "rules[0].action", "must be a string"),
    (rule(colour="red"), "rules[0].colour", "unknown key"),
    (rule(**{"bad key!": 1}), "rules[0]", "unknown key"),
    (rule(ring=5), "rules[0].ring", "does not apply to action voicemail"),
    (rule(name="night/day"), "rules[0].name", "letters, digits"),
    (rule(name=5), "rules[0].name", "must be a string"),
    (rule(when=[]), "rules[0].when", "JSON object"),
    (rule(when={"hours": "08:00-09:00"}), "rules[0].when.hours", "unknown key"),
    (rule(when={"days": []}), "rules[0].when.days", "1..7"),
    (rule(when={"days": "mon"}), "rules[0].when.days", "must be a list"),
    (rule(when={"days": ["mon", "monday"]}), "rules[0].when.days[1]", "must be one of"),
    (rule(when={"days": ["mon"] * 8}), "rules[0].when.days", "1..7"),
    (rule(when={"time": "8:00-09:00"}), "rules[0].when.time", "HH:MM-HH:MM"),
    (rule(when={"time": "24:00-08:00"}), "rules[0].when.time", "HH:MM-HH:MM"),
    (rule(when={"time": "08:00-24:01"}), "rules[0].when.time", "HH:MM-HH:MM"),
    (rule(when={"time": "08:60-09:00"}), "rules[0].when.time", "HH:MM-HH:MM"),
    (rule(when={"time": "08:00-08:00"}), "rules[0].when.time", "empty"),
    (rule(when={"time": 800}), "rules[0].when.time", "must be a string"),
    (rule(when={"holiday": "yes"}), "rules[0].when.holiday", "true or false"),
    (rule(when={"holiday": 1}), "rules[0].when.holiday", "true or false"),
    (rule(when={"holiday": None}), "rules[0].when.holiday", "true or false"),
    (rule(when={"callers": []}), "rules[0].when.callers", "1..100"),
    (rule(when={"callers": ["0301", "*"]}), "rules[0].when.callers[1]", "caller pattern"),
    ({"rules": [{"action": "ring", "ring": 0}]}, "rules[0].ring", "1..300"),
    ({"rules": [{"action": "ring", "ring": 301}]}, "rules[0].ring", "1..300"),
    ({"rules": [{"action": "ring", "ring": 20.0}]}, "rules[0].ring", "1..300"),
    ({"rules": [{"action": "ring", "ring": True}]}, "rules[0].ring", "1..300"),
    ({"rules": [{"action": "ring", "ring": "20"}]}, "rules[0].ring", "1..300"),
    ({"rules": [{"action": "forward"}]}, "rules[0].target", "missing"),
    ({"rules": [{"action": "forward", "target": "extension:1002", "on": "never"}]},
     "rules[0].on", "must be one of"),
    ({"rules": [{"action": "forward", "target": "extension:1002", "after": 5}]},
     "rules[0].after", "only to on = no_answer"),
    ({"rules": [{"action": "forward", "target": "extension:1002", "on": "busy", "after": 5}]},
     "rules[0].after", "only to on = no_answer"),
    ({"rules": [{"action": "forward", "target": "extension:1002", "on": "no_answer",
                 "after": 0}]}, "rules[0].after", "1..300"),
    ({"rules": [{"action": "forward", "target": "extension:1002", "on": "no_answer",
                 "after": 301}]}, "rules[0].after", "1..300"),
    ({"rules": [{"action": "forward", "target": "extension:1002", "steps": []}]},
     "rules[0].steps", "does not apply to action forward"),
    ({"rules": [{"action": "follow_me"}]}, "rules[0].steps", "must be a list"),
    ({"rules": [{"action": "follow_me", "steps": []}]}, "rules[0].steps", "1..10"),
    ({"rules": [{"action": "follow_me", "steps": [{"ring": 5}]}]},
     "rules[0].steps[0].target", "missing"),
    ({"rules": [{"action": "follow_me", "steps": [{"target": "extension:1002", "to": 1}]}]},
     "rules[0].steps[0].to", "unknown key"),
    ({"rules": [{"action": "follow_me", "steps": [{"target": "extension:1002", "ring": 0}]}]},
     "rules[0].steps[0].ring", "1..300"),
    ({"rules": [{"action": "follow_me", "steps": [{"target": "voicemail"}]}]},
     "rules[0].steps[0].target", "ends in voicemail"),
    ({"rules": [{"action": "follow_me", "steps": [{"target": "extension:1002"},
                                                  {"target": "extension:1002"}]}]},
     "rules[0].steps[1].target", "already rules[0].steps[0]"),
    ({"rules": [{"action": "follow_me", "mode": "ring_all",
                 "steps": [{"target": "extension:1002"}, {"target": "external:+4930999"}]}]},
     "rules[0].steps[1].target", "extensions only"),
    ({"rules": [{"action": "follow_me", "mode": "parallel",
                 "steps": [{"target": "extension:1002"}]}]}, "rules[0].mode", "must be one of"),
    ({"rules": [{"action": "dnd", "then": "busy"}]}, "rules[0].then", "must be one of"),
    ({"rules": [{"action": "reject", "cause": "noanswer"}]}, "rules[0].cause", "must be one of"),
    ({"vip": ["@vip"]}, "vip[0]", "not in a list"),
    ({"blocked": ["0301", "@blocked"]}, "blocked[1]", "not in a list"),
    ({"vip": ["030 123"]}, "vip[0]", "caller pattern"),
    ({"vip": ["1"]}, "vip[0]", "caller pattern"),
    ({"vip": ["01*2"]}, "vip[0]", "caller pattern"),
    ({"vip": ["*"]}, "vip[0]", "caller pattern"),
    ({"vip": ["Withheld"]}, "vip[0]", "caller pattern"),
    ({"vip": [None]}, "vip[0]", "must be a string"),
    ({"vip": "0301"}, "vip", "must be a list"),
    ({"saved": ["1002"]}, "saved[0]", "not a target"),
])
def test_a_refusal_names_the_field_and_why(body: Any, field: str, reason: str) -> None:
    error = refused(body)
    assert error.field == field
    assert reason in error.reason


@pytest.mark.parametrize(("key", "most", "item"), [
    ("rules", 50, {"action": "voicemail"}),
    ("vip", 100, "0301*"),
    ("blocked", 100, "0301*"),
    ("saved", 20, "extension:1001"),
])
def test_list_limits(key: str, most: int, item: Any) -> None:
    parse({key: [item] * most})
    error = refused({key: [item] * (most + 1)})
    assert (error.field, error.reason) == (key, f"must hold 0..{most} entries, got {most + 1}")


def test_step_and_caller_limits() -> None:
    steps = [{"target": f"external:+49301{i:02d}"} for i in range(11)]
    parse({"rules": [{"action": "follow_me", "steps": steps[:10]}]})
    assert refused({"rules": [{"action": "follow_me", "steps": steps}]}).field == "rules[0].steps"
    exts = [{"target": f"extension:10{i:02d}"} for i in range(9)]
    parse({"rules": [{"action": "follow_me", "mode": "ring_all", "steps": exts[:8]}]},
          extensions=None)
    error = refused({"rules": [{"action": "follow_me", "mode": "ring_all", "steps": exts}]},
                    extensions=None)
    assert (error.field, error.reason) == ("rules[0].steps", "must hold 1..8 entries, got 9")
    callers = ["0301*"] * 100
    parse(rule(when={"callers": callers}))
    assert refused(rule(when={"callers": [*callers, "0"]})).field == "rules[0].when.callers"


def test_strings_are_at_most_64_characters() -> None:
    parse(rule(name="n" * 64))
    assert refused(rule(name="n" * 65)).reason == "is longer than 64 characters"
    assert refused({"vip": ["0" * 65]}).field == "vip[0]"


@pytest.mark.parametrize("char", sorted(FORBIDDEN_CHARS))
@pytest.mark.parametrize(("where", "body"), [
    ("rules[0].name", lambda s: rule(name=f"a{s}b")),
    ("rules[0].target", lambda s: {"rules": [{"action": "forward",
                                              "target": f"external:+4930{s}1"}]}),
    ("rules[0].steps[0].target", lambda s: {"rules": [{"action": "follow_me",
                                                       "steps": [{"target": f"extension:1{s}"}]}]}),
    ("rules[0].when.callers[0]", lambda s: rule(when={"callers": [f"0301{s}*"]})),
    ("rules[0].when.time", lambda s: rule(when={"time": f"08:00-09:00{s}"})),
    ("rules[0].when.days[0]", lambda s: rule(when={"days": [f"mon{s}"]})),
    ("rules[0].action", lambda s: {"rules": [{"action": f"ring{s}"}]}),
    ("vip[0]", lambda s: {"vip": [s]}),
    ("saved[0]", lambda s: {"saved": [f"extension:1001{s}"]}),
])
def test_forbidden_characters_are_refused_anywhere(char: str, where: str, body: Any) -> None:
    error = refused(body(char))
    assert (error.field, error.reason) == (where, f"contains the forbidden character {char!r}")


@pytest.mark.parametrize(("target", "reason"), [
    ("extension:2999", "not one of this tenant's"),  # another tenant's extension
    ("extension:1001\n", "forbidden character '\\n'"),
    ("extension:1002\r\nAction: Originate", "forbidden character"),
    ("extension:1001&2999", "forbidden character '&'"),
    ("extension:1001,30", "forbidden character ','"),
    ("extension:1001)", "forbidden character ')'"),
    ("extension:${X}", "forbidden character '$'"),
    ("external:+4930${EXTEN}", "forbidden character '$'"),
    ("external:+33123456", "does not start with one of this tenant's prefixes (+49, 0)"),
    ("external:+4930 1234", "not a number"),
    ("external:abc", "not a number"),
    ("1002", "not a target"),  # no bare values
    ("voicemail:2001", "takes no value"),
    ("voicemail:2999", "takes no value"),  # another user's mailbox
    ("queue:sales", "not allowed here"),
    ("phones:1001&1002", "forbidden character '&'"),
    ("phones:1001", "not allowed here"),
    ("extension:", "not an extension"),
    ("Extension:1001", "not allowed here"),
])
def test_forward_targets_outside_the_tenant_are_refused(target: str, reason: str) -> None:
    for body, field in [
        ({"rules": [{"action": "forward", "target": target}]}, "rules[0].target"),
        ({"rules": [{"action": "follow_me", "steps": [{"target": target}]}]},
         "rules[0].steps[0].target"),
        ({"saved": [target]}, "saved[0]"),
    ]:
        error = refused(body)
        assert error.field == field
        assert reason in error.reason


def test_external_numbers_need_a_prefix_of_the_tenant() -> None:
    body = {"rules": [{"action": "forward", "target": "external:+33123456"}]}
    assert refused(body, prefixes=()).reason == "this tenant allows no external numbers"
    assert parse(body, prefixes=("",)).rules[0]["target"] == "external:+33123456"
    assert parse(body, prefixes=("+31", "+33")).rules[0]["target"] == "external:+33123456"
    refused(body, prefixes=("+331234567",))


def test_without_the_tenants_extensions_only_shapes_are_checked() -> None:
    body = {"rules": [{"action": "forward", "target": "extension:2999"},
                      {"action": "forward", "target": "external:+33123456"}]}
    assert len(parse(body, extensions=None, prefixes=()).rules) == 2
    error = refused({"rules": [{"action": "forward", "target": "external:+33 1"}]},
                    extensions=None, prefixes=())
    assert error.field == "rules[0].target"
    assert refused({"saved": ["extension:1&2"]}, extensions=None).field == "saved[0]"


# -- evaluation: the default and each action ---------------------------------------------

def test_no_rules_ring_my_phones_then_voicemail() -> None:
    step = run([], bindings=("1001", "1002"))
    assert route(step) == ("phones:1001&1002", RING)
    assert step.trace.rule == "default"
    assert step.trace.why == "no rule matched: ring my phones (1001, 1002) for 20 s, then voicemail"
    assert (step.trace.step, step.trace.after) == (0, "")
    for status in ("NOANSWER", "BUSY", "CHANUNAVAIL", "CONGESTION", ""):
        after = run([], bindings=("1001", "1002"),
                    previous=(Target("phones", "1001&1002"), status))
        assert route(after) == ("voicemail:2001", 0)
        assert (after.trace.step, after.trace.after) == (1, status)


def test_ring_my_phones_without_bindings_skips_to_voicemail() -> None:
    step = run([], bindings=())
    assert route(step) == ("voicemail:2001", 0)
    assert step.trace.step == 1
    assert "none bound" in step.trace.why


def test_bindings_that_cannot_be_rung_are_left_out_and_at_most_eight_ring() -> None:
    many = tuple(f"10{i:02d}" for i in range(10))
    assert route(run([], bindings=many))[0] == "phones:" + "&".join(many[:8])
    assert route(run([], bindings=("1001", "bad ext", "1001", "1002")))[0] == "phones:1001&1002"


def test_ring_rings_my_phones_for_its_own_time() -> None:
    assert walk([{"action": "ring", "ring": 35}], ["NOANSWER"]) == [
        "phones:1001 35", "voicemail:2001 0", "reject congestion"]


def test_forward_always_goes_straight_to_the_target_then_voicemail() -> None:
    rules = [{"name": "away", "action": "forward", "target": "external:+4930999"}]
    assert walk(rules, ["CHANUNAVAIL"]) == [
        "external:+4930999 20", "voicemail:2001 0", "reject congestion"]
    first = run(rules)
    assert first.trace.rule == "#1 away"
    assert first.trace.why == ("rule #1 'away' matched: it has no conditions; plan: forward "
                               "to external:+4930999 for 20 s, then voicemail")
    assert walk([{"action": "forward", "target": "voicemail"}], []) == [
        "voicemail:2001 0", "reject congestion"]


def test_forward_on_busy() -> None:
    rules = [{"action": "forward", "target": "extension:1002", "on": "busy"}]
    assert walk(rules, ["BUSY", "NOANSWER"]) == [
        "phones:1001 20", "extension:1002 20", "voicemail:2001 0", "reject congestion"]
    assert walk(rules, ["BUSY", "BUSY"]) == [
        "phones:1001 20", "extension:1002 20", "voicemail:2001 0", "reject congestion"]
    for status in ("NOANSWER", "CHANUNAVAIL", "CONGESTION"):
        assert walk(rules, [status]) == ["phones:1001 20", "voicemail:2001 0",
                                         "reject congestion"]
    # Nothing bound: the phones step is skipped, so the forward comes next.
    assert walk(rules, [], bindings=()) == ["extension:1002 20", "voicemail:2001 0",
                                            "reject congestion"]


def test_forward_on_no_answer() -> None:
    rules = [{"name": "fna", "action": "forward", "target": "extension:1002",
              "on": "no_answer", "after": 5}]
    for status in ("NOANSWER", "CHANUNAVAIL", "CONGESTION"):
        assert walk(rules, [status, "NOANSWER"]) == [
            "phones:1001 5", "extension:1002 20", "voicemail:2001 0", "reject congestion"]
    assert walk(rules, ["BUSY"]) == ["phones:1001 5", "voicemail:2001 0", "reject congestion"]
    later = run(rules, previous=(PHONES, "NOANSWER"))
    assert later.trace.why == ("rule #1 'fna' (forward on no answer after 5 s): phones:1001 "
                               "gave NOANSWER, so extension:1002 for 20 s")
    assert (later.trace.rule, later.trace.step, later.trace.after) == ("#1 fna", 1, "NOANSWER")
    assert walk([{"action": "forward", "target": "voicemail", "on": "no_answer"}], []) == [
        "phones:1001 20", "voicemail:2001 0", "reject congestion"]


def test_follow_me_sequential_goes_on_after_busy_and_no_answer() -> None:
    rules = [{"name": "fm", "action": "follow_me", "steps": [
        {"target": "extension:1002", "ring": 10},
        {"target": "external:+4930999", "ring": 25},
        {"target": "extension:1003"}]}]
    assert walk(rules, ["BUSY", "NOANSWER", "CHANUNAVAIL"]) == [
        "extension:1002 10", "external:+4930999 25", "extension:1003 20", "voicemail:2001 0",
        "reject congestion"]
    third = run(rules, previous=(Target("external", "+4930999"), "NOANSWER"))
    assert third.trace.step == 2
    assert "external:+4930999 gave NOANSWER, so extension:1003 for 20 s" in third.trace.why


def test_follow_me_ring_all_rings_every_extension_at_once_for_the_longest_time() -> None:
    rules = [{"action": "follow_me", "mode": "ring_all", "steps": [
        {"target": "extension:1002", "ring": 10}, {"target": "extension:1004", "ring": 30},
        {"target": "extension:1003"}]}]
    assert walk(rules, ["NOANSWER"]) == [
        "phones:1002&1004&1003 30", "voicemail:2001 0", "reject congestion"]


def test_dnd_sends_to_voicemail_or_rejects_but_lets_vips_through() -> None:
    dnd = {"name": "quiet", "action": "dnd"}
    assert walk([dnd], []) == ["voicemail:2001 0", "reject congestion"]
    rejecting = run([{**dnd, "then": "reject"}])
    assert (rejecting.action, rejecting.target, rejecting.cause) == ("reject", None, "busy")
    vip_step = run([dnd], ani="+4930111", vip=("+4930111",))
    assert route(vip_step) == ("phones:1001", RING)  # the default: nothing else matched
    assert vip_step.trace.why.startswith(
        "rule #1 'quiet' (do not disturb) skipped: caller +4930111 is a VIP; no rule matched")
    # A VIP goes on to the next rule.
    rules = [dnd, {"name": "vip", "action": "forward", "target": "extension:1003"}]
    step = run(rules, ani="01721234", vip=("0172*",))
    assert route(step) == ("extension:1003", RING)
    assert step.trace.rule == "#2 vip"
    assert run(rules, ani="01731234", vip=("0172*",)).trace.rule == "#1 quiet"


def test_voicemail_and_reject_actions() -> None:
    assert walk([{"action": "voicemail"}], []) == ["voicemail:2001 0", "reject congestion"]
    for cause in REJECT_CAUSES:
        step = run([{"action": "reject", "cause": cause}])
        assert (step.action, step.target, step.cause) == ("reject", None, cause)


@pytest.mark.parametrize("then", ["reject", "voicemail"])
def test_blocked_callers_get_what_the_blocking_rule_says(then: str) -> None:
    rules = [{"name": "block", "when": {"callers": ["@blocked"]}, "action": then}]
    blocked = ("0900*", "withheld")
    for ani in ("09001234", "anonymous", ""):
        step = run(rules, ani=ani, blocked=blocked)
        assert step.trace.rule == "#1 block"
        assert step.trace.inputs["caller_class"] == "blocked"
        if then == "reject":
            assert (step.action, step.cause) == ("reject", "busy")
        else:
            assert route(step) == ("voicemail:2001", 0)
    other = run(rules, ani="0301234", blocked=blocked)
    assert other.trace.rule == "default"
    assert other.trace.inputs["caller_class"] == "other"


# -- evaluation: coming back -------------------------------------------------------------

@pytest.mark.parametrize("status", ["ANSWER", "CANCEL", "answer"])
def test_an_answered_or_abandoned_call_that_comes_back_is_ended_not_rung_again(
        status: str) -> None:
    step = run([], previous=(PHONES, status))
    assert (step.action, step.cause) == ("reject", "congestion")
    assert step.trace.step == 2  # past the plan


def test_a_call_that_comes_back_after_voicemail_is_rejected_not_looped() -> None:
    for previous in (VOICEMAIL, Target("voicemail", "2999")):
        step = run([], previous=(previous, "NOANSWER"))
        assert (step.action, step.cause) == ("reject", "congestion")
        assert "voicemail ends the plan" in step.trace.why


def test_a_previous_target_that_is_not_in_the_plan_goes_to_voicemail() -> None:
    # The bindings changed (hot-desk) while the phones rang: phones:1001 is not the plan's.
    step = run([], bindings=("1004",), previous=(PHONES, "NOANSWER"))
    assert route(step) == ("voicemail:2001", 0)
    assert "not a step of this plan" in step.trace.why
    rejecting = run([{"action": "reject"}], previous=(Target("extension", "1002"), "BUSY"))
    assert (rejecting.action, rejecting.cause) == ("reject", "busy")


def test_without_a_valid_mailbox_the_plan_ends_in_a_reject() -> None:
    step = run([], bindings=(), number="")
    assert (step.action, step.cause) == ("reject", "congestion")


# -- evaluation: `when`, time and callers --------------------------------------------------

def first_rule(when: dict[str, Any], **kw: Any) -> bool:
    """Does a single rule with this `when` match (rather than the default)?"""
    step = run([{"name": "r", "when": when, "action": "voicemail"}], **kw)
    return step.trace.rule == "#1 r"


def test_first_match_wins_and_unnamed_rules_are_numbered() -> None:
    rules = [{"when": {"callers": ["0800*"]}, "action": "reject"},
             {"action": "voicemail"}, {"name": "never", "action": "ring"}]
    assert run(rules).trace.rule == "#2"
    assert run(rules, ani="08001").trace.rule == "#1"
    assert run(rules).trace.why.startswith("rule #2 matched: it has no conditions")


@pytest.mark.parametrize(("when", "ani", "expected"), [
    ({"callers": ["0301234"]}, "0301234", True),
    ({"callers": ["0301234"]}, "03012345", False),
    ({"callers": ["+4930123"]}, "+4930123", True),
    ({"callers": ["+4930123"]}, "4930123", False),
    ({"callers": ["0301*"]}, "0301999", True),
    ({"callers": ["0301*"]}, "0302999", False),
    ({"callers": ["0*"]}, "anonymous", False),  # withheld matches only 'withheld'
    ({"callers": ["withheld"]}, "", True),
    ({"callers": ["withheld"]}, " Anonymous ", True),
    ({"callers": ["withheld"]}, "RESTRICTED", True),
    ({"callers": ["withheld"]}, "private", True),
    ({"callers": ["withheld"]}, "unknown", True),
    ({"callers": ["withheld"]}, "0301", False),
    ({"callers": ["0800*", "withheld"]}, "unknown", True),
    ({"callers": ["@vip"]}, "01721", True),
    ({"callers": ["@vip"]}, "01731", False),
    ({"callers": ["@blocked"]}, "09001", True),
    ({"callers": ["@blocked"]}, "0301", False),
])
def test_callers(when: dict[str, Any], ani: str, expected: bool) -> None:
    assert first_rule(when, ani=ani, vip=("0172*",), blocked=("0900*",)) is expected


def test_the_trace_names_the_matching_caller_pattern() -> None:
    step = run([{"name": "v", "when": {"callers": ["0800*", "@vip"]}, "action": "voicemail"}],
               ani="01721", vip=("+4930111", "0172*"))
    assert step.trace.why.startswith("rule #1 'v' matched: caller 01721 matches '@vip' ('0172*')")
    assert step.trace.inputs["caller_class"] == "vip"


@pytest.mark.parametrize(("ani", "vip", "blocked", "expected"), [
    ("0301", (), (), "other"),
    ("", (), (), "withheld"),
    ("anonymous", (), (), "withheld"),
    ("01721", ("0172*",), (), "vip"),
    ("01721", ("0172*",), ("01721",), "blocked"),  # in both lists: blocked wins
    ("", (), ("withheld",), "blocked"),
    ("", ("withheld",), (), "vip"),
])
def test_caller_class(ani: str, vip: tuple[str, ...], blocked: tuple[str, ...],
                      expected: str) -> None:
    assert run([], ani=ani, vip=vip, blocked=blocked).trace.inputs["caller_class"] == expected


@pytest.mark.parametrize(("day", "expected"), [
    ("mon", True), ("tue", True), ("wed", False), ("sun", False)])
def test_days(day: str, expected: bool) -> None:
    assert first_rule({"days": ["mon", "tue"]}, now=at(day, "12:00")) is expected


def test_days_are_judged_in_the_users_timezone() -> None:
    late_sunday_utc = at("sun", "23:30")  # Monday 00:30 in Berlin
    assert first_rule({"days": ["mon"]}, now=late_sunday_utc, timezone=BERLIN)
    assert not first_rule({"days": ["mon"]}, now=late_sunday_utc)


@pytest.mark.parametrize(("hhmm", "expected"), [
    ("07:59", False), ("08:00", True), ("12:30", True), ("16:59", True), ("17:00", False)])
def test_time_window(hhmm: str, expected: bool) -> None:
    assert first_rule({"time": "08:00-17:00"}, now=at("wed", hhmm, BERLIN),
                      timezone=BERLIN) is expected


@pytest.mark.parametrize(("day", "hhmm", "expected"), [
    ("mon", "17:59", False),
    ("mon", "18:00", True),
    ("mon", "23:59", True),
    ("tue", "00:00", True),  # opened Monday
    ("tue", "07:59", True),
    ("tue", "08:00", False),
    ("mon", "07:00", False),  # this morning's part opened on Sunday
    ("tue", "19:00", False),  # opened Tuesday
    ("sun", "23:00", False),
])
def test_a_window_across_midnight_belongs_to_the_day_it_opened(
        day: str, hhmm: str, expected: bool) -> None:
    when = {"days": ["mon"], "time": "18:00-08:00"}
    assert first_rule(when, now=at(day, hhmm, BERLIN), timezone=BERLIN) is expected


def test_the_trace_of_a_window_across_midnight() -> None:
    step = run([{"name": "night", "when": {"days": ["mon"], "time": "18:00-08:00",
                                           "callers": ["0171*"]},
                 "action": "forward", "target": "extension:1002"}],
               ani="0171234", now=at("tue", "07:05", BERLIN), timezone=BERLIN)
    assert step.trace.why == (
        "rule #1 'night' matched: Tue 07:05 Europe/Berlin is in 18:00-08:00; the window "
        "opened on Mon, which is one of mon; caller 0171234 matches '0171*'; plan: forward "
        "to extension:1002 for 20 s, then voicemail")
    assert step.trace.inputs == {"time": "2026-01-06T07:05:00+01:00", "timezone": BERLIN,
                                 "day": "tue", "holiday": "no", "caller_class": "other"}


def test_a_window_to_midnight_and_the_whole_day() -> None:
    assert first_rule({"time": "22:00-24:00"}, now=at("mon", "23:59"))
    assert not first_rule({"time": "22:00-24:00"}, now=at("tue", "00:00"))
    for hhmm in ("00:00", "12:00", "23:59"):
        assert first_rule({"time": "00:00-24:00"}, now=at("mon", hhmm))


def test_holidays() -> None:
    christmas = dt.date(2026, 12, 25)
    holidays = ("2026-12-25", "2026-12-26")
    on_holiday = at(christmas, "10:00", BERLIN)
    workday = at(dt.date(2026, 12, 23), "10:00", BERLIN)
    for now, is_holiday in ((on_holiday, True), (workday, False)):
        kw: dict[str, Any] = {"now": now, "timezone": BERLIN, "holidays": holidays}
        assert first_rule({"holiday": True}, **kw) is is_holiday
        assert first_rule({"holiday": False}, **kw) is not is_holiday
        assert run([], **kw).trace.inputs["holiday"] == ("yes" if is_holiday else "no")
    # Judged on the user's local date: 23:30 UTC on the 24th is already the 25th in Berlin.
    eve = dt.datetime(2026, 12, 24, 23, 30, tzinfo=UTC)
    assert first_rule({"holiday": True}, now=eve, timezone=BERLIN, holidays=holidays)
    assert not first_rule({"holiday": True}, now=eve, holidays=holidays)
    # A malformed holiday (the config loader refuses them) is ignored, not fatal.
    assert not first_rule({"holiday": True}, now=on_holiday, holidays=("25.12.2026",))


def test_all_conditions_must_hold() -> None:
    when = {"days": ["mon"], "time": "08:00-17:00", "holiday": False, "callers": ["0301*"]}
    assert first_rule(when, now=at("mon", "09:00"))
    assert not first_rule(when, now=at("mon", "09:00"), ani="0401")
    assert not first_rule(when, now=at("mon", "18:00"))
    assert not first_rule(when, now=at("tue", "09:00"))
    assert not first_rule(when, now=at("mon", "09:00"), holidays=(str(DAY["mon"]),))


def test_dst_changes_move_the_wall_clock_not_the_rules() -> None:
    when = {"time": "08:00-09:00"}
    # Spring forward in Berlin on 2026-03-29: 06:30 UTC is 07:30 CET the day before, 08:30
    # CEST on the day.
    assert not first_rule(when, now=dt.datetime(2026, 3, 28, 6, 30, tzinfo=UTC),
                          timezone=BERLIN)
    assert first_rule(when, now=dt.datetime(2026, 3, 29, 6, 30, tzinfo=UTC), timezone=BERLIN)
    # Fall back on 2026-10-25: 00:30 and 01:30 UTC are both 02:30 local; both are in the
    # window, each with its own offset.
    night = {"time": "02:00-03:00"}
    first, second = (dt.datetime(2026, 10, 25, h, 30, tzinfo=UTC) for h in (0, 1))
    for now, offset in ((first, "+02:00"), (second, "+01:00")):
        step = run([{"name": "r", "when": night, "action": "voicemail"}], now=now,
                   timezone=BERLIN)
        assert step.trace.rule == "#1 r"
        assert step.trace.inputs["time"] == f"2026-10-25T02:30:00{offset}"
    assert not first_rule(night, now=dt.datetime(2026, 10, 25, 2, 0, tzinfo=UTC),
                          timezone=BERLIN)


def test_the_same_instant_in_another_timezone() -> None:
    now = at("mon", "12:00")  # 07:00 in New York
    assert first_rule({"time": "06:00-08:00"}, now=now, timezone="America/New_York")
    assert not first_rule({"time": "06:00-08:00"}, now=now)


def test_an_unknown_timezone_falls_back_to_utc_and_says_so() -> None:
    for zone in ("Mars/Olympus", "", "../etc/passwd"):
        step = run([], timezone=zone)
        assert step.trace.inputs["timezone"] == "UTC"
        assert "is unknown, so UTC is used" in step.trace.why


def test_a_naive_now_is_taken_as_utc_never_as_the_hosts_time() -> None:
    naive = dt.datetime(2026, 1, 5, 12, 0)
    assert run([], now=naive).trace.inputs["time"] == "2026-01-05T12:00:00+00:00"


def test_a_hand_made_invalid_rule_set_falls_back_to_the_default() -> None:
    broken = RuleSet(rules=({"action": "forward", "target": "1002\n"},))
    step = run(broken)
    assert route(step) == ("phones:1001", RING)
    assert "the rules are invalid" in step.trace.why
    assert route(run(RuleSet(rules=("nonsense",)))) == ("phones:1001", RING)  # type: ignore[arg-type]


def test_the_module_is_pure() -> None:
    source = Path(__file__).resolve().parents[2] / "tenants" / "personal.py"
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"asyncio", "socket", "logging", "selectors", "subprocess",
                           "threading", "time", "os"}


# -- properties --------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=70),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=5),
    max_leaves=20,
)
DAY_NAMES = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
TARGETS = ["extension:1002", "extension:1003", "external:+4930999", "external:0301234",
           "voicemail"]
PATTERNS = ["+4930111", "0172*", "0301234", "0*", "withheld", "@vip", "@blocked"]
CLOCK = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.integers(0, 59))


def _time_window(pair: tuple[str, str]) -> str:
    return f"{pair[0]}-{pair[1]}"


WHEN = st.fixed_dictionaries({}, optional={
    "days": st.lists(st.sampled_from(DAY_NAMES), min_size=1, max_size=7, unique=True),
    "time": st.tuples(CLOCK, CLOCK).filter(lambda p: p[0] != p[1]).map(_time_window),
    "holiday": st.booleans(),
    "callers": st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=4),
})
SECONDS = st.integers(1, 300)
STEP = st.fixed_dictionaries({"target": st.sampled_from(TARGETS[:-1])},
                             optional={"ring": SECONDS})
EXT_STEP = st.fixed_dictionaries({"target": st.sampled_from(TARGETS[:2])},
                                 optional={"ring": SECONDS})
ACTION = st.one_of(
    st.fixed_dictionaries({"action": st.just("ring")}, optional={"ring": SECONDS}),
    st.fixed_dictionaries({"action": st.just("forward"), "target": st.sampled_from(TARGETS)},
                          optional={"on": st.sampled_from(["always", "busy"])}),
    st.fixed_dictionaries({"action": st.just("forward"), "target": st.sampled_from(TARGETS),
                           "on": st.just("no_answer")}, optional={"after": SECONDS}),
    st.fixed_dictionaries({"action": st.just("follow_me"), "steps": st.lists(
        STEP, min_size=1, max_size=4, unique_by=lambda s: s["target"])},
        optional={"mode": st.just("sequential")}),
    st.fixed_dictionaries({"action": st.just("follow_me"), "mode": st.just("ring_all"),
                           "steps": st.lists(EXT_STEP, min_size=1, max_size=2,
                                             unique_by=lambda s: s["target"])}),
    st.fixed_dictionaries({"action": st.just("dnd")},
                          optional={"then": st.sampled_from(["voicemail", "reject"])}),
    st.fixed_dictionaries({"action": st.just("voicemail")}),
    st.fixed_dictionaries({"action": st.just("reject")},
                          optional={"cause": st.sampled_from(list(REJECT_CAUSES))}),
)


@st.composite
def portions(draw: st.DrawFn) -> dict[str, Any]:
    rules = []
    for action in draw(st.lists(ACTION, max_size=5)):
        extra = draw(st.fixed_dictionaries({}, optional={
            "name": st.text("abc XYZ_.-0", max_size=10), "when": WHEN}))
        rules.append({**action, **extra})
    return {"version": draw(st.integers(0, 9)), "rules": rules,
            "vip": draw(st.lists(st.sampled_from(PATTERNS[:5]), max_size=3)),
            "blocked": draw(st.lists(st.sampled_from(PATTERNS[:5]), max_size=3)),
            "saved": draw(st.lists(st.sampled_from(TARGETS), max_size=3))}


@FAST
@given(JSON)
def test_parse_of_any_json_is_a_rule_set_or_a_portion_error(value: Any) -> None:
    try:
        rs = parse(value)
    except PortionError:
        return
    assert parse(rs.to_json()) == rs


@FAST
@given(portions(), st.sampled_from(["rules", "vip", "blocked", "saved", "when", "steps"]),
       JSON, st.data())
def test_parse_with_any_json_in_any_place_is_a_rule_set_or_a_portion_error(
        body: dict[str, Any], where: str, junk: Any, data: st.DataObject) -> None:
    if where in ("when", "steps"):
        holders = [r for r in body["rules"] if where in r] or [{}]
        holder = data.draw(st.sampled_from(holders))
        holder[where] = junk if not isinstance(holder.get(where), list) or not data.draw(
            st.booleans()) else [*holder[where], junk]
    else:
        body[where] = data.draw(st.sampled_from([junk, [junk], [*body[where], junk]]))
    try:
        rs = parse(body)
    except PortionError:
        return
    assert parse(rs.to_json()) == rs


@FAST
@given(portions())
def test_valid_portions_are_accepted_and_round_trip(body: dict[str, Any]) -> None:
    rs = parse(body)
    assert parse(rs.to_json()) == rs
    assert len(rs.rules) == len(body["rules"])


ANIS = st.sampled_from(["+4930111", "01721", "0301234", "", "anonymous", "09001", "+33123"])
STATUSES = st.sampled_from(["NOANSWER", "BUSY", "CHANUNAVAIL", "CONGESTION", "ANSWER",
                            "CANCEL", "", "DONTCALL"])
NOW = st.datetimes(min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2035, 1, 1),
                   timezones=st.just(UTC))
BINDINGS = st.lists(st.sampled_from(["1001", "1004", "1005"]), max_size=3, unique=True)
ZONES = st.sampled_from(["UTC", BERLIN, "America/New_York", "Asia/Kolkata",
                         "Australia/Lord_Howe"])


def allowed_targets(rs: RuleSet, bindings: list[str]) -> set[Target]:
    """Every target the rule set, the bindings or the user's voicemail could give."""
    out = {Target("voicemail", NUMBER)}
    if bindings:
        out.add(Target("phones", "&".join(bindings)))
    for r in rs.rules:
        if r.get("target", "voicemail") != "voicemail":
            out.add(Target.parse(r["target"]))
        steps = [s["target"] for s in r.get("steps", ())]
        if r.get("mode") == "ring_all":
            out.add(Target("phones", "&".join(t.partition(":")[2] for t in steps)))
        else:
            out.update(Target.parse(t) for t in steps)
    return out


@FAST
@given(portions(), ANIS, BINDINGS, NOW, ZONES, st.lists(STATUSES, max_size=14))
def test_every_step_routes_inside_the_rule_set_and_every_call_ends(
        body: dict[str, Any], ani: str, bindings: list[str], now: dt.datetime, zone: str,
        statuses: list[str]) -> None:
    rs = parse(body)
    allowed = allowed_targets(rs, bindings)
    previous: tuple[Target, str] | None = None
    for i, status in enumerate([*statuses, *["NOANSWER"] * 14]):
        call = PersonalCall(ani=ani, number=NUMBER, bindings=tuple(bindings),
                            previous=previous)
        step = evaluate(rs, call, now, timezone=zone, holidays=("2026-12-25",),
                        ring_time=RING)
        assert step.trace.why and step.trace.rule
        assert set(step.trace.inputs) == {"time", "timezone", "day", "holiday", "caller_class"}
        if step.action == "reject":
            assert step.target is None and step.cause in REJECT_CAUSES
            return
        assert step.action == "route" and step.target in allowed
        assert 0 <= step.dial_timeout <= 300
        previous = (step.target, status)
        # A plan has at most 10 follow-me steps and voicemail; then the call is rejected.
        assert i <= 12
    pytest.fail("the call never ended")


@FAST
@given(portions(), st.sampled_from([*TARGETS, "phones:1001", "queue:x"]), STATUSES, NOW)
def test_any_previous_target_gives_a_step(body: dict[str, Any], previous: str, status: str,
                                          now: dt.datetime) -> None:
    rs = parse(body)
    target = Target.parse(previous) if previous != "voicemail" else VOICEMAIL
    call = PersonalCall(ani="0301234", number=NUMBER, bindings=("1001",),
                        previous=(target, status))
    step = evaluate(rs, call, now, timezone=BERLIN, holidays=(), ring_time=RING)
    assert step.action in ("route", "reject")
    if step.action == "route":
        assert step.target in allowed_targets(rs, ["1001"])
