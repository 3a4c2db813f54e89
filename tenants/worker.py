"""The shipped virtual transaction server runtime: `python -m ami_bridge.tenants.worker`.

One OS process per VTS. It talks to the bridge over the connected socket whose number
is in AMI_BRIDGE_VTS_FD (see docs/vts-protocol.md), learns the routing protocols of its
tenants from the bridge's `hello`, and answers every `route_request` with a
`disposition` from `ami_bridge.tenants.routing`. It has no Asterisk credentials and sees only the
calls of its own venues. It exits when the bridge closes the socket.

Frames are typed by `ami_bridge.tenants.messages`; one the runtime cannot read is
logged and skipped. `Worker.decide` (the answer for one pending call, or None for no
answer) and `Worker.on_message` (every frame from the bridge) are the hooks a VTS
built on this runtime overrides; `serve` runs any such `Worker` on the socket. The
fault-injecting VTS of the tests (`python -m harness.fault_vts`) is one.

Its state that must outlive the process, the round-robin cursors, goes to the bridge as
a `state` frame per tenant (protocol 2.2) after each batch of frames in which a cursor
moved (one frame per tenant per batch, not one per call), and comes back from the bridge
after the handshake (`restore_cursors`), so a restarted VTS, or this tenant's VTS on
another bridge, resumes the round-robin where it was. A reload's new `hello` keeps the
cursors. A bridge older than 2.2 (its hello's `minor` < 2) is sent none.

`run` drives a worker of the shipped class (or a subclass that sets
`runs_without_event_loop = True`: it uses no timers, tasks or other loop services) with a
plain blocking loop on its one socket, `serve_blocking`: recv, decode every whole frame,
decide, one send for all the answers. A VTS has nothing else to wait for, and an event
loop's wake-up (epoll, its own bookkeeping, its transport objects) cost more per route
than the routing decision itself (bench/README.md, "Notes: the routing path"). Any other subclass
runs on the event loop (`serve`), as before.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import random
import signal
import socket
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, ClassVar, cast

from ami_bridge.ratelimit import RateLimitedLog
from ami_bridge.tenants import messages as m
from ami_bridge.tenants import personal
from ami_bridge.tenants.protocol import (
    FD_ENV,
    PROTOCOL_MINOR,
    PROTOCOL_VERSION,
    FrameDecoder,
    JsonObject,
    RemoteProtocolError,
    encode,
    encoded_size,
)
from ami_bridge.tenants.routing import (
    AgentView,
    CallInfo,
    RoutingProtocol,
    RuleError,
    parse_protocol,
)

log = logging.getLogger("ami_bridge.tenants.worker")

# Calls this VTS keeps state for (pending ones); the bridge's own cap is lower.
MAX_CALLS = 100_000
# A VTS stopped for a while (SIGSTOP, a long GC pause, a hung disk) reads its whole
# backlog when it resumes: a route request and the bridge's `default_routed` for each
# call it missed, then a refusal (`not-pending`) for each late answer. One line per call
# (863 WARNING lines in 30 s in the run) drowned the rest and hit the bridge's cap
# on a VTS's output, which then dropped the lines that mattered. Per refusal code and per
# event kind, a few lines per 10 s are written as they come; past that, the next line
# says how many it stands for (docs/reliability.md, vts-stop).
SUMMARY_INTERVAL_S = 10.0
REFUSAL_LINES_PER_INTERVAL = 5
EVENT_LINES_PER_INTERVAL = 20
# Validated portions kept between a user's calls, so a call does not validate rules
# that have not changed again (parse_portion: ~100 us for a four-rule portion; measured
# -90 us of VTS CPU per personal call, bench/README.md "personal"). Bounded by the rules
# held in all, least recently used dropped first: the benchmark's 10,000 users with four
# rules each (40,000) added ~45 MB to the VTS's RSS, so this bound is ~55 MB at most.
MAX_CACHED_RULES = 50_000
# One recv() of the blocking loop: a route request is < 1 KiB, so a burst of several
# dozen arrives in one read; a longer frame (a hello) is simply read in several.
RECV_BYTES = 64 * 1024
# The minor version from which the bridge keeps a VTS's `state` frames (protocol 2.2).
STATE_MINOR = 2


class Worker(asyncio.Protocol):
    # What the hello asks the bridge for (protocol 2.1): agent states, which
    # longest_idle and availability read. Call events were only ever logged at DEBUG
    # here and cost the bridge and this process ~11 frames per call (bench/README.md,
    # "Notes: the AMI path"); a runtime built on this one that reads them sets None (all).
    events: ClassVar[tuple[str, ...] | None] = (m.AGENT_STATE,)

    def __init__(self, *, name: str, done: asyncio.Future[None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._done = done
        self._clock = clock
        self._warn_refused = RateLimitedLog(log.warning, interval=SUMMARY_INTERVAL_S,
                                            burst=REFUSAL_LINES_PER_INTERVAL)
        self._info_event = RateLimitedLog(log.info, interval=SUMMARY_INTERVAL_S,
                                          burst=EVENT_LINES_PER_INTERVAL)
        self._decoder = FrameDecoder()
        self._transport: asyncio.Transport | None = None
        self._protocols: dict[str, RoutingProtocol] = {}
        self._rng = random.Random()
        self._calls: dict[str, tuple[str, CallInfo]] = {}  # pending handle -> tenant, call
        self._users: dict[str, m.RouteRequest] = {}  # pending personal calls: the request
        self._tenants: dict[str, m.TenantRouting] = {}
        # tenant -> device -> the extensions that dial it; tenant -> extension -> state
        self._targets_of: dict[str, dict[str, list[str]]] = {}
        self._agents: dict[str, dict[str, AgentView]] = {}
        # (tenant, user_id) -> (version, ring_time, rules); see MAX_CACHED_RULES
        self._parsed: OrderedDict[tuple[str, str], tuple[int, int, personal.RuleSet]] = (
            OrderedDict())
        self._parsed_rules = 0  # rules held in _parsed
        # the route trace's clock inputs for the local minute in `_clock_key`
        self._clock_key: tuple[object, ...] = ()
        self._clock_memo: Mapping[str, str] = {}
        self._bridge_minor = 0  # from the bridge's hello: 2 and up keeps our state
        self._state_too_large: set[str] = set()  # tenants whose cursors outgrew the limit
        self._restored: set[str] = set()  # tenants whose state came back once

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's transports are not asyncio.Transport subclasses
        self._transport = cast(asyncio.Transport, transport)
        self.send(m.Hello(v=PROTOCOL_VERSION, vts=self.name, minor=PROTOCOL_MINOR,
                          events=self.events))

    def data_received(self, data: bytes) -> None:
        self._decoder.receive_data(data)
        try:
            while (raw := self._decoder.next_message()) is not None:
                self.on_message(raw)
        except RemoteProtocolError as exc:
            log.error("vts %s: protocol error from the bridge: %s", self.name, exc)
            self._close()
            return
        self.send_state()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_result(None)

    # -- hooks ---------------------------------------------------------------------------
    # Whether `run` may drive this class without an event loop (`serve_blocking`). Reset
    # to False for every subclass that does not set it itself: a subclass may schedule
    # on the running loop (harness.fault_vts answers late with call_later).
    runs_without_event_loop: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "runs_without_event_loop" not in cls.__dict__:
            cls.runs_without_event_loop = False

    def on_message(self, raw: JsonObject) -> None:
        """One frame from the bridge."""
        try:
            message = m.parse(raw)
        except m.MessageError as exc:
            log.warning("vts %s: ignoring a message it cannot read: %s", self.name, exc)
            return
        if isinstance(message, m.Hello):
            self._configure(message)
        elif isinstance(message, m.RouteRequest):
            self._route(message)
        elif isinstance(message, m.TreatmentDone):
            self._treatment_done(message)
        elif isinstance(message, m.Abandoned | m.DefaultRouted):
            self._info_event(self._clock(), "vts %s: event %s for %s", self.name,
                             message.EVENT, message.handle, key=message.EVENT)
            self._calls.pop(message.handle, None)
            self._users.pop(message.handle, None)
        elif isinstance(message, m.CallProgress):  # AMI call progress for one of our calls
            log.debug("vts %s: call %s %s", self.name, message.uniqueid, message.kind)
        elif isinstance(message, m.AgentState):
            self._on_agent(message)
        elif isinstance(message, m.State):
            self._restore(message)
        elif isinstance(message, m.Error):
            self._warn_refused(self._clock(), "vts %s: bridge refused: %s (%s)", self.name,
                               message.message, message.code, key=message.code)
            if message.code == "not-pending" and message.handle is not None:
                self._calls.pop(message.handle, None)
        else:
            log.warning("vts %s: ignoring message type %r", self.name, message.TYPE)

    def decide(self, handle: str) -> m.Disposition | None:
        """The answer for a pending call (None: send none): its tenant's routing protocol,
        or in a personal venue the dialled user's own rules."""
        request = self._users.pop(handle, None)
        if request is not None and request.user is not None:
            self._calls.pop(handle, None)
            return self._personal(request, request.user)
        tenant, info = self._calls.get(handle, ("", CallInfo(ani="", dnis="")))
        protocol = self._protocols.get(tenant)
        if protocol is None:
            self._calls.pop(handle, None)
            return m.TakeDefault(handle)
        now = dt.datetime.now(dt.UTC)
        decision = protocol.evaluate(info, now, self._rng, self._agents.get(tenant, {}))
        if decision.action == "treatment":
            return m.Treat(handle, prompt=decision.prompt, moh=decision.moh,
                           collect_digits=decision.collect_digits,
                           timeout_ms=decision.timeout_ms)
        self._calls.pop(handle, None)
        trace = _tenant_trace(decision.rule, info,
                              self._clock_inputs_at(now.astimezone(protocol.timezone)))
        if decision.action == "route" and decision.target is not None:
            return m.RouteTo(handle, decision.target, dial_timeout=decision.dial_timeout,
                             trace=trace)
        if decision.action == "reject":
            return m.Reject(handle, decision.cause, trace=trace)
        return m.TakeDefault(handle, trace=trace)

    def _clock_inputs_at(self, local: dt.datetime) -> Mapping[str, str]:
        """`_clock_inputs(local)`, computed once per local minute and time zone."""
        key = (local.tzinfo, local.year, local.month, local.day, local.hour, local.minute)
        if self._clock_key != key:
            self._clock_key, self._clock_memo = key, _clock_inputs(local)
        return self._clock_memo

    def _personal(self, request: m.RouteRequest, user: m.UserRouting) -> m.Disposition:
        """A call to a user's number: evaluate the user's current portion (sent with the
        request, which always decides: the VTS only remembers what it validated, to skip
        validating the same body again, `_rules`). A portion it cannot read takes the default
        route (the user's phones, then voicemail) rather than guessing."""
        tenant = self._tenants.get(request.tenant, m.TenantRouting())
        ring_time = tenant.ring_time or 20
        previous = request.call.previous
        try:
            rules = self._rules(request.tenant, user, ring_time)
            step = personal.evaluate(
                rules, personal.PersonalCall(
                    ani=request.call.ani, ani_name=request.call.ani_name, number=user.number,
                    bindings=user.bindings,
                    previous=(previous.target, previous.status) if previous else None),
                dt.datetime.now(dt.UTC), timezone=user.timezone or tenant.timezone,
                holidays=tenant.holidays, ring_time=ring_time)
        except (personal.PortionError, ValueError) as exc:
            log.error("vts %s: user %s/%s: portion v%d unusable: %s; default route", self.name,
                      request.tenant, user.user_id, user.version, exc)
            return m.TakeDefault(request.handle, trace=m.TraceInfo(
                rule="error", why=f"portion version {user.version} unusable: {exc}"))
        return self._step_message(request, user, step)

    def _step_message(self, request: m.RouteRequest, user: m.UserRouting,
                      step: personal.Step) -> m.RouteTo | m.Reject | m.Ask:
        trace = m.TraceInfo(rule=step.trace.rule, why=step.trace.why,
                            inputs={**step.trace.inputs, "portion": str(user.version)})
        if step.action == "ask" and step.otherwise is not None:
            otherwise = self._step_message(request, user, step.otherwise)
            assert not isinstance(otherwise, m.Ask)  # evaluate asks once, first
            return m.Ask(request.handle, step.ask_timeout * 1000, otherwise,
                         group=step.group, lookup=self.lookup(request), trace=trace)
        if step.action == "route" and step.target is not None:
            return m.RouteTo(request.handle, step.target, dial_timeout=step.dial_timeout,
                             trace=trace)
        return m.Reject(request.handle, step.cause or "busy", trace=trace)

    def lookup(self, request: m.RouteRequest) -> dict[str, str]:
        """Hook: what this VTS knows of the caller, shown with a workstation pop (at most
        8 short `label: value` strings; a CRM or directory lookup goes here). It runs
        inside the router timeout, so keep it fast. The shipped runtime knows nothing."""
        return {}

    def _rules(self, tenant: str, user: m.UserRouting, ring_time: int) -> personal.RuleSet:
        """The user's portion, validated: from the cache when the same version with the
        same body was validated before at this ring time. The body is compared too (it
        costs ~1 us): a user deleted and created again starts again at version 1 with other
        rules, and the cache must never answer with someone's old rules."""
        key = (tenant, user.user_id)
        hit = self._parsed.get(key)
        if (hit is not None and hit[0] == user.version and hit[1] == ring_time
                and _same_body(hit[2], user.portion)):
            self._parsed.move_to_end(key)
            return hit[2]
        rules = personal.parse_portion(dict(user.portion), extensions=None,
                                       external_prefixes=(), ring_time=ring_time)
        if hit is not None:
            self._parsed_rules -= len(hit[2].rules)
        self._parsed[key] = (user.version, ring_time, rules)
        self._parsed.move_to_end(key)
        self._parsed_rules += len(rules.rules)
        while self._parsed_rules > MAX_CACHED_RULES and len(self._parsed) > 1:
            _, (_, _, dropped) = self._parsed.popitem(last=False)
            self._parsed_rules -= len(dropped.rules)
        return rules

    def send_state(self) -> None:
        """One `state` frame per tenant whose round-robin cursors moved since the last
        (called after each batch of frames: a burst of calls costs one frame per tenant).
        Cursors past MAX_STATE_BYTES are not sent (said once per tenant): the bridge
        would refuse them."""
        if self._bridge_minor < STATE_MINOR:
            return
        for tenant, protocol in self._protocols.items():
            if not protocol.cursors_changed:
                continue
            protocol.cursors_changed = False
            body = {"round_robin": protocol.cursors()}
            if encoded_size(body) > m.MAX_STATE_BYTES:
                if tenant not in self._state_too_large:
                    self._state_too_large.add(tenant)
                    log.error("vts %s: tenant %s: round-robin cursors exceed %d bytes "
                              "encoded; not saved by the bridge", self.name, tenant,
                              m.MAX_STATE_BYTES)
                continue
            self.send(m.State(tenant, body))

    def _restore(self, message: m.State) -> None:
        """The bridge's saved state for one of our tenants (after the handshake)."""
        protocol = self._protocols.get(message.tenant)
        if protocol is None:
            log.warning("vts %s: state for tenant %s, which it does not serve; ignored",
                        self.name, message.tenant)
            return
        taken = protocol.restore_cursors(message.state.get("round_robin"))
        # Said once per tenant: with several bridges the same tenant's state comes again
        # from the others (up to once a second), which is routine, not news.
        level = logging.DEBUG if message.tenant in self._restored else logging.INFO
        self._restored.add(message.tenant)
        log.log(level, "vts %s: tenant %s: %d round-robin cursors restored", self.name,
                message.tenant, taken)

    def send(self, message: m.Message) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(encode(m.to_wire(message)))

    # -- the runtime ---------------------------------------------------------------------
    def _configure(self, hello: m.Hello) -> None:
        if hello.v != PROTOCOL_VERSION:
            log.error("vts %s: bridge speaks protocol %r, not %d", self.name, hello.v,
                      PROTOCOL_VERSION)
            self._close()
            return
        try:
            protocols = {
                name: parse_protocol(list(t.rules), timezone=t.timezone,
                                     holidays=list(t.holidays), where=f"{name}.rules")
                for name, t in hello.tenants.items()
            }
        except RuleError as exc:
            log.error("vts %s: bad routing protocol from the bridge: %s", self.name, exc)
            self._close()
            return
        for name, protocol in protocols.items():  # a reload keeps the round-robin going
            old = self._protocols.get(name)
            if old is not None:
                protocol.restore_cursors(old.cursors())
                protocol.cursors_changed = old.cursors_changed
        self._protocols = protocols
        self._bridge_minor = hello.minor
        self._tenants = dict(hello.tenants)
        self._parsed.clear()  # a tenant's ring_time may have changed
        self._parsed_rules = 0
        self._targets_of = {}
        for name, t in hello.tenants.items():
            for ext, device in t.extensions.items():
                self._targets_of.setdefault(name, {}).setdefault(device, []).append(ext)
        log.info("vts %s: serving %s", self.name, ", ".join(sorted(self._protocols)) or "nobody")

    def _route(self, request: m.RouteRequest) -> None:
        previous = request.call.previous
        info = CallInfo(ani=request.call.ani, dnis=request.call.dnis,
                        previous_target=previous.target if previous else None,
                        previous_status=previous.status if previous else "")
        if len(self._calls) < MAX_CALLS:
            self._calls[request.handle] = (request.tenant, info)
            if request.user is not None:
                self._users[request.handle] = request
        self._answer(request.handle)

    def _treatment_done(self, event: m.TreatmentDone) -> None:
        if event.handle not in self._calls:
            return
        tenant, info = self._calls[event.handle]
        self._calls[event.handle] = (tenant, replace(info, digits=event.digits, treated=True))
        self._answer(event.handle)

    def _answer(self, handle: str) -> None:
        answer = self.decide(handle)
        if answer is not None:
            self.send(answer)

    def _on_agent(self, agent: m.AgentState) -> None:
        view = AgentView(available=agent.available, idle_since=agent.idle_since)
        for target in self._targets_of.get(agent.tenant, {}).get(agent.device, ()):
            self._agents.setdefault(agent.tenant, {})[target] = view

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _same_body(rules: personal.RuleSet, raw: Mapping[str, Any]) -> bool:
    """Whether `raw` is the body `rules` was validated from. The store keeps bodies
    normalised (RuleSet.to_json), so equal fields mean the same rules; a body in any other
    form compares unequal and is simply validated again."""
    return (len(raw) == 4 and raw.get("rules") == list(rules.rules)
            and raw.get("vip") == list(rules.vip) and raw.get("blocked") == list(rules.blocked)
            and raw.get("saved") == list(rules.saved))


