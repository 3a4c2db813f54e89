"""Property: no tenant's data ever reaches another tenant (DESIGN.md 4.5, security 7).

A generated world (tests/unit/isolation_world.py: 2-4 tenants through the real config
loader, one VTS per tenant or VTSes shared by several) runs a random interleaving of
what the intermediary meets in the daemon: route requests with random AGI environments
(venues of any tenant, unknown contexts, caller ids that are other tenants' extensions,
names and numbers, unique ids shared across tenants), VTS answers from any VTS (valid,
for foreign or closed handles, naming other tenants' targets, garbage), abandons, ends
of treatments, timer expiries on a fake clock, agent states and call events built as
the AMI link builds them, VTSes connecting and disconnecting, and reloads into other
layouts. After every step `Model.check` asserts:

- every message a VTS received concerns only tenants it serves (route requests by
  venue and tenant, events by handles given to it, agent states and call events by
  tenant and venue, hello by tenants), and an error about a handle it was not given is
  the one it would get for a handle never issued;
- no message a VTS received holds a token of another tenant's config or of a call in
  another tenant's venue, unless it was rightly told that token before (while it served
  that tenant) or sent the token itself;
- every call got at most one disposition, only from its own VTS's answers, its own
  timer or its own VTS's loss; a route goes into the call's own tenant; treatments play
  the tenant's own prompts and music;
- a unique id used in one tenant's venue never counts against another tenant's calls.

`AMI_BRIDGE_HYPOTHESIS_PROFILE=long` (tests/conftest.py) runs 10,000 examples.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ami_bridge import ami_link
from ami_bridge import config as config_mod
from ami_bridge.agi.variables import AB_LAST, ACTION_DEFAULT, ACTION_ROUTE, DIALSTATUS, agi_arg
from ami_bridge.ami.tracker import AgentState as TrackedAgent
from ami_bridge.ami.tracker import CallEvent
from ami_bridge.calls import Disposition, Treatment, check_namespace
from ami_bridge.config import BridgeConfig
from ami_bridge.intermediary import Intermediary
from ami_bridge.tenants import messages as m
from tests.conftest import examples
from tests.unit.isolation_world import NOBODY, World, words, worlds
from tests.unit.strategies import JSON, dispositions
from tests.unit.test_intermediary import RAW, FakeClock, disposition
from tests.unit.test_intermediary import World as TwoTenants

# Steps per example: enough for calls to pile up to the pending cap, time out and be
# default-routed through a reload; short enough for a few hundred examples in seconds.
MIN_STEPS, MAX_STEPS = 15, 50
UNKNOWN_HANDLE_TEXT = "call is not pending (unknown handle); not acted on"


SUBSCRIPTIONS: tuple[tuple[str, ...] | None, ...] = (
    None, ("agent_state",), (), ("dial_end", "call_end"), m.SUBSCRIBABLE)


class Link:
    """A VTS link that records what it was sent, and refuses it once detached."""

    def __init__(self, name: str, events: tuple[str, ...] | None = None) -> None:
        self.name = name
        self.events = events  # its hello's subscription (None: every kind)
        self.sent: list[m.Message] = []
        self.seen = 0  # messages already checked
        self.attached = True

    def send(self, message: m.Message) -> None:
        assert self.attached, f"message sent to detached VTS {self.name}: {message}"
        self.sent.append(message)


@dataclass
class Call:
    venue: str
    tenant: str | None  # the venue's tenant when the call came, None: no venue
    handle: str | None = None
    vts: str | None = None
    abandoned: bool = False
    dispositions: list[Disposition] = field(default_factory=list)
    treatments: list[Treatment] = field(default_factory=list)
    done: list[Callable[[str | None], None]] = field(default_factory=list)

    # -- Responder ---------------------------------------------------------------------
    def dispose(self, disposition: Disposition) -> None:
        self.dispositions.append(disposition)

    def treat(self, treatment: Treatment, done: Callable[[str | None], None]) -> None:
        self.treatments.append(treatment)
        self.done.append(done)


# -- operations (drawn before the run; indices are resolved against the run's state) ----

CALLER_KINDS = ("fresh", "other", "garbage", "empty")


@dataclass(frozen=True)
class Route:
    venue: str
    fields: tuple[tuple[str, str, int, str], ...]  # (agi key, kind, index, garbage)
    uniqueid: int  # index into the world's shared unique ids; -1: a fresh one
    previous: int  # -1: none; else index into all targets, as AB_LAST


@dataclass(frozen=True)
class Answer:
    vts: int
    handle: str  # own-pending | own-any | foreign | bogus | none
    index: int
    body: tuple[Any, ...]


@dataclass(frozen=True)
class Abandon:
    index: int


@dataclass(frozen=True)
class TreatmentEnd:
    index: int
    digits: str | None


@dataclass(frozen=True)
class Advance:
    seconds: float


@dataclass(frozen=True)
class Agent:
    device: str
    state: str
    paused: bool


@dataclass(frozen=True)
class Progress:
    venue: str
    tenant: int  # index into the world's tenants; -1: the venue's own tenant
    kind: str


@dataclass(frozen=True)
class Reload:
    index: int


@dataclass(frozen=True)
class Connect:
    index: int
    up: bool


@dataclass(frozen=True)
class SaveState:
    """A VTS sends a `state` frame (protocol 2.2) naming any tenant, its own or not."""

    vts: int
    tenant: int  # index into the world's tenants
    oversize: bool  # over MAX_STATE_BYTES: refused whoever it names


Op = (Route | Answer | Abandon | TreatmentEnd | Advance | Agent | Progress | Reload | Connect
      | SaveState)


def operations(world: World) -> st.SearchStrategy[Op]:
    tokens = sorted(t for t, owners in world.tokens.owners.items() if owners)
    venues = [*world.all_venues, *(f"{t.name}-internal" for t in world.tenants),
              "default", "from-pstn"]
    venue = st.sampled_from(world.all_venues) | st.sampled_from(venues)  # mostly real ones
    index = st.integers(0, 63)
    caller_field = st.tuples(st.sampled_from(["agi_callerid", "agi_calleridname",
                                              "agi_extension", "agi_dnid", "agi_channel",
                                              "agi_language"]),
                             st.sampled_from(CALLER_KINDS), st.integers(0, len(tokens) - 1),
                             st.text(max_size=12))
    route = st.builds(Route, venue=venue,
                      fields=st.lists(caller_field, max_size=4).map(tuple),
                      uniqueid=st.just(-1) | st.integers(-1, len(world.uniqueids) - 1),
                      previous=st.integers(-1, 20))
    route_to = st.tuples(st.just("route"), st.sampled_from(["own", "other"]),
                         st.sampled_from(["extension", "queue", "external"]), index)
    body = weighted(
        (route_to, 3),
        (st.tuples(st.just("reject"), st.sampled_from(["busy", "congestion"])), 1),
        (st.tuples(st.just("default")), 1),
        (st.tuples(st.just("prompt"), st.integers(0, 5)), 2), (st.tuples(st.just("moh")), 1),
        (st.tuples(st.just("any"), dispositions("\x00")), 1),
        (st.tuples(st.just("json"), JSON), 1),
        (st.tuples(st.just("type"), st.sampled_from(["route_request", "agent_state", "hello",
                                                     "event", "error"])), 1))
    answer = st.builds(Answer, vts=index,
                       handle=st.sampled_from(["own-pending"] * 4 + ["own-any", "foreign",
                                                                     "bogus", "none"]),
                       index=index, body=body)
    devices = [*world.all_devices, "PJSIP/nobody-gn0"]
    # Weighted towards calls and answers, so calls are pending when the rest happens.
    return weighted(
        (route, 4), (answer, 5), (st.builds(Abandon, index), 1),
        (st.builds(TreatmentEnd, index, st.none() | st.text("0123456789#", max_size=4)), 1),
        (st.builds(Advance, st.sampled_from([0.05, 0.1, 0.3, 0.6, 1.5])), 1),
        (st.builds(Agent, st.sampled_from(devices),
                   st.sampled_from(["NOT_INUSE", "INUSE", "RINGING", "UNAVAILABLE"]),
                   st.booleans()), 1),
        (st.builds(Progress, venue, st.integers(-1, 3),
                   st.sampled_from(["answered", "hangup", "dial_end", "bridged"])), 1),
        (st.builds(Reload, st.integers(0, len(world.configs) - 1)), 1),
        (st.builds(Connect, index, st.sampled_from([True, True, False])), 1),
        (st.builds(SaveState, index, index, st.sampled_from([False, False, True])), 1))


def weighted(*choices: tuple[st.SearchStrategy[Any], int]) -> st.SearchStrategy[Any]:
    """One of the strategies, each `weight` times as likely (one_of draws evenly)."""
    pool = [strategy for strategy, weight in choices for _ in range(weight)]
    return st.sampled_from(pool).flatmap(lambda strategy: strategy)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[World, list[Op]]:
    world = draw(worlds())
    return world, draw(st.lists(operations(world), min_size=MIN_STEPS, max_size=MAX_STEPS))


# -- the model: what each VTS may know, and the checks -----------------------------------

class Model:
    def __init__(self, world: World) -> None:
        self.world = world
        self.config = world.configs[0]
        self.clock = FakeClock()
        self.agents: dict[str, m.AgentState] = {}  # device -> last sent (the AMI link's view)
        self.inter = Intermediary(config=self.config, clock=self.clock,
                                  agent_snapshot=self.snapshot)
        self.links: dict[str, Link] = {}  # attached
        self.all_links: list[Link] = []
        self.given: dict[str, set[str]] = {}  # VTS -> handles it was given
        self.sent_words: dict[str, set[str]] = {}  # VTS -> words of what it sent us
        self.received: dict[str, set[str]] = {}  # VTS -> tokens it was rightly sent
        self.calls: list[Call] = []
        self.events: dict[str, CallEvent] = {}  # call event's leg token -> event
        self.requests: dict[tuple[str, str], int] = {}  # (tenant, uniqueid) -> count
        for name in self.config.vts:
            self.connect(name)

    # -- helpers ---------------------------------------------------------------------------
    def snapshot(self, tenant: str) -> list[m.AgentState]:
        return [a for a in self.agents.values() if a.tenant == tenant]

    def served(self, vts: str) -> tuple[str, ...]:
        cfg = self.config.vts.get(vts)
        return cfg.tenants if cfg is not None else ()

    def connect(self, name: str) -> None:
        # Each connection takes the next subscription in turn (protocol 2.1): the
        # isolation checks hold whatever a VTS asked for.
        link = Link(name, SUBSCRIPTIONS[len(self.all_links) % len(SUBSCRIPTIONS)])
        self.all_links.append(link)
        link.send(self.inter.hello_for(name))  # what vts_link does when it connects
        self.links[name] = link
        # minor 2: it is given its tenants' saved state, which must be its own
        self.inter.attach_vts(name, link, events=link.events, minor=2)

    def disconnect(self, name: str) -> None:
        self.links.pop(name).attached = False
        self.inter.detach_vts(name)

    def pick(self, items: list[Any], index: int) -> Any:
        return items[index % len(items)] if items else None

    def fresh(self, letters: str, owner: str | None) -> str:
        return self.world.tokens.fresh(letters, owner)

    # -- operations ------------------------------------------------------------------------
    def run(self, op: Op) -> None:
        before = [len(c.dispositions) for c in self.calls]
        allowed: set[int] = set()  # calls this step may dispose of
        if isinstance(op, Route):
            allowed.add(len(self.calls))
            self.route(op)
        elif isinstance(op, Answer):
            allowed = self.answer(op)
        elif isinstance(op, Abandon):
            call = self.pick(self.calls, op.index)
            if call is not None and call.handle is not None:
                call.abandoned = True
                self.inter.abandon(call.handle)
        elif isinstance(op, TreatmentEnd):
            waiting = [(c, d) for c in self.calls for d in c.done]
            chosen = self.pick(waiting, op.index)
            if chosen is not None:
                chosen[0].done.remove(chosen[1])
                chosen[1](op.digits)
        elif isinstance(op, Advance):
            allowed = set(range(len(self.calls)))  # any router timer may fall due
            self.clock.run_until(self.clock.now - self.clock.start + op.seconds)
        elif isinstance(op, Agent):
            self.agent(op)
        elif isinstance(op, Progress):
            self.progress(op)
        elif isinstance(op, SaveState):
            self.save_state(op)
        elif isinstance(op, Reload):
            allowed = self.reload(self.world.configs[op.index])
        else:
            allowed = self.toggle(op)
        self.check(before, allowed)

    def route(self, op: Route) -> None:
        tenant = v.tenant if (v := self.config.venues.get(op.venue)) is not None else None
        owner = tenant or NOBODY
        tokens = sorted(t for t, owners in self.world.tokens.owners.items() if owners)
        env = {"agi_context": op.venue, "agi_channel": f"PJSIP/{self.fresh('ch', owner)}"}
        for key, kind, index, garbage in op.fields:
            env[key] = {"fresh": lambda: self.fresh("wq", owner), "empty": lambda: "",
                        "other": lambda i=index: tokens[i % len(tokens)],
                        "garbage": lambda g=garbage: g}[kind]()
        uniqueid = (self.world.uniqueids[op.uniqueid] if op.uniqueid >= 0
                    else self.fresh("uq", owner))
        env["agi_uniqueid"] = uniqueid
        targets = [t for spec in self.world.tenants for t in spec.all_targets]
        if op.previous >= 0:
            env[agi_arg(AB_LAST)] = f"extension:{targets[op.previous % len(targets)]}"
            env[agi_arg(DIALSTATUS)] = "NOANSWER"
        # The call's caller data is its venue's tenant's data from now on.
        self.world.tokens.own(owner, env.values())
        call = Call(venue=op.venue, tenant=tenant)
        self.calls.append(call)
        vts = self.config.venues[op.venue].vts if tenant is not None else None
        free = vts in self.links and (self.inter.pending_count(vts)
                                      < self.config.max_pending_per_vts)
        call.handle = self.inter.route_request(env, call)
        call.vts = vts
        if tenant is None:
            return
        count = self.requests[(tenant, uniqueid)] = self.requests.get((tenant, uniqueid), 0) + 1
        if free and call.handle is None:
            # Only the loop guard refuses a call its connected VTS has room for, and it
            # counts this tenant's route requests for this unique id only.
            assert count > self.config.max_route_requests, (
                f"call {count} for {tenant}/{uniqueid} refused at {op.venue}: "
                f"{call.dispositions}")
        if call.handle is not None:
            assert vts is not None
            self.given.setdefault(vts, set()).add(call.handle)

    def answer(self, op: Answer) -> set[int]:
        names = sorted(self.links)
        with_handle = [c for c in self.calls if c.handle is not None and c.vts in self.links]
        pending = [c for c in with_handle if not c.dispositions and not c.abandoned]
        call: Call | None = None
        if op.handle in ("own-pending", "own-any"):  # a VTS answering one of its calls
            call = self.pick(pending if op.handle == "own-pending" else with_handle, op.index)
            vts = call.vts if call is not None else self.pick(names, op.vts)
        else:
            vts = self.pick(names, op.vts)
            if op.handle == "foreign":
                call = self.pick([c for c in self.calls if c.handle is not None
                                  and c.vts != vts], op.index)
        if vts is None:
            return set()
        handle: str | None = call.handle if call is not None else (
            "0123456789abcdef" if op.handle == "bogus" else None)
        raw = self.body(op.body, handle, call)
        self.sent_words.setdefault(vts, set()).update(words(json.dumps(raw, default=str)))
        self.inter.on_vts_message(vts, raw)
        return {i for i, c in enumerate(self.calls) if c.vts == vts}

    def body(self, body: tuple[Any, ...], handle: str | None, call: Call | None) -> Any:
        kind = body[0]
        base: dict[str, Any] = {"type": "disposition"}
        if handle is not None:
            base["handle"] = handle
        if kind == "route":
            _, whose, target_kind, index = body
            owner = call.tenant if call is not None else None
            specs = [s for s in self.world.tenants if (s.name == owner) == (whose == "own")]
            spec = self.pick(specs, index)
            if spec is None:
                return {**base, "action": "route", "target": f"{target_kind}:nowhere"}
            namespace = {"extension": spec.all_targets, "queue": spec.queues,
                         "external": spec.externals}
            if not namespace[target_kind]:
                target_kind = "extension"  # every tenant has one
            value = self.pick(namespace[target_kind], index)
            return {**base, "action": "route", "target": f"{target_kind}:{value}"}
        if kind == "reject":
            return {**base, "action": "reject", "cause": body[1]}
        if kind == "default":
            return {**base, "action": "default"}
        if kind == "prompt":
            return {**base, "action": "treatment", "prompt": "welcome",
                    "collect_digits": body[1]}
        if kind == "moh":
            return {**base, "action": "treatment", "moh": True}
        if kind == "any":
            raw = dict(body[1])
            if raw.get("handle") == "\x00":
                raw["handle"] = handle
            return raw
        if kind == "json":
            return body[1]
        return {**base, "type": body[1]}

    def save_state(self, op: SaveState) -> None:
        """The state carries a fresh token owned by a tenant the sender serves (the one
        it names if it serves it): a VTS not serving that tenant must never be sent it."""
        vts = self.pick(sorted(self.links), op.vts)
        named = self.pick([t.name for t in self.world.tenants], op.tenant)
        if vts is None or named is None:
            return
        served = self.served(vts)
        owner = named if named in served else self.pick(list(served), 0)
        token = self.fresh("vs", owner)
        body: dict[str, Any] = {"round_robin": {token: 1}}
        if op.oversize:
            body["pad"] = "x" * m.MAX_STATE_BYTES
        raw = {"type": "state", "tenant": named, "state": body}
        self.sent_words.setdefault(vts, set()).update(words(json.dumps(raw)))
        kept_before = self.inter.states.received
        self.inter.on_vts_message(vts, raw)
        kept = self.inter.states.received != kept_before
        assert kept == (named in served and not op.oversize), (vts, served, raw)

    def agent(self, op: Agent) -> None:
        tenant = self.config.devices.get(op.device) or self.world.device_owner(op.device)
        if tenant is None:
            return  # the AMI link tracks no agent without an owner
        message = ami_link.agent_message(TrackedAgent(
            device=op.device, tenant=tenant, device_state=op.state, paused=op.paused,
            last_call_end=1_700_000_000.0))
        if op.device in self.config.devices:
            self.agents[op.device] = message
        self.inter.forward_agent_state(message)

    def progress(self, op: Progress) -> None:
        owner = self.world.venue_owner(op.venue)
        tenant = (owner or NOBODY) if op.tenant < 0 else self.pick(
            [t.name for t in self.world.tenants], op.tenant)
        data_owner = owner or NOBODY
        leg = self.fresh("lg", data_owner)
        event = CallEvent(kind=op.kind, venue=op.venue, tenant=tenant,
                          call=self.fresh("cl", data_owner), uniqueid=leg,
                          channel=f"PJSIP/{self.fresh('ch', data_owner)}",
                          detail={"peer": self.fresh("pe", data_owner), "status": "ANSWER"})
        self.events[leg] = event
        self.inter.forward_call_event(event)

    def reload(self, config: BridgeConfig) -> set[int]:
        gone = [name for name in self.links if name not in config.vts]
        self.config = config
        for name in gone:
            self.links.pop(name).attached = False
        self.inter.reload(config)
        return {i for i, c in enumerate(self.calls) if c.vts in gone}

    def toggle(self, op: Connect) -> set[int]:
        if op.up:
            name = self.pick(sorted(set(self.config.vts) - set(self.links)), op.index)
            if name is not None:
                self.connect(name)
            return set()
        name = self.pick(sorted(self.links), op.index)
        if name is None:
            return set()
        self.disconnect(name)
        return {i for i, c in enumerate(self.calls) if c.vts == name}

    # -- the property ----------------------------------------------------------------------
    def check(self, before: list[int], allowed: set[int]) -> None:
        for i, call in enumerate(self.calls):
            self.check_call(call)
            changed = len(call.dispositions) != (before[i] if i < len(before) else 0)
            assert not changed or i in allowed, (
                f"call {i} in {call.venue} (VTS {call.vts}) disposed of by another "
                f"tenant's action: {call.dispositions}")
        owners = self.world.tokens.owners
        for link in self.all_links:
            new, link.seen = link.sent[link.seen:], len(link.sent)
            if not new:
                continue
            # What it may know: its tenants' data now, what it was told before (when it
            # served other tenants, say) and what it sent itself. Data a tenant gains
            # after a reload took it away from this VTS is not among them.
            known = self.received.setdefault(link.name, set())
            known |= self.sent_words.get(link.name, set())
            for tenant in self.served(link.name):
                known |= self.world.tokens.owned_by(tenant)
            for message in new:
                self.check_concerns(link.name, message)
                kind = message.kind if isinstance(message, m.CallProgress) else \
                    message.TYPE if isinstance(message, m.AgentState) else None
                assert kind is None or link.events is None or kind in link.events, (
                    f"VTS {link.name} asked for {link.events}, was sent {message}")
                text = json.dumps(m.to_wire(message))
                leaked = {w for w in words(text) if owners.get(w) and w not in known}
                assert not leaked, (
                    f"VTS {link.name} (serves {self.served(link.name)}) received "
                    f"{sorted(leaked)} of {[sorted(owners[w]) for w in sorted(leaked)]}: "
                    f"{text}")
                known |= words(text)

    def check_call(self, call: Call) -> None:
        assert len(call.dispositions) <= 1, f"call in {call.venue}: {call.dispositions}"
        if call.tenant is None:
            assert [d.action for d in call.dispositions] in ([], [ACTION_DEFAULT])
            assert call.treatments == []
            return
        spec = self.world.spec(call.tenant)  # the same in every config variant
        tenant = next(c.tenants[call.tenant] for c in self.world.configs
                      if call.tenant in c.tenants)
        for left in call.dispositions:
            if left.action == ACTION_ROUTE:
                assert left.target is not None
                check_namespace(tenant, left.target)
        for treatment in call.treatments:
            moh = spec.raw["moh_class"]
            prompts = spec.raw.get("prompts", "")
            assert treatment.moh_class in ("", moh), treatment
            assert not treatment.prompt or not prompts or treatment.prompt.startswith(
                f"{prompts}/"), treatment

    def check_concerns(self, vts: str, message: m.Message) -> None:
        served = self.served(vts)
        given = self.given.get(vts, set())
        if isinstance(message, m.Hello):
            assert message.vts == vts and set(message.tenants) == set(served), message
        elif isinstance(message, m.RouteRequest):
            venue = self.config.venues[message.venue]
            assert venue.vts == vts and venue.tenant == message.tenant, message
            assert message.tenant in served, message
        elif isinstance(message, m.AgentState):
            assert message.tenant in served, message
            assert self.config.devices.get(message.device) == message.tenant, message
        elif isinstance(message, m.CallProgress):
            event = self.events[message.leg]
            venue = self.config.venues[message.venue]
            assert venue.vts == vts and venue.tenant == event.tenant in served, message
        elif isinstance(message, m.State):
            assert message.tenant in served, message
        elif isinstance(message, m.Error):
            if message.handle is not None and message.handle not in given:
                # A handle it was not given (another VTS's, or made up): the answer says
                # nothing about that call, as for a handle never issued.
                assert message.code == "unknown-type" or (message.code, message.message) == (
                    "not-pending", UNKNOWN_HANDLE_TEXT), message
        else:
            assert message.handle in given, message


def counting_handles() -> Callable[[int], str]:
    """Deterministic call handles, so hypothesis replays a failure exactly."""
    counter = iter(range(1, 1 << 62))
    return lambda nbytes: f"{next(counter):0{2 * nbytes}x}"


@settings(max_examples=examples(300), deadline=None, database=None)
@given(scenarios())
def test_no_tenant_data_reaches_another_tenant(scenario: tuple[World, list[Op]]) -> None:
    world, ops = scenario
    with mock.patch("ami_bridge.intermediary.secrets.token_hex", counting_handles()):
        model = Model(world)
        model.check([], set())
        for op in ops:
            model.run(op)


@settings(max_examples=20, deadline=None, database=None)
@given(worlds())
def test_the_checks_see_a_foreign_token(world: World) -> None:
    """The checks are not vacuous: another tenant's venue or agent in a message fails."""
    model = Model(world)
    outsiders = [(n, t) for n in sorted(model.links) for t in world.tenants
                 if t.name not in model.served(n)]
    assume(outsiders)
    name, tenant = outsiders[0]
    link = model.links[name]
    link.send(m.Error(handle=None, code="x", message=f"about {tenant.venues[0]}"))
    with pytest.raises(AssertionError, match="received"):
        model.check([], set())
    link.send(m.AgentState(tenant=tenant.name, device="PJSIP/x", available=True, state="",
                           paused=False))
    with pytest.raises(AssertionError, match="AgentState"):
        model.check([], set())


