"""Adapter between the FastAGI server and the intermediary.

`RouteHandler` turns an AGI session for the `route` script into a route request, and
`AgiResponder` turns the intermediary's answers into AGI commands: a disposition into
one `MSet` of the dialplan contract's variables (`ami_bridge.agi.variables`; a route
target as AB_KIND and AB_TARGET; `disposition_pairs`, the only place that chooses them
for every driver, and `commands_for`) and a treatment into
`ANSWER` + `EXEC Playback` / `GET DATA` / `EXEC StartMusicOnHold`, keeping the session
open. When the operator set a route-request secret (`[bridge] agi_secret_file`), the
script must be `SECRET/route` (the venue's `AGI(${AB_AGI_URL}/route)` with
`AB_AGI_URL=agi://HOST:PORT/SECRET`): a local process that reaches the port but cannot
read Asterisk's or the bridge's config cannot start a route request. A session for any
other script, a wrong secret, or a value the wire refuses, ends with the venue's
default route, and no VTS hears of it: AB_ACTION is always the last variable written,
and an unset AB_ACTION sends the dialplan to its default label.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from typing import Protocol

from ami_bridge.agi import wire
from ami_bridge.agi.protocol import Environment, Reply
from ami_bridge.agi.server import AgiConnection
from ami_bridge.agi.variables import (
    AB_ACTION,
    AB_CAUSE,
    AB_DIAL,
    AB_DIAL_TIMEOUT,
    AB_KIND,
    AB_TARGET,
    ACTION_DEFAULT,
    ROUTE_SCRIPT,
)
from ami_bridge.calls import Disposition, Treatment, TreatmentDone
from ami_bridge.intermediary import Intermediary
from ami_bridge.ratelimit import RateLimitedLog

log = logging.getLogger(__name__)


def disposition_pairs(disposition: Disposition) -> list[tuple[str, str]]:
    """The dialplan contract's variables for a disposition, in the order they are
    written, AB_ACTION last, each checked by the wire's one door (`wire.check_variables`);
    a value it refuses gives the default route's pairs instead. Every driver writes
    exactly these (FastAGI and AsyncAGI in one MSet, ARI one request each)."""
    pairs = []
    if disposition.target is not None:
        pairs += [(AB_KIND, disposition.target.kind), (AB_TARGET, disposition.target.value)]
    if disposition.dial:
        pairs.append((AB_DIAL, disposition.dial))
    if disposition.dial_timeout:
        pairs.append((AB_DIAL_TIMEOUT, str(disposition.dial_timeout)))
    if disposition.cause:
        pairs.append((AB_CAUSE, disposition.cause))
    pairs.append((AB_ACTION, disposition.action))
    try:
        return wire.check_variables(pairs)
    except wire.UnsafeValueError as exc:
        log.error("disposition %r refused at the wire: %s; default route", disposition, exc)
        return [(AB_CAUSE, "unsafe-value"), (AB_ACTION, ACTION_DEFAULT)]


def commands_for(disposition: Disposition) -> list[bytes]:
    """One AGI command for the whole disposition: every variable in one MSet (one round
    trip instead of one per variable; the benchmark showed the round trips dominate),
    AB_ACTION last."""
    return [wire.set_variables(disposition_pairs(disposition))]


class AgiCommands(Protocol):
    """Where a responder's commands go: a FastAGI connection (`AgiConnection`) or an
    AsyncAGI session over AMI (`ami_bridge.drivers.asyncagi`). `run` keeps the session
    open and hands Asterisk's reply to `on_reply`; `finish` sends the last commands and
    ends the session, so the dialplan runs on."""

    def run(self, command: bytes, on_reply: Callable[[Reply], None] | None = None) -> None: ...

    def finish(self, commands: list[bytes]) -> None: ...


class AgiResponder:
    __slots__ = ("_answered", "_conn", "_moh")

    def __init__(self, conn: AgiCommands) -> None:
        self._conn = conn
        self._answered = False
        self._moh = False

    def dispose(self, disposition: Disposition) -> None:
        commands = commands_for(disposition)
        if self._moh:
            commands.insert(0, wire.exec_app(wire.APP_STOP_MOH))
        self._conn.finish(commands)

    def treat(self, treatment: Treatment, done: TreatmentDone) -> None:
        try:
            if treatment.moh_class:
                command = wire.exec_app(wire.APP_START_MOH, treatment.moh_class)
            elif treatment.collect_digits:
                command = wire.get_data(treatment.prompt, treatment.timeout_ms,
                                        treatment.collect_digits)
            else:
                command = wire.exec_app(wire.APP_PLAYBACK, treatment.prompt)
        except wire.UnsafeValueError as exc:
            log.error("treatment %r refused at the AGI wire: %s", treatment, exc)
            done(None)
            return
        if not self._answered:
            self._answered = True
            self._conn.run(wire.answer())
        if treatment.moh_class:
            self._moh = True
        self._conn.run(command, lambda reply: done(_digits(reply, treatment)))


def _digits(reply: Reply, treatment: Treatment) -> str | None:
    """What a treatment gave: collected digits ('' for none), None if it failed."""
    if reply.code != 200 or reply.result == "-1":
        return None
    return reply.result if treatment.collect_digits else ""


class RouteHandler:
    def __init__(self, intermediary: Intermediary, *, secret: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._intermediary = intermediary
        self._expected = f"{secret}/{ROUTE_SCRIPT}" if secret else ROUTE_SCRIPT
        self._clock = clock
        # A peer can send wrong scripts at will: one line per peer every 10 s at most.
        self._warn = RateLimitedLog(log.warning, interval=10.0)

    def on_environment(self, conn: AgiConnection, env: Environment) -> None:
        script = env.get("agi_network_script") or ""
        if not hmac.compare_digest(script.encode(), self._expected.encode()):
            # Never log the script: a near miss would print most of the secret.
            self._warn(self._clock(), "AGI session from %s (context %r) without the route "
                       "script and secret: default route, no VTS asked", conn.peer,
                       env.get("agi_context"), key=conn.peer.rpartition(":")[0])
            AgiResponder(conn).dispose(Disposition(ACTION_DEFAULT, cause="unauthorised"))
            return
        conn.tag = self._intermediary.route_request(env.variables, AgiResponder(conn))

    def on_gone(self, conn: AgiConnection) -> None:
        if isinstance(conn.tag, str):
            self._intermediary.abandon(conn.tag)
        # The channel is gone; Asterisk holds it until the AGI script ends, so end it.
        conn.close()
