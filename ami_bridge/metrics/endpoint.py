"""`/metrics` over HTTP and the alarms' clock, on the bridge's event loop.

Contract. `MetricsService.start()` listens on `[metrics] listen` with aiohttp (already
the daemon's web framework, for the API) and answers `GET /metrics` with
prometheus_client's text exposition of the bridge's private registry; any other path
is 404. It also evaluates the `AlarmBook` every `evaluate_interval` seconds and logs
each change once: WARNING when an alarm is raised, INFO when it clears (logger
`ami_bridge.alarm`). `stop()` closes both. Serving on the loop rather than in
prometheus_client's own server thread means a scrape reads the bridge's plain dicts
between two callbacks, never while a call changes them, and no lock lands on the call
path; a scrape of a few hundred series costs the loop about a millisecond
(docs/operations.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ami_bridge.metrics.alarms import ALARM_DEFAULT_RATIO, AlarmBook, AlarmChange
from ami_bridge.metrics.settings import MetricsConfig

log = logging.getLogger(__name__)
alarm_log = logging.getLogger("ami_bridge.alarm")

# The alarms follow their window in WINDOW_BUCKETS steps; evaluating more often than
# once a second (or a tenth of a short window) would only repeat the same sums.
MAX_EVALUATE_INTERVAL = 1.0


def alarm_book(settings: MetricsConfig | None) -> AlarmBook | None:
    if settings is None:
        return None
    return AlarmBook(window=settings.alarm_window, default_ratio=settings.alarm_default_ratio,
                     min_calls=settings.alarm_min_calls)


def log_change(change: AlarmChange, book: AlarmBook) -> None:
    where = f"venue {change.venue} (tenant {change.tenant})"
    window = f"{book.window:g} s"
    if not change.raised:
        alarm_log.info("alarm %s cleared for %s", change.alarm, where,
                       extra={"event": "alarm", "alarm": change.alarm, "venue": change.venue,
                              "tenant": change.tenant, "raised": False})
        return
    if change.alarm == ALARM_DEFAULT_RATIO:
        why = (f"{change.defaults} of the {change.calls} calls that left it in the last "
               f"{window} took the default route (alarm above "
               f"{book.default_ratio:.0%}); is its VTS slow, down or refusing?")
    else:
        why = (f"{change.calls} calls entered it in the last {window} and not one route "
               "request came from it: is the venue's AGI URL (AB_AGI_URL, its secret) "
               "missing or wrong?")
    alarm_log.warning("alarm %s raised for %s: %s", change.alarm, where, why,
                      extra={"event": "alarm", "alarm": change.alarm, "venue": change.venue,
                             "tenant": change.tenant, "raised": True, "calls": change.calls})


class MetricsService:
    def __init__(self, settings: MetricsConfig, registry: CollectorRegistry, *,
                 alarms: AlarmBook | None, venues: Callable[[], Mapping[str, str]],
                 clock: Callable[[], float]) -> None:
        """`venues`: the configured venue -> tenant map; `clock`: the one the alarm book
        is fed with (the intermediary's, the loop's monotonic time)."""
        self.settings = settings
        self.registry = registry
        self.alarms = alarms
        self._venues = venues
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self._task: asyncio.Task[None] | None = None
        window = settings.alarm_window
        self.evaluate_interval = min(MAX_EVALUATE_INTERVAL, window / 10)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._scrape)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.host, self.settings.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        if self.alarms is not None:
            self._task = asyncio.create_task(self._evaluate_loop(), name="metrics-alarms")
        log.info("metrics on http://%s:%d/metrics", self.settings.host, self.settings.port)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._runner is not None:
            await self._runner.cleanup()

    async def _scrape(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    def evaluate(self) -> list[AlarmChange]:
        if self.alarms is None:
            return []
        changes = self.alarms.evaluate(self._clock(), self._venues())
        for change in changes:
            log_change(change, self.alarms)
        return changes

    async def _evaluate_loop(self) -> None:
        while True:
            await asyncio.sleep(self.evaluate_interval)
            try:
                self.evaluate()
            except Exception:  # a bug here must not end the alarms for good
                log.exception("alarm evaluation failed")
