"""asyncio glue for the FastAGI server: one `asyncio.Protocol` per Asterisk connection.

Read, feed the sans-I/O `AgiSession`, pull events, write. A `SessionHandler` (the
bridge's intermediary adapter) decides what to do with the environment; it answers
through `AgiConnection.run` / `finish`, which write the commands one at a time (each
waits for Asterisk's reply: res_agi polls its socket, so pipelined commands could sit
unread in its stdio buffer). `run` sends a command and keeps the session open (a
treatment: a prompt, music, digit collection); `finish` queues the final commands after
whatever is in flight and then closes the connection, which ends the AGI application
in the dialplan with AGISTATUS=SUCCESS.

What the listener admits (`ami_bridge.agi.limits.ListenerPolicy`): a peer not on the
allow-list, or one over its cap of concurrent sessions, is closed at once, before any
environment is read. Every session has an environment deadline, a per-reply deadline
and an overall deadline; the first to pass closes it (the dialplan then takes its
default route: AB_ACTION is unset). An environment the core refuses as ambiguous never
reaches the handler: this module answers it with the default disposition itself
(`DEFAULT_ANSWER`), so no VTS hears of it. Those events a peer can cause at will log
one rate-limited line each.

Per-session exception barrier: a protocol error or a handler bug is logged and closes
that one session (the dialplan then takes its default route); the server goes on.
Wire lines are logged at DEBUG with `<<` (from Asterisk) and `>>` (to Asterisk); the
environment is logged once parsed, with the route-request secret (the path of
`agi_network_script` and `agi_request` before the script name) masked, never as raw
bytes. A connection closed before it sent a byte (a health check of the port) is
logged at DEBUG only.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import deque
from collections.abc import Callable
from typing import Protocol, cast

from ami_bridge.agi import wire
from ami_bridge.agi.limits import (
    Deadline,
    ListenerPolicy,
    PeerSessions,
    SessionDeadlines,
)
from ami_bridge.agi.protocol import (
    NEED_DATA,
    AgiSession,
    Closed,
    Environment,
    EnvironmentRefused,
    Hangup,
    Phase,
    RemoteProtocolError,
    Reply,
)
from ami_bridge.agi.variables import AB_ACTION, AB_CAUSE
from ami_bridge.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)

# Why a refused environment was default-routed (AB_CAUSE), as `unknown-venue` is for a
# venue the bridge does not know.
CAUSE_REFUSED_ENVIRONMENT = "refused-environment"
DEFAULT_ANSWER = wire.set_variables([(AB_CAUSE, CAUSE_REFUSED_ENVIRONMENT),
                                     (AB_ACTION, "default")])
# Lines a peer can cause at will (refused peers, refused environments, deadlines): one
# line per kind in this many seconds; the next says how many were suppressed.
PEER_LOG_INTERVAL = 10.0
# Environment variables whose value carries the route-request secret in its path
# (`SECRET/route`, `agi://HOST:PORT/SECRET/route`): logged with the path masked.
SECRET_PATH_VARIABLES = frozenset({"agi_network_script", "agi_request"})
MASK = "********"
# Descriptors the daemon needs besides AGI sessions: VTS sockets and pipes, the AMI
# session, the control socket, log files, with margin.
RESERVED_DESCRIPTORS = 256
# Peer hosts whose admission (`ListenerPolicy.admit`: parse the address, match it) the
# listener remembers: Asterisk connects from one or a few addresses, and the parse cost
# ~3 us of every route. Past this many distinct hosts the memo starts again, so a scan
# from many addresses cannot grow it.
MAX_ADMITTED_PEERS = 1024


ReplyCallback = Callable[[Reply], None]


class SessionHandler(Protocol):
    def on_environment(self, conn: AgiConnection, env: Environment) -> None: ...

    def on_gone(self, conn: AgiConnection) -> None:
        """The channel hung up or the connection closed before the session ended."""


class Listener:
    """What the sessions of one listening socket share: the handler, the policy, the
    per-peer session counts and the rate limit of the lines a peer can cause."""

    def __init__(self, handler: SessionHandler, policy: ListenerPolicy,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.handler = handler
        self.policy = policy
        self.loop = loop
        self.sessions = PeerSessions(policy.max_sessions_per_peer)
        self.note = RateLimitedLog(log.warning, interval=PEER_LOG_INTERVAL)
        self._admitted: dict[str, str | None] = {}  # host -> policy.admit(host)

    def admit(self, host: str) -> str | None:
        """`policy.admit(host)`, remembered per host (the policy is immutable)."""
        try:
            return self._admitted[host]
        except KeyError:
            pass
        if len(self._admitted) >= MAX_ADMITTED_PEERS:
            self._admitted.clear()
        key = self._admitted[host] = self.policy.admit(host)
        return key

    def connection(self) -> AgiConnection:
        return AgiConnection(self)


class AgiConnection(asyncio.Protocol):
    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._handler = listener.handler
        self._session = AgiSession()
        self._transport: asyncio.Transport | None = None
        self._queue: deque[tuple[bytes, ReplyCallback | None]] = deque()
        self._in_flight = False
        self._in_flight_callback: ReplyCallback | None = None
        self._closing = False
        self._deadlines: SessionDeadlines | None = None  # None: refused at the door
        self._timer: asyncio.TimerHandle | None = None
        self._counted_as: str | None = None  # the peer key in PeerSessions
        self._delivered = False  # the handler has the environment
        self._received = False  # any byte arrived (else EOF is a health check)
        self._refused = False  # the environment was refused: this module answers
        self.finished = False  # our answer was delivered completely
        self.gone = False
        self.peer = "?"
        self.tag: object = None  # the handler's per-session data (the call handle)

    # -- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's transports are not asyncio.Transport subclasses
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        self.peer = f"{host}:{peer[1]}" if isinstance(peer, tuple) else host
        listener, now = self._listener, self._listener.loop.time()
        key = listener.admit(host)
        if key is None:
            listener.note(now, "AGI connection from %s refused: not an allowed peer "
                          "(bridge.agi_allowed_peers)", self.peer, key="not-allowed")
            self._abort()
            return
        if not listener.sessions.open(key):
            listener.note(now, "AGI connection from %s refused: %s already has %d sessions "
                          "open (bridge.agi_max_sessions_per_peer)", self.peer, key,
                          listener.sessions.cap, key="over-cap")
            self._abort()
            return
        self._counted_as = key
        self._deadlines = SessionDeadlines(listener.policy, now)
        self._arm()

    def data_received(self, data: bytes) -> None:
        self._received = True
        if log.isEnabledFor(logging.DEBUG):
            if self._session.phase is Phase.HEADER:  # the environment: logged once parsed
                log.debug("%s << %d bytes of environment", self.peer, len(data))
            else:
                log.debug("%s << %r", self.peer, data)
        self._feed(data)

    def eof_received(self) -> bool | None:
        if not self._received:
            # A port check (a load balancer's, systemd's, an operator's nc -z): nothing
            # went wrong, so no warning; returning None closes the transport.
            log.debug("AGI connection from %s closed without a request (a health check?)",
                      self.peer)
            return None
        self._feed(b"")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._counted_as is not None:
            self._listener.sessions.close(self._counted_as)
            self._counted_as = None
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
        if self._deadlines is None:
            return  # refused at the door: nothing it sends is read
        try:
            self._session.receive_data(data)
            while True:
                event = self._session.next_event()
                if event is NEED_DATA:
                    return
                if isinstance(event, Environment):
                    if log.isEnabledFor(logging.DEBUG):
                        log.debug("%s << environment %r", self.peer, masked(event.variables))
                    self._deadlines.environment_received()
                    self._delivered = True
                    self._handler.on_environment(self, event)
                elif isinstance(event, EnvironmentRefused):
                    self._deadlines.environment_received()
                    self._refuse(event)
                elif isinstance(event, Reply):
                    self._deadlines.reply_received()
                    self._on_reply(event)
                elif isinstance(event, Hangup):
                    self._mark_gone()
                elif isinstance(event, Closed):
                    self._mark_gone()
                    self.close()
                    return
        except RemoteProtocolError as exc:
            self._note("AGI session from %s: protocol error: %s; closing", self.peer, exc,
                       key="protocol-error")
            self._abort()
        except Exception:
            log.exception("AGI session from %s: handler failed; closing", self.peer)
            self._abort()

    def _refuse(self, event: EnvironmentRefused) -> None:
        """Answer an ambiguous environment with the default disposition, as for an
        unknown venue; the handler (and so every VTS) never hears of it."""
        self._note("AGI session from %s: environment refused: %s; default route",
                   self.peer, event.reason, key="environment-refused")
        self._refused = True
        self.finish([DEFAULT_ANSWER])

    def _note(self, msg: str, *args: object, key: str) -> None:
        """A warning a peer can cause at will: rate-limited, and after a refused
        environment (already logged once) only at DEBUG."""
        if self._refused:
            log.debug(msg, *args)
        else:
            self._listener.note(self._listener.loop.time(), msg, *args, key=key)

    def _on_reply(self, reply: Reply) -> None:
        callback, self._in_flight = self._in_flight_callback, False
        self._in_flight_callback = None
        if reply.code != 200:
            # 510/511/520: Asterisk refused a command (dead channel, bad syntax). The
            # dialplan still runs on and takes the default when AB_ACTION is unset.
            self._note("AGI session from %s: Asterisk answered %r", self.peer, reply.raw,
                       key="command-failed")
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
        if self._deadlines is not None:
            self._deadlines.command_sent(self._listener.loop.time())
            self._arm()
        self._transport.write(command)

    def _arm(self) -> None:
        """Have a timer fire no later than the earliest deadline. A timer set for an
        earlier moment is kept (it re-arms when it fires): deadlines mostly move later,
        and one timer per session is what a routed call then costs."""
        if self._deadlines is None or self._transport is None:
            return
        due = self._deadlines.due()
        if self._timer is not None:
            if self._timer.when() <= due:
                return
            self._timer.cancel()
        self._timer = self._listener.loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._deadlines is None or self._transport is None:
            return
        passed = self._deadlines.expired(self._listener.loop.time())
        if passed is None:
            self._arm()
            return
        what = {Deadline.ENVIRONMENT: "sent no complete environment",
                Deadline.REPLY: "did not answer a command",
                Deadline.SESSION: "was still open"}[passed]
        self._note("AGI session from %s %s after %g s (bridge.agi_%s_timeout); closing",
                   self.peer, what, self._deadlines.limit(passed), passed.value,
                   key=f"deadline-{passed.value}")
        self._abort()

    def _abort(self) -> None:
        self._queue.clear()
        if self._transport is not None:
            self._transport.abort()

    def _mark_gone(self) -> None:
        if self.gone or self.finished:
            return
        self.gone = True
        if not self._delivered:
            return  # the handler never saw this session
        try:
            self._handler.on_gone(self)
        except Exception:
            log.exception("AGI session from %s: on_gone failed", self.peer)


def masked(variables: dict[str, str]) -> dict[str, str]:
    """The environment as it may be logged: the secret path segments masked."""
    shown = dict(variables)
    for key in SECRET_PATH_VARIABLES & shown.keys():
        head, sep, script = shown[key].rpartition("/")
        if key == "agi_request":  # agi://HOST:PORT/SECRET/route: keep the address
            scheme, slashes, rest = head.partition("//")
            address, sep2, secret = rest.partition("/")
            head = f"{scheme}{slashes}{address}{sep2}{MASK}" if secret else head
        elif head:
            head = MASK
        shown[key] = f"{head}{sep}{script}"
    return shown


def ensure_descriptors(needed: int) -> None:
    """Raise the soft descriptor limit toward `needed` (up to the hard limit), so the
    session cap, not the kernel, is what refuses a flood; warn when it cannot."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft < needed:
        log.warning("descriptor limit %d is below the %d that bridge.agi_max_sessions_per_peer"
                    " needs; raise `ulimit -n` or lower the cap", soft, needed)


async def serve(handler: SessionHandler, *, host: str, port: int,
                policy: ListenerPolicy | None = None) -> asyncio.Server:
    policy = policy if policy is not None else ListenerPolicy()
    listener = Listener(handler, policy, asyncio.get_running_loop())
    return await serve_listener(listener, host=host, port=port)


async def serve_listener(listener: Listener, *, host: str, port: int) -> asyncio.Server:
    """`serve` with a listener the caller keeps: a stopping bridge closes the server and
    then waits for `listener.sessions.total()` to reach 0 (answers still on the wire)."""
    ensure_descriptors(listener.policy.max_sessions_per_peer + RESERVED_DESCRIPTORS)
    return await listener.loop.create_server(listener.connection, host=host, port=port,
                                             reuse_address=True, backlog=1024)
