"""The AsyncAGI driver: route requests over the bridge's one AMI session.

Contract. A venue with `driver = "asyncagi"` runs `AGI(agi:async,${AB_LAST},${DIALSTATUS})`
(`ami_bridge.dialplan.render`). Asterisk announces the call with `AsyncAGIStart`, whose
`Env` header is the AGI environment, URL-encoded; it is read by the one environment
parser (`ami_bridge.agi.protocol.parse_environment`) and handed, with a responder, to
`route_request`, exactly as the FastAGI side does. The responder is the FastAGI one
(`AgiResponder`) over an `AsyncSession`: each AGI command (built only by
`ami_bridge.agi.wire`) goes out as one `AGI` manager action (Channel, Command,
CommandID); a treatment's result comes back in `AsyncAGIExec` (its `CommandId`, its
`Result` URL-encoded), a disposition is the one `EXEC MSet` then `ASYNCAGI BREAK`.
`AsyncAGIEnd` or the channel's `Hangup` while the call is pending is an abandon.
Only channels whose context is an asyncagi venue are touched: any other AsyncAGI user
on the same Asterisk keeps its channels.

Measured on Asterisk 22.10 (docs/drivers.md, "AsyncAGI"): a channel waits in
`AGI(agi:async)` forever when no manager session reads it, and keeps waiting when the
session drops; an AGI command queued for a channel that is not in AsyncAGI (after its
BREAK, after it hung up the AGI) is not refused but kept, and the channel's NEXT
`AGI(agi:async)` runs it. Hence the rules here: commands go to a channel only while its
session is open (between AsyncAGIStart and our BREAK); BREAK is the last; an action is
never resent (`AmiClient.send_nowait`); after a reconnect (`resync`, from
CoreShowChannels) a channel still in AsyncAGI in one of our venues that we do not hold
is broken (AB_ACTION unset: the venue's fallback), a disposition decided while AMI was
down is delivered then, and a held session whose channel is no longer in AsyncAGI is
dropped (an abandon when it was pending). The venue's own `TIMEOUT(absolute)` and `T`
extension cover a bridge that never comes back.

It does no I/O of its own and needs no event loop: the AMI side is the `SendAgi`
callable passed in (`AmiLink` writes with `AmiClient.send_nowait`).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol
from urllib.parse import unquote, unquote_to_bytes

from ami_bridge.agi import wire
from ami_bridge.agi.protocol import (
    MAX_HEADER_BYTES,
    Environment,
    Reply,
    parse_environment,
    parse_reply,
)
from ami_bridge.agi.server import DEFAULT_ANSWER as REFUSED_ANSWER
from ami_bridge.agi.variables import ASYNC_AGI
from ami_bridge.agi_adapter import AgiResponder
from ami_bridge.ami.protocol import MAX_ACTION_LINE_BYTES, Event
from ami_bridge.calls import Responder

log = logging.getLogger(__name__)

DRIVER = "asyncagi"
# The events this driver reads (the manager user's eventfilter lets exactly these and
# Hangup through, asterisk-conf/manager.d/ami-bridge.conf).
START, EXEC, END, HANGUP = "AsyncAGIStart", "AsyncAGIExec", "AsyncAGIEnd", "Hangup"
EVENTS = frozenset({START, EXEC, END, HANGUP})
# CoreShowChannel of a channel waiting in AsyncAGI: Application AGI, data `agi:async,...`.
APPLICATION = "AGI"
APPLICATION_DATA = ASYNC_AGI
# The URL-encoded environment: at most the FastAGI bound on the raw header
# (MAX_HEADER_BYTES), each byte written as up to three characters (%XX).
MAX_ENV_CHARS = 3 * MAX_HEADER_BYTES
# The AGI action carries the command as one header line, which Asterisk reads into a
# 1025-byte buffer (MAX_ACTION_LINE_BYTES, ami_bridge.ami.protocol): a longer command
# would be cut there; refuse it first ("Command: " and CRLF take 11 bytes).
MAX_COMMAND_BYTES = MAX_ACTION_LINE_BYTES - len("Command: ") - 2
# What an environment that cannot be read one way gets: the FastAGI side's answer.
DEFAULT_ANSWER = [REFUSED_ANSWER]

# (channel, AGI command line without its newline, CommandID) -> True when written on
# the AMI session, False when there is none (nothing is queued or resent).
SendAgi = Callable[[str, str, str], bool]
ReplyCallback = Callable[[Reply], None]


class RouteCore(Protocol):
    """The intermediary, as a driver sees it."""

    def route_request(self, env: Mapping[str, str], responder: Responder) -> str | None: ...

    def abandon(self, handle: str) -> None: ...


class AsyncSession:
    """One channel's `AGI(agi:async)` run, seen by the responder as its AGI connection."""

    __slots__ = ("_driver", "channel", "closing", "command_ids", "handle", "unsent")

    def __init__(self, driver: AsyncAgiDriver, channel: str) -> None:
        self._driver = driver
        self.channel = channel
        self.handle: str | None = None  # the intermediary's, while the call is pending
        self.closing = False  # BREAK sent or decided: nothing more may be sent
        self.unsent: list[bytes] = []  # the last commands, decided while AMI was down
        self.command_ids: list[str] = []  # commands whose AsyncAGIExec is awaited

    def run(self, command: bytes, on_reply: ReplyCallback | None = None) -> None:
        if not self.closing:
            self._driver.send(self, command, on_reply)

    def finish(self, commands: list[bytes]) -> None:
        if self.closing:
            return
        self.closing = True
        self.handle = None  # disposed: an AsyncAGIEnd from here on is no abandon
        try:
            for command in commands:
                command_text(command)
        except wire.UnsafeValueError as exc:
            log.error("AsyncAGI %s: %s; default route", self.channel, exc)
            commands = DEFAULT_ANSWER
        outgoing = [*commands, wire.async_break()]
        for index, command in enumerate(outgoing):
            if not self._driver.send(self, command, None):
                # No AMI session: kept for the resync, which delivers them if the
                # channel still waits in AsyncAGI (never resent: they were not sent).
                self.unsent = outgoing[index:]
                return


