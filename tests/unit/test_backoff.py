"""The one Backoff (ami_bridge/backoff.py): pure, clock and random source passed in."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ami_bridge.backoff import Backoff

FAST = settings(max_examples=100, deadline=None, database=None)


def test_backoff_is_exponential_capped_and_jittered_within_bounds() -> None:
    backoff = Backoff(initial=0.5, factor=2, maximum=4, jitter=0.5, random=lambda: 1.0)
    assert [backoff.next_delay() for _ in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    backoff.reset()
    assert Backoff(random=lambda: 0.0).next_delay() == 0.5
    backoff.failures = 10_000
    assert backoff.base() == 4
    with pytest.raises(ValueError):
        Backoff(jitter=1.0)


def test_a_stable_run_resets_and_a_quick_one_does_not() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0, jitter=0.0, stable_after=10.0)
    delays = []
    t = 0.0
    for _ in range(4):  # four runs that fail after 1 s each
        backoff.started(t)
        t += 1.0
        delays.append(backoff.ended(t))
        t += delays[-1]
    assert delays == [1.0, 2.0, 4.0, 8.0]
    backoff.started(t)
    assert backoff.ended(t + 9.999) == 8.0  # just short of stable: still capped
    backoff.started(t + 20.0)
    assert backoff.ended(t + 30.0) == 1.0  # exactly stable_after counts as stable
    assert backoff.failures == 1


def test_stability_is_measured_from_the_latest_start() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0, jitter=0.0, stable_after=10.0)
    backoff.started(0.0)
    assert backoff.ended(0.5) == 1.0
    backoff.started(20.0)  # a long wait between runs is not running
    assert backoff.ended(20.5) == 2.0


def test_ended_without_a_start_is_a_failure() -> None:
    backoff = Backoff(initial=1.0, jitter=0.0)
    assert [backoff.ended(100.0), backoff.ended(200.0)] == [1.0, 2.0]


def test_years_of_failures_stay_at_the_cap() -> None:
    # An int factor and a huge count must neither overflow nor compute a big integer.
    backoff = Backoff(initial=0.5, factor=3, maximum=4, jitter=0.0)
    backoff.failures = 10**12
    assert backoff.next_delay() == 4.0


@FAST
@given(failures=st.integers(min_value=0, max_value=5000),
       jitter=st.floats(min_value=0, max_value=0.99),
       draw=st.floats(min_value=0, max_value=1))
def test_delay_stays_within_the_jitter_band(failures: int, jitter: float, draw: float) -> None:
    backoff = Backoff(initial=0.1, factor=2, maximum=10.0, jitter=jitter, random=lambda: draw)
    backoff.failures = failures
    base = min(0.1 * 2.0 ** min(failures, 1000), 10.0)
    delay = backoff.next_delay()
    assert (1 - jitter) * base - 1e-12 <= delay <= base + 1e-12
    assert backoff.failures == failures + 1


@pytest.mark.parametrize("kwargs", [
    {"initial": 0}, {"initial": math.nan}, {"factor": 0.5}, {"factor": math.inf},
    {"maximum": 0.1}, {"maximum": math.inf}, {"maximum": math.nan}, {"jitter": -0.1},
    {"jitter": math.nan}, {"stable_after": -1.0}, {"stable_after": math.nan},
])
def test_constructor_rejects_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="backoff: need"):
        Backoff(**kwargs)
