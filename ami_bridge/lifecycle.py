"""The daemon's start-up readiness and graceful stop, as waits with bounds.

Readiness (`wait_ready`): systemd is told READY=1 once the FastAGI listener is up and
every configured VTS process has connected, or once `READY_TIMEOUT_S` has passed; then
READY comes anyway, with a STATUS naming the VTS still missing and one warning line (a
VTS that cannot start must not keep the whole bridge, and every other tenant, out of
service: its venues default-route until it connects).

Graceful stop (`drain`), after the FastAGI listener is closed (a session Asterisk opens
from then on is refused, and the venue's AGISTATUS fallback routes the call): every
pending call keeps its own router timer, so a VTS that answers within the venue's
router_timeout gets its answer through, and a silent one gets the default route with
cause "timeout", exactly as when running. `drain_bound` (the longest router_timeout plus
`DRAIN_MARGIN_S`) caps the wait: whatever is still pending then (a treatment or a
workstation question that moved its deadline) is default-routed with cause "stopping".
Last, the answers still on their way to Asterisk are given `ANSWER_FLUSH_S` to complete
(a disposition is one AGI command and one reply). The waits poll pending counts at
`POLL_S`; the clock is passed in, so tests run them on a fake one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from ami_bridge.config import BridgeConfig
from ami_bridge.intermediary import Intermediary
from ami_bridge.sdnotify import Notifier

log = logging.getLogger(__name__)

# A VTS connected within 1 s of its start here (harness/bridge.py START_TIMEOUT_S); 10 s
# covers a loaded host and a confined start, and stays far below systemd's default
# TimeoutStartSec (90 s), so a missing VTS delays start-up visibly but never fails it.
READY_TIMEOUT_S = 10.0
# Beyond the longest router_timeout: the timer's own default route and its AGI round trip.
DRAIN_MARGIN_S = 1.0
# An MSet and its 200 reply on the loopback take well under 10 ms; 2 s covers a busy
# Asterisk without letting a peer that never reads hold the stop.
ANSWER_FLUSH_S = 2.0
POLL_S = 0.05

Clock = Callable[[], float]


def drain_bound(config: BridgeConfig) -> float:
    """How long a stop waits for pending calls before default-routing the rest."""
    timeouts = [config.router_timeout, *(v.router_timeout for v in config.venues.values())]
    return max(timeouts) + DRAIN_MARGIN_S


async def wait_until(done: Callable[[], bool], *, timeout: float, clock: Clock,
                     poll: float = POLL_S) -> bool:
    """Poll `done` until it holds (True) or `timeout` passes on `clock` (False)."""
    deadline = clock() + timeout
    while not done():
        if clock() >= deadline:
            return False
        await asyncio.sleep(poll)
    return True


async def wait_ready(names: Iterable[str], connected: Callable[[str], bool], *,
                     notifier: Notifier, clock: Clock,
                     timeout: float = READY_TIMEOUT_S, poll: float = POLL_S) -> list[str]:
    """Send READY=1 once every VTS in `names` is connected, or after `timeout` with the
    missing ones named; returns those missing."""
    wanted = sorted(names)
    await wait_until(lambda: all(connected(n) for n in wanted), timeout=timeout, clock=clock,
                     poll=poll)
    missing = [n for n in wanted if not connected(n)]
    if missing:
        log.warning("VTS not connected %.0f s after start: %s; ready anyway (their venues "
                    "default-route until they connect)", timeout, ", ".join(missing))
        notifier.ready(f"routing; VTS not connected: {', '.join(missing)}")
    else:
        notifier.ready(f"routing; {len(wanted)} VTS connected")
    return missing


async def drain(intermediary: Intermediary, *, bound: float, open_sessions: Callable[[], int],
                clock: Clock, notifier: Notifier, flush: float = ANSWER_FLUSH_S,
                poll: float = POLL_S) -> int:
    """Answer every pending call (see the module docstring); returns how many were
    default-routed as "stopping" at the bound."""
    pending = intermediary.pending_count()
    if pending:
        log.info("stopping: %d calls pending; waiting up to %.1f s for their answers",
                 pending, bound)
        notifier.status(f"stopping: {pending} calls pending")
    await wait_until(lambda: intermediary.pending_count() == 0, timeout=bound, clock=clock,
                     poll=poll)
    forced = intermediary.drain()
    if forced:
        log.warning("stopping: %d calls still pending after %.1f s: default route", forced,
                    bound)
    if not await wait_until(lambda: open_sessions() == 0, timeout=flush, clock=clock,
                            poll=poll):
        log.warning("stopping: %d AGI sessions still open after %.1f s; closing them",
                    open_sessions(), flush)
    return forced
