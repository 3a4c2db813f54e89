"""The ARI driver: venues that run `Stasis(ami-bridge,${AB_LAST},${DIALSTATUS})`.

Contract. `AriDriver` holds ONE ARI WebSocket (aiohttp's client, the daemon's web
framework) to `/ari/events?app=APP` and turns each `StasisStart` into
`Intermediary.route_request(env, responder)` with the environment a FastAGI session
would give (`ari_events.environment`); `StasisEnd`, `ChannelHangupRequest` or
`ChannelDestroyed` while the call is pending is `Intermediary.abandon`. `AriResponder`
answers over ARI's REST API: a disposition writes the dialplan contract's variables
(`agi_adapter.disposition_pairs`, AB_ACTION last; one request per variable, ARI has no
bulk set) and then continues the channel at the venue's next priority; if a write
fails none after it is made (a stale AB_TARGET must never meet a fresh AB_ACTION), and
the channel is continued anyway, into the venue's fallback. A treatment answers the
channel once, then starts music on hold, or plays a prompt (`sound:`) and, when digits
are wanted, collects `ChannelDtmfReceived` until the count, `#` or the timeout after the
prompt (a first digit stops the prompt, as GET DATA does). While the WebSocket is down
new calls fail `Stasis()` at once and take their fallback (measured, docs/drivers.md);
calls already inside stay there, and REST still reaches them, so pending calls leave by
their disposition or router timeout as usual. On every (re)connection the driver asks
which channels the application holds: a pending call that is no longer there was
hung up unseen (abandoned); a channel there that this process never saw start (left
by a previous bridge process, or whose StasisStart came while nobody listened) is
continued with nothing written, so AB_ACTION stays empty and it takes the venue's
fallback. The WebSocket reconnects with `Backoff`; `status()` counts connections,
calls and REST requests.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp

from ami_bridge.agi import wire
from ami_bridge.agi_adapter import disposition_pairs
from ami_bridge.backoff import Backoff
from ami_bridge.calls import Disposition, Treatment, TreatmentDone
from ami_bridge.drivers import ari_events as ev
from ami_bridge.drivers.ari_calls import AriCallTracker
from ami_bridge.drivers.ari_settings import AriConfig
from ami_bridge.intermediary import Intermediary

log = logging.getLogger(__name__)

# One REST request; Asterisk answers on loopback in about a millisecond, so 5 s means it
# is stuck, and a call waiting on it still has its router timeout and fallback.
REQUEST_TIMEOUT_S = 5.0
# aiohttp's WebSocket ping: a connection that died without a FIN is noticed in 2x this.
HEARTBEAT_S = 10.0
# After a (re)connection, how long a channel listed by GET /applications may still get
# its StasisStart on the new connection before it counts as left over. Events reach the
# driver within milliseconds on loopback; 2 s covers a loaded machine.
SWEEP_GRACE_S = 2.0
# A prompt that never reports its end (events lost with the WebSocket) stops waiting
# after this; the router timeout has disposed of the call long before (wire.get_data's
# own bound on a timeout is 600 s).
MAX_PROMPT_S = 600.0
# How long `stop` waits for requests still in flight (dispositions of the drain).
STOP_GRACE_S = 5.0
MOH_CLASS_RE = re.compile(r"[A-Za-z0-9_-]{1,80}")  # fullmatch: a musiconhold.conf class


class AriDriver:
    def __init__(self, *, settings: AriConfig, intermediary: Intermediary,
                 backoff: Backoff | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 call_events: bool = False) -> None:
        """`call_events`: this driver is the source of its calls' events for the VTS
        (an ARI-only bridge, no [ami]): `ari_calls` normalises them."""
        self.settings = settings
        self._intermediary = intermediary
        self._clock = clock
        self.backoff = backoff or Backoff()
        auth = base64.b64encode(f"{settings.username}:{settings.password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {auth}"}
        self._base = f"{settings.url}/ari"
        self._session: aiohttp.ClientSession | None = None
        self._runner: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._calls: dict[str, AriResponder] = {}  # channel id -> its pending call
        self._leaving: set[str] = set()  # disposed, variables/continue still in flight
        self._playbacks: dict[str, AriResponder] = {}  # playback id -> its call
        self._seen: set[str] = set()  # channels started on the current connection
        self.connected = False
        self.connects = 0
        self.calls = 0  # StasisStart events handled
        self.requests = 0  # REST requests sent
        self.failed_requests = 0
        self.swept = 0  # left-over channels continued into their fallback
        self.abandoned_unseen = 0  # pending calls found gone after a reconnect
        self.tracker = AriCallTracker() if call_events else None
        self._starting = ""  # the channel whose route request is being made
        self.subscriptions = 0  # application subscriptions requested for call events

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        for task in (self._runner, self._sweeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=STOP_GRACE_S)
        for task in set(self._tasks):
            task.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None
        self.connected = False

    def status(self) -> dict[str, Any]:
        return {"connected": self.connected, "connects": self.connects,
                "reconnects": max(0, self.connects - 1), "calls": self.calls,
                "pending": len(self._calls), "requests": self.requests,
                "failed_requests": self.failed_requests, "swept": self.swept,
                "abandoned_unseen": self.abandoned_unseen,
                "call_events": self.tracker is not None,
                "tracked_calls": len(self.tracker.calls()) if self.tracker else 0,
                "subscriptions": self.subscriptions}

    async def _run(self) -> None:
        self._session = aiohttp.ClientSession(headers=self._headers)
        while True:
            self.backoff.started(self._clock())
            try:
                await self._connection(self._session)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.warning("ARI %s: WebSocket failed: %s", self._base, exc or type(exc).__name__)
            if self.connected:
                log.warning("ARI WebSocket closed: new calls to Stasis(%s) take their "
                            "venue's fallback until it is back", self.settings.app)
            self.connected = False
            await asyncio.sleep(self.backoff.ended(self._clock()))

    async def _connection(self, session: aiohttp.ClientSession) -> None:
        ws = await session.ws_connect(
            f"{self._base}/events", params={"app": self.settings.app, "subscribeAll": "false"},
            heartbeat=HEARTBEAT_S, max_msg_size=ev.MAX_MESSAGE_BYTES)
        async with ws:
            self.connected = True
            self.connects += 1
            self._seen = set()
            log.info("ARI WebSocket connected to %s, application %s", self._base,
                     self.settings.app)
            self._sweeper = self.spawn(self._sweep())
            try:
                async for message in ws:
                    if message.type == aiohttp.WSMsgType.TEXT:
                        self.on_message(message.data)
                    elif message.type == aiohttp.WSMsgType.ERROR:
                        break
            finally:
                self._sweeper.cancel()  # the next connection sweeps afresh

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- events ---------------------------------------------------------------------
    def on_message(self, data: str) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("ARI <- %s", data[:500])
        message = ev.decode(data)
        if message is None:
            return
        if self.tracker is not None:
            self._observe(message)
        event = ev.parse_message(message)
        if isinstance(event, ev.StasisStart):
            self._seen.add(event.channel_id)
            self._start(event)
        elif isinstance(event, ev.ChannelGone):
            call = self._calls.pop(event.channel_id, None)
            if call is not None:
                call.gone()
                self._intermediary.abandon(call.handle)
        elif isinstance(event, ev.Dtmf):
            call = self._calls.get(event.channel_id)
            if call is not None:
                call.on_digit(event.digit)
        elif isinstance(event, ev.PlaybackFinished):
            owner = self._playbacks.pop(event.playback_id, None)
            if owner is not None:
                owner.on_playback_finished(event.playback_id)

    def call_entered(self, channel_id: str, venue: str, tenant: str) -> None:
        """A route request (`Intermediary`'s on_call_entered): with call events on, the
        events of a call this driver is starting go to its venue's VTS from now on (a
        FastAGI venue's call is never subscribed to, so it is not tracked)."""
        if self.tracker is not None and channel_id == self._starting:
            self.tracker.bind(channel_id, venue, tenant)

    def _observe(self, message: dict[str, Any]) -> None:
        assert self.tracker is not None
        observed = self.tracker.handle(message)
        for source in observed.subscribe:
            self.spawn(self.subscribe(source))
        for call_event in observed.events:
            self._intermediary.forward_call_event(call_event)

    async def subscribe(self, source: str) -> bool:
        """Subscribe the application to `source` ("channel:ID", "bridge:ID"): its events
        keep coming once the channel has left Stasis."""
        self.subscriptions += 1
        return await self.request("POST", f"/applications/{self.settings.app}/subscription",
                                  params={"eventSource": source})

    def _start(self, event: ev.StasisStart) -> None:
        self.calls += 1
        responder = AriResponder(self, event.channel_id)
        self._starting = event.channel_id
        try:
            handle = self._intermediary.route_request(event.env, responder)
        finally:
            self._starting = ""
        if handle is not None and not responder.disposed:
            responder.handle = handle
            self._calls[event.channel_id] = responder

    async def _sweep(self) -> None:
        """After a (re)connection: abandon pending calls that left unseen, and continue
        channels nobody here saw start into their fallback. With call events on, tracked
        channels missing from the application's list (its subscriptions) were destroyed
        unseen: their calls end with call_end "lost"."""
        tracked = self.tracker.channels() if self.tracker is not None else set()
        body = await self.get_json(f"/applications/{self.settings.app}")
        listed = body.get("channel_ids") if isinstance(body, dict) else None
        if not isinstance(listed, list):
            return
        present = {c for c in listed if ev.is_safe_id(c)}
        if self.tracker is not None:
            # Only channels tracked before the list was asked for: a subscription still
            # in flight must not read as a destruction.
            for call_event in self.tracker.lost(present | (self.tracker.channels() - tracked)):
                self._intermediary.forward_call_event(call_event)
        # Known now: waiting here, or leaving (variables and continue in flight). A call
        # that leaves during the grace must not be continued a second time.
        known = set(self._calls) | self._leaving
        for cid, call in list(self._calls.items()):
            if cid not in present and cid not in self._seen:
                del self._calls[cid]
                call.gone()
                self.abandoned_unseen += 1
                self._intermediary.abandon(call.handle)
        await asyncio.sleep(SWEEP_GRACE_S)
        tracked = self.tracker.channels() if self.tracker is not None else set()
        left = sorted(present - known - self._seen - set(self._calls) - self._leaving
                      - tracked)
        if left:
            log.warning("ARI: %d channel(s) waited in Stasis(%s) unseen (bridge or "
                        "WebSocket restarted): continued into their venue's fallback",
                        len(left), self.settings.app)
        for cid in left:
            self.swept += 1
            await self.request("POST", f"/channels/{cid}/continue")

    # -- REST -----------------------------------------------------------------------
    def leave(self, responder: AriResponder) -> None:
        """A disposition is on its way: the call is no longer pending here."""
        self._calls.pop(responder.channel_id, None)
        self._leaving.add(responder.channel_id)

    def left(self, channel_id: str) -> None:
        self._leaving.discard(channel_id)

    def watch_playback(self, playback_id: str, responder: AriResponder) -> None:
        self._playbacks[playback_id] = responder

    def unwatch_playback(self, playback_id: str) -> None:
        self._playbacks.pop(playback_id, None)

    async def request(self, method: str, path: str,
                      params: dict[str, str] | None = None) -> bool:
        """One REST request; True on a 2xx answer. Never raises for the network."""
        if self._session is None:
            return False
        self.requests += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("ARI -> %s %s %s", method, path, params or "")
        try:
            async with self._session.request(
                    method, f"{self._base}{path}", params=params,
                    timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as response:
                if response.status < 300:
                    return True
                # 404: the channel hung up meanwhile; 409: it is not in Stasis any more.
                log.debug("ARI %s %s: %d %s", method, path, response.status,
                          (await response.text())[:200])
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("ARI %s %s failed: %s", method, path, exc or type(exc).__name__)
        self.failed_requests += 1
        return False

    async def get_json(self, path: str) -> object:
        if self._session is None:
            return None
        self.requests += 1
        try:
            async with self._session.get(
                    f"{self._base}{path}",
                    timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as response:
                if response.status == 200:
                    return await response.json()
                log.warning("ARI GET %s: %d", path, response.status)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            log.warning("ARI GET %s failed: %s", path, exc or type(exc).__name__)
        self.failed_requests += 1
        return None


class AriResponder:
    """The ARI side of one call waiting in a venue (`calls.Responder`)."""

    def __init__(self, driver: AriDriver, channel_id: str) -> None:
        self._driver = driver
        self.channel_id = channel_id
        self.handle = ""
        self.disposed = False
        self._answered = False
        self._moh = False
        self._playback: str | None = None
        self._treatment: asyncio.Task[None] | None = None
        self._prompt_done = asyncio.Event()
        self._digits: list[str] | None = None  # collecting when not None
        self._max_digits = 0
        self._digits_done = asyncio.Event()

    @property
    def _path(self) -> str:
        return f"/channels/{self.channel_id}"

    # -- Responder ------------------------------------------------------------------
    def dispose(self, disposition: Disposition) -> None:
        if self.disposed:
            return
        self.disposed = True
        self._driver.leave(self)
        running, self._treatment = self._treatment, None
        if running is not None:
            running.cancel()
        self._driver.spawn(self._dispose(disposition_pairs(disposition), running))

    def treat(self, treatment: Treatment, done: TreatmentDone) -> None:
        try:
            if treatment.moh_class:
                if not MOH_CLASS_RE.fullmatch(treatment.moh_class):
                    raise wire.UnsafeValueError(f"music class {treatment.moh_class!r} is "
                                                "not a plain class name")
            else:
                wire.check_prompt(treatment.prompt)
        except wire.UnsafeValueError as exc:
            log.error("treatment %r refused at the ARI side: %s", treatment, exc)
            done(None)
            return
        if self.disposed:
            return
        self._treatment = self._driver.spawn(self._treat(treatment, done))

    # -- from the driver's events -----------------------------------------------------
    def gone(self) -> None:
        """The channel left (hung up, or left Stasis) while pending: stop treating it."""
        self.disposed = True
        if self._treatment is not None:
            self._treatment.cancel()
            self._treatment = None
        if self._playback is not None:
            self._driver.unwatch_playback(self._playback)

    def on_digit(self, digit: str) -> None:
        if self._digits is None or self._digits_done.is_set():
            return
        if not self._prompt_done.is_set():
            self._prompt_done.set()  # a digit cuts the prompt short, as GET DATA does
            self._stop_playback()
        if digit == "#":
            self._digits_done.set()
            return
        self._digits.append(digit)
        if len(self._digits) >= self._max_digits:
            self._digits_done.set()

    def on_playback_finished(self, playback_id: str) -> None:
        if playback_id == self._playback:
            self._playback = None
            self._prompt_done.set()

    # -- requests -------------------------------------------------------------------
    def _stop_playback(self) -> None:
        playback = self._take_playback()
        if playback is not None:
            self._driver.spawn(self._driver.request("DELETE", f"/playbacks/{playback}"))

    def _take_playback(self) -> str | None:
        playback, self._playback = self._playback, None
        if playback is not None:
            self._driver.unwatch_playback(playback)
        return playback

    async def _dispose(self, pairs: list[tuple[str, str]],
                       running: asyncio.Task[None] | None) -> None:
        driver = self._driver
        try:
            if running is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await running
            playback = self._take_playback()
            if playback is not None:  # stopped before the call leaves, not after
                await driver.request("DELETE", f"/playbacks/{playback}")
            if self._moh:
                await driver.request("DELETE", f"{self._path}/moh")
            for name, value in pairs:
                if not await driver.request("POST", f"{self._path}/variable",
                                            params={"variable": name, "value": value}):
                    break  # none after it: AB_ACTION stays empty, the venue's fallback
            if driver.tracker is not None and driver.tracker.owns(self.channel_id):
                # Before the continue: once out of Stasis only a subscription keeps
                # the channel's events coming (Dial, answer, bridges, its hang-up).
                await driver.subscribe(f"channel:{self.channel_id}")
            await driver.request("POST", f"{self._path}/continue")
        finally:
            driver.left(self.channel_id)

    async def _treat(self, treatment: Treatment, done: TreatmentDone) -> None:
        driver = self._driver
        if not self._answered:
            self._answered = True
            await driver.request("POST", f"{self._path}/answer")
        if treatment.moh_class:
            ok = await driver.request("POST", f"{self._path}/moh",
                                      params={"mohClass": treatment.moh_class})
            self._moh = self._moh or ok
            done("" if ok else None)
            return
        collecting = treatment.collect_digits > 0
        self._prompt_done = asyncio.Event()
        self._digits_done = asyncio.Event()
        self._digits = [] if collecting else None
        self._max_digits = treatment.collect_digits
        # The playback id is ours, so its PlaybackFinished cannot beat the answer.
        playback = secrets.token_hex(8)
        self._playback = playback
        driver.watch_playback(playback, self)
        if not await driver.request("POST", f"{self._path}/play/{playback}",
                                    params={"media": f"sound:{treatment.prompt}"}):
            driver.unwatch_playback(playback)
            self._playback, self._digits = None, None
            done(None)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._prompt_done.wait(), MAX_PROMPT_S)
        if not collecting:
            done("")
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._digits_done.wait(), treatment.timeout_ms / 1000)
        digits, self._digits = "".join(self._digits or ()), None
        done(digits)
