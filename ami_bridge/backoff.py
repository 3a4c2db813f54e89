"""Exponential backoff with jitter, pure: the one pacing rule for reconnects and restarts.

Contract. Something that runs and may fail (the AMI session, a VTS process) reports
`started(now)` when a run begins and asks `ended(now)` for the delay before the next
attempt when it ends. The delay is `initial * factor**n` capped at `maximum`, where n
counts the quick failures since the last reset, then shrunk by a random fraction of at
most `jitter` ("equal jitter": it stays in [(1 - jitter) * base, base]). A run that
lasted `stable_after` seconds or more, measured from the latest `started`, resets n
first: a thing that flaps is throttled like one that never comes up, and one that ran a
while starts again from `initial`. `next_delay()` and `reset()` are the same steps
without the clock. The clock (`now`) and the random source are passed in, so tests are
exact and never sleep. Users: `ami_bridge.ami.client` (one attempt per delay; the
lower jitter bound keeps at least (1 - jitter) * base between two attempts, so bridges
restarted together never storm Asterisk in lockstep) and
`ami_bridge.supervision.restart_policy` (no jitter, plus its flapping window).
tenacity would give the same numbers but not a cleaner seam: both loops are one attempt,
one delay, and a reset that depends on how long the run lasted, stated here in a few
dozen lines.
"""

from __future__ import annotations

import math
import random as _random
from collections.abc import Callable


class Backoff:
    def __init__(
        self,
        *,
        initial: float = 0.5,
        factor: float = 2.0,
        maximum: float = 4.0,
        jitter: float = 0.5,
        stable_after: float = 10.0,
        random: Callable[[], float] = _random.random,
    ) -> None:
        # The defaults are the AMI reconnect's: maximum 4 s because the bridge must be
        # back within 5 s of Asterisk (issue 4), and one refused TCP connect to loopback
        # every 2-4 s costs nothing. Written as positive checks so NaN fails them too.
        if not (0 < initial <= maximum < math.inf and 1 <= factor < math.inf
                and 0 <= jitter < 1 and stable_after >= 0):
            raise ValueError("backoff: need 0 < initial <= maximum < inf, 1 <= factor < inf, "
                             f"0 <= jitter < 1, stable_after >= 0; got initial={initial!r}, "
                             f"factor={factor!r}, "
                             f"maximum={maximum!r}, jitter={jitter!r}, "
                             f"stable_after={stable_after!r}")
        # float(): an int factor would make factor**n an exact big integer, slow to
        # compute after a long outage; a float overflows at once instead (see base()).
        self.initial, self.factor, self.maximum = initial, float(factor), maximum
        self.jitter, self.stable_after = jitter, stable_after
        self._random = random
        self._last_start: float | None = None
        self.failures = 0  # quick failures since the last reset

    def base(self) -> float:
        """The cap for the next delay, before jitter."""
        try:
            grown = self.initial * self.factor ** self.failures
        except OverflowError:  # days of failures: far past any cap
            return float(self.maximum)
        return float(min(grown, self.maximum))

    def next_delay(self) -> float:
        """Count one more failure and return the delay before the next attempt."""
        base = self.base()
        self.failures += 1
        return base * (1.0 - self.jitter * self._random())

    def reset(self) -> None:
        self.failures = 0

    def started(self, now: float) -> None:
        """A run began at `now`."""
        self._last_start = now

    def ended(self, now: float) -> float:
        """The run ended at `now`: reset if it was stable, then `next_delay()`."""
        if self._last_start is not None and now - self._last_start >= self.stable_after:
            self.reset()
        return self.next_delay()
