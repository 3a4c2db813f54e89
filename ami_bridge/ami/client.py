"""asyncio glue for the bridge's one AMI session: connect, log in, keep alive, reconnect.

Contract. `AmiClient.run()` loops until `close()`: one connection attempt, then (on any
failure or disconnect) one `Backoff` delay (ami_bridge.backoff), so there is at most one
attempt per backoff step; the backoff resets only after a session stayed up its
`stable_after` seconds, so a session that flaps is throttled like one that never comes
up. A session is: TCP connect, greeting, `Login` (a rejection raises nothing out of
`run` but is logged as an error and backs off like any failure), then `FullyBooted`;
only then `on_connected()` is awaited (the owner resyncs there; events are held
meanwhile and delivered after it returns), a `Ping` every `ping_interval` must be
answered within `ping_timeout` or the session is dropped, and `on_disconnected(reason)`
follows its end. The session is an `asyncio.Protocol`: bytes are parsed where they
arrive (`data_received`) and each event goes straight to `on_event` (a callback error
is logged, never kills the session), with no reader task and no queue to wake (one task
wake-up less per read, bench/README.md, "Notes: the AMI path"). Events that arrive before
`on_connected` returned are held, in order, and delivered after it; the hold is
bounded, and overflowing it drops the session on purpose, because a resync after
reconnecting is the only way back to a true view.
`send_action` / `send_list_action` give each action a fresh ActionID and a timeout; an
action whose session drops before its response fails with `AmiDisconnected` and is never
resent (a Redirect must not run twice), unless the caller marks it `retry=True`
(read-only actions). `send_nowait` writes at once, or not at all when there is no
session, and is never resent (AsyncAGI's `AGI` actions). Wire lines are logged at DEBUG
with `>>` (to Asterisk) and `<<` (from Asterisk), secrets masked. After each read the
session stops reading the socket for `read_pause` seconds (default 5 ms) so the events
Asterisk writes one by one arrive in batches: one wake-up of the event loop and of each
VTS link per batch instead of per event (at 120 calls/s that is ~2,000 events/s).
Events are then up to `read_pause` late; the kernel's socket buffer holds far more than
that, so Asterisk never sees a slow reader.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar, cast

from ami_bridge.ami.protocol import (
    NEED_DATA,
    AmiConnection,
    ConnectionClosed,
    Event,
    Greeting,
    ListCollector,
    RemoteProtocolError,
    Response,
    encode_action,
)
from ami_bridge.backoff import Backoff

log = logging.getLogger(__name__)

# Pause after each read: batches events (see the module docstring). 5 ms at ~400 bytes
# per event and 2,000 events/s is ~4 KB waiting in the socket buffer.
DEFAULT_READ_PAUSE = 0.005
# Keys whose values never reach a log line.
SECRET_KEYS = frozenset({"secret", "key"})
# Events held while the owner resyncs (on_connected): at ~16 events per call, 10 000
# events is seconds of a busy system; it only fills if the resync itself stalls.
DEFAULT_QUEUE_SIZE = 10_000
# How long a closing session waits for its transport to go (it flushes unsent actions
# first); then the socket is aborted.
CLOSE_TIMEOUT = 1.0

EventCallback = Callable[[Event], None]
ConnectedCallback = Callable[[], Awaitable[None]]
DisconnectedCallback = Callable[[str], None]
ResponseCallback = Callable[[Response | None], None]  # None: the session dropped first
Fields = Mapping[str, str] | Iterable[tuple[str, str]]
T = TypeVar("T")


class AmiError(Exception):
    """Base of the AMI client's errors."""


class AmiLoginError(AmiError):
    """Asterisk refused the manager user's Login (wrong user, secret, or ACL)."""


class AmiDisconnected(AmiError):
    """The session ended before the action's response; it was not resent."""


class AmiActionTimeout(AmiError):
    """No response to the action within its timeout."""


class _SessionEnded(Exception):
    """Internal: why one session ended (the reason string goes to on_disconnected)."""