def command_text(command: bytes) -> str:
    """An AGI command line from `ami_bridge.agi.wire` as the AGI action's Command value."""
    if len(command) - 1 > MAX_COMMAND_BYTES:
        raise wire.UnsafeValueError(f"AGI command of {len(command)} bytes exceeds the "
                                    f"AGI action's {MAX_COMMAND_BYTES}")
    return command.decode("utf-8").removesuffix("\n")


def environment(env: str) -> Environment | str:
    """The Env header of AsyncAGIStart -> the environment, or why it was refused."""
    if len(env) > MAX_ENV_CHARS:
        return f"Env of {len(env)} characters exceeds {MAX_ENV_CHARS}"
    block = unquote_to_bytes(env)
    # Asterisk ends the block as on the FastAGI wire, with a blank line.
    block = block.removesuffix(b"\n").removesuffix(b"\n")
    parsed = parse_environment(block)
    return parsed if isinstance(parsed, Environment) else parsed.reason


class AsyncAgiDriver:
    def __init__(self, core: RouteCore, *, send: SendAgi, venues: Iterable[str]) -> None:
        """`venues`: the contexts of the asyncagi venues (the only ones touched)."""
        self._core = core
        self._send = send
        self.venues = frozenset(venues)
        self.sessions: dict[str, AsyncSession] = {}  # channel -> its open AsyncAGI run
        self._replies: dict[str, tuple[AsyncSession, ReplyCallback]] = {}
        self._ids = itertools.count(1)
        self.broken = 0  # channels broken after a reconnect (status, tests)

    def set_venues(self, venues: Iterable[str]) -> None:
        self.venues = frozenset(venues)

    # -- AMI side ---------------------------------------------------------------------
    def on_event(self, event: Event) -> None:
        name = event.name
        if name == HANGUP:
            if self.sessions:
                self._gone(event.get("Channel") or "")
        elif name == START:
            self._start(event)
        elif name == EXEC:
            self._exec(event)
        elif name == END:
            self._gone(event.get("Channel") or "")

    def _start(self, event: Event) -> None:
        context = event.get("Context") or ""
        if context not in self.venues:
            return  # another application's AsyncAGI: not ours to answer
        channel = event.get("Channel") or ""
        old = self.sessions.get(channel)
        if old is not None:
            if old.closing:
                # Broken by a resync before this (held) Start was read: the same run.
                return
            self._gone(channel)
        session = AsyncSession(self, channel)
        self.sessions[channel] = session
        env = environment(event.get("Env") or "")
        if isinstance(env, str) or env.get("agi_context") != context:
            why = env if isinstance(env, str) else "agi_context is not the channel's context"
            log.warning("AsyncAGI %s in %s: environment refused: %s; default route",
                        channel, context, why)
            session.finish(DEFAULT_ANSWER)
            return
        handle = self._core.route_request(env.variables, AgiResponder(session))
        if not session.closing:
            session.handle = handle

    def _exec(self, event: Event) -> None:
        entry = self._replies.pop(event.get("CommandId") or "", None)
        if entry is None:
            return
        _session, callback = entry
        text = unquote(event.get("Result") or "").removesuffix("\n")
        reply = parse_reply(text) or Reply(code=0, result="-1", data="", raw=text)
        callback(reply)

    def _gone(self, channel: str) -> None:
        session = self.sessions.pop(channel, None)
        if session is None:
            return
        # Its AGI run is over: a command sent now would wait for the channel's NEXT
        # AGI(agi:async) and run there, so nothing more goes out for this session.
        pending = not session.closing
        session.closing = True
        for command_id in session.command_ids:
            self._replies.pop(command_id, None)
        if pending and session.handle is not None:
            self._core.abandon(session.handle)

    def send(self, session: AsyncSession, command: bytes, on_reply: ReplyCallback | None) -> bool:
        """Send one command of an open session; False when there is no AMI session."""
        try:
            text = command_text(command)
        except wire.UnsafeValueError as exc:
            log.error("AsyncAGI %s: %s; not sent", session.channel, exc)
            return True  # refused, not undelivered: nothing to keep for later
        command_id = f"ab-agi-{next(self._ids)}"
        if not self._send(session.channel, text, command_id):
            return False
        if on_reply is not None:
            self._replies[command_id] = (session, on_reply)
            session.command_ids.append(command_id)
        return True

    def resync(self, channels: Iterable[Event]) -> None:
        """After a (re)connect, from CoreShowChannels: deliver what was decided while AMI
        was down, break the channels waiting in our venues that nobody holds, drop the
        sessions whose channel no longer waits in AsyncAGI."""
        waiting = {e.get("Channel") or "" for e in channels
                   if e.get("Application") == APPLICATION
                   and (e.get("ApplicationData") or "").startswith(APPLICATION_DATA)
                   and (e.get("Context") or "") in self.venues}
        for channel in [c for c in self.sessions if c not in waiting]:
            self._gone(channel)
        for channel in waiting:
            session = self.sessions.get(channel)
            if session is None:
                session = AsyncSession(self, channel)
                self.sessions[channel] = session
                self.broken += 1
                log.warning("AsyncAGI %s waits in a venue with no route request known to "
                            "the bridge (AMI was down): break, the venue's fallback runs",
                            channel)
                session.finish([])
            elif session.unsent:
                unsent, session.unsent = session.unsent, []
                for index, command in enumerate(unsent):
                    if not self.send(session, command, None):
                        session.unsent = unsent[index:]
                        break
