"""The shipped virtual transaction server runtime: `python -m ami_bridge.tenants.worker`.

One OS process per VTS. It talks to the bridge over the connected socket whose number
is in AMI_BRIDGE_VTS_FD (see docs/vts-protocol.md), learns the routing protocols of its
tenants from the bridge's `hello`, and answers every `route_request` with a
`disposition` from `ami_bridge.tenants.routing`. It has no Asterisk credentials and sees only the
calls of its own venues. It exits when the bridge closes the socket.

The `--behaviour` option exists for tests and demos of fault handling (a VTS that stays
silent, answers late or answers outside its namespace); production runs use `rules`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import random
import signal
import socket
import sys
from dataclasses import replace
from typing import Any, TextIO, cast

from ami_bridge.tenants.protocol import (
    FD_ENV,
    PROTOCOL_VERSION,
    FrameDecoder,
    Message,
    RemoteProtocolError,
    encode,
)
from ami_bridge.tenants.routing import (
    AgentView,
    CallInfo,
    RoutingProtocol,
    RuleError,
    parse_protocol,
)

log = logging.getLogger("ami_bridge.tenants.worker")

BEHAVIOURS = ("rules", "silent", "late", "foreign-target")
# Calls this VTS keeps state for (pending ones); the bridge's own cap is lower.
MAX_CALLS = 100_000
_KIND_PREFIX = {"queues": "queue:", "outbound": "external:"}


def _rule_target(previous: dict[str, Any]) -> str:
    """The bridge's `previous` {kind, target} in a routing rule's target notation."""
    target = str(previous.get("target", ""))
    return _KIND_PREFIX.get(str(previous.get("kind", "")), "") + target if target else ""


class Worker(asyncio.Protocol):
    def __init__(self, *, name: str, behaviour: str, late_by: float, foreign_target: str,
                 done: asyncio.Future[None], record: TextIO | None = None) -> None:
        self.name = name
        self.behaviour = behaviour
        self.late_by = late_by
        self.foreign_target = foreign_target
        self._done = done
        self._decoder = FrameDecoder()
        self._transport: asyncio.Transport | None = None
        self._protocols: dict[str, RoutingProtocol] = {}
        self._rng = random.Random()
        self._calls: dict[str, tuple[str, CallInfo]] = {}  # pending handle -> tenant, call
        # tenant -> device -> the targets (extensions) that dial it; tenant -> target -> state
        self._targets_of: dict[str, dict[str, list[str]]] = {}
        self._agents: dict[str, dict[str, AgentView]] = {}
        self._record = record

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's transports are not asyncio.Transport subclasses
        self._transport = cast(asyncio.Transport, transport)
        self._send({"type": "hello", "v": PROTOCOL_VERSION, "vts": self.name})

    def data_received(self, data: bytes) -> None:
        self._decoder.receive_data(data)
        try:
            while (message := self._decoder.next_message()) is not None:
                self._on_message(message)
        except RemoteProtocolError as exc:
            log.error("vts %s: protocol error from the bridge: %s", self.name, exc)
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_result(None)

    def _on_message(self, message: Message) -> None:
        if self._record is not None:
            self._record.write(json.dumps(message, separators=(",", ":")) + "\n")
            self._record.flush()
        kind = message.get("type")
        if kind == "hello":
            self._configure(message)
        elif kind == "route_request":
            self._route(message)
        elif kind == "event":
            self._on_event(message)
        elif kind == "agent_state":
            self._on_agent(message)
        elif kind == "error":
            log.warning("vts %s: bridge refused: %s (%s)", self.name, message.get("message"),
                        message.get("code"))
            if message.get("code") == "not-pending":
                self._calls.pop(str(message.get("handle")), None)
        else:
            log.warning("vts %s: ignoring message type %r", self.name, kind)

    def _configure(self, message: Message) -> None:
        if message.get("v") != PROTOCOL_VERSION:
            log.error("vts %s: bridge speaks protocol %r, not %d", self.name, message.get("v"),
                      PROTOCOL_VERSION)
            self._close()
            return
        tenants: dict[str, Any] = message.get("tenants") or {}
        try:
            self._protocols = {
                name: parse_protocol(t.get("rules", []), timezone=t.get("timezone", "UTC"),
                                     holidays=t.get("holidays", []), where=f"{name}.rules")
                for name, t in tenants.items()
            }
        except RuleError as exc:
            log.error("vts %s: bad routing protocol from the bridge: %s", self.name, exc)
            self._close()
            return
        self._targets_of = {}
        for name, t in tenants.items():
            for ext, device in (t.get("extensions") or {}).items():
                self._targets_of.setdefault(name, {}).setdefault(str(device), []).append(ext)
        log.info("vts %s: serving %s", self.name, ", ".join(sorted(self._protocols)) or "nobody")

    def _route(self, message: Message) -> None:
        handle = str(message.get("handle"))
        call = message.get("call") or {}
        previous = call.get("previous") or {}
        info = CallInfo(ani=str(call.get("ani", "")), dnis=str(call.get("dnis", "")),
                        previous_target=_rule_target(previous),
                        previous_status=str(previous.get("status", "")))
        if len(self._calls) < MAX_CALLS:
            self._calls[handle] = (str(message.get("tenant")), info)
        if self.behaviour == "silent":
            return
        if self.behaviour == "foreign-target":
            self._send({"type": "disposition", "handle": handle, "action": "route",
                        "target": self.foreign_target})
            return
        answer = self._decide(handle)
        if self.behaviour == "late":
            asyncio.get_running_loop().call_later(self.late_by, self._send, answer)
        else:
            self._send(answer)

    def _on_agent(self, message: Message) -> None:
        tenant, device = str(message.get("tenant")), str(message.get("device"))
        view = AgentView(available=bool(message.get("available")),
                         idle_since=message.get("idle_since"))
        for target in self._targets_of.get(tenant, {}).get(device, ()):
            self._agents.setdefault(tenant, {})[target] = view

    def _on_event(self, message: Message) -> None:
        handle = str(message.get("handle"))
        event = message.get("event")
        if event == "call":  # AMI call progress for one of our calls (docs/vts-protocol.md)
            log.debug("vts %s: call %s %s", self.name, message.get("uniqueid"),
                      message.get("kind"))
        elif event == "treatment_done" and handle in self._calls:
            tenant, info = self._calls[handle]
            self._calls[handle] = (tenant, replace(info, digits=str(message.get("digits", "")),
                                                   treated=True))
            self._send(self._decide(handle))
        else:
            log.info("vts %s: event %s for %s", self.name, event, handle)
            self._calls.pop(handle, None)

    def _decide(self, handle: str) -> Message:
        tenant, info = self._calls.get(handle, ("", CallInfo(ani="", dnis="")))
        protocol = self._protocols.get(tenant)
        if protocol is None:
            self._calls.pop(handle, None)
            return {"type": "disposition", "handle": handle, "action": "default"}
        decision = protocol.evaluate(info, dt.datetime.now(dt.UTC), self._rng,
                                     self._agents.get(tenant, {}))
        answer: Message = {"type": "disposition", "handle": handle, "action": decision.action}
        if decision.action == "treatment":
            if decision.moh:
                answer["moh"] = True
            else:
                answer["prompt"] = decision.prompt
                if decision.collect_digits:
                    answer["collect_digits"] = decision.collect_digits
                    answer["timeout_ms"] = decision.timeout_ms
            return answer
        self._calls.pop(handle, None)
        if decision.target:
            kind, sep, value = decision.target.partition(":")
            answer[{"queue": "queue", "external": "external"}[kind] if sep else "target"] = (
                value if sep else decision.target)
        if decision.dial_timeout:
            answer["dial_timeout"] = decision.dial_timeout
        if decision.action == "reject":
            answer["cause"] = decision.cause
        return answer

    def _send(self, message: Message) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(encode(message))

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def run(args: argparse.Namespace) -> int:
    fd_text = os.environ.get(FD_ENV)
    if fd_text is None or not fd_text.isdigit():
        print(f"ami_bridge.tenants.worker: {FD_ENV} is not set; this program is started by "
              "ami-bridge "
              "(see docs/vts-protocol.md)", file=sys.stderr)
        return 2
    sock = socket.socket(fileno=int(fd_text))
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def finish() -> None:
        if not done.done():
            done.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, finish)
    record = open(args.record, "a", encoding="utf-8") if args.record else None  # noqa: SIM115
    transport, _ = await loop.create_unix_connection(
        lambda: Worker(name=args.vts, behaviour=args.behaviour, late_by=args.late_by,
                       foreign_target=args.foreign_target, done=done, record=record),
        sock=sock)
    try:
        await done
    finally:
        transport.close()
        if record is not None:
            record.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ami_bridge.tenants.worker",
        description="ami-bridge's virtual transaction server runtime (started by the bridge).")
    parser.add_argument("--vts", required=True, help="the VTS name from the bridge config")
    parser.add_argument("--behaviour", choices=BEHAVIOURS, default="rules",
                        help="rules (default): evaluate the tenants' routing protocols; "
                        "the others simulate faults for tests")
    parser.add_argument("--late-by", type=float, default=5.0,
                        help="seconds to delay answers with --behaviour late")
    parser.add_argument("--foreign-target", default="2001",
                        help="target used with --behaviour foreign-target")
    parser.add_argument("--record", metavar="FILE",
                        help="append every message received from the bridge to FILE "
                        "(one JSON object per line), for tests and debugging")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s vts[{args.vts}] %(levelname)s %(message)s")
    from ami_bridge.eventloop import run as run_loop

    return run_loop(run(args))


if __name__ == "__main__":
    sys.exit(main())