class _Session(asyncio.Protocol):
    """One TCP connection: its protocol state, pending actions, FullyBooted flag, the
    events held until the owner's resync is over. Bytes go to `AmiClient._received`."""

    def __init__(self, client: AmiClient) -> None:
        loop = asyncio.get_running_loop()
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.conn = AmiConnection()
        self.greeted = asyncio.Event()
        self.booted = asyncio.Event()
        self.ended: asyncio.Future[str] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()  # connection_lost
        self.pending: dict[str, asyncio.Future[Response]] = {}
        self.callbacks: dict[str, ResponseCallback] = {}  # send_nowait's
        self.lists: dict[str, tuple[ListCollector, asyncio.Future[None]]] = {}
        self.held: deque[Event] | None = deque()  # None: deliver events at once
        self.resume: asyncio.TimerHandle | None = None  # the read pause's end

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's transports are not asyncio.Transport subclasses
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.client._received(self, data)

    def eof_received(self) -> bool:
        self.client._received(self, b"")
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.resume is not None:
            self.resume.cancel()
        self.end(f"read failed: {exc!r}" if exc is not None else "connection lost")
        if not self.closed.done():
            self.closed.set_result(None)

    def resume_reading(self) -> None:
        self.resume = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def end(self, reason: str) -> None:
        if not self.ended.done():
            self.ended.set_result(reason)
        if self.transport is not None:
            self.transport.close()


