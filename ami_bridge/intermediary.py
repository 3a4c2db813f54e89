"""The intermediary: venues -> virtual transaction servers, pending calls, dispositions.

It owns the table of pending route requests. A route request enters from the FastAGI
side (`route_request`) and leaves exactly once, through `Responder.dispose`: with the
VTS's disposition, or with the venue's default route when the venue is unknown, its VTS
is not connected or is over its pending cap, the router timer fires, the VTS link is
lost, or the VTS answers with something the intermediary refuses. A caller hanging up
while pending (`abandon`) frees the entry and tells the VTS; no default route fires.
A treatment (prompt, music, digit collection) keeps the call pending: the digits go
back to the VTS and the router timer keeps running.

Default routing: a venue's `default_targets` are tried in turn, skipping those this
call already tried, then the call is rejected; with no list the dialplan's own default
label is used. Every default route counts as a redirection; more than the venue's
`redirect_limit` in a row (a VTS instruction resets the count) rejects the call, and
more than `max_route_requests` route requests in all for one channel ends any loop.
Call history is keyed by the channel's unique id, because a call whose target was
busy or did not answer comes back to the venue as a new AGI session.

It trusts no VTS: a disposition must name a handle that this VTS was given and that is
still pending, and every target must lie in the tenant's declared namespace. Anything
else is refused with an `error` message back to that VTS and never acted on; a handle
that belongs to another VTS is left alone (its own VTS still decides) and the refusal
is logged naming both tenants. Handles are random and opaque.

This module does no socket I/O: links and responders are passed in; the only
asyncio it uses is the event loop's clock and timers.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ami_bridge.agi import wire
from ami_bridge.agi.variables import KIND_INTERNAL, KIND_OUTBOUND, KIND_QUEUE, KINDS
from ami_bridge.ami.tracker import CallEvent
from ami_bridge.config import BridgeConfig, TenantConfig, VenueConfig
from ami_bridge.tenants.protocol import PROTOCOL_VERSION, Message
from ami_bridge.tenants.routing import NUMBER_RE, QUEUE_RE, TARGET_RE

log = logging.getLogger(__name__)

DIAL_STATUS_RE = re.compile(r"[A-Z]{1,20}")  # fullmatch; Asterisk's DIALSTATUS values
REJECT_CAUSES = frozenset({"busy", "congestion"})
MAX_DIAL_TIMEOUT = 600
DEFAULT_DIGIT_TIMEOUT_MS = 5000
# A treatment needs at least this much router time left to be worth starting.
MIN_TREATMENT_MS = 200
# Closed handles remembered to tell a late or duplicate reply *why* it is refused;
# bounded so a flood of calls cannot grow it without end.
MAX_REMEMBERED_CLOSED = 10_000
# Channels whose routing history is remembered (re-entries after busy / no answer).
# A call that comes back after an hour is treated as new; 50,000 covers an hour at
# more than ten calls per second.
MAX_CALL_HISTORY = 50_000
CALL_HISTORY_TTL = 3600.0
# Caller data forwarded to a VTS is cut to this many characters.
MAX_CALLER_FIELD = 80


@dataclass(frozen=True)
class Disposition:
    action: str  # "route" | "reject" | "default"
    target: str = ""
    cause: str = ""  # reject cause, or why the call was default-routed
    kind: str = KIND_INTERNAL  # which of the tenant's contexts a route goes to
    dial_timeout: int = 0  # seconds; 0: the dialplan's own


@dataclass(frozen=True)
class Treatment:
    prompt: str = ""  # sound path, tenant prefix applied
    moh_class: str = ""  # start music on hold in this class
    collect_digits: int = 0
    timeout_ms: int = 0


TreatmentDone = Callable[[str | None], None]  # digits, or None when it failed


class Responder(Protocol):
    """The AGI side of one pending call."""

    def dispose(self, disposition: Disposition) -> None: ...

    def treat(self, treatment: Treatment, done: TreatmentDone) -> None: ...


class VtsLink(Protocol):
    def send(self, message: Message) -> None: ...


@dataclass
class CallHistory:
    requests: int = 0
    redirects: int = 0
    tried_defaults: set[str] = field(default_factory=set)
    seen: float = 0.0


@dataclass
class Pending:
    handle: str
    venue: VenueConfig
    responder: Responder
    history: CallHistory
    deadline: float
    timer: asyncio.TimerHandle | None = None
    treating: bool = False


@dataclass
class Counters:
    requests: int = 0
    routed: int = 0
    rejected: int = 0
    defaulted: dict[str, int] = field(default_factory=dict)
    abandoned: int = 0
    refused: int = 0
    treatments: int = 0
    call_events: int = 0


class Intermediary:
    def __init__(self, *, config: BridgeConfig, loop: asyncio.AbstractEventLoop) -> None:
        self._config = config
        self._loop = loop
        self._links: dict[str, VtsLink] = {}
        self._pending: dict[str, Pending] = {}
        self._per_vts: dict[str, set[str]] = {}
        self._closed: OrderedDict[str, str] = OrderedDict()
        self._history: OrderedDict[str, CallHistory] = OrderedDict()
        self.counters = Counters()
        # The AMI link installs this: the `agent_state` messages of one tenant's agents.
        self.agent_snapshot: Callable[[str], list[Message]] = lambda tenant: []

    # -- configuration and links ---------------------------------------------------
    @property
    def config(self) -> BridgeConfig:
        return self._config

    def reload(self, config: BridgeConfig) -> None:
        """Swap the venue map. Pending calls keep the venue they entered with; every VTS
        that stays gets a fresh `hello` with its tenants' routing protocols."""
        self._config = config
        for name in list(self._links):
            if name not in config.vts:
                self.detach_vts(name)
        for name, link in self._links.items():
            link.send(self.hello_for(name))

    def attach_vts(self, name: str, link: VtsLink) -> None:
        self._links[name] = link
        self._per_vts.setdefault(name, set())
        log.info("VTS %s connected (tenants: %s)", name, self._tenants_of(name))
        served = self._config.vts[name].tenants if name in self._config.vts else ()
        for tenant in served:  # what the AMI link knows of its agents so far
            for agent in self.agent_snapshot(tenant):
                link.send(agent)

    def detach_vts(self, name: str) -> None:
        """The VTS link is gone: default-route every call it was deciding."""
        if self._links.pop(name, None) is None:
            return
        handles = self._per_vts.pop(name, set())
        log.warning("VTS %s disconnected; default-routing its %d pending calls", name, len(handles))
        for handle in list(handles):
            self._default(handle, "vts-lost", notify=False)

    def connected(self, name: str) -> bool:
        return name in self._links

    def pending_count(self, vts: str | None = None) -> int:
        return len(self._pending) if vts is None else len(self._per_vts.get(vts, ()))

    def _tenants_of(self, vts: str) -> str:
        vts_config = self._config.vts.get(vts)
        return ", ".join(vts_config.tenants) if vts_config is not None else vts

    # -- from the AGI side ---------------------------------------------------------
    def route_request(self, env: dict[str, str], responder: Responder) -> str | None:
        """Register a call waiting in a venue; returns its handle, or None if disposed."""
        self.counters.requests += 1
        context = env.get("agi_context", "")
        venue = self._config.venues.get(context)
        if venue is None:
            log.warning("route request from unknown venue %r (channel %s): default route",
                        context, env.get("agi_channel", "?"))
            self._count_default("unknown-venue")
            responder.dispose(Disposition("default", cause="unknown-venue"))
            return None
        history = self._history_for(env.get("agi_uniqueid", ""))
        history.requests += 1
        if history.requests > self._config.max_route_requests:
            log.warning("channel %s entered venue %s %d times: rejected (loop guard)",
                        env.get("agi_channel", "?"), context, history.requests)
            self.counters.rejected += 1
            responder.dispose(Disposition("reject", cause="congestion"))
            return None
        link = self._links.get(venue.vts)
        if link is None:
            self._default_route(venue, history, responder, "no-vts")
            return None
        if len(self._per_vts[venue.vts]) >= self._config.max_pending_per_vts:
            log.warning("VTS %s has %d pending calls (cap): default route", venue.vts,
                        self._config.max_pending_per_vts)
            self._default_route(venue, history, responder, "vts-overloaded")
            return None
        handle = secrets.token_hex(8)
        now = self._loop.time()
        pending = Pending(handle=handle, venue=venue, responder=responder, history=history,
                          deadline=now + venue.router_timeout)
        pending.timer = self._loop.call_at(pending.deadline, self._timeout, handle)
        self._pending[handle] = pending
        self._per_vts[venue.vts].add(handle)
        link.send({
            "type": "route_request", "handle": handle, "tenant": venue.tenant,
            "venue": venue.context, "timeout_ms": int(venue.router_timeout * 1000),
            "call": _caller_data(env),
        })
        return handle

    def abandon(self, handle: str) -> None:
        """The caller hung up while pending."""
        pending = self._release(handle, "abandoned")
        if pending is None:
            return
        self.counters.abandoned += 1
        self._notify(pending, {"type": "event", "handle": handle, "event": "abandoned"})

    # -- from a VTS ----------------------------------------------------------------
    def on_vts_message(self, vts: str, message: Message) -> None:
        kind = message.get("type")
        if kind == "disposition":
            self._on_disposition(vts, message)
        else:
            self._refuse(vts, message.get("handle"), "unknown-type",
                         f"message type {kind!r} is not accepted from a VTS")

    def _on_disposition(self, vts: str, message: Message) -> None:
        handle = message.get("handle")
        pending = self._pending.get(handle) if isinstance(handle, str) else None
        if pending is None or not isinstance(handle, str):
            why = self._closed.get(handle, "unknown handle") if isinstance(handle, str) else (
                "missing handle")
            self._refuse(vts, handle, "not-pending", f"call is not pending ({why}); not acted on")
            return
        if pending.venue.vts != vts:
            log.error("isolation: VTS %s (tenant %s) acted on a handle of tenant %s; refused",
                      vts, self._tenants_of(vts), pending.venue.tenant)
            self._refuse(vts, None, "not-yours", "handle was not given to this VTS")
            return
        tenant = self._config.tenants[pending.venue.tenant]
        try:
            if message.get("action") == "treatment":
                self._treat(pending, tenant, message)
                return
            disposition = self._check(tenant, message)
        except ValueError as exc:
            log.error("VTS %s: disposition for tenant %s refused: %s%s; default route",
                      vts, tenant.name, exc, self._owner_hint(tenant, message))
            self._refuse(vts, handle, "invalid-disposition", str(exc))
            self._default(handle, "refused", notify=True)
            return
        if disposition.action == "default":
            self._default(handle, "vts", notify=False)
            return
        pending.history.redirects = 0  # a real instruction
        self._finish(handle, disposition)

    def _check(self, tenant: TenantConfig, message: Message) -> Disposition:
        action = message.get("action")
        if action == "route":
            kind, target = _route_target(tenant, message)
            timeout = message.get("dial_timeout", 0)
            if not isinstance(timeout, int) or isinstance(timeout, bool) or not (
                    0 <= timeout <= MAX_DIAL_TIMEOUT):
                raise ValueError(f"dial_timeout {timeout!r} is not 0..{MAX_DIAL_TIMEOUT} s")
            return Disposition("route", target=target, kind=kind, dial_timeout=timeout)
        if action == "reject":
            cause = message.get("cause", "busy")
            if cause not in REJECT_CAUSES:
                raise ValueError(f"reject cause {cause!r} is not one of {sorted(REJECT_CAUSES)}")
            return Disposition("reject", cause=cause)
        if action == "default":
            return Disposition("default", cause="vts")
        raise ValueError(f"action {action!r} is not route, treatment, reject or default")

    def _treat(self, pending: Pending, tenant: TenantConfig, message: Message) -> None:
        if pending.treating:
            self._refuse(pending.venue.vts, pending.handle, "treatment-busy",
                         "a treatment is already running for this call; not acted on")
            return
        treatment = _treatment(tenant, message, pending.deadline - self._loop.time())
        pending.treating = True
        self.counters.treatments += 1
        handle = pending.handle
        pending.responder.treat(treatment, lambda digits: self._treatment_done(handle, digits))

    def _treatment_done(self, handle: str, digits: str | None) -> None:
        pending = self._pending.get(handle)
        if pending is None:
            return  # the call left meanwhile (timeout, abandon); the VTS was told then
        pending.treating = False
        event: Message = {"type": "event", "handle": handle, "event": "treatment_done",
                          "ok": digits is not None, "digits": digits or ""}
        self._notify(pending, event)

    def _owner_hint(self, tenant: TenantConfig, message: Message) -> str:
        """Name the tenant a refused target belongs to, for the isolation log line."""
        value = message.get("target", message.get("queue"))
        owners = [t.name for t in self._config.tenants.values()
                  if t.name != tenant.name and (value in t.targets or value in t.queues)]
        return f" (it is a target of tenant {', '.join(owners)})" if owners else ""

    def _refuse(self, vts: str, handle: Any, code: str, text: str) -> None:
        self.counters.refused += 1
        link = self._links.get(vts)
        if link is not None:
            link.send({"type": "error", "handle": handle, "code": code, "message": text})

    # -- leaving the venue ---------------------------------------------------------
    def _timeout(self, handle: str) -> None:
        pending = self._pending.get(handle)
        if pending is None:
            return
        pending.timer = None
        log.info("router timeout for %s in venue %s: default route", handle,
                 pending.venue.context)
        self._default(handle, "timeout", notify=True)

    def _default(self, handle: str, cause: str, *, notify: bool) -> None:
        pending = self._release(handle, f"default:{cause}")
        if pending is None:
            return
        if notify:
            self._notify(pending, {"type": "event", "handle": handle, "event": "default_routed",
                                   "reason": cause})
        self._default_route(pending.venue, pending.history, pending.responder, cause)

    def _default_route(self, venue: VenueConfig, history: CallHistory, responder: Responder,
                       cause: str) -> None:
        history.redirects += 1
        if history.redirects > venue.redirect_limit:
            log.warning("venue %s: %d redirections in a row; call rejected", venue.context,
                        history.redirects - 1)
            self.counters.rejected += 1
            responder.dispose(Disposition("reject", cause="congestion"))
            return
        self._count_default(cause)
        if not venue.default_targets:
            responder.dispose(Disposition("default", cause=cause))
            return
        for target in venue.default_targets:
            if target not in history.tried_defaults:
                history.tried_defaults.add(target)
                responder.dispose(Disposition("route", target=target, cause=cause))
                return
        log.warning("venue %s: every default target tried; call rejected", venue.context)
        self.counters.rejected += 1
        responder.dispose(Disposition("reject", cause="congestion"))

    def _finish(self, handle: str, disposition: Disposition) -> None:
        pending = self._release(handle, disposition.action)
        if pending is None:
            return
        if disposition.action == "route":
            self.counters.routed += 1
        else:
            self.counters.rejected += 1
        pending.responder.dispose(disposition)

    def _release(self, handle: str, outcome: str) -> Pending | None:
        pending = self._pending.pop(handle, None)
        if pending is None:
            return None
        if pending.timer is not None:
            pending.timer.cancel()
        self._per_vts.get(pending.venue.vts, set()).discard(handle)
        self._closed[handle] = outcome
        if len(self._closed) > MAX_REMEMBERED_CLOSED:
            self._closed.popitem(last=False)
        return pending

    def _notify(self, pending: Pending, message: Message) -> None:
        link = self._links.get(pending.venue.vts)
        if link is not None:
            link.send(message)

    def _count_default(self, cause: str) -> None:
        self.counters.defaulted[cause] = self.counters.defaulted.get(cause, 0) + 1

    def _history_for(self, uniqueid: str) -> CallHistory:
        now = self._loop.time()
        while self._history:
            oldest = next(iter(self._history.values()))
            if len(self._history) < MAX_CALL_HISTORY and now - oldest.seen < CALL_HISTORY_TTL:
                break
            self._history.popitem(last=False)
        history = self._history.pop(uniqueid, None) if uniqueid else None
        history = history or CallHistory()
        history.seen = now
        if uniqueid:
            self._history[uniqueid] = history
        return history

    # -- from the AMI side ---------------------------------------------------------
    def forward_agent_state(self, message: Message) -> None:
        """An agent device's state goes to the VTS processes serving its tenant only."""
        tenant = message.get("tenant")
        for name, vts in self._config.vts.items():
            link = self._links.get(name)
            if link is not None and tenant in vts.tenants:
                link.send(message)

    def forward_call_event(self, event: CallEvent) -> None:
        """A tracked call's event goes to its venue's VTS, and only there."""
        venue = self._config.venues.get(event.venue)
        link = self._links.get(venue.vts) if venue is not None else None
        if venue is None or link is None or venue.tenant != event.tenant:
            return
        self.counters.call_events += 1
        link.send({"type": "event", "event": "call", "kind": event.kind, "venue": event.venue,
                   "uniqueid": event.call, "leg": event.uniqueid, "channel": event.channel,
                   "detail": dict(event.detail)})

    # -- introspection ---------------------------------------------------------------
    def status(self) -> Message:
        return {
            "venues": {name: {"tenant": v.tenant, "vts": v.vts,
                              "connected": v.vts in self._links}
                       for name, v in sorted(self._config.venues.items())},
            "pending": {name: len(handles) for name, handles in sorted(self._per_vts.items())},
            "counters": dict(vars(self.counters)),
        }

    def hello_for(self, vts: str) -> Message:
        """The bridge's hello to a VTS: the routing protocols of the tenants it serves."""
        served = self._config.vts[vts].tenants if vts in self._config.vts else ()
        return {
            "type": "hello", "v": PROTOCOL_VERSION, "vts": vts,
            "tenants": {
                name: {
                    "timezone": self._config.tenants[name].timezone,
                    "holidays": list(self._config.tenants[name].holidays),
                    "targets": sorted(self._config.tenants[name].targets),
                    "extensions": dict(self._config.tenants[name].extensions),
                    "rules": [dict(r) for r in self._config.tenants[name].rules],
                }
                for name in served
            },
        }