def _tenant_trace(rule: str, info: CallInfo, clock: Mapping[str, str]) -> m.TraceInfo:
    """Why the tenant's routing protocol decided what it did (the route trace); `clock`:
    `_clock_inputs` of the call's local time."""
    why = (f"tenant rule {rule!r} matched" if not rule.startswith("(") else rule)
    if info.previous_target is not None:
        why += f" after {info.previous_target} gave {info.previous_status}"
    return m.TraceInfo(rule=rule, why=why,
                       inputs={**clock, "dnis": info.dnis, "digits": info.digits})


def _clock_inputs(local: dt.datetime) -> dict[str, str]:
    """The trace's inputs that depend only on the local minute (two strftime calls: a
    sixth of the VTS's Python per route, so `Worker` keeps them for the minute)."""
    return {"time": local.strftime("%Y-%m-%dT%H:%M"), "timezone": str(local.tzinfo),
            "day": local.strftime("%a").lower()}


def _bridge_socket() -> socket.socket | None:
    """The bridge's end of the link (AMI_BRIDGE_VTS_FD); None, said on stderr, if unset."""
    fd_text = os.environ.get(FD_ENV)
    if fd_text is None or not fd_text.isdigit():
        print(f"{FD_ENV} is not set: a VTS is started by ami-bridge (see "
              "docs/vts-protocol.md)", file=sys.stderr)
        return None
    return socket.socket(fileno=int(fd_text))


