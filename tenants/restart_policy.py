"""When to restart a virtual transaction server: a pure policy with an injected clock.

`started(now)` records a start; `exited(now)` returns how long to wait before the next
start and whether the process is flapping. Exponential backoff: the first restart waits
`initial` seconds, each further one `factor` times longer, capped at `maximum`; a run
that lasted `stable_after` seconds resets the backoff. Flapping (circus's notion): more
than `flap_max` starts within `flap_window` seconds; it is reported and the next start
waits `flap_cooldown` seconds, so a broken VTS costs almost nothing while it stays
broken and comes back by itself when it is fixed.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class RestartDecision:
    delay: float
    flapping: bool
    attempt: int  # consecutive quick failures so far


class RestartPolicy:
    def __init__(
        self,
        *,
        initial: float = 0.1,
        factor: float = 2.0,
        maximum: float = 10.0,
        stable_after: float = 10.0,
        flap_window: float = 30.0,
        flap_max: int = 5,
        flap_cooldown: float = 30.0,
    ) -> None:
        # Written as positive checks so NaN fails them too.
        if not (0 < initial <= maximum < math.inf and 1 <= factor < math.inf and flap_max >= 1
                and 0 <= stable_after < math.inf and 0 < flap_window < math.inf
                and 0 <= flap_cooldown < math.inf):
            raise ValueError("restart policy: need 0 < initial <= maximum, 1 <= factor, "
                             "flap_max >= 1, stable_after >= 0, flap_window > 0, "
                             "flap_cooldown >= 0, all finite")
        self.initial, self.factor, self.maximum = initial, factor, maximum
        self.stable_after = stable_after
        self.flap_window, self.flap_max, self.flap_cooldown = flap_window, flap_max, flap_cooldown
        self._starts: deque[float] = deque()
        self._last_start: float | None = None
        self._attempt = 0

    def started(self, now: float) -> None:
        self._last_start = now
        self._starts.append(now)
        while self._starts and now - self._starts[0] > self.flap_window:
            self._starts.popleft()

    def exited(self, now: float) -> RestartDecision:
        if self._last_start is not None and now - self._last_start >= self.stable_after:
            self._attempt = 0
        delay = self.maximum
        if self.initial * self.factor ** min(self._attempt, 64) < self.maximum:
            # min(): the power would overflow a float after a long crash loop, and past
            # 2**64 times `initial` any cap is reached anyway.
            delay = self.initial * self.factor ** self._attempt
        self._attempt += 1
        recent = [t for t in self._starts if now - t <= self.flap_window]
        flapping = len(recent) > self.flap_max
        if flapping:
            delay = max(delay, self.flap_cooldown)
        return RestartDecision(delay=delay, flapping=flapping, attempt=self._attempt)