def _route_target(tenant: TenantConfig, message: Message) -> tuple[str, str]:
    """(kind, target) of a route disposition, inside the tenant's namespace, or raise."""
    given = [key for key in ("target", "queue", "external") if key in message]
    if len(given) != 1:
        raise ValueError("a route needs exactly one of target, queue, external")
    value = message[given[0]]
    if given[0] == "target":
        if not isinstance(value, str) or not TARGET_RE.fullmatch(value):
            raise ValueError(f"target {value!r} is not a valid extension")
        if value not in tenant.targets:
            raise ValueError(f"target {value!r} is outside tenant {tenant.name}'s namespace")
        return KIND_INTERNAL, value
    if given[0] == "queue":
        if not isinstance(value, str) or not QUEUE_RE.fullmatch(value):
            raise ValueError(f"queue {value!r} is not a valid queue name")
        if value not in tenant.queues:
            raise ValueError(f"queue {value!r} is outside tenant {tenant.name}'s namespace")
        return KIND_QUEUE, value
    if not isinstance(value, str) or not NUMBER_RE.fullmatch(value):
        raise ValueError(f"external number {value!r} is not +digits")
    if not any(value.startswith(prefix) for prefix in tenant.external_prefixes):
        raise ValueError(f"external number {value!r} is outside tenant {tenant.name}'s "
                         "external_prefixes")
    return KIND_OUTBOUND, value


