"""The per-venue alarms (ami_bridge.metrics.alarms) on a fake clock: no loop, no sleep."""

from __future__ import annotations

import pytest

from ami_bridge.metrics.alarms import (
    ALARM_DEFAULT_RATIO,
    ALARM_NO_REQUESTS,
    AlarmBook,
    AlarmChange,
    SlidingCount,
)

VENUES = {"acme-venue": "acme", "globex-venue": "globex"}


def book(**kw: float) -> AlarmBook:
    options = {"window": 60.0, "default_ratio": 0.5, "min_calls": 4} | kw
    return AlarmBook(window=options["window"], default_ratio=options["default_ratio"],
                     min_calls=int(options["min_calls"]))


def test_sliding_count_forgets_after_the_window_and_not_before() -> None:
    count = SlidingCount(10.0, buckets=10)
    count.add(100.0)
    count.add(100.5, 2)
    count.add(104.0)
    assert count.total(104.0) == 4
    assert count.total(109.9) == 4  # 100.x is still inside (100, 110)
    assert count.total(110.0) == 1  # the 100 s bucket left; 104 stays
    assert count.total(113.9) == 1
    assert count.total(114.0) == 0
    count.add(500.0)  # long silence: everything older is gone at once
    assert count.total(500.0) == 1


def test_sliding_count_skips_the_newest_buckets_on_request() -> None:
    count = SlidingCount(10.0, buckets=10)
    count.add(100.0)
    count.add(105.2)
    assert count.total(105.5) == 2
    assert count.total(105.5, skip_newest=1) == 1
    assert count.total(105.5, skip_newest=6) == 0


def test_sliding_count_refuses_a_window_of_nothing() -> None:
    with pytest.raises(ValueError, match="window"):
        SlidingCount(0.0)


def test_default_ratio_raises_once_and_clears_when_the_venue_recovers() -> None:
    alarms, now = book(), 1000.0
    for i in range(6):  # 4 of 6 default: 0.67 > 0.5
        alarms.requested("acme-venue", "acme", now + i)
        alarms.disposed("acme-venue", "acme", now + i, default=i < 4)
    [raised] = alarms.evaluate(now + 6, VENUES)
    assert raised == AlarmChange(ALARM_DEFAULT_RATIO, "acme-venue", "acme", True, calls=6,
                                 defaults=4)
    assert alarms.raised(ALARM_DEFAULT_RATIO, "acme-venue")
    assert alarms.evaluate(now + 7, VENUES) == []  # one line per change, not per second
    for _ in range(10):  # the VTS is back: 4 of 16 default
        alarms.requested("acme-venue", "acme", now + 8)
        alarms.disposed("acme-venue", "acme", now + 8, default=False)
    [cleared] = alarms.evaluate(now + 9, VENUES)
    assert (cleared.alarm, cleared.raised, cleared.calls, cleared.defaults) == (
        ALARM_DEFAULT_RATIO, False, 16, 4)
    assert not alarms.raised(ALARM_DEFAULT_RATIO, "acme-venue")


def test_default_ratio_needs_min_calls_and_exactly_the_threshold_is_no_alarm() -> None:
    alarms = book(min_calls=4)
    for i in range(3):  # 3 of 3 default, but fewer than min_calls
        alarms.disposed("acme-venue", "acme", 10.0 + i, default=True)
    assert alarms.evaluate(13.0, VENUES) == []
    alarms.disposed("acme-venue", "acme", 13.0, default=False)  # 3 of 4 = 0.75
    assert [c.raised for c in alarms.evaluate(13.5, VENUES)] == [True]
    other = book(min_calls=4)
    for i in range(4):  # 2 of 4 = 0.5: not above 0.5
        other.disposed("acme-venue", "acme", 10.0, default=i % 2 == 0)
    assert other.evaluate(11.0, VENUES) == []


def test_default_ratio_clears_when_the_window_empties() -> None:
    alarms = book(window=10.0, min_calls=2)
    for _ in range(3):
        alarms.disposed("acme-venue", "acme", 100.0, default=True)
    assert [c.raised for c in alarms.evaluate(100.5, VENUES)] == [True]
    assert alarms.evaluate(109.0, VENUES) == []
    assert [c.raised for c in alarms.evaluate(110.5, VENUES)] == [False]


def test_calls_entering_without_requests_raise_no_requests_for_that_venue_only() -> None:
    alarms = book(window=10.0, min_calls=3)
    for i in range(3):
        alarms.entered("globex-venue", "globex", 100.0 + i)  # AGI URL wrong: no requests
        alarms.entered("acme-venue", "acme", 100.0 + i)
        alarms.requested("acme-venue", "acme", 100.01 + i)
    changes = alarms.evaluate(104.0, VENUES)
    assert changes == [AlarmChange(ALARM_NO_REQUESTS, "globex-venue", "globex", True,
                                   calls=3)]
    alarms.requested("globex-venue", "globex", 105.0)  # the URL was fixed
    [cleared] = alarms.evaluate(105.5, VENUES)
    assert (cleared.alarm, cleared.venue, cleared.raised, cleared.requests) == (
        ALARM_NO_REQUESTS, "globex-venue", False, 1)


def test_a_call_whose_request_is_on_its_way_is_not_counted_yet() -> None:
    alarms = book(window=60.0, min_calls=1)
    alarms.entered("acme-venue", "acme", 100.0)  # its request comes a few ms later
    assert alarms.evaluate(100.001, VENUES) == []
    alarms.requested("acme-venue", "acme", 100.004)
    assert alarms.evaluate(103.0, VENUES) == []
    alarms.entered("globex-venue", "globex", 100.0)  # no request ever
    assert alarms.evaluate(100.5, VENUES) == []  # within the grace second
    assert [c.alarm for c in alarms.evaluate(102.5, VENUES)] == [ALARM_NO_REQUESTS]


def test_a_venue_removed_by_a_reload_has_its_alarms_cleared_and_forgotten() -> None:
    alarms = book(window=10.0, min_calls=1)
    alarms.entered("globex-venue", "globex", 100.0)
    assert [c.raised for c in alarms.evaluate(102.0, VENUES)] == [True]
    changes = alarms.evaluate(103.0, {"acme-venue": "acme"})
    assert changes == [AlarmChange(ALARM_NO_REQUESTS, "globex-venue", "globex", False, 0)]
    assert not alarms.raised(ALARM_NO_REQUESTS, "globex-venue")
