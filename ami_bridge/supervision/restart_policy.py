"""When to restart a virtual transaction server: a pure policy with an injected clock.

`started(now)` records a start; `exited(now)` returns how long to wait before the next
start and whether the process is flapping. The delay is the shared `Backoff`
(ami_bridge.backoff) without jitter: the first restart waits `initial` seconds, each
further one `factor` times longer, capped at `maximum`; a run that lasted
`stable_after` seconds resets it. On top of it, flapping (circus's notion): more than
`flap_max` starts within `flap_window` seconds; it is reported and the next start waits
at least `flap_cooldown` seconds, so a broken VTS costs almost nothing while it stays
broken and comes back by itself when it is fixed. The knobs are one frozen
`RestartSettings`, validated on construction; `[vts.NAME]` keys set them per VTS
(docs/configuration.md says why the defaults are what they are).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace

from ami_bridge.backoff import Backoff


@dataclass(frozen=True)
class RestartSettings:
    # 0.1 s: a VTS that exits at once is back before a caller notices; doubling to 10 s
    # keeps a crash loop under one start per 10 s. A run of 10 s counts as healthy.
    initial: float = 0.1
    factor: float = 2.0
    maximum: float = 10.0
    stable_after: float = 10.0
    # More than 5 starts in 30 s is no transient fault (the backoff alone spends ~3 s on
    # 6 starts); waiting 30 s then keeps a broken program from burning CPU on starts.
    flap_window: float = 30.0
    flap_max: int = 5
    flap_cooldown: float = 30.0

    def __post_init__(self) -> None:
        # Written as positive checks so NaN fails them too.
        if not (0 < self.initial <= self.maximum < math.inf
                and 1 <= self.factor < math.inf and self.flap_max >= 1
                and 0 <= self.stable_after < math.inf and 0 < self.flap_window < math.inf
                and 0 <= self.flap_cooldown < math.inf):
            raise ValueError(f"restart policy: need 0 < initial <= maximum, 1 <= factor, "
                             f"flap_max >= 1, stable_after >= 0, flap_window > 0, "
                             f"flap_cooldown >= 0, all finite; got {self}")


@dataclass(frozen=True)
class RestartDecision:
    delay: float
    flapping: bool
    attempt: int  # consecutive quick failures so far


class RestartPolicy:
    """`RestartPolicy(settings)`, or `RestartPolicy(flap_max=3)` for the defaults but one."""

    def __init__(self, settings: RestartSettings | None = None, /, **knobs: float) -> None:
        # ignore: knobs are typed float but flap_max is an int; replace() runs
        # __post_init__, which rejects any bad value anyway.
        self.settings = replace(settings or RestartSettings(), **knobs)  # type: ignore[arg-type]
        s = self.settings
        # No jitter: restarts are local process spawns, nothing shared to stampede, and
        # exact delays keep the log readable.
        self._backoff = Backoff(initial=s.initial, factor=s.factor, maximum=s.maximum,
                                jitter=0.0, stable_after=s.stable_after)
        self._starts: deque[float] = deque()

    def started(self, now: float) -> None:
        self._backoff.started(now)
        self._starts.append(now)
        while self._starts and now - self._starts[0] > self.settings.flap_window:
            self._starts.popleft()

    def exited(self, now: float) -> RestartDecision:
        delay = self._backoff.ended(now)
        s = self.settings
        recent = sum(1 for t in self._starts if now - t <= s.flap_window)
        flapping = recent > s.flap_max
        if flapping:
            delay = max(delay, s.flap_cooldown)
        return RestartDecision(delay=delay, flapping=flapping, attempt=self._backoff.failures)
