"""The rate limit of log lines a peer can cause: pure, driven by a number for `now`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ami_bridge.ratelimit import RateLimit, RateLimitedLog

ROOT = Path(__file__).resolve().parents[2]


def test_one_line_per_interval_then_the_count_of_those_suppressed() -> None:
    limit = RateLimit(interval=10.0)
    assert limit.admit(100.0) == 0
    assert [limit.admit(100.0 + t) for t in (0.0, 1.0, 9.99)] == [None, None, None]
    assert limit.admit(110.0) == 3  # the first line of the next window reports them
    assert limit.admit(110.5) is None
    assert limit.admit(125.0) == 1
    assert limit.admit(140.0) == 0


def test_burst_lines_per_window() -> None:
    limit = RateLimit(interval=1.0, burst=3)
    assert [limit.admit(0.0) for _ in range(5)] == [0, 0, 0, None, None]
    assert [limit.admit(1.0) for _ in range(4)] == [2, 0, 0, None]


def test_keys_are_limited_apart() -> None:
    limit = RateLimit(interval=10.0)
    assert limit.admit(0.0, "over-cap") == 0
    assert limit.admit(0.0, "not-allowed") == 0
    assert limit.admit(1.0, "over-cap") is None
    assert limit.admit(1.0, "not-allowed") is None


def test_a_clock_that_goes_back_starts_a_window_instead_of_muting() -> None:
    limit = RateLimit(interval=10.0)
    assert limit.admit(100.0) == 0
    assert limit.admit(100.5) is None
    assert limit.admit(50.0) == 1


def test_distinct_keys_cannot_grow_the_table_without_end() -> None:
    limit = RateLimit(interval=10.0, max_keys=4)
    for i in range(100):
        assert limit.admit(float(i) / 100, ("peer", i)) == 0
    assert len(limit) <= 4
    # An expired window is dropped before a live one.
    limit = RateLimit(interval=1.0, max_keys=2)
    limit.admit(0.0, "old")
    limit.admit(5.0, "live")
    limit.admit(5.5, "new")
    assert limit.admit(5.6, "live") is None  # still limited: its window was kept


@pytest.mark.parametrize("bad", [{"interval": 0.0}, {"interval": 1.0, "burst": 0}])
def test_nonsense_settings_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="RateLimit"):
        RateLimit(**bad)  # type: ignore[arg-type]


def test_rate_limited_log_appends_the_suppressed_count() -> None:
    lines: list[str] = []
    note = RateLimitedLog(lambda msg, *args: lines.append(msg % args), interval=10.0)
    assert note(0.0, "refused %s", "10.0.0.9:5000", key="peer")
    assert not note(1.0, "refused %s", "10.0.0.9:5001", key="peer")
    assert not note(2.0, "refused %s", "10.0.0.9:5002", key="peer")
    assert note(10.0, "refused %s", "10.0.0.9:5003", key="peer")
    assert lines == ["refused 10.0.0.9:5000",
                     "refused 10.0.0.9:5003 (2 similar lines suppressed)"]


def test_the_module_reads_no_clock_and_does_no_io() -> None:
    tree = ast.parse((ROOT / "ami_bridge/ratelimit.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"time", "asyncio", "socket", "logging", "threading"}
