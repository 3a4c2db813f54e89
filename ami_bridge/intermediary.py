"""The intermediary: venues -> virtual transaction servers, pending calls, dispositions.

It owns the table of pending route requests. A route request enters from the FastAGI
side (`route_request`) and leaves exactly once, through `Responder.dispose`: with the
VTS's disposition, or with the venue's default route when the venue is unknown, its VTS
is not connected or is over its pending cap, the router timer fires, the VTS link is
lost, or the VTS answers with something the intermediary refuses. A caller hanging up
while pending (`abandon`) frees the entry and tells the VTS; no default route fires.
A treatment (prompt, music, digit collection) keeps the call pending: the digits go
back to the VTS and the router timer keeps running. Default routing (default targets,
redirect limit) is `ami_bridge.calls.default_route`; more than `max_route_requests`
route requests in all for one channel (by tenant and unique id) ends any loop.

It trusts no VTS: every frame goes through `messages.parse`; a disposition must name a
handle that this VTS was given and that is still pending, and every target must lie in
the tenant's declared namespace. Anything else is refused with an `error` message back
to that VTS and never acted on (a malformed disposition for a pending handle of its
own default-routes that one call; the link stays up); a handle that belongs to another
VTS is left alone (its own VTS still decides) and the refusal is logged naming both
tenants. Handles are random and opaque; how a call ended is told to its own VTS only
(another VTS's closed handle reads as unknown).

A VTS's `state` frame (protocol 2.2) is kept for the tenant it names only if this VTS
serves that tenant (else refused `not-yours`, logged naming both) and its object is at
most `messages.MAX_STATE_BYTES` encoded (else refused `invalid-state` naming the limit);
nothing refused is kept. Kept state goes into `VtsStates` (memory; the daemon's
`StateWriter` saves it).

What goes out to the VTS links besides the route-request exchange (call events, agent
states merged across bridges, a tenant's saved state at hello and from other bridges) is
`ami_bridge.fanout.Fanout`, which the Intermediary owns: it tells the fan-out when a VTS
says hello or goes, and its public fan-out methods (`forward_call_event`,
`forward_agent_state`, `remote_agent_state`, `agent_node_heard`, `expire_agents`,
`remote_state`) are one-line delegates, so that the AMI link, the drivers and the bus
keep one object to talk to.

No I/O and no event loop: links, responders, the clock (`Scheduler`), the AMI
link's agent snapshot and its `on_call_entered` (every route request's uniqueid, venue
and tenant, so the AMI link knows the venue of a call that entered it while the AMI
session was down) are passed in.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ami_bridge.agi.variables import (
    ACTION_DEFAULT,
    ACTION_REJECT,
    ACTION_ROUTE,
    CAUSE_NO_VTS,
    CAUSE_STOPPING,
)
from ami_bridge.ami.tracker import CallEvent
from ami_bridge.calls import (
    Asking,
    CallHistories,
    CallHistory,
    Disposition,
    Pending,
    Responder,
    Scheduler,
    caller_data,
    check_namespace,
    default_route,
    dial_for,
    personal_default,
    treatment_for,
)
from ami_bridge.config import BridgeConfig, TenantConfig, VenueConfig
from ami_bridge.fanout import AgentSnapshot, Fanout, VtsLink, no_agents
from ami_bridge.namespace import KIND_PHONES, KIND_VOICEMAIL, MAX_PHONES
from ami_bridge.personal.model import Portion, TraceRecord, User
from ami_bridge.personal.pops import Pop
from ami_bridge.ratelimit import RateLimitedLog
from ami_bridge.tenants import messages as m
from ami_bridge.tenants.protocol import PROTOCOL_MINOR, PROTOCOL_VERSION, JsonObject
from ami_bridge.vts_state import VtsStates

log = logging.getLogger(__name__)

# Closed handles remembered to tell a late or duplicate reply *why* it is refused;
# bounded so a flood of calls cannot grow it without end.
MAX_REMEMBERED_CLOSED = 10_000

CallEntered = Callable[[str, str, str], object]  # (uniqueid, venue, tenant)
# (tenant, personal number) -> the user and his or her current portion, or None
PersonalLookup = Callable[[str, str], tuple[User, Portion] | None]
Decided = Callable[[TraceRecord], object]  # every routing decision, for the route trace


def no_users(tenant: str, number: str) -> None:
    return None


class RouteObserver(Protocol):
    """Told of every route request and how it left (ami_bridge.metrics.routes.RouteStats:
    the metrics and the per-call log line). `kind`: route, reject or default (final;
    `cause` is the reject cause or the default route's reason, `latency` the seconds
    from the request to the answer); treat and ask keep the call pending (`stepped`).
    A context that is no venue is reported with tenant "" and the context."""

    def requested(self, tenant: str, venue: str) -> None: ...

    def stepped(self, tenant: str, venue: str, kind: str) -> None: ...

    def disposed(self, tenant: str, venue: str, kind: str, cause: str, latency: float, *,
                 uniqueid: str = "", target: str = "", rule: str = "") -> None: ...

    def abandoned_call(self, tenant: str, venue: str) -> None: ...


class _Unobserved:
    def requested(self, tenant: str, venue: str) -> None:
        return None

    def stepped(self, tenant: str, venue: str, kind: str) -> None:
        return None

    def disposed(self, tenant: str, venue: str, kind: str, cause: str, latency: float, *,
                 uniqueid: str = "", target: str = "", rule: str = "") -> None:
        return None

    def abandoned_call(self, tenant: str, venue: str) -> None:
        return None


class Pops(Protocol):
    """Where asked calls pop up (ami_bridge.personal.pops.PopHub): sync, never blocking."""

    def offer(self, pop: Pop) -> None: ...

    def gone(self, call_id: str, reason: str, by: str = "") -> None: ...


def ignore_call(uniqueid: str, venue: str, tenant: str) -> None:
    return None


@dataclass
class Counters:
    requests: int = 0
    routed: int = 0
    rejected: int = 0
    defaulted: dict[str, int] = field(default_factory=dict)
    abandoned: int = 0
    refused: int = 0
    treatments: int = 0
    call_events: int = 0  # of connected VTS's calls, sent or not subscribed to
    call_events_unsubscribed: int = 0  # kinds the VTS did not ask for: not sent
    asked: int = 0


class Intermediary:
    def __init__(self, *, config: BridgeConfig, clock: Scheduler,
                 agent_snapshot: AgentSnapshot = no_agents,
                 on_call_entered: CallEntered = ignore_call,
                 personal: PersonalLookup = no_users,
                 on_decision: Decided | None = None,
                 wall_clock: Callable[[], float] = time.time,
                 users: PersonalLookup = no_users, pops: Pops | None = None,
                 observer: RouteObserver | None = None,
                 latency_clock: Callable[[], float] = time.perf_counter,
                 states: VtsStates | None = None,
                 on_agent_state: Callable[[m.AgentState], object] | None = None) -> None:
        """`latency_clock` times route requests for the observer: not the `Scheduler`,
        whose clock may be coarse (uvloop's `loop.time()` is cached per iteration, in
        milliseconds) while a decision takes a fraction of one. `states`: the VTS's
        saved states (the daemon's, loaded from the store; None: in memory only)."""
        self._config = config
        self.states = states if states is not None else VtsStates()
        self._latency_clock = latency_clock
        self._observer: RouteObserver = observer if observer is not None else _Unobserved()
        self._clock = clock
        self._personal = personal
        self._users = users  # (tenant, user id) -> the user and portion
        self._pops = pops
        self._on_decision = on_decision
        self._wall = wall_clock
        self._on_call_entered = on_call_entered
        self._links: dict[str, VtsLink] = {}
        self._pending: dict[str, Pending] = {}
        self._per_vts: dict[str, set[str]] = {}
        self._closed: OrderedDict[str, tuple[str, str]] = OrderedDict()  # -> (VTS, outcome)
        self._history = CallHistories()  # keyed "tenant/uniqueid"
        self.counters = Counters()
        self.fanout = Fanout(config=config, links=self._links, states=self.states,
                             counters=self.counters, clock=clock.time,
                             agent_snapshot=agent_snapshot, on_agent_state=on_agent_state)
        self._stopping = False  # drained: VTS links closing from now on are expected
        # A flood over the pending cap would write one line per call: one per VTS per 10 s.
        self._warn_cap = RateLimitedLog(log.warning, interval=10.0)

    # -- configuration and links ---------------------------------------------------
    @property
    def config(self) -> BridgeConfig:
        return self._config

    def reload(self, config: BridgeConfig) -> None:
        """Swap the venue map. Pending calls keep the venue they entered with; every VTS
        that stays gets a fresh `hello` with its tenants' routing protocols."""
        self._config = config
        self.fanout.reconfigure(config)
        for name in list(self._links):
            if name not in config.vts:
                self.detach_vts(name)
        for name, link in self._links.items():
            link.send(self.hello_for(name))

    def attach_vts(self, name: str, link: VtsLink, *,
                   events: Iterable[str] | None = None, minor: int = 0) -> None:
        """The VTS said hello: `events` are the kinds of `call` events and
        `agent_state` it wants (its hello's `events`; None: every kind); `minor` its
        hello's minor version (2 and up: it gets its tenants' saved `state` now)."""
        self._links[name] = link
        self.fanout.subscribe(name, events, minor)
        self._per_vts.setdefault(name, set())
        log.info("VTS %s connected (tenants: %s)", name, self._tenants_of(name))
        self.fanout.greet(name)  # saved state, agents: before any route request

    def detach_vts(self, name: str) -> None:
        """The VTS link is gone: default-route every call it was deciding."""
        if self._links.pop(name, None) is None:
            return
        self.fanout.forget(name)
        handles = self._per_vts.pop(name, set())
        if self._stopping and not handles:  # the bridge stops its VTS processes: expected
            log.info("VTS %s disconnected (the bridge is stopping)", name)
        else:
            log.warning("VTS %s disconnected; default-routing its %d pending calls", name,
                        len(handles))
        for handle in list(handles):
            self._default(handle, "vts-lost", notify=False)

    def drain(self, cause: str = CAUSE_STOPPING) -> int:
        """The bridge is stopping: default-route every call still pending, now, and tell
        each VTS why (`default_routed` with `cause`); returns how many. The daemon calls it
        once the calls' own router timers have had their chance (ami_bridge.lifecycle)."""
        self._stopping = True
        handles = list(self._pending)
        for handle in handles:
            self._default(handle, cause, notify=True)
        return len(handles)

    def connected(self, name: str) -> bool:
        return name in self._links

    def pending_count(self, vts: str | None = None) -> int:
        return len(self._pending) if vts is None else len(self._per_vts.get(vts, ()))

    def pending_by_venue(self) -> dict[str, int]:
        """Pending calls per venue (read at a metrics scrape, not per call)."""
        counts: dict[str, int] = {}
        for pending in self._pending.values():
            venue = pending.venue.context
            counts[venue] = counts.get(venue, 0) + 1
        return counts

    def _tenants_of(self, vts: str) -> str:
        vts_config = self._config.vts.get(vts)
        return ", ".join(vts_config.tenants) if vts_config is not None else vts

    # -- from the AGI side ---------------------------------------------------------
    def route_request(self, env: Mapping[str, str], responder: Responder) -> str | None:
        """Register a call waiting in a venue; returns its handle, or None if disposed."""
        self.counters.requests += 1
        started = self._latency_clock()
        context = env.get("agi_context", "")
        venue = self._config.venues.get(context)
        observer = self._observer
        if venue is None:
            log.warning("route request from unknown venue %r (channel %s): default route",
                        context, env.get("agi_channel", "?"))
            self._count_default("unknown-venue")
            observer.requested("", context)
            responder.dispose(Disposition(ACTION_DEFAULT, cause="unknown-venue"))
            observer.disposed("", context, "default", "unknown-venue",
                              self._latency_clock() - started,
                              uniqueid=env.get("agi_uniqueid", ""))
            return None
        observer.requested(venue.tenant, venue.context)
        # Keyed by tenant too: a unique id given in one tenant's venue must never count
        # against (or reset) the loop guard of another tenant's call.
        uniqueid = env.get("agi_uniqueid", "")
        if uniqueid:  # the AMI link binds the call to its venue (even with AMI down)
            self._on_call_entered(uniqueid, venue.context, venue.tenant)
        history = self._history.get(f"{venue.tenant}/{uniqueid}" if uniqueid else "",
                                    self._clock.time())
        history.requests += 1
        call = caller_data(env)
        user, user_routing = None, None
        if venue.personal:  # a call to a user's number: the user's own rules decide
            found = self._personal(venue.tenant, call.dnis)
            if found is not None:
                user, portion = found
                user_routing = m.UserRouting(
                    user_id=user.user_id, number=user.number, timezone=user.timezone,
                    bindings=user.bindings, version=portion.version, portion=portion.body)
        if history.requests > self._config.max_route_requests:
            log.warning("channel %s entered venue %s %d times: rejected (loop guard)",
                        env.get("agi_channel", "?"), context, history.requests)
            self.counters.rejected += 1
            disposition = Disposition(ACTION_REJECT, cause="congestion")
            self._record(venue, call, user, history, disposition, None, "loop guard")
            responder.dispose(disposition)
            observer.disposed(venue.tenant, venue.context, ACTION_REJECT, disposition.cause,
                              self._latency_clock() - started, uniqueid=call.uniqueid,
                              rule="loop guard")
            return None
        link = self._links.get(venue.vts)
        if venue.personal and user is None:
            self._default_route(venue, history, responder, "no-user", call, user,
                                started=started)
            return None
        if link is None:
            self._default_route(venue, history, responder, CAUSE_NO_VTS, call, user,
                                started=started)
            return None
        if self._stopping:  # a session accepted before the listener closed, read after
            self._default_route(venue, history, responder, CAUSE_STOPPING, call, user,
                                started=started)
            return None
        if len(self._per_vts[venue.vts]) >= self._config.max_pending_per_vts:
            self._warn_cap(self._clock.time(), "VTS %s has %d pending calls (cap): default route",
                           venue.vts, self._config.max_pending_per_vts, key=venue.vts)
            self._default_route(venue, history, responder, "vts-overloaded", call, user,
                                started=started)
            return None
        handle = secrets.token_hex(8)
        pending = Pending(handle=handle, venue=venue, responder=responder, history=history,
                          deadline=self._clock.time() + venue.router_timeout, call=call,
                          user=user, started=started)
        pending.timer = self._clock.call_at(pending.deadline, lambda: self._timeout(handle))
        self._pending[handle] = pending
        self._per_vts[venue.vts].add(handle)
        link.send(m.RouteRequest(handle=handle, tenant=venue.tenant, venue=venue.context,
                                 timeout_ms=int(venue.router_timeout * 1000),
                                 call=call, user=user_routing))
        return handle

    def abandon(self, handle: str) -> None:
        """The caller hung up while pending."""
        pending = self._release(handle, "abandoned")
        if pending is None:
            return
        self.counters.abandoned += 1
        self._observer.abandoned_call(pending.venue.tenant, pending.venue.context)
        self._record(pending.venue, pending.call, pending.user, pending.history, None, None,
                     "the caller hung up while the call waited")
        self._notify(pending, m.Abandoned(handle))

    # -- from a VTS ----------------------------------------------------------------
    def on_vts_message(self, vts: str, raw: JsonObject) -> None:
        """One decoded frame from a VTS, after its hello. Never raises for its content."""
        try:
            message = m.parse(raw)
        except m.MessageError as exc:
            if exc.type == m.State.TYPE:
                self._refuse(vts, None, "invalid-state", f"{exc}; not kept")
                return
            if exc.type != m.RouteTo.TYPE:
                self._refuse(vts, exc.handle, "unknown-type",
                             f"message type {exc.type!r} is not accepted from a VTS")
                return
            pending = self._own_pending(vts, exc.handle)
            if pending is not None:
                self._invalid(vts, pending, exc, "")
            return
        if isinstance(message, m.State):
            self._on_state(vts, message)
            return
        if not isinstance(message, m.DISPOSITIONS):
            self._refuse(vts, getattr(message, "handle", None), "unknown-type",
                         f"message type {message.TYPE!r} is not accepted from a VTS")
            return
        pending = self._own_pending(vts, message.handle)
        if pending is not None:
            self._on_disposition(pending, message)

    def _on_state(self, vts: str, message: m.State) -> None:
        """A VTS's latest state for one of its tenants: kept (saved later, not here)."""
        vts_config = self._config.vts.get(vts)
        if vts_config is None or message.tenant not in vts_config.tenants:
            log.error("isolation: VTS %s (tenant %s) sent state for tenant %r; refused",
                      vts, self._tenants_of(vts), message.tenant[:64])
            self._refuse(vts, None, "not-yours",
                         "state names a tenant this VTS does not serve; not kept")
            return
        self.states.put(message.tenant, message.state)

    def _own_pending(self, vts: str, handle: str | None) -> Pending | None:
        """The pending call `handle` if this VTS may act on it; else refuse and None."""
        pending = self._pending.get(handle) if handle is not None else None
        if pending is None:
            # How a call ended is told to its own VTS only: to another, whatever handle it
            # holds, the call is as unknown as a handle never issued.
            owner, why = (vts, "missing handle") if handle is None else self._closed.get(
                handle, (vts, "unknown handle"))
            why = why if owner == vts else "unknown handle"
            self._refuse(vts, handle, "not-pending", f"call is not pending ({why}); not acted on")
            return None
        if pending.venue.vts != vts:
            log.error("isolation: VTS %s (tenant %s) acted on a handle of tenant %s; refused",
                      vts, self._tenants_of(vts), pending.venue.tenant)
            self._refuse(vts, None, "not-yours", "handle was not given to this VTS")
            return None
        return pending

    def _on_disposition(self, pending: Pending, message: m.Disposition) -> None:
        tenant = self._config.tenants.get(pending.venue.tenant)
        if tenant is None:  # a reload removed the tenant while the call waited
            gone = ValueError(f"tenant {pending.venue.tenant} is no longer configured")
            self._invalid(pending.venue.vts, pending, gone, "")
            return
        handle = pending.handle
        if pending.asking is not None:
            self._refuse(pending.venue.vts, handle, "asking", "the call waits for a "
                         "workstation's choice (ask); not acted on")
            return
        try:
            if isinstance(message, m.Treat):
                self._treat(pending, tenant, message)
                return
            if isinstance(message, m.Ask):
                self._ask(pending, tenant, message)
                return
            disposition = self._disposition_for(pending, tenant, message)
        except ValueError as exc:
            target = message.target if isinstance(message, m.RouteTo) else None
            self._invalid(pending.venue.vts, pending, exc, self._owner_hint(tenant, target))
            return
        if disposition is None:
            self._default(handle, "vts", notify=False, trace=message.trace)
            return
        pending.history.redirects = 0  # a real instruction
        self._record(pending.venue, pending.call, pending.user, pending.history, disposition,
                     message.trace, "")
        self._finish(handle, disposition, message.trace)

    @staticmethod
    def _disposition_for(pending: Pending, tenant: TenantConfig,
                         message: m.RouteTo | m.Reject | m.TakeDefault) -> Disposition | None:
        """A VTS's route or reject as the AGI side's disposition (None: take the default);
        ValueError for a target outside the tenant's namespace."""
        if isinstance(message, m.RouteTo):
            check_namespace(tenant, message.target, personal=pending.venue.personal)
            return Disposition(ACTION_ROUTE, target=message.target,
                               dial_timeout=message.dial_timeout,
                               dial=dial_for(tenant, message.target))
        if isinstance(message, m.Reject):
            return Disposition(ACTION_REJECT, cause=message.cause)
        return None

    # -- asking the workstations (live call disposition) --------------------------------
    def _ask(self, pending: Pending, tenant: TenantConfig, message: m.Ask) -> None:
        """Pop the call up on the user's (or the pickup group's) workstations; the first
        valid choice routes it (`client_choice`), else `otherwise` at the timeout."""
        user, personal = pending.user, tenant.personal
        if not pending.venue.personal or user is None or personal is None:
            raise ValueError("ask is for personal venues only")
        self._disposition_for(pending, tenant, message.otherwise)  # ValueError if foreign
        if self._pops is None:  # no workstation service: nobody to ask
            self._apply(pending, tenant, message.otherwise, message.trace,
                        "no workstation service, so the user's rules decide")
            return
        members = personal.pickup_groups.get(message.group, ()) if message.group else ()
        asked = members if user.user_id in members else (user.user_id,)
        timeout = message.timeout_ms / 1000
        if pending.timer is not None:
            pending.timer.cancel()
        pending.deadline = self._clock.time() + timeout
        handle = pending.handle
        pending.timer = self._clock.call_at(pending.deadline, lambda: self._timeout(handle))
        pending.asking = Asking(otherwise=message.otherwise, asked=asked, trace=message.trace)
        self.counters.asked += 1
        self._observer.stepped(tenant.name, pending.venue.context, "ask")
        self._pops.offer(Pop(
            call_id=handle, tenant=tenant.name, user_id=user.user_id, number=user.number,
            ani=pending.call.ani, ani_name=pending.call.ani_name, asked=asked,
            lookup=dict(message.lookup), expires_at=self._wall() + timeout,
            group=message.group if members else ""))

    def _apply(self, pending: Pending, tenant: TenantConfig,
               message: m.RouteTo | m.Reject | m.TakeDefault, trace: m.TraceInfo | None,
               why: str) -> None:
        """The user's own rules, when nobody chose on a workstation (already checked)."""
        disposition = self._disposition_for(pending, tenant, message)
        if disposition is None:
            self._default(pending.handle, "vts", notify=False, trace=trace)
            return
        self._record(pending.venue, pending.call, pending.user, pending.history, disposition,
                     trace, why)
        self._finish(pending.handle, disposition, trace)

    def client_choice(self, call_id: str, tenant: str, user_id: str, choice: str,
                      target: str = "") -> str | None:
        """A workstation's choice for an asked call: None when it routes the call, else
        why it is refused. Only the users the call was offered to may choose; `take`
        rings the choosing user's own phones, `forward` only to his or her saved targets."""
        pending = self._pending.get(call_id)
        asking = pending.asking if pending is not None else None
        if pending is None or asking is None or pending.venue.tenant != tenant \
                or user_id not in asking.asked:
            return "the call is no longer waiting"
        config = self._config.tenants.get(tenant)
        chooser = self._users(tenant, user_id)
        if config is None or config.personal is None or chooser is None \
                or pending.user is None:
            return "the call is no longer waiting"
        user, portion = chooser
        try:
            disposition = self._choice(config, pending.user, user, portion, choice, target)
        except ValueError as exc:
            return str(exc)
        asking.taken_by = user_id
        pending.history.redirects = 0
        chosen = m.TraceInfo(rule="ask", why=f"{user_id} chose {choice} on a workstation",
                             inputs={"chosen_by": user_id})
        self._record(pending.venue, pending.call, pending.user, pending.history, disposition,
                     chosen, "")
        self._finish(call_id, disposition, chosen)
        return None

    @staticmethod
    def _choice(tenant: TenantConfig, dialled: User, chooser: User, portion: Portion,
                choice: str, target: str) -> Disposition:
        assert tenant.personal is not None
        if choice == "take":
            bound = [e for e in chooser.bindings if e in tenant.extensions][:MAX_PHONES]
            if not bound:
                raise ValueError("you are not bound to any phone (hot-desk first)")
            phones = m.Target(KIND_PHONES, "&".join(bound))
            return Disposition(ACTION_ROUTE, target=phones,
                               dial_timeout=tenant.personal.ring_time,
                               dial=dial_for(tenant, phones))
        if choice == "voicemail":
            return Disposition(ACTION_ROUTE, target=m.Target(KIND_VOICEMAIL, dialled.number))
        if choice == "reject":
            return Disposition(ACTION_REJECT, cause="busy")
        if choice == "forward":
            saved = portion.body.get("saved", [])
            if not isinstance(saved, list) or target not in saved:
                raise ValueError(f"{target!r} is not one of your saved targets")
            forward = m.Target.parse(target)
            check_namespace(tenant, forward, personal=True)
            if forward.kind in (KIND_PHONES, KIND_VOICEMAIL):
                raise ValueError(f"{target!r} cannot be forwarded to")
            return Disposition(ACTION_ROUTE, target=forward,
                               dial_timeout=tenant.personal.ring_time)
        raise ValueError(f"unknown choice {choice!r} (take, voicemail, forward, reject)")

    def _invalid(self, vts: str, pending: Pending, exc: ValueError, hint: str) -> None:
        log.error("VTS %s: disposition for tenant %s refused: %s%s; default route",
                  vts, pending.venue.tenant, exc, hint)
        self._refuse(vts, pending.handle, "invalid-disposition", str(exc))
        self._default(pending.handle, "refused", notify=True)

    def _treat(self, pending: Pending, tenant: TenantConfig, message: m.Treat) -> None:
        if pending.treating:
            self._refuse(pending.venue.vts, pending.handle, "treatment-busy",
                         "a treatment is already running for this call; not acted on")
            return
        others = (name for name in self._config.tenants if name != tenant.name)
        treatment = treatment_for(tenant, message, pending.deadline - self._clock.time(), others)
        pending.treating = True
        self.counters.treatments += 1
        self._observer.stepped(tenant.name, pending.venue.context, "treat")
        handle = pending.handle
        pending.responder.treat(treatment, lambda digits: self._treatment_done(handle, digits))

    def _treatment_done(self, handle: str, digits: str | None) -> None:
        pending = self._pending.get(handle)
        if pending is None:
            return  # the call left meanwhile (timeout, abandon); the VTS was told then
        pending.treating = False
        self._notify(pending, m.TreatmentDone(handle, ok=digits is not None,
                                              digits=digits or ""))

    def _owner_hint(self, tenant: TenantConfig, target: m.Target | None) -> str:
        """Name the tenant a refused target belongs to, for the isolation log line."""
        if target is None:
            return ""
        owners = [t.name for t in self._config.tenants.values() if t.name != tenant.name
                  and (target.value in t.targets or target.value in t.queues)]
        return f" (it is a target of tenant {', '.join(owners)})" if owners else ""

    def _refuse(self, vts: str, handle: str | None, code: str, text: str) -> None:
        self.counters.refused += 1
        link = self._links.get(vts)
        if link is not None:
            link.send(m.Error(handle=handle, code=code, message=text))

    # -- leaving the venue ---------------------------------------------------------
    def _timeout(self, handle: str) -> None:
        pending = self._pending.get(handle)
        if pending is None:
            return
        pending.timer = None
        asking, tenant = pending.asking, self._config.tenants.get(pending.venue.tenant)
        if asking is not None and tenant is not None:
            # nobody chose on a workstation in time: the user's own rules decide
            self._apply(pending, tenant, asking.otherwise,
                        asking.otherwise.trace or asking.trace,
                        f"no workstation of {', '.join(asking.asked)} chose in time")
            return
        log.info("router timeout for %s in venue %s: default route", handle,
                 pending.venue.context)
        self._default(handle, "timeout", notify=True)

    def _default(self, handle: str, cause: str, *, notify: bool,
                 trace: m.TraceInfo | None = None) -> None:
        pending = self._release(handle, f"default:{cause}")
        if pending is None:
            return
        if notify:
            self._notify(pending, m.DefaultRouted(handle, reason=cause))
        self._default_route(pending.venue, pending.history, pending.responder, cause,
                            pending.call, pending.user, trace, started=pending.started)

    def _default_route(self, venue: VenueConfig, history: CallHistory, responder: Responder,
                       cause: str, call: m.CallerData, user: User | None,
                       trace: m.TraceInfo | None = None, *,
                       started: float | None = None) -> None:
        """`started`: when the request arrived, on the latency clock (None: just now)."""
        tenant = self._config.tenants.get(venue.tenant)
        if venue.personal and tenant is not None:
            # The user's phones, then voicemail: what the call would get with no bridge.
            history.redirects += 1
            disposition = personal_default(tenant, user, user.bindings if user else (),
                                           call.previous)
            rejected = ""
        else:
            disposition, rejected = default_route(venue, history, cause)
        if rejected:
            log.warning("venue %s: %s; call rejected", venue.context, rejected)
            self.counters.rejected += 1
        else:
            self._count_default(cause)
        self._record(venue, call, user, history, disposition, trace,
                     f"default route ({cause})")
        responder.dispose(disposition)
        target = disposition.target
        self._observer.disposed(
            venue.tenant, venue.context, ACTION_REJECT if rejected else ACTION_DEFAULT,
            disposition.cause if rejected else cause,
            0.0 if started is None else self._latency_clock() - started,
            uniqueid=call.uniqueid, target=str(target) if target is not None else "",
            rule=trace.rule if trace is not None else "")

    def _record(self, venue: VenueConfig, call: m.CallerData, user: User | None,
                history: CallHistory, disposition: Disposition | None,
                trace: m.TraceInfo | None, why: str) -> None:
        """One routing decision into the route trace (`ami-bridge trace UNIQUEID`)."""
        if self._on_decision is None:
            return
        if disposition is None:
            outcome = "abandoned"
        elif disposition.action == ACTION_ROUTE and disposition.target is not None:
            outcome = f"route {disposition.target}"
        else:
            outcome = f"{disposition.action} {disposition.cause}".strip()
        previous = call.previous
        record_call = {"ani": call.ani, "ani_name": call.ani_name, "dnis": call.dnis}
        if user is not None:
            record_call |= {"number": user.number, "bindings": "&".join(user.bindings),
                            "timezone": user.timezone}
        rule = trace.rule if trace is not None else ("" if not why else "bridge")
        text = trace.why if trace is not None else why
        if trace is not None and why:
            text = f"{why}: {text}" if text else why
        self._on_decision(TraceRecord(
            tenant=venue.tenant, uniqueid=call.uniqueid, at=self._wall(), venue=venue.context,
            user_id=user.user_id if user is not None else "", request=history.requests,
            previous=f"{previous.target} {previous.status}" if previous else "",
            outcome=outcome, rule=rule, why=text,
            inputs=dict(trace.inputs) if trace is not None else {}, call=record_call))

    def _finish(self, handle: str, disposition: Disposition,
                trace: m.TraceInfo | None) -> None:
        pending = self._release(handle, disposition.action)
        if pending is None:
            return
        if disposition.action == ACTION_ROUTE:
            self.counters.routed += 1
        else:
            self.counters.rejected += 1
        pending.responder.dispose(disposition)
        target = disposition.target
        self._observer.disposed(
            pending.venue.tenant, pending.venue.context, disposition.action, disposition.cause,
            self._latency_clock() - pending.started, uniqueid=pending.call.uniqueid,
            target=str(target) if target is not None else "",
            rule=trace.rule if trace is not None else "")

    def _release(self, handle: str, outcome: str) -> Pending | None:
        pending = self._pending.pop(handle, None)
        if pending is None:
            return None
        if pending.timer is not None:
            pending.timer.cancel()
        self._per_vts.get(pending.venue.vts, set()).discard(handle)
        if pending.asking is not None and self._pops is not None:
            taken = pending.asking.taken_by
            reason = "taken" if taken else "abandoned" if outcome == "abandoned" else "timeout"
            self._pops.gone(handle, reason, by=taken)
        self._closed[handle] = (pending.venue.vts, outcome)
        if len(self._closed) > MAX_REMEMBERED_CLOSED:
            self._closed.popitem(last=False)
        return pending

    def _notify(self, pending: Pending, message: m.Message) -> None:
        link = self._links.get(pending.venue.vts)
        if link is not None:
            link.send(message)

    def _count_default(self, cause: str) -> None:
        self.counters.defaulted[cause] = self.counters.defaulted.get(cause, 0) + 1

    # -- out to the VTS links besides route requests (ami_bridge.fanout) --------------
    def forward_call_event(self, event: CallEvent) -> None:
        self.fanout.forward_call_event(event)

    def forward_agent_state(self, message: m.AgentState) -> None:
        self.fanout.forward_agent_state(message)

    def remote_agent_state(self, node: str, message: m.AgentState) -> None:
        self.fanout.remote_agent_state(node, message)

    def agent_node_heard(self, node: str) -> None:
        self.fanout.agent_node_heard(node)

    def expire_agents(self) -> int:
        return self.fanout.expire_agents()

    def remote_state(self, tenant: str, state: Mapping[str, Any]) -> None:
        self.fanout.remote_state(tenant, state)

    # -- introspection ---------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {
            "venues": {name: {"tenant": v.tenant, "vts": v.vts,
                              "connected": v.vts in self._links}
                       for name, v in sorted(self._config.venues.items())},
            "pending": {name: len(handles) for name, handles in sorted(self._per_vts.items())},
            "counters": dict(vars(self.counters)),
            "vts_state": self.states.status(),
        }

    def hello_for(self, vts: str) -> m.Hello:
        """The bridge's hello to a VTS: the routing protocols of the tenants it serves."""
        served = self._config.vts[vts].tenants if vts in self._config.vts else ()
        tenants = {name: self._config.tenants[name] for name in served}
        return m.Hello(v=PROTOCOL_VERSION, minor=PROTOCOL_MINOR, vts=vts, tenants={
            name: m.TenantRouting(timezone=t.timezone, holidays=tuple(t.holidays),
                                  targets=tuple(sorted(t.targets)),
                                  extensions=dict(t.extensions), rules=tuple(t.rules),
                                  ring_time=t.personal.ring_time if t.personal else 0)
            for name, t in tenants.items()})