# -- what the property found, pinned -------------------------------------------------------

def test_how_another_vts_call_ended_is_not_told() -> None:
    """A VTS holding another VTS's handle learned how that call ended ("(route)",
    "(default:timeout)", "(abandoned)"): now it reads as a handle never issued."""
    w = TwoTenants()
    handle, r = w.call("globex-venue")
    w.inter.on_vts_message("globex", disposition(handle, action="route",
                                                 target="extension:2001"))
    assert len(r.dispositions) == 1
    w.inter.on_vts_message("acme", disposition(handle, action="default"))
    w.inter.on_vts_message("globex", disposition(handle, action="default"))
    [foreign] = w.acme.of_type(m.Error)
    [own] = w.globex.of_type(m.Error)
    assert (foreign.code, foreign.message) == ("not-pending", UNKNOWN_HANDLE_TEXT)
    assert own.code == "not-pending" and "(route)" in own.message  # its own VTS is told


def test_a_disposition_for_a_tenant_removed_by_a_reload_default_routes() -> None:
    """A reload that removed a tenant while its call waited made the VTS's answer raise
    KeyError inside on_vts_message; now the call takes its venue's default route."""
    w = TwoTenants()
    handle, r = w.call("globex-venue")
    raw = copy.deepcopy(RAW)
    del raw["tenants"]["globex"]
    # [vts.globex] stays, connected: it now serves an acme venue (an idle VTS is refused).
    raw["tenants"]["acme"]["venues"]["acme-lobby"] = {"vts": "globex"}
    w.inter.reload(config_mod.parse(raw, path=Path("test.toml")))
    w.inter.on_vts_message("globex", disposition(handle, action="route",
                                                 target="extension:2001"))
    assert r.dispositions == [Disposition("default", cause="refused")]
    [error] = w.globex.of_type(m.Error)
    assert error.code == "invalid-disposition" and "no longer configured" in error.message
