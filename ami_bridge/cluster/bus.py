"""The bridges' bus: small JSON messages over PostgreSQL LISTEN/NOTIFY on the shared store.

Contract. A `Bus` holds two dedicated connections to the personal store's database,
outside the store's pool: one `LISTEN`s on the channel `CHANNEL`, one sends
`pg_notify(CHANNEL, payload)` (psycopg serialises the use of one connection, so a writer
on the listening one would wait for the next notification). Every message is the JSON
object `{"b": sender, "n": sequence, "k": kind, "to": bridge or "", "d": body}`:
`sender` is a random id this process made at start (`bridge_id`), `n` counts that
sender's messages from 1 (it also keeps PostgreSQL from folding two equal payloads of
one transaction into one), `to` names one bridge ("" for all). A message whose encoding
is `MAX_PAYLOAD` bytes or more is refused at `publish` (counted in `refused`, logged):
PostgreSQL's limit is 8000 bytes. `publish` never waits: the message joins a queue of at
most `max_queued`, the oldest dropped past it (counted in `dropped`), and one writer task
sends what is queued in one transaction per batch; a batch that fails stays queued and is
sent after the writer reconnects. A bridge never sees its own messages nor those for
another bridge. Subscribers (`subscribe`) are called synchronously, on the event loop,
for the kinds they name: `on_message(sender, kind, body)`; `on_resync()` after every
(re)connect of the listener and when a sender's sequence skips (a message lost), i.e.
whenever messages may have been missed, so they reload what they keep. Both
connections reconnect with `ami_bridge.backoff` pacing. The bus is used only with the
PostgreSQL store (the daemon makes it; ami_bridge.daemon); the SQLite default has none.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

from ami_bridge.backoff import Backoff

log = logging.getLogger(__name__)

CHANNEL = "ami_bridge_bus"  # fixed: every bridge of one store listens here (docs/scale-out.md)
# PostgreSQL refuses a NOTIFY payload of 8000 bytes or more (its NOTIFY page: "must be
# shorter than 8000 bytes" in the default configuration).
MAX_PAYLOAD = 8000
# Messages waiting for the writer: a pop or a directory change is ~0.2-4 KB, so 10,000
# is at most ~40 MB and minutes of a busy bridge's changes during a database outage.
MAX_QUEUED = 10_000
BATCH = 200  # notifications sent in one transaction
# How long the listener waits for a notification before it checks that its connection
# is alive (a server that vanished without closing the socket).
IDLE_CHECK_S = 10.0
CONNECT_TIMEOUT_S = 5  # libpq connect_timeout, seconds


def _backoff() -> Backoff:
    # The store's clients come back within 2 s of PostgreSQL; 0.1 s first so a restart
    # under load resyncs quickly; jitter keeps bridges from reconnecting in lockstep.
    return Backoff(initial=0.1, factor=2.0, maximum=2.0, jitter=0.5, stable_after=5.0)


OnMessage = Callable[[str, str, Mapping[str, Any]], None]  # sender, kind, body
OnResync = Callable[[], None]


@dataclass(frozen=True)
class Subscriber:
    kinds: frozenset[str]
    on_message: OnMessage
    on_resync: OnResync | None


@dataclass(frozen=True)
class Envelope:
    """One received message."""

    sender: str
    seq: int
    kind: str
    to: str
    body: Mapping[str, Any]


class BusError(ValueError):
    """A message that cannot be sent or was not understood: says which and why."""


def encode(sender: str, seq: int, kind: str, body: Mapping[str, Any], to: str = "") -> str:
    """The payload, or BusError if it is too large for NOTIFY."""
    text = json.dumps({"b": sender, "n": seq, "k": kind, "to": to, "d": body},
                      ensure_ascii=False, separators=(",", ":"))
    size = len(text.encode("utf-8"))
    if size >= MAX_PAYLOAD:
        raise BusError(f"bus message {kind!r} is {size} bytes; NOTIFY takes fewer than "
                       f"{MAX_PAYLOAD}")
    return text


def decode(payload: str) -> Envelope:
    """The message in a payload, or BusError naming what is wrong with it."""
    try:
        raw = json.loads(payload)
    except ValueError:
        raise BusError("bus message is not JSON") from None
    if not isinstance(raw, dict):
        raise BusError("bus message is not a JSON object")
    sender, seq, kind, to, body = (raw.get(k) for k in ("b", "n", "k", "to", "d"))
    if not (isinstance(sender, str) and sender and isinstance(seq, int)
            and isinstance(kind, str) and kind and isinstance(to, str)
            and isinstance(body, dict)):
        raise BusError(f"bus message lacks b/n/k/to/d of the right types: {payload[:80]!r}")
    return Envelope(sender, seq, kind, to, body)


class Bus:
    def __init__(self, dsn: str, *, bridge_id: str | None = None,
                 max_queued: int = MAX_QUEUED) -> None:
        self._dsn = dsn
        self.bridge_id = bridge_id or secrets.token_hex(8)
        self._max_queued = max_queued
        self._queue: deque[str] = deque()
        self._wakeup = asyncio.Event()
        self._seq = 0
        self._last_seen: dict[str, int] = {}  # sender -> its last sequence number
        self._subscribers: list[Subscriber] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.listening = False  # the listener's LISTEN is in place
        self.published = 0  # handed to PostgreSQL (committed)
        self.received = 0  # from other bridges, for this one or all
        self.dropped = 0  # queued past max_queued
        self.refused = 0  # too large to send
        self.reconnects = 0  # listener sessions after the first
        self.resyncs = 0  # times the subscribers were told to reload

    def subscribe(self, kinds: Iterable[str], on_message: OnMessage,
                  on_resync: OnResync | None = None) -> None:
        self._subscribers.append(Subscriber(frozenset(kinds), on_message, on_resync))

    def publish(self, kind: str, body: Mapping[str, Any], *, to: str = "") -> bool:
        """Queue a message (never waits); False if it was refused (too large)."""
        try:  # a refused message takes no sequence number: the others see no gap
            payload = encode(self.bridge_id, self._seq + 1, kind, body, to)
        except BusError as exc:
            self.refused += 1
            log.error("%s; not sent", exc)
            return False
        self._seq += 1
        if len(self._queue) >= self._max_queued:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(payload)
        self._wakeup.set()
        return True

    def status(self) -> dict[str, object]:
        return {"bridge_id": self.bridge_id, "listening": self.listening,
                "queued": len(self._queue), "published": self.published,
                "received": self.received, "dropped": self.dropped, "refused": self.refused,
                "reconnects": self.reconnects}

    async def start(self) -> None:
        log.info("bus: this bridge is %s on the channel %s", self.bridge_id, CHANNEL)
        self._tasks = [asyncio.create_task(self._listen(), name="bus-listen"),
                       asyncio.create_task(self._write(), name="bus-write")]

    async def stop(self) -> None:
        """Send what is queued (briefly), then close both connections."""
        if self._queue and self._tasks:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._drained(), 1.0)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self.listening = False

    async def _drained(self) -> None:
        while self._queue:
            await asyncio.sleep(0.01)

    # -- receiving ------------------------------------------------------------------------
    def deliver(self, payload: str) -> None:
        """One notification's payload (the listener's; public for tests)."""
        try:
            message = decode(payload)
        except BusError as exc:
            log.warning("%s; ignored", exc)
            return
        if message.sender == self.bridge_id:
            return
        # Every bridge hears every message (one channel), so the sequence is checked
        # before the address: a message for another bridge is not a gap.
        last = self._last_seen.get(message.sender)
        self._last_seen[message.sender] = message.seq
        if last is not None and message.seq != last + 1:
            log.warning("bus: %d messages from bridge %s missed; resyncing",
                        message.seq - last - 1, message.sender)
            self._resync()
        if message.to not in ("", self.bridge_id):
            return
        self.received += 1
        for sub in self._subscribers:
            if message.kind in sub.kinds:
                try:
                    sub.on_message(message.sender, message.kind, message.body)
                except Exception:
                    log.exception("bus: the %r message from %s failed", message.kind,
                                  message.sender)

    def _resync(self) -> None:
        self.resyncs += 1
        for sub in self._subscribers:
            if sub.on_resync is not None:
                try:
                    sub.on_resync()
                except Exception:
                    log.exception("bus: a resync failed")

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            self._dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)

    async def _listen(self) -> None:
        backoff = _backoff()
        sessions = 0
        loop = asyncio.get_running_loop()
        while True:
            backoff.started(loop.time())
            try:
                async with await self._connect() as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening = True
                    sessions += 1
                    if sessions > 1:
                        self.reconnects += 1
                        log.info("bus: listening again on %s; resyncing", CHANNEL)
                    self._resync()  # whatever was sent while we did not listen
                    while True:
                        async for notify in conn.notifies(timeout=IDLE_CHECK_S):
                            self.deliver(notify.payload)
                        await conn.execute("SELECT 1")  # idle: is the server still there?
            except (psycopg.Error, OSError) as exc:
                if self.listening or sessions == 0:
                    log.warning("bus: listener lost (%s); reconnecting", _first_line(exc))
            self.listening = False
            await asyncio.sleep(backoff.ended(loop.time()))

    # -- sending --------------------------------------------------------------------------
    async def _write(self) -> None:
        backoff = _backoff()
        loop = asyncio.get_running_loop()
        while True:
            backoff.started(loop.time())
            try:
                async with await self._connect() as conn:
                    while True:
                        await self._wakeup.wait()
                        self._wakeup.clear()
                        await self._send(conn)
            except (psycopg.Error, OSError) as exc:
                log.warning("bus: writer lost (%s); %d messages queued",
                            _first_line(exc), len(self._queue))
            await asyncio.sleep(backoff.ended(loop.time()))
            self._wakeup.set()  # what is queued goes out on the new connection

    async def _send(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while self._queue:
            batch = list(self._queue)[:BATCH]
            async with conn.transaction(), conn.cursor() as cur:
                await cur.executemany("SELECT pg_notify(%s, %s)",
                                      [(CHANNEL, payload) for payload in batch])
            for payload in batch:  # committed; a drop meanwhile may have taken some
                if self._queue and self._queue[0] is payload:
                    self._queue.popleft()
            self.published += len(batch)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
