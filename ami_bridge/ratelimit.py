"""Rate-limited log lines: at most `burst` lines per `interval` seconds per key.

A line a hostile or broken peer can trigger at will (a refused connection, a refused
environment, a call refused over a cap) must not let that peer flood the log or the
disk. `RateLimit.admit(now, key)` decides whether one more line may be written now and,
when it may, says how many lines of that key were suppressed since the last one written,
so nothing is silently lost: the next line carries the count. `RateLimitedLog` wraps a
log method (`log.warning`) with that decision. The module is pure: the caller passes
`now` (the event loop's clock in the daemon, a number in tests) and keeps the object;
nothing here reads a clock or holds module-level state.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

# Distinct keys remembered at once. Keys are peers or reasons; a flood of distinct keys
# (many source addresses) must not grow the table without end. Past this bound, keys
# whose window is over are dropped first, then the oldest; a dropped key's suppressed
# count is lost, which costs one summary, never a line that was due.
MAX_KEYS = 1024


@dataclass
class _Window:
    start: float
    written: int
    suppressed: int


class RateLimit:
    """At most `burst` admissions per key in each window of `interval` seconds."""

    def __init__(self, *, interval: float, burst: int = 1, max_keys: int = MAX_KEYS) -> None:
        if not interval > 0:
            raise ValueError(f"RateLimit interval must be positive, got {interval!r}")
        if burst < 1 or max_keys < 1:
            raise ValueError(f"RateLimit burst and max_keys must be >= 1, got {burst}, {max_keys}")
        self.interval = interval
        self.burst = burst
        self._max_keys = max_keys
        self._windows: dict[Hashable, _Window] = {}

    def admit(self, now: float, key: Hashable = None) -> int | None:
        """None: suppress this line. Otherwise write it: the number is how many lines of
        this key were suppressed since the last one admitted (0 usually)."""
        window = self._windows.get(key)
        if window is None or now - window.start >= self.interval or now < window.start:
            # A clock that went backwards starts a new window rather than muting a key.
            carried = window.suppressed if window is not None else 0
            if window is None:
                self._make_room(now)
            window = self._windows[key] = _Window(start=now, written=0, suppressed=carried)
        if window.written >= self.burst:
            window.suppressed += 1
            return None
        window.written += 1
        suppressed, window.suppressed = window.suppressed, 0
        return suppressed

    def _make_room(self, now: float) -> None:
        if len(self._windows) < self._max_keys:
            return
        for key in [k for k, w in self._windows.items() if now - w.start >= self.interval]:
            del self._windows[key]
        while len(self._windows) >= self._max_keys:
            del self._windows[next(iter(self._windows))]  # insertion order: the oldest

    def __len__(self) -> int:
        return len(self._windows)


class RateLimitedLog:
    """`log.warning`-like callable that writes at most `burst` lines per `interval` per
    key; an admitted line that follows suppressed ones says how many were suppressed."""

    def __init__(self, emit: Callable[..., None], *, interval: float, burst: int = 1) -> None:
        self._emit = emit
        self.limit = RateLimit(interval=interval, burst=burst)

    def __call__(self, now: float, msg: str, *args: object, key: Hashable = None) -> bool:
        """Write `msg % args` unless this key is over its rate; True if written."""
        suppressed = self.limit.admit(now, key)
        if suppressed is None:
            return False
        if suppressed:
            msg += " (%d similar lines suppressed)"
            args = (*args, suppressed)
        self._emit(msg, *args)
        return True