def _treatment(tenant: TenantConfig, message: Message, remaining_s: float) -> Treatment:
    """A safe `Treatment` from a VTS message, or ValueError saying why not."""
    remaining_ms = int(remaining_s * 1000)
    if remaining_ms < MIN_TREATMENT_MS:
        raise ValueError(f"only {remaining_ms} ms of router time left for a treatment")
    moh = message.get("moh", False)
    prompt = message.get("prompt", "")
    digits = message.get("collect_digits", 0)
    if not isinstance(digits, int) or isinstance(digits, bool) or not (
            0 <= digits <= wire.MAX_COLLECT_DIGITS):
        raise ValueError(f"collect_digits {digits!r} is not 0..{wire.MAX_COLLECT_DIGITS}")
    if moh is True:
        if prompt or digits:
            raise ValueError("music on hold takes no prompt and collects no digits")
        return Treatment(moh_class=tenant.moh_class)
    if moh is not False:
        raise ValueError(f"moh must be true or false, got {moh!r}")
    try:
        wire.check_prompt(prompt)
    except wire.UnsafeValueError as exc:
        raise ValueError(str(exc)) from None
    path = f"{tenant.prompts}/{prompt}" if tenant.prompts else prompt
    timeout = message.get("timeout_ms", DEFAULT_DIGIT_TIMEOUT_MS)
    if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 1:
        raise ValueError(f"timeout_ms {timeout!r} is not a positive integer")
    # The overall router timeout still holds: collection ends in time for the default.
    return Treatment(prompt=path, collect_digits=digits,
                     timeout_ms=min(timeout, remaining_ms - MIN_TREATMENT_MS // 2))


def _caller_data(env: dict[str, str]) -> dict[str, Any]:
    def cut(key: str) -> str:
        return env.get(key, "")[:MAX_CALLER_FIELD]

    data: dict[str, Any] = {
        "ani": cut("agi_callerid"), "ani_name": cut("agi_calleridname"),
        "dnis": cut("agi_extension"), "dnid": cut("agi_dnid"),
        "language": cut("agi_language"), "uniqueid": cut("agi_uniqueid"),
    }
    # A call that comes back to the venue after its target failed carries what it tried
    # (AGI arguments from the venue dialplan: AB_LAST as "kind/target", DIALSTATUS).
    last, status = cut("agi_arg_1"), cut("agi_arg_2")
    kind, _, target = last.partition("/")
    if kind in KINDS and TARGET_RE.fullmatch(target) and DIAL_STATUS_RE.fullmatch(status or "X"):
        data["previous"] = {"kind": kind, "target": target, "status": status}
    return data
