"""Per-venue alarms over a sliding window; pure: no I/O, no clock of its own.

Contract. The owner feeds every route request (`requested`), every final disposition
(`disposed`, saying whether it was a default route) and every call that Asterisk shows
entering a venue (`entered`: the AMI Newchannel of a channel whose context is the
venue), each with `now` from one monotonic clock, and calls `evaluate(now, venues)`
about once a second. `evaluate` returns one `AlarmChange` per alarm that was raised or
cleared since the last call (the owner logs each once) and drops the state of venues
no longer configured, clearing their alarms. Two alarms per venue:

- `default_ratio`: at least `min_calls` calls left the venue in the window and more
  than `default_ratio` of them took the default route;
- `no_requests`: at least `min_calls` calls entered the venue in the window (ignoring
  the last `ENTRY_GRACE` seconds, so a call whose request is on its way does not count)
  and not one route request came from it: the venue's AGI URL is missing or wrong.

With fewer than `min_calls` calls in the window an alarm says nothing and is clear:
both follow the window, so an alarm clears when the venue recovers or falls silent.
Counts are kept in `WINDOW_BUCKETS` buckets per window, so a call is forgotten between
`window - window/WINDOW_BUCKETS` and `window` seconds after it was counted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

ALARM_DEFAULT_RATIO = "default_ratio"
ALARM_NO_REQUESTS = "no_requests"
ALARMS = (ALARM_DEFAULT_RATIO, ALARM_NO_REQUESTS)
# Buckets per window: a 60 s window moves in 1 s steps; the error on a count is at most
# one bucket's calls, and evaluation sums 60 integers per series (microseconds).
WINDOW_BUCKETS = 60
# A route request follows its channel's Newchannel by a few dialplan priorities
# (milliseconds); one second also covers a loaded machine and the AMI reader's batching
# (ami_bridge/ami/client.py, 5 ms). At most a quarter of the window, for short windows.
ENTRY_GRACE = 1.0


class SlidingCount:
    """Events counted in the last `window` seconds, in `buckets` time buckets."""

    __slots__ = ("_counts", "_newest", "_step")

    def __init__(self, window: float, buckets: int = WINDOW_BUCKETS) -> None:
        if window <= 0 or buckets < 1:
            raise ValueError(f"window {window!r} s in {buckets!r} buckets: both must be > 0")
        self._step = window / buckets
        self._counts = [0] * buckets
        self._newest: int | None = None  # the absolute bucket number of the newest bucket

    @property
    def step(self) -> float:
        return self._step

    def _advance(self, now: float) -> int:
        index = math.floor(now / self._step)
        newest = self._newest
        if newest is None or index - newest >= len(self._counts):
            self._counts = [0] * len(self._counts)
        elif index > newest:
            size = len(self._counts)
            for passed in range(newest + 1, index + 1):
                self._counts[passed % size] = 0
        else:
            return newest  # the same bucket, or a clock that stepped back: count it here
        self._newest = index
        return index

    def add(self, now: float, n: int = 1) -> None:
        index = self._advance(now)  # first: it may replace the list
        self._counts[index % len(self._counts)] += n

    def total(self, now: float, *, skip_newest: int = 0) -> int:
        """Events in the window, less those of the `skip_newest` newest buckets."""
        newest = self._advance(now)
        size = len(self._counts)
        if skip_newest <= 0:
            return sum(self._counts)
        return sum(self._counts[b % size] for b in range(newest - size + 1,
                                                          newest - skip_newest + 1))


@dataclass(frozen=True)
class AlarmChange:
    """An alarm raised (`raised=True`) or cleared, with the window's figures behind it."""

    alarm: str
    venue: str
    tenant: str
    raised: bool
    calls: int  # calls that left (default_ratio) or entered (no_requests) in the window
    defaults: int = 0  # default_ratio: of `calls`, those default-routed
    requests: int = 0  # no_requests: route requests from the venue in the window


@dataclass
class _Venue:
    tenant: str
    requests: SlidingCount
    finals: SlidingCount
    defaults: SlidingCount
    entered: SlidingCount
    raised: set[str] = field(default_factory=set)


class AlarmBook:
    def __init__(self, *, window: float, default_ratio: float, min_calls: int,
                 buckets: int = WINDOW_BUCKETS) -> None:
        self.window, self.default_ratio, self.min_calls = window, default_ratio, min_calls
        self._buckets = buckets
        self._venues: dict[str, _Venue] = {}
        step = window / buckets
        self._grace_buckets = min(math.ceil(ENTRY_GRACE / step), buckets // 4)

    def _venue(self, venue: str, tenant: str) -> _Venue:
        state = self._venues.get(venue)
        if state is None:
            window, buckets = self.window, self._buckets
            state = self._venues[venue] = _Venue(
                tenant, SlidingCount(window, buckets), SlidingCount(window, buckets),
                SlidingCount(window, buckets), SlidingCount(window, buckets))
        return state

    # -- fed by the owner -------------------------------------------------------------
    def requested(self, venue: str, tenant: str, now: float) -> None:
        self._venue(venue, tenant).requests.add(now)

    def disposed(self, venue: str, tenant: str, now: float, *, default: bool) -> None:
        state = self._venue(venue, tenant)
        state.finals.add(now)
        if default:
            state.defaults.add(now)

    def entered(self, venue: str, tenant: str, now: float) -> None:
        self._venue(venue, tenant).entered.add(now)

    # -- read by the owner ------------------------------------------------------------
    def evaluate(self, now: float, venues: Mapping[str, str]) -> list[AlarmChange]:
        """Changes since the last call; `venues`: the configured venue -> tenant map."""
        changes: list[AlarmChange] = []
        for name in [v for v in self._venues if venues.get(v) != self._venues[v].tenant]:
            state = self._venues.pop(name)
            changes += [AlarmChange(alarm, name, state.tenant, False, 0)
                        for alarm in sorted(state.raised)]
        for name, state in self._venues.items():
            finals, defaults = state.finals.total(now), state.defaults.total(now)
            ratio_on = finals >= self.min_calls and defaults > self.default_ratio * finals
            changes += self._change(state, name, ALARM_DEFAULT_RATIO, ratio_on,
                                    calls=finals, defaults=defaults)
            entered = state.entered.total(now, skip_newest=self._grace_buckets)
            requests = state.requests.total(now)
            silent_on = entered >= self.min_calls and requests == 0
            changes += self._change(state, name, ALARM_NO_REQUESTS, silent_on,
                                    calls=entered, requests=requests)
        return changes

    @staticmethod
    def _change(state: _Venue, venue: str, alarm: str, on: bool, *, calls: int,
                defaults: int = 0, requests: int = 0) -> list[AlarmChange]:
        if on == (alarm in state.raised):
            return []
        if on:
            state.raised.add(alarm)
        else:
            state.raised.discard(alarm)
        return [AlarmChange(alarm, venue, state.tenant, on, calls, defaults, requests)]

    def raised(self, alarm: str, venue: str) -> bool:
        state = self._venues.get(venue)
        return state is not None and alarm in state.raised