async def serve(factory: Callable[[asyncio.Future[None]], Worker]) -> int:
    """Run the `Worker` that `factory(done)` makes on the bridge's socket until EOF or
    SIGTERM/SIGINT; 2 when not started by the bridge."""
    sock = _bridge_socket()
    if sock is None:
        return 2
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def finish() -> None:
        if not done.done():
            done.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, finish)
    transport, _ = await loop.create_unix_connection(lambda: factory(done), sock=sock)
    try:
        await done
    finally:
        transport.close()
    return 0


class _Stop(BaseException):
    """SIGTERM or SIGINT in the blocking loop: raised from the signal handler, so a
    blocked recv() or send() is left at once (PEP 475 would otherwise retry it). A
    BaseException, like KeyboardInterrupt, so no `except Exception` in a hook swallows it."""


class _Done:
    """The `done` a worker is given in the blocking loop: what the worker uses of a
    future (done, set_result), with no event loop behind it."""

    def __init__(self) -> None:
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, result: None) -> None:
        self._done = True


class _SocketTransport:
    """What a `Worker` uses of an asyncio transport, for the blocking loop: `write`
    only queues; the loop sends everything queued in one send after each batch."""

    def __init__(self) -> None:
        self.queued: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.queued.append(data)  # Worker.send checks is_closing() first

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True
        self.queued.clear()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def serve_blocking(worker: Worker, done: _Done, sock: socket.socket, *,
                   stop_on_signals: bool = True) -> int:
    """Run `worker` on the connected socket `sock` without an event loop until EOF,
    a protocol error (the worker closes its transport) or, with `stop_on_signals` (the
    main thread only), SIGTERM/SIGINT. Each recv() is fed whole to `data_received`;
    what the worker wrote meanwhile goes out in one sendall(). A bridge that stops
    reading blocks the send: the bridge closes such a link itself (its
    MAX_WRITE_BUFFER), which ends the send with an error. Closes `sock`; returns 0."""
    transport = _SocketTransport()

    def stop(signum: int, frame: object) -> None:
        raise _Stop

    previous = ({sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
                if stop_on_signals else {})
    sock.setblocking(True)
    error: Exception | None = None
    try:
        worker.connection_made(cast(asyncio.Transport, transport))
        queued = transport.queued
        while not transport.closing and not done.done():
            if queued:
                data = b"".join(queued)
                queued.clear()
                sock.sendall(data)
            data = sock.recv(RECV_BYTES)
            if not data:
                break
            worker.data_received(data)
        if queued:  # the last answers before EOF, or before the worker closed the link
            sock.sendall(b"".join(queued))
    except _Stop:
        pass
    except OSError as exc:  # the bridge reset or closed the link while we sent
        error = exc
        log.info("vts %s: link lost: %s", worker.name, exc)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
        worker.connection_lost(error)
    return 0


def run(name: str, log_level: str, factory: Callable[[asyncio.Future[None]], Worker]) -> int:
    """Set up logging for VTS `name` and run the worker `factory(done)` makes: on the
    blocking loop (`serve_blocking`) when its class allows it, else `serve(factory)` on
    the event loop (the factory is then called once more, there)."""
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s vts[{name}] %(levelname)s %(message)s")
    done = _Done()
    # cast: _Done is the part of a future a Worker uses (done, set_result)
    worker = factory(cast("asyncio.Future[None]", done))
    if worker.runs_without_event_loop:
        sock = _bridge_socket()
        return 2 if sock is None else serve_blocking(worker, done, sock)
    from ami_bridge.eventloop import run as run_loop

    return run_loop(serve(factory))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ami_bridge.tenants.worker",
        description="ami-bridge's virtual transaction server runtime (started by the bridge).")
    parser.add_argument("--vts", required=True, help="the VTS name from the bridge config")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    return run(args.vts, args.log_level, lambda done: Worker(name=args.vts, done=done))


if __name__ == "__main__":
    sys.exit(main())
