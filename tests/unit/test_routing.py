"""Routing protocols (tenants/routing.py): conditions, ordering, strategies, time, parsing.

Everything here is pure: `now` and the random generator are injected, so no test sleeps,
reads the clock or depends on the host's timezone.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ami_bridge.tenants.messages import Target
from ami_bridge.tenants.routing import (
    DAYS,
    CallInfo,
    Decision,
    RoutingProtocol,
    RuleError,
    is_withheld,
    parse_protocol,
    parse_rule,
)

UTC = dt.UTC
BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
# 2026-01-05 is a Monday; the week Mon 5 .. Sun 11 January 2026 has no DST change anywhere.
MONDAY = dt.date(2026, 1, 5)
WEEKDAY = {name: MONDAY + dt.timedelta(days=i) for i, name in enumerate(DAYS)}
NOON_UTC = dt.datetime(2026, 1, 5, 12, 0, tzinfo=UTC)

# No example database: keep the working tree clean; few examples: keep the suite fast.
FAST = settings(max_examples=100, deadline=None, database=None)


def protocol(*rules: dict[str, Any], timezone: str = "UTC",
             holidays: tuple[str, ...] = ()) -> RoutingProtocol:
    return parse_protocol(list(rules), timezone=timezone, holidays=holidays)


def evaluate(p: RoutingProtocol, *, ani: str = "4930555", dnis: str = "100", digits: str = "",
             now: dt.datetime = NOON_UTC, rng: random.Random | None = None) -> Decision:
    return p.evaluate(CallInfo(ani=ani, dnis=dnis, digits=digits), now, rng or random.Random(0))


def ext(value: str) -> Target:
    return Target.extension(value)


def target_value(decision: Decision) -> str:
    """The extension a route decision picked."""
    assert decision.target is not None and decision.target.kind == "extension", decision
    return decision.target.value


def hits(condition: dict[str, Any], *, timezone: str = "UTC", holidays: tuple[str, ...] = (),
         **call: Any) -> bool:
    """Does a single rule with `condition` route the call (rather than fall to default)?"""
    p = protocol({"name": "r", "targets": ["hit"], **condition}, timezone=timezone,
                 holidays=holidays)
    decision = evaluate(p, **call)
    assert decision in (Decision("route", target=ext("hit"), rule="r"),
                        Decision("default", rule="(no rule matched)"))
    return decision.action == "route"


def local(day: dt.date, hour: int, minute: int = 0, tz: str = "UTC", second: int = 0
          ) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=ZoneInfo(tz))


def utc(y: int, mo: int, d: int, h: int, mi: int = 0) -> dt.datetime:
    return dt.datetime(y, mo, d, h, mi, tzinfo=UTC)


def hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


# -- conditions: numbers -----------------------------------------------------------------

def test_a_rule_without_conditions_matches_everything() -> None:
    assert hits({}, ani="", dnis="", digits="")
    assert hits({}, ani="123", dnis="999", digits="5")


@pytest.mark.parametrize(("dnis", "expected"), [
    ("100", True), ("1000", False), ("10", False), ("200", False), ("", False),
])
def test_dnis_exact(dnis: str, expected: bool) -> None:
    assert hits({"dnis": "100"}, dnis=dnis) is expected


@pytest.mark.parametrize(("dnis", "expected"), [
    ("100", True), ("200", True), ("300", False), ("1000", False),
])
def test_dnis_exact_list(dnis: str, expected: bool) -> None:
    assert hits({"dnis": ["100", "200"]}, dnis=dnis) is expected


@pytest.mark.parametrize(("dnis", "expected"), [
    ("1", True), ("100", True), ("1999", True), ("200", False), ("", False), ("01", False),
])
def test_dnis_prefix(dnis: str, expected: bool) -> None:
    assert hits({"dnis_prefix": "1"}, dnis=dnis) is expected


@pytest.mark.parametrize(("dnis", "expected"), [
    ("100", True), ("200", True), ("2", True), ("300", False), ("", False),
])
def test_dnis_prefix_list(dnis: str, expected: bool) -> None:
    assert hits({"dnis_prefix": ["1", "2"]}, dnis=dnis) is expected


@pytest.mark.parametrize(("ani", "expected"), [
    ("+4930555", True), ("+49305550", False), ("4930555", False), ("", False),
])
def test_ani_exact(ani: str, expected: bool) -> None:
    assert hits({"ani": "+4930555"}, ani=ani) is expected


def test_ani_exact_list() -> None:
    assert hits({"ani": ["111", "222"]}, ani="222")
    assert not hits({"ani": ["111", "222"]}, ani="333")


@pytest.mark.parametrize(("ani", "expected"), [
    ("+49", True), ("+4930555", True), ("+4330555", False), ("004930555", False),
    ("", False), ("anonymous", False),
])
def test_ani_prefix(ani: str, expected: bool) -> None:
    assert hits({"ani_prefix": "+49"}, ani=ani) is expected


def test_ani_prefix_list() -> None:
    assert hits({"ani_prefix": ["+49", "+43"]}, ani="+4311")
    assert not hits({"ani_prefix": ["+49", "+43"]}, ani="+4111")


WITHHELD = ["", "anonymous", "Anonymous", "ANONYMOUS", "Unknown", "unknown", " unknown ",
            "restricted", "Private", "withheld"]
PRESENTED = ["4930555", "+4930555", "0", "anon", "unknown caller", "1001"]


@pytest.mark.parametrize("ani", WITHHELD)
def test_ani_withheld_true_matches_withheld_callers(ani: str) -> None:
    assert is_withheld(ani)
    assert hits({"ani_withheld": True}, ani=ani)
    assert not hits({"ani_withheld": False}, ani=ani)


@pytest.mark.parametrize("ani", PRESENTED)
def test_ani_withheld_false_matches_presented_callers(ani: str) -> None:
    assert not is_withheld(ani)
    assert not hits({"ani_withheld": True}, ani=ani)
    assert hits({"ani_withheld": False}, ani=ani)


@pytest.mark.parametrize(("digits", "expected"), [
    ("1", True), ("2", False), ("", False), ("11", False),
])
def test_digits_exact(digits: str, expected: bool) -> None:
    assert hits({"digits": "1"}, digits=digits) is expected


def test_digits_list() -> None:
    assert hits({"digits": ["1", "2"]}, digits="2")
    assert not hits({"digits": ["1", "2"]}, digits="3")


def test_all_conditions_of_a_rule_must_hold() -> None:
    rule = {"dnis_prefix": "1", "ani_prefix": "+49", "digits": "1", "days": ["mon"],
            "hours": "09:00-17:00"}
    call = {"ani": "+4930555", "dnis": "100", "digits": "1", "now": local(MONDAY, 12)}
    assert hits(rule, **call)
    for key, bad in [("ani", "+4330555"), ("dnis", "200"), ("digits", "2"),
                     ("now", local(MONDAY, 18)), ("now", local(WEEKDAY["tue"], 12))]:
        assert not hits(rule, **{**call, key: bad}), key


# -- conditions: calendar ----------------------------------------------------------------

@pytest.mark.parametrize("day", DAYS)
def test_days_weekday(day: str) -> None:
    for other in DAYS:
        assert hits({"days": [day]}, now=local(WEEKDAY[other], 12)) is (other == day)


def test_days_list_and_case() -> None:
    weekend = {"days": ["Sat", "SUN"]}
    assert hits(weekend, now=local(WEEKDAY["sat"], 0))
    assert hits(weekend, now=local(WEEKDAY["sun"], 23, 59))
    assert not hits(weekend, now=local(WEEKDAY["fri"], 23, 59))
    assert not hits(weekend, now=local(WEEKDAY["mon"], 0))


@pytest.mark.parametrize(("hour", "minute", "expected"), [
    (8, 59, False), (9, 0, True), (12, 30, True), (16, 59, True), (17, 0, False),
    (23, 59, False), (0, 0, False),
])
def test_hours_window(hour: int, minute: int, expected: bool) -> None:
    assert hits({"hours": "09:00-17:00"}, now=local(MONDAY, hour, minute)) is expected


def test_hours_has_minute_granularity() -> None:
    assert hits({"hours": "09:00-17:00"}, now=local(MONDAY, 16, 59, second=59))
    assert not hits({"hours": "09:00-17:00"}, now=local(MONDAY, 8, 59, second=59))


def test_holiday_true_and_false() -> None:
    holidays = ("2026-12-25", "2026-01-01")
    for condition, on_holiday in [(True, True), (False, False)]:
        for day in (dt.date(2026, 12, 25), dt.date(2026, 1, 1)):
            assert hits({"holiday": condition}, holidays=holidays,
                        now=local(day, 12)) is on_holiday
        assert hits({"holiday": condition}, holidays=holidays,
                    now=local(dt.date(2026, 12, 24), 12)) is not on_holiday


def test_holiday_without_calendar_is_never_a_holiday() -> None:
    assert not hits({"holiday": True}, now=local(dt.date(2026, 12, 25), 12))
    assert hits({"holiday": False}, now=local(dt.date(2026, 12, 25), 12))


def test_holiday_is_judged_in_the_tenant_timezone() -> None:
    # 23:30 UTC on the 24th is already 00:30 on the 25th in Berlin, still the 24th in New York.
    now = utc(2026, 12, 24, 23, 30)
    assert hits({"holiday": True}, timezone=BERLIN, holidays=("2026-12-25",), now=now)
    assert not hits({"holiday": True}, timezone=NEW_YORK, holidays=("2026-12-25",), now=now)


def test_holidays_accept_toml_dates() -> None:
    # tomllib turns an unquoted 2026-12-25 into a datetime.date.
    p = parse_protocol([], timezone="UTC", holidays=[dt.date(2026, 12, 25)])
    assert p.holidays == frozenset({dt.date(2026, 12, 25)})


# -- ordering and actions ----------------------------------------------------------------

def test_first_matching_rule_wins() -> None:
    p = protocol(
        {"name": "vip", "ani": "111", "targets": ["boss"]},
        {"name": "sales", "dnis_prefix": "1", "targets": ["sales"]},
        {"name": "catch-all", "targets": ["operator"]},
    )
    assert evaluate(p, ani="111", dnis="100") == Decision("route", target=ext("boss"), rule="vip")
    assert evaluate(p, ani="222", dnis="100") == Decision("route", target=ext("sales"),
                                                          rule="sales")
    assert evaluate(p, ani="222", dnis="200") == Decision("route", target=ext("operator"),
                                                          rule="catch-all")


def test_an_earlier_catch_all_shadows_later_rules() -> None:
    p = protocol({"name": "all", "action": "default"}, {"name": "never", "targets": ["x"]})
    assert evaluate(p, dnis="100") == Decision("default", rule="all")


def test_no_rule_matched_gives_default() -> None:
    p = protocol({"name": "sales", "dnis": "100", "targets": ["1001"]})
    assert evaluate(p, dnis="999") == Decision("default", cause="",
                                               rule="(no rule matched)")


def test_empty_protocol_gives_default() -> None:
    assert evaluate(protocol()) == Decision("default", rule="(no rule matched)")


@pytest.mark.parametrize(("raw", "cause"), [({}, "busy"), ({"cause": "busy"}, "busy"),
                                            ({"cause": "congestion"}, "congestion")])
def test_reject_with_cause(raw: dict[str, Any], cause: str) -> None:
    p = protocol({"name": "blocked", "action": "reject", **raw})
    assert evaluate(p) == Decision("reject", cause=cause, rule="blocked")


def test_default_action() -> None:
    p = protocol({"name": "fallback", "action": "default"})
    assert evaluate(p) == Decision("default", cause="", rule="fallback")


def test_unnamed_rule_is_named_by_position() -> None:
    p = protocol({"dnis": "1", "targets": ["a"]}, {"targets": ["b"]})
    assert evaluate(p, dnis="1").rule == "rules[0]"
    assert evaluate(p, dnis="2").rule == "rules[1]"


def test_parse_where_prefixes_default_names() -> None:
    p = parse_protocol([{"targets": ["a"]}], timezone="UTC", where="tenants.acme.rules")
    assert evaluate(p).rule == "tenants.acme.rules[0]"


# -- strategies --------------------------------------------------------------------------

def test_first_strategy_always_takes_the_first_target() -> None:
    for raw in ({}, {"strategy": "first"}):
        p = protocol({"name": "r", "targets": ["a", "b", "c"], **raw})
        assert {target_value(evaluate(p, rng=random.Random(i))) for i in range(20)} == {"a"}


def test_round_robin_cycles() -> None:
    p = protocol({"name": "r", "targets": ["a", "b", "c"], "strategy": "round_robin"})
    assert [target_value(evaluate(p)) for _ in range(7)] == ["a", "b", "c", "a", "b", "c", "a"]


def test_round_robin_single_target() -> None:
    p = protocol({"name": "r", "targets": ["a"], "strategy": "round_robin"})
    assert [target_value(evaluate(p)) for _ in range(3)] == ["a", "a", "a"]


def test_round_robin_cursor_is_per_rule() -> None:
    p = protocol(
        {"name": "one", "dnis": "1", "targets": ["a", "b", "c"], "strategy": "round_robin"},
        {"name": "two", "dnis": "2", "targets": ["x", "y"], "strategy": "round_robin"},
    )
    seen = [target_value(evaluate(p, dnis=d)) for d in ["1", "2", "1", "1", "2", "2", "1"]]
    assert seen == ["a", "x", "b", "c", "y", "x", "a"]


def test_round_robin_cursor_only_moves_when_the_rule_is_chosen() -> None:
    p = protocol({"name": "first", "dnis": "1", "targets": ["z"]},
                 {"name": "rr", "targets": ["a", "b"], "strategy": "round_robin"})
    seen = [target_value(evaluate(p, dnis=d)) for d in ["2", "1", "1", "2", "1", "2"]]
    assert seen == ["a", "z", "z", "b", "z", "a"]


def test_round_robin_state_is_per_protocol_instance() -> None:
    rule = {"name": "rr", "targets": ["a", "b"], "strategy": "round_robin"}
    p1, p2 = protocol(rule), protocol(rule)
    assert target_value(evaluate(p1)) == "a"
    assert target_value(evaluate(p1)) == "b"
    assert target_value(evaluate(p2)) == "a"


def test_split_honours_weights() -> None:
    p = protocol({"name": "s", "targets": ["a", "b", "c", "off"], "strategy": "split",
                  "weights": [60, 30, 10, 0]})
    rng = random.Random(20260105)
    draws = 10_000
    counts = Counter(target_value(evaluate(p, rng=rng)) for _ in range(draws))
    assert counts["off"] == 0
    assert set(counts) == {"a", "b", "c"}
    assert 0.55 < counts["a"] / draws < 0.65
    assert 0.25 < counts["b"] / draws < 0.35
    assert 0.07 < counts["c"] / draws < 0.13


def test_split_is_reproducible_with_the_same_seed() -> None:
    rule = {"name": "s", "targets": ["a", "b"], "strategy": "split", "weights": [1, 1]}
    def run() -> list[str]:
        p, rng = protocol(rule), random.Random(7)
        return [target_value(evaluate(p, rng=rng)) for _ in range(50)]

    first, second = run(), run()
    assert first == second
    assert set(first) == {"a", "b"}


def test_split_with_a_single_positive_weight_is_deterministic() -> None:
    p = protocol({"name": "s", "targets": ["a", "b", "c"], "strategy": "split",
                  "weights": [0, 5, 0]})
    rng = random.Random(1)
    assert {target_value(evaluate(p, rng=rng)) for _ in range(500)} == {"b"}


@FAST
@given(
    weights=st.lists(st.integers(min_value=0, max_value=100), min_size=1, max_size=8)
    .filter(lambda w: sum(w) > 0),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_split_always_picks_a_positive_weight_target(weights: list[int], seed: int) -> None:
    targets = [f"t{i}" for i in range(len(weights))]
    p = protocol({"name": "s", "targets": targets, "strategy": "split", "weights": weights})
    rng = random.Random(seed)
    for _ in range(20):
        decision = evaluate(p, rng=rng)
        assert decision.action == "route"
        assert weights[targets.index(target_value(decision))] > 0


# -- timezones and DST -------------------------------------------------------------------

OFFICE = {"name": "office", "hours": "09:00-17:00", "targets": ["desk"]}


def office_open(timezone: str, now: dt.datetime) -> bool:
    return evaluate(protocol(OFFICE, timezone=timezone), now=now).action == "route"


def test_same_instant_matches_in_one_timezone_not_another() -> None:
    morning = utc(2026, 1, 5, 8, 30)  # 09:30 in Berlin, 03:30 in New York
    assert office_open(BERLIN, morning)
    assert not office_open(NEW_YORK, morning)
    assert not office_open("UTC", morning)
    evening = utc(2026, 1, 5, 17, 30)  # 18:30 in Berlin, 12:30 in New York
    assert not office_open(BERLIN, evening)
    assert office_open(NEW_YORK, evening)


def test_weekday_is_taken_in_the_tenant_timezone() -> None:
    now = utc(2026, 1, 5, 2, 0)  # Monday 02:00 UTC is Sunday 21:00 in New York
    sunday = {"name": "sun", "days": ["sun"], "targets": ["x"]}
    assert evaluate(protocol(sunday, timezone=NEW_YORK), now=now).action == "route"
    assert evaluate(protocol(sunday, timezone="UTC"), now=now).action == "default"


def test_non_utc_aware_now_is_converted() -> None:
    # The caller may pass any aware datetime; only the instant matters.
    tokyo = dt.datetime(2026, 1, 5, 17, 30, tzinfo=ZoneInfo("Asia/Tokyo"))  # 08:30 UTC
    assert office_open(BERLIN, tokyo)
    assert not office_open(NEW_YORK, tokyo)


def test_berlin_spring_forward_2026() -> None:
    # 2026-03-29 01:00 UTC: Berlin jumps from 02:00 CET (+1) to 03:00 CEST (+2).
    assert office_open(BERLIN, utc(2026, 3, 27, 8, 30))  # Fri 09:30 CET
    assert not office_open(BERLIN, utc(2026, 3, 27, 7, 30))  # Fri 08:30 CET
    assert office_open(BERLIN, utc(2026, 3, 30, 7, 30))  # Mon 09:30 CEST
    assert not office_open(BERLIN, utc(2026, 3, 30, 15, 30))  # Mon 17:30 CEST
    assert office_open(BERLIN, utc(2026, 3, 30, 14, 59))  # Mon 16:59 CEST
    night = protocol({"name": "n", "hours": "01:00-03:00", "targets": ["x"]}, timezone=BERLIN)
    assert evaluate(night, now=utc(2026, 3, 29, 0, 59)).action == "route"  # 01:59 CET
    assert evaluate(night, now=utc(2026, 3, 29, 1, 0)).action == "default"  # 03:00 CEST


def test_berlin_skipped_hour_never_matches() -> None:
    # Local 02:00-03:00 does not exist on 2026-03-29 in Berlin: no UTC minute of the day hits it.
    p = protocol({"name": "gap", "hours": "02:00-03:00", "targets": ["x"]}, timezone=BERLIN)
    start = utc(2026, 3, 28, 12, 0)
    matched = [start + dt.timedelta(minutes=m) for m in range(0, 24 * 60)
               if evaluate(p, now=start + dt.timedelta(minutes=m)).action == "route"]
    assert matched == []
    # ... while the day before it exists (01:00-02:00 UTC is 02:00-03:00 CET).
    day_before = [m for m in range(0, 24 * 60)
                  if evaluate(p, now=utc(2026, 3, 27, 0) + dt.timedelta(minutes=m)).action
                  == "route"]
    assert day_before == list(range(60, 120))


def test_new_york_spring_forward_and_fall_back_2026() -> None:
    # Spring forward 2026-03-08 07:00 UTC (EST -5 -> EDT -4).
    assert not office_open(NEW_YORK, utc(2026, 3, 6, 13, 30))  # Fri 08:30 EST
    assert office_open(NEW_YORK, utc(2026, 3, 9, 13, 30))  # Mon 09:30 EDT
    assert office_open(NEW_YORK, utc(2026, 3, 6, 21, 59))  # Fri 16:59 EST
    assert not office_open(NEW_YORK, utc(2026, 3, 9, 21, 0))  # Mon 17:00 EDT
    # Fall back 2026-11-01 06:00 UTC (EDT -> EST): local 01:30 happens twice, both match.
    early = protocol({"name": "e", "hours": "01:00-02:00", "targets": ["x"]}, timezone=NEW_YORK)
    assert evaluate(early, now=utc(2026, 11, 1, 5, 30)).action == "route"  # 01:30 EDT
    assert evaluate(early, now=utc(2026, 11, 1, 6, 30)).action == "route"  # 01:30 EST
    assert evaluate(early, now=utc(2026, 11, 1, 7, 0)).action == "default"  # 02:00 EST
    minutes = [m for m in range(24 * 60)
               if evaluate(early, now=utc(2026, 11, 1, 0) + dt.timedelta(minutes=m)).action
               == "route"]
    assert len(minutes) == 120  # the window lasted two real hours that night


# -- windows across midnight -------------------------------------------------------------

NIGHT = "22:00-06:00"


@pytest.mark.parametrize(("hour", "minute", "expected"), [
    (23, 30, True), (5, 59, True), (22, 0, True), (0, 0, True), (6, 0, False),
    (21, 59, False), (12, 0, False),
])
def test_window_across_midnight(hour: int, minute: int, expected: bool) -> None:
    assert hits({"hours": NIGHT}, now=local(MONDAY, hour, minute)) is expected


@pytest.mark.parametrize(("day", "hour", "expected"), [
    ("fri", 23, True),  # opened Friday evening
    ("sat", 2, True),  # morning part of the window that opened on Friday
    ("sat", 5, True),
    ("fri", 2, False),  # morning part of Thursday's window
    ("sat", 6, False),  # Friday's window has closed
    ("sat", 23, False),  # Saturday's window
    ("thu", 23, False),
])
def test_window_across_midnight_days_apply_to_the_opening_day(day: str, hour: int,
                                                               expected: bool) -> None:
    condition = {"hours": NIGHT, "days": ["fri"]}
    assert hits(condition, now=local(WEEKDAY[day], hour)) is expected


def test_window_across_midnight_wraps_from_sunday_to_monday() -> None:
    condition = {"hours": NIGHT, "days": ["sun"]}
    assert hits(condition, now=local(WEEKDAY["mon"], 3))
    assert not hits(condition, now=local(WEEKDAY["sun"], 3))


def test_window_across_midnight_in_tenant_timezone() -> None:
    # Saturday 00:30 UTC is Saturday 01:30 in Berlin but Friday 19:30 in New York.
    now = utc(2026, 1, 10, 0, 30)
    rule = {"name": "n", "hours": NIGHT, "days": ["fri"], "targets": ["x"]}
    assert evaluate(protocol(rule, timezone=BERLIN), now=now).action == "route"
    assert evaluate(protocol(rule, timezone=NEW_YORK), now=now).action == "default"


def test_full_day_window_covers_every_minute() -> None:
    p = protocol({"name": "all", "hours": "00:00-24:00", "targets": ["x"]})
    start = local(MONDAY, 0)
    assert all(evaluate(p, now=start + dt.timedelta(minutes=m)).action == "route"
               for m in range(24 * 60))


def test_full_day_window_with_days_stops_at_midnight() -> None:
    condition = {"hours": "00:00-24:00", "days": ["mon"]}
    assert hits(condition, now=local(WEEKDAY["mon"], 0, 0))
    assert hits(condition, now=local(WEEKDAY["mon"], 23, 59, second=59))
    assert not hits(condition, now=local(WEEKDAY["tue"], 0, 0))
    assert not hits(condition, now=local(WEEKDAY["sun"], 23, 59))


def test_window_ending_at_midnight() -> None:
    assert hits({"hours": "22:00-24:00"}, now=local(MONDAY, 23, 59))
    assert not hits({"hours": "22:00-24:00"}, now=local(MONDAY, 0, 0))
    # "22:00-00:00" ends before it starts: across midnight with an empty morning part.
    assert hits({"hours": "22:00-00:00", "days": ["mon"]}, now=local(WEEKDAY["mon"], 23))
    assert not hits({"hours": "22:00-00:00", "days": ["mon"]}, now=local(WEEKDAY["tue"], 0))


MINUTES_IN_WEEK = 7 * 24 * 60


@FAST
@given(
    start=st.integers(min_value=1, max_value=24 * 60 - 1),
    end_fraction=st.floats(min_value=0, max_value=1, exclude_max=True),
    days=st.sets(st.sampled_from(DAYS), min_size=1),
    minute=st.integers(min_value=0, max_value=MINUTES_IN_WEEK - 1),
)
def test_window_across_midnight_is_evening_plus_next_morning(
    start: int, end_fraction: float, days: set[str], minute: int
) -> None:
    end = int(start * end_fraction)  # 0 <= end < start: the window runs across midnight
    across = protocol({"name": "w", "hours": f"{hhmm(start)}-{hhmm(end)}",
                       "days": sorted(days), "targets": ["x"]})
    pieces: list[dict[str, Any]] = []
    for i, day in enumerate(sorted(days)):
        following = DAYS[(DAYS.index(day) + 1) % 7]
        pieces.append({"name": f"eve{i}", "hours": f"{hhmm(start)}-24:00", "days": [day],
                       "targets": ["x"]})
        if end > 0:
            pieces.append({"name": f"morn{i}", "hours": f"00:00-{hhmm(end)}",
                           "days": [following], "targets": ["x"]})
    union = protocol(*pieces)
    now = local(MONDAY, 0) + dt.timedelta(minutes=minute)
    assert (evaluate(across, now=now).action == "route") == (
        evaluate(union, now=now).action == "route")


@FAST
@given(
    start=st.integers(min_value=0, max_value=24 * 60 - 1),
    length=st.integers(min_value=1, max_value=24 * 60),
    days=st.sets(st.sampled_from(DAYS), min_size=1),
    minute=st.integers(min_value=0, max_value=MINUTES_IN_WEEK - 1),
)
def test_window_matches_reference_model(start: int, length: int, days: set[str],
                                        minute: int) -> None:
    end = min(start + length, 24 * 60)  # start < end <= 24:00: a window within one day
    text = f"{hhmm(start)}-{hhmm(end)}"
    day_index, minute_of_day = divmod(minute, 24 * 60)
    expected = DAYS[day_index] in days and start <= minute_of_day < end
    now = local(MONDAY, 0) + dt.timedelta(minutes=minute)
    assert hits({"hours": text, "days": sorted(days)}, now=now) is expected


# -- parse errors ------------------------------------------------------------------------

GOOD = {"name": "ok", "targets": ["1001"]}


def parse_error(bad: dict[str, Any], **kwargs: Any) -> str:
    """Parse [GOOD, bad]: the bad rule sits at position 1, so messages must say rules[1]."""
    with pytest.raises(RuleError) as info:
        parse_protocol([GOOD, bad], timezone=kwargs.pop("timezone", "UTC"), **kwargs)
    return str(info.value)


def test_unknown_key() -> None:
    message = parse_error({"targets": ["a"], "dnis_prefx": "1"})
    assert "rules[1]" in message
    assert "unknown key" in message
    assert "'dnis_prefx'" in message


@pytest.mark.parametrize("action", ["forward", "Route", "", 1])
def test_bad_action(action: Any) -> None:
    message = parse_error({"action": action, "targets": ["a"]})
    assert "rules[1].action" in message
    assert repr(action) in message


@pytest.mark.parametrize("raw", [{}, {"targets": []}, {"action": "route", "targets": []}])
def test_route_without_targets(raw: dict[str, Any]) -> None:
    message = parse_error(raw)
    assert "rules[1].targets" in message
    assert "at least one target" in message


@pytest.mark.parametrize("target", ["1001,1", "", "a b", "10 01", "x" * 65, "caf\u00e9",
                                    "1001;hangup", "1001\n2", "\n", "1001/2", "a.b"])
def test_bad_target_alphabet(target: str) -> None:
    message = parse_error({"targets": ["1001", target]})
    assert "rules[1].targets" in message
    assert repr(target) in message


@pytest.mark.parametrize("target", ["x\n", "1001\n"])
def test_bad_target_trailing_newline(target: str) -> None:
    message = parse_error({"targets": [target]})
    assert "rules[1].targets" in message
    assert repr(target) in message


@pytest.mark.parametrize("target", ["1001", "operator", "+4930555", "*98#", "a_b-c", "x" * 64])
def test_good_targets(target: str) -> None:
    assert parse_rule({"targets": [target]}, where="r").targets == (target,)


@pytest.mark.parametrize("strategy", ["random", "RoundRobin", "", None])
def test_bad_strategy(strategy: Any) -> None:
    message = parse_error({"targets": ["a"], "strategy": strategy})
    assert "rules[1].strategy" in message
    assert repr(strategy) in message


@pytest.mark.parametrize("weights", [
    [], [1], [1, 2, 3], [1, -1], [0, 0], [1.5, 1], ["1", "1"], "50/50", [None, 1],
])
def test_bad_weights(weights: Any) -> None:
    message = parse_error({"targets": ["a", "b"], "strategy": "split", "weights": weights})
    assert "rules[1].weights" in message
    assert repr(weights) in message or repr(list(weights)) in message


def test_split_without_weights() -> None:
    message = parse_error({"targets": ["a", "b"], "strategy": "split"})
    assert "rules[1].weights" in message
    assert "[]" in message


@pytest.mark.parametrize("strategy", ["split", "first"])
def test_non_iterable_weights(strategy: str) -> None:
    message = parse_error({"targets": ["a"], "strategy": strategy, "weights": 5})
    assert "rules[1].weights" in message
    assert "5" in message


def test_boolean_weights() -> None:
    message = parse_error({"targets": ["a", "b"], "strategy": "split", "weights": [True, False]})
    assert "rules[1].weights" in message


@pytest.mark.parametrize("hours", [
    "9-17", "09:00-17:60", "25:00-26:00", "24:00-01:00", "09:00 - 17:00", "0900-1700",
    "09:00", "", "09:00-17:00-18:00", 900, None,
])
def test_bad_hours_text(hours: Any) -> None:
    message = parse_error({"targets": ["a"], "hours": hours})
    assert "rules[1].hours" in message
    assert "HH:MM-HH:MM" in message
    assert repr(hours) in message


@pytest.mark.parametrize("hours", ["09:00-09:00", "00:00-00:00", "23:00-24:30", "00:00-24:01"])
def test_empty_or_out_of_range_hours(hours: str) -> None:
    message = parse_error({"targets": ["a"], "hours": hours})
    assert "rules[1].hours" in message
    assert repr(hours) in message


def test_hours_trailing_newline() -> None:
    message = parse_error({"targets": ["a"], "hours": "22:00-06:00\n"})
    assert "rules[1].hours" in message


@pytest.mark.parametrize("timezone", ["Mars/Base", "", "Europe/Berlinn", "../etc/passwd",
                                      "UTC\n", "+02:00"])
def test_unknown_timezone(timezone: str) -> None:
    with pytest.raises(RuleError) as info:
        parse_protocol([GOOD], timezone=timezone)
    message = str(info.value)
    assert message.startswith("timezone:")
    assert repr(timezone) in message


@pytest.mark.parametrize("text", ["2026-02-30", "12/25/2026", "2026-13-01", "tomorrow", ""])
def test_bad_holiday_date(text: str) -> None:
    with pytest.raises(RuleError) as info:
        parse_protocol([GOOD], timezone="UTC", holidays=["2026-12-25", text])
    message = str(info.value)
    assert "holidays[1]" in message
    assert repr(text) in message


def test_duplicate_rule_names() -> None:
    message = parse_error({"name": "ok", "targets": ["b"]})
    assert message.startswith("rules[1].name:")
    assert "'ok'" in message
    assert "already used by rules[0]" in message


def test_duplicate_rule_names_with_custom_where() -> None:
    with pytest.raises(RuleError, match=r"^tenants\.acme\.rules\[1\]\.name: rule name 'x' is "
                       r"already used by tenants\.acme\.rules\[0\]$"):
        parse_protocol([{"name": "x", "action": "default"}, {"name": "x", "action": "default"}],
                       timezone="UTC", where="tenants.acme.rules")


@pytest.mark.parametrize(("raw", "key", "value"), [
    ({"targets": ["a"], "days": ["funday"]}, "days", "['funday']"),
    ({"targets": ["a"], "days": []}, "days", "[]"),
    ({"targets": ["a"], "days": "weekdays"}, "days", "['weekdays']"),
    ({"action": "reject", "cause": "busy_here"}, "cause", "'busy_here'"),
    ({"targets": ["a"], "ani_withheld": "yes"}, "ani_withheld", "'yes'"),
    ({"targets": ["a"], "ani_withheld": 1}, "ani_withheld", "1"),
    ({"targets": ["a"], "holiday": "true"}, "holiday", "'true'"),
    ({"targets": ["a"], "dnis": 100}, "dnis", "100"),
    ({"targets": ["a"], "dnis_prefix": [1]}, "dnis_prefix", "[1]"),
    ({"targets": ["a"], "ani": None}, "ani", "None"),
    ({"targets": ["a"], "ani_prefix": {"x": 1}}, "ani_prefix", "{'x': 1}"),
    ({"targets": ["a"], "digits": [1, 2]}, "digits", "[1, 2]"),
    ({"targets": "a b"}, "targets", "'a b'"),
    ({"targets": [1001]}, "targets", "[1001]"),
    ({"name": "", "targets": ["a"]}, "name", "''"),
    ({"name": 5, "targets": ["a"]}, "name", "5"),
])
def test_other_bad_values_name_rule_key_and_value(raw: dict[str, Any], key: str,
                                                  value: str) -> None:
    message = parse_error(raw)
    assert f"rules[1].{key}" in message
    assert value in message


@pytest.mark.parametrize("raw", ["route", 5, ["targets"]])
def test_rule_must_be_a_table(raw: Any) -> None:
    with pytest.raises(RuleError) as info:
        parse_protocol([GOOD, raw], timezone="UTC")
    assert "rules[1]" in str(info.value)
    assert repr(raw) in str(info.value)


@pytest.mark.parametrize("rules", ["rules", {"name": "x"}, 5])
def test_rules_must_be_a_list(rules: Any) -> None:
    with pytest.raises(RuleError, match=r"^rules: must be a list"):
        parse_protocol(rules, timezone="UTC")


def test_rule_errors_are_value_errors() -> None:
    assert issubclass(RuleError, ValueError)


def test_parse_keeps_all_fields() -> None:
    p = parse_protocol([{
        "name": "full", "dnis": "100", "dnis_prefix": ["1", "2"], "ani": "111",
        "ani_prefix": "+49", "ani_withheld": False, "days": ["Mon", "fri"],
        "hours": "22:00-06:00", "holiday": False, "digits": ["1"], "targets": ["a", "b"],
        "strategy": "split", "weights": [3, 1],
    }], timezone=BERLIN, holidays=["2026-12-25"])
    (rule,) = p.rules
    assert rule.dnis == ("100",)
    assert rule.dnis_prefix == ("1", "2")
    assert rule.ani == ("111",)
    assert rule.ani_prefix == ("+49",)
    assert rule.ani_withheld is False
    assert rule.days == frozenset({0, 4})
    assert rule.hours == (22 * 60, 6 * 60)
    assert rule.holiday is False
    assert rule.digits == ("1",)
    assert rule.targets == ("a", "b")
    assert rule.strategy == "split"
    assert rule.weights == (3, 1)
    assert p.timezone == ZoneInfo(BERLIN)
    assert p.holidays == frozenset({dt.date(2026, 12, 25)})
