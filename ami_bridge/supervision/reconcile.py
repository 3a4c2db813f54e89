"""Desired against running: what a reload does to the VTS processes, as a pure function.

Contract. `reconcile(desired, running)` takes two maps from VTS name to spec (any value
compared with `==`; the daemon uses the whole frozen `VtsConfig`: command, grace period,
tenants served, restart knobs) and returns a `Plan`: names running but no longer
desired are stopped; names desired with a spec different from the running one are
restarted (stopped, then started with the new spec); desired names not running are
started; the rest are kept, untouched. Every name lands in exactly one group and each
group is sorted, so a plan can be compared whole in a test. This is circus's
"watchers follow the config" semantics; matching by name alone would silently ignore
an edited `command` or `grace_period` until the process happened to crash.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    stop: tuple[str, ...] = ()  # running, no longer desired
    restart: tuple[str, ...] = ()  # desired with a changed spec
    start: tuple[str, ...] = ()  # desired, not running
    keep: tuple[str, ...] = ()  # same spec: left alone

    @property
    def to_stop(self) -> tuple[str, ...]:
        """Everything whose running process ends: stops first, then restarts."""
        return self.stop + self.restart

    @property
    def to_start(self) -> tuple[str, ...]:
        """Everything started anew, once `to_stop` has stopped."""
        return self.restart + self.start


def reconcile(desired: Mapping[str, object], running: Mapping[str, object]) -> Plan:
    return Plan(
        stop=tuple(sorted(set(running) - set(desired))),
        restart=tuple(sorted(n for n in desired if n in running and running[n] != desired[n])),
        start=tuple(sorted(set(desired) - set(running))),
        keep=tuple(sorted(n for n in desired if n in running and running[n] == desired[n])),
    )