class AmiClient:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str,
        secret: str,
        on_event: EventCallback,
        on_connected: ConnectedCallback | None = None,
        on_disconnected: DisconnectedCallback | None = None,
        ping_interval: float = 10.0,
        ping_timeout: float = 5.0,
        action_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        booted_timeout: float = 60.0,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        read_pause: float = DEFAULT_READ_PAUSE,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host, self.port, self.username, self._secret = host, port, username, secret
        self._on_event, self._on_connected = on_event, on_connected
        self._on_disconnected = on_disconnected
        self.ping_interval, self.ping_timeout = ping_interval, ping_timeout
        self.action_timeout, self.connect_timeout = action_timeout, connect_timeout
        self.booted_timeout = booted_timeout
        self.backoff = backoff or Backoff()
        self._clock = clock
        self.queue_size = queue_size
        self.read_pause = read_pause
        self.queue_high_water = 0
        self._session: _Session | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self._ids = itertools.count(1)
        self._id_prefix = f"ab{os.getpid()}-"
        self.attempts = 0  # connection attempts so far (tests count them)
        # Everything Asterisk sent over all sessions: Event blocks (list replies included)
        # and bytes; the metrics' ami_events_received_total / ami_bytes_received_total.
        self.events_received = 0
        self.bytes_received = 0
        self.last_login_error: str | None = None

    # -- public ---------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def run(self) -> None:
        """Keep one session up until close(); never raises for network or login faults."""
        while not self._closing:
            self.backoff.started(self._clock())
            reason = await self._one_session()
            if self._closing:
                break
            delay = self.backoff.ended(self._clock())
            log.info("AMI %s:%d: %s; next attempt in %.2f s", self.host, self.port, reason,
                     delay)
            await asyncio.sleep(delay)

    async def close(self) -> None:
        self._closing = True
        if self._session is not None:
            self._session.end("closed by the bridge")

    async def send_action(
        self, name: str, fields: Fields = (), *, timeout: float | None = None,
        retry: bool = False, **kw: str,
    ) -> Response:
        """Send one action and return its Response (success or not: check `.success`).

        Waits for a session if there is none (an unsent action is safe to send later).
        `retry=True` resends after a reconnect; only for actions that are safe twice.
        """
        deadline = asyncio.get_running_loop().time() + (timeout or self.action_timeout)
        pairs = [*(fields.items() if isinstance(fields, Mapping) else fields), *kw.items()]
        while True:
            session = await self._session_before(deadline, name)
            action_id = self._next_id()
            future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
            session.pending[action_id] = future
            try:
                self._write(session, name, action_id, pairs)
                return await self._until(future, deadline, name)
            except AmiDisconnected:
                if not retry:
                    raise
            finally:
                session.pending.pop(action_id, None)

    def send_nowait(self, name: str, fields: Fields = (),
                    on_response: ResponseCallback | None = None) -> bool:
        """Write one action now, without waiting: True when written, False when there is
        no session (nothing is queued). `on_response` gets its Response, or None when the
        session drops first. Never resent: the AsyncAGI driver's `AGI` actions, each a
        command that would run twice on the call. Actions written by successive calls
        reach Asterisk in that order."""
        session = self._session
        if session is None or not self._connected.is_set():
            return False
        action_id = self._next_id()
        pairs = [*(fields.items() if isinstance(fields, Mapping) else fields)]
        self._write(session, name, action_id, pairs)
        if on_response is not None:
            session.callbacks[action_id] = on_response
        return True

    async def send_list_action(
        self, name: str, fields: Fields = (), *, timeout: float | None = None, **kw: str,
    ) -> tuple[Response, list[Event]]:
        """A list action (CoreShowChannels, QueueStatus, ...): its Response and events.

        List actions only read, so a session drop resends them on the next session.
        """
        deadline = asyncio.get_running_loop().time() + (timeout or self.action_timeout)
        pairs = [*(fields.items() if isinstance(fields, Mapping) else fields), *kw.items()]
        while True:
            session = await self._session_before(deadline, name)
            action_id = self._next_id()
            collector = ListCollector(action_id)
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            session.lists[action_id] = (collector, done)
            try:
                self._write(session, name, action_id, pairs)
                await self._until(done, deadline, name)
            except AmiDisconnected:
                continue
            finally:
                session.lists.pop(action_id, None)
            assert collector.response is not None
            return collector.response, collector.events

    # -- one session ----------------------------------------------------------------

    async def _one_session(self) -> str:
        self.attempts += 1
        session = _Session(self)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().create_connection(
                lambda: session, self.host, self.port), self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            return f"connect failed: {exc!r}"
        tasks: list[asyncio.Task[None]] = []
        was_connected = False
        try:
            await self._login(session)
            self._session = session
            tasks.append(asyncio.create_task(self._ping_loop(session), name="ami-ping"))
            self._connected.set()
            was_connected = True
            log.info("AMI %s:%d: logged in as %s, Asterisk fully booted", self.host,
                     self.port, self.username)
            if self._on_connected is not None:
                await self._race(session, self._on_connected(), "on_connected")
            self._deliver_held(session)
            return await session.ended
        except _SessionEnded as exc:
            return str(exc)
        except AmiLoginError as exc:
            self.last_login_error = str(exc)
            log.error("AMI %s:%d: %s", self.host, self.port, exc)
            return str(exc)
        except Exception as exc:  # session barrier: an owner's bug ends this session only
            log.exception("AMI session failed")
            return f"session failed: {exc!r}"
        finally:
            self._connected.clear()
            self._session = None
            session.end("session over")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                await asyncio.wait_for(asyncio.shield(session.closed), CLOSE_TIMEOUT)
            except TimeoutError:
                if session.transport is not None:
                    session.transport.abort()
            self._fail_pending(session)
            # Events read before the drop precede any later resync: deliver them now,
            # in order, rather than after the next session's snapshot.
            self._deliver_held(session)
            if was_connected and self._on_disconnected is not None:
                reason = session.ended.result()
                try:
                    self._on_disconnected(reason)
                except Exception:
                    log.exception("on_disconnected failed")

    async def _login(self, session: _Session) -> None:
        await self._race(session, session.greeted.wait(), "greeting")
        action_id = self._next_id()
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        session.pending[action_id] = future
        self._write(session, "Login", action_id,
                    [("Username", self.username), ("Secret", self._secret)])
        response = await self._race(session, future, "Login response")
        if not response.success:
            raise AmiLoginError(f"login as {self.username!r} refused by Asterisk: "
                                f"{response.message or 'no message'}")
        await self._race(session, session.booted.wait(), "FullyBooted",
                         timeout=self.booted_timeout)

    async def _race(self, session: _Session, aw: Awaitable[T], what: str,
                    timeout: float | None = None) -> T:
        """Await `aw` unless the session ends or `timeout` passes first."""
        task = asyncio.ensure_future(aw)
        limit = timeout if timeout is not None else self.action_timeout
        waiters: set[asyncio.Future[Any]] = {task, session.ended}
        done, _ = await asyncio.wait(waiters, timeout=limit,
                                     return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        if session.ended.done():
            raise _SessionEnded(f"{session.ended.result()} (waiting for {what})")
        raise _SessionEnded(f"no {what} within {limit:g} s")

    def _received(self, session: _Session, data: bytes) -> None:
        """Bytes from Asterisk (b"": EOF): parse, hand out every message, then pause."""
        self.bytes_received += len(data)
        try:
            session.conn.receive_data(data)
            while (msg := session.conn.next_event()) is not NEED_DATA:
                if isinstance(msg, ConnectionClosed):
                    session.end("Asterisk closed the connection")
                    return
                self._handle(session, msg)
        except RemoteProtocolError as exc:
            log.error("AMI protocol error: %s", exc)
            session.end(f"protocol error: {exc}")
            return
        if data and self.read_pause > 0 and session.transport is not None \
                and not session.transport.is_closing() and session.resume is None:
            # Let events gather in the kernel's socket buffer for `read_pause`: the
            # transport stops polling the socket meanwhile, otherwise the event loop
            # would still wake and read once per event Asterisk writes.
            session.transport.pause_reading()
            session.resume = asyncio.get_running_loop().call_later(
                self.read_pause, session.resume_reading)

    def _handle(self, session: _Session, msg: object) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("<< %r", msg)
        if isinstance(msg, Greeting):
            session.greeted.set()
        elif isinstance(msg, Response):
            self._on_response(session, msg)
        elif isinstance(msg, Event):
            self.events_received += 1
            action_id = msg.action_id
            if action_id is not None and action_id in session.lists:
                collector, done = session.lists[action_id]
                if collector.feed(msg) and not done.done():
                    done.set_result(None)
                return
            if msg.name == "FullyBooted":
                session.booted.set()
            self._enqueue(session, msg)

    def _on_response(self, session: _Session, msg: Response) -> None:
        action_id = msg.action_id or ""
        future = session.pending.get(action_id)
        if future is not None and not future.done():
            future.set_result(msg)
        elif action_id in session.callbacks:
            self._call_back(session.callbacks.pop(action_id), msg)
        elif action_id in session.lists:
            collector, done = session.lists[action_id]
            if collector.feed(msg) and not done.done():
                done.set_result(None)
        else:
            log.warning("AMI response to no pending action: %r", msg)

    def _enqueue(self, session: _Session, event: Event) -> None:
        held = session.held
        if held is None:
            self._dispatch(event)
            return
        if len(held) >= self.queue_size:
            log.error("AMI events held during the resync passed %d: dropping the session "
                      "to resync", self.queue_size)
            session.end("event queue overflow")
            return
        held.append(event)
        size = len(held)
        if size > self.queue_high_water:
            # Log each doubling only: the high-water mark is news, not every event.
            if size >= 2 * max(self.queue_high_water, 64):
                log.warning("AMI events held high-water mark %d of %d", size,
                            self.queue_size)
            self.queue_high_water = size

    def _dispatch(self, event: Event) -> None:
        try:
            self._on_event(event)
        except Exception:
            log.exception("on_event failed for %s", event.name)

    def _deliver_held(self, session: _Session) -> None:
        """Deliver the events held so far, in order; from now on, at once."""
        held, session.held = session.held, None
        while held:
            self._dispatch(held.popleft())

    async def _ping_loop(self, session: _Session) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            action_id = self._next_id()
            future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
            session.pending[action_id] = future
            try:
                self._write(session, "Ping", action_id, [])
                await asyncio.wait_for(future, self.ping_timeout)
            except TimeoutError:
                session.end(f"no Ping answer within {self.ping_timeout:g} s")
                return
            finally:
                session.pending.pop(action_id, None)

    # -- helpers --------------------------------------------------------------------

    def _next_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids)}"

    def _write(self, session: _Session, name: str, action_id: str,
               pairs: list[tuple[str, str]]) -> None:
        data = encode_action(name, action_id, pairs)
        if log.isEnabledFor(logging.DEBUG):
            shown = [(k, "********" if k.lower() in SECRET_KEYS else v) for k, v in pairs]
            log.debug(">> %r", encode_action(name, action_id, shown))
        assert session.transport is not None  # set by connection_made
        session.transport.write(data)

    async def _session_before(self, deadline: float, what: str) -> _Session:
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            await asyncio.wait_for(self._connected.wait(), max(remaining, 0))
        except TimeoutError:
            raise AmiActionTimeout(f"{what}: no AMI session") from None
        assert self._session is not None
        return self._session

    async def _until(self, future: asyncio.Future[T], deadline: float, what: str) -> T:
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            return await asyncio.wait_for(asyncio.shield(future), max(remaining, 0))
        except TimeoutError:
            raise AmiActionTimeout(f"{what}: no response in time") from None

    def _fail_pending(self, session: _Session) -> None:
        reason = session.ended.result() if session.ended.done() else "session over"
        error = AmiDisconnected(f"AMI session dropped before the response ({reason}); "
                                "the action may or may not have run and was not resent")
        for future in session.pending.values():
            if not future.done():
                future.set_exception(error)
        for _, done in session.lists.values():
            if not done.done():
                done.set_exception(error)
        callbacks, session.callbacks = session.callbacks, {}
        for callback in callbacks.values():
            self._call_back(callback, None)

    @staticmethod
    def _call_back(callback: ResponseCallback, response: Response | None) -> None:
        try:
            callback(response)
        except Exception:
            log.exception("AMI response callback failed")
