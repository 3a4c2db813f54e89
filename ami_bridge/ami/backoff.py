"""Reconnect delays for the AMI session: exponential backoff with jitter, pure.

Contract. `next_delay()` returns how long to wait before the next connection attempt:
`initial * factor**n` capped at `maximum`, where n counts failures since the last
`reset()`, then shrunk by a random fraction of at most `jitter` ("equal jitter": the
delay stays in [(1 - jitter) * base, base]). The lower bound matters: the client makes
exactly one attempt per delay, so at least (1 - jitter) * base separates two attempts
and a fleet of bridges restarted together never storms Asterisk in lockstep. The random
source is injected so tests are exact. tenacity would give the same numbers but not a
cleaner seam: the client's loop is one attempt, one delay, and a reset that depends on
how long the session lasted, which this class states in a dozen lines.
"""

from __future__ import annotations

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
        random: Callable[[], float] = _random.random,
    ) -> None:
        # maximum defaults to 4 s: the bridge must be back within 5 s of Asterisk
        # (issue 4); one refused TCP connect to loopback every 2-4 s costs nothing.
        if initial <= 0 or factor < 1 or maximum < initial or not 0 <= jitter < 1:
            raise ValueError("backoff: need initial > 0, factor >= 1, maximum >= initial, "
                             "0 <= jitter < 1")
        self.initial, self.factor, self.maximum, self.jitter = initial, factor, maximum, jitter
        self._random = random
        self.failures = 0

    def base(self) -> float:
        """The cap for the next delay, before jitter."""
        # The exponent is capped so days of failures cannot overflow a float.
        return float(min(self.initial * self.factor ** min(self.failures, 64), self.maximum))

    def next_delay(self) -> float:
        base = self.base()
        self.failures += 1
        return base * (1.0 - self.jitter * self._random())

    def reset(self) -> None:
        self.failures = 0
