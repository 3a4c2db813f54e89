"""asyncio glue for the FastAGI server: one `asyncio.Protocol` per Asterisk connection.

Read, feed the sans-I/O `AgiSession`, pull events, write. A `SessionHandler` (the
bridge's intermediary adapter) decides what to do with the environment; it answers
through `AgiConnection.run` / `finish`, which write the commands one at a time (each
waits for Asterisk's reply: res_agi polls its socket, so pipelined commands could sit
unread in its stdio buffer). `run` sends a command and keeps the session open (a
treatment: a prompt, music, digit collection); `finish` queues the final commands after
whatever is in flight and then closes the connection, which ends the AGI application
in the dialplan with AGISTATUS=SUCCESS.

Per-session exception barrier: a protocol error or a handler bug is logged and closes
that one session (the dialplan then takes its default route); the server goes on.
A connection that sends no complete environment within `HEADER_TIMEOUT` is closed.
Wire lines are logged at DEBUG with `<<` (from Asterisk) and `>>` (to Asterisk).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Protocol, cast

from ami_bridge.agi.protocol import (
    NEED_DATA,
    AgiSession,
    Closed,
    Environment,
    Hangup,
    RemoteProtocolError,
    Reply,
)

log = logging.getLogger(__name__)

# Asterisk sends the whole environment right after connecting; a peer that has not
# done so in this time is not Asterisk (or is stuck) and holds a slot for nothing.
HEADER_TIMEOUT = 10.0


ReplyCallback = Callable[[Reply], None]


class SessionHandler(Protocol):
    def on_environment(self, conn: AgiConnection, env: Environment) -> None: ...

    def on_gone(self, conn: AgiConnection) -> None:
        """The channel hung up or the connection closed before the session ended."""


class AgiConnection(asyncio.Protocol):
    def __init__(self, handler: SessionHandler) -> None:
        self._handler = handler
        self._session = AgiSession()
        self._transport: asyncio.Transport | None = None
        self._queue: deque[tuple[bytes, ReplyCallback | None]] = deque()
        self._in_flight = False
        self._in_flight_callback: ReplyCallback | None = None
        self._closing = False
        self._header_timer: asyncio.TimerHandle | None = None
        self.finished = False  # our answer was delivered completely
        self.gone = False
        self.peer = "?"
        self.tag: object = None  # the handler's per-session data (the call handle)

    # -- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's transports are not asyncio.Transport subclasses
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self._header_timer = asyncio.get_running_loop().call_later(
            HEADER_TIMEOUT, self._header_timeout)

    def data_received(self, data: bytes) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s << %r", self.peer, data)
        self._feed(data)

    def eof_received(self) -> bool | None:
        self._feed(b"")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._transport = None
        self._mark_gone()

    # -- used by the handler ---------------------------------------------------------
    def run(self, command: bytes, on_reply: ReplyCallback | None = None) -> None:
        """Queue one command; `on_reply` gets Asterisk's reply (or is never called if the
        connection goes first). The session stays open afterwards."""
        if self._transport is None or self._closing:
            return
        self._queue.append((command, on_reply))
        if not self._in_flight:
            self._send_next()

    def finish(self, commands: list[bytes]) -> None:
        """Queue these commands after anything in flight, then close the session."""
        if self._transport is None or self._closing:
            return
        self._closing = True
        self._queue.extend((command, None) for command in commands)
        if not self._in_flight:
            self._send_next()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # -- internals -------------------------------------------------------------------
    def _feed(self, data: bytes) -> None:
        try:
            self._session.receive_data(data)
            while True:
                event = self._session.next_event()
                if event is NEED_DATA:
                    return
                if isinstance(event, Environment):
                    if self._header_timer is not None:
                        self._header_timer.cancel()
                        self._header_timer = None
                    self._handler.on_environment(self, event)
                elif isinstance(event, Reply):
                    self._on_reply(event)
                elif isinstance(event, Hangup):
                    self._mark_gone()
                elif isinstance(event, Closed):
                    self._mark_gone()
                    self.close()
                    return
        except RemoteProtocolError as exc:
            log.warning("AGI session from %s: protocol error: %s; closing", self.peer, exc)
            self._abort()
        except Exception:
            log.exception("AGI session from %s: handler failed; closing", self.peer)
            self._abort()

    def _on_reply(self, reply: Reply) -> None:
        callback, self._in_flight = self._in_flight_callback, False
        self._in_flight_callback = None
        if reply.code != 200:
            # 510/511/520: Asterisk refused a command (dead channel, bad syntax). The
            # dialplan still runs on and takes the default when AB_ACTION is unset.
            log.warning("AGI session from %s: Asterisk answered %r", self.peer, reply.raw)
        if callback is not None:
            callback(reply)
        self._send_next()

    def _send_next(self) -> None:
        if self._transport is None or self._in_flight:
            return
        if not self._queue:
            if self._closing:
                self.finished = True
                self._transport.close()
            return
        command, self._in_flight_callback = self._queue.popleft()
        self._in_flight = True
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s >> %r", self.peer, command)
        self._session.command_sent()
        self._transport.write(command)

    def _header_timeout(self) -> None:
        self._header_timer = None
        log.warning("AGI connection from %s sent no environment in %.0f s; closing",
                    self.peer, HEADER_TIMEOUT)
        self._abort()

    def _abort(self) -> None:
        self._queue.clear()
        if self._transport is not None:
            self._transport.abort()

    def _mark_gone(self) -> None:
        if self.gone or self.finished:
            return
        self.gone = True
        try:
            self._handler.on_gone(self)
        except Exception:
            log.exception("AGI session from %s: on_gone failed", self.peer)


async def serve(handler: SessionHandler, *, host: str, port: int) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: AgiConnection(handler), host=host, port=port, reuse_address=True, backlog=1024)
