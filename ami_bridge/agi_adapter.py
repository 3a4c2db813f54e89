"""Adapter between the FastAGI server and the intermediary.

`RouteHandler` turns an AGI session for the `route` script into a route request and a
disposition back into AGI commands (`commands_for`, the only place that does so). A
session for any other script, or a value the wire refuses, ends with the venue's
default route: AB_ACTION is always the last variable written, and an unset AB_ACTION
sends the dialplan to its default label.
"""

from __future__ import annotations

import logging

from agi import wire
from agi.protocol import Environment
from agi.server import AgiConnection
from agi.variables import AB_ACTION, AB_CAUSE, AB_TARGET
from ami_bridge.intermediary import Disposition, Intermediary

log = logging.getLogger(__name__)

ROUTE_SCRIPT = "route"


def commands_for(disposition: Disposition) -> list[bytes]:
    try:
        commands = []
        if disposition.target:
            commands.append(wire.set_variable(AB_TARGET, disposition.target))
        if disposition.cause:
            commands.append(wire.set_variable(AB_CAUSE, disposition.cause))
        commands.append(wire.set_variable(AB_ACTION, disposition.action))
        return commands
    except wire.UnsafeValueError as exc:
        log.error("disposition %r refused at the AGI wire: %s; default route", disposition, exc)
        return [wire.set_variable(AB_CAUSE, "unsafe-value"),
                wire.set_variable(AB_ACTION, "default")]


class _Responder:
    __slots__ = ("_conn",)

    def __init__(self, conn: AgiConnection) -> None:
        self._conn = conn

    def dispose(self, disposition: Disposition) -> None:
        self._conn.send_commands(commands_for(disposition))


class RouteHandler:
    def __init__(self, intermediary: Intermediary) -> None:
        self._intermediary = intermediary

    def on_environment(self, conn: AgiConnection, env: Environment) -> None:
        script = env.get("agi_network_script")
        if script != ROUTE_SCRIPT:
            log.warning("AGI request for unknown script %r from %s (context %r): default route",
                        script, conn.peer, env.get("agi_context"))
            _Responder(conn).dispose(Disposition("default", cause="unknown-script"))
            return
        conn.tag = self._intermediary.route_request(env.variables, _Responder(conn))

    def on_gone(self, conn: AgiConnection) -> None:
        if isinstance(conn.tag, str):
            self._intermediary.abandon(conn.tag)
