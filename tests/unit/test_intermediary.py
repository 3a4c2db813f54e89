"""Intermediary semantics with a fake clock, scripted VTS links and responders.

No event loop, no sockets, no sleeps: time moves only when a test advances the
`FakeClock`, so router timeouts are checked to the millisecond.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ami_bridge import config as config_mod
from ami_bridge.ami.tracker import CallEvent
from ami_bridge.calls import Disposition, Treatment
from ami_bridge.intermediary import Intermediary
from ami_bridge.tenants import messages as m
from ami_bridge.tenants.messages import Target
from ami_bridge.tenants.protocol import PROTOCOL_MINOR, PROTOCOL_VERSION
from tests.unit.strategies import dispositions

RAW: dict[str, Any] = {
    "bridge": {"router_timeout": 0.2, "max_pending_per_vts": 3},
    "vts": {"acme": {}, "globex": {}},
    "tenants": {
        "acme": {"targets": ["1001", "operator", "91", "92"], "queues": ["sales"],
                 "external_prefixes": ["+49"], "prompts": "acme", "moh_class": "acme-moh",
                 "venues": {"acme-venue": {"vts": "acme", "router_timeout": 0.1}}},
        "globex": {"targets": ["2001"], "venues": {"globex-venue": {"vts": "globex"}}},
    },
}
M = TypeVar("M")


class FakeTimer:
    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """The intermediary's `Scheduler`: time stands still until `advance`."""

    def __init__(self) -> None:
        self.start = self.now = 1000.0
        self.timers: list[FakeTimer] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], object], /) -> FakeTimer:
        timer = FakeTimer(when, callback)
        self.timers.append(timer)
        return timer

    def run_until(self, offset: float) -> None:
        """Move time on to `offset` seconds after the start, running the timers that
        fall due, in order (start + offset: the sum the intermediary's deadlines use)."""
        end = self.start + offset
        while due := sorted((t for t in self.timers if not t.cancelled and t.when <= end),
                            key=lambda t: t.when):
            timer = due[0]
            self.timers.remove(timer)
            self.now = timer.when
            timer.callback()
        self.now = end

    def armed(self) -> int:
        return sum(not t.cancelled for t in self.timers)


class Link:
    def __init__(self) -> None:
        self.sent: list[m.Message] = []

    def send(self, message: m.Message) -> None:
        self.sent.append(message)

    def of_type(self, kind: type[M]) -> list[M]:
        return [x for x in self.sent if isinstance(x, kind)]


class Responder:
    def __init__(self) -> None:
        self.dispositions: list[Disposition] = []
        self.treatments: list[Treatment] = []
        self.done: list[Callable[[str | None], None]] = []

    def dispose(self, disposition: Disposition) -> None:
        self.dispositions.append(disposition)

    def treat(self, treatment: Treatment, done: Callable[[str | None], None]) -> None:
        self.treatments.append(treatment)
        self.done.append(done)


class World:
    def __init__(self, raw: dict[str, Any] = RAW,
                 agents: Callable[[str], list[m.AgentState]] | None = None) -> None:
        self.clock = FakeClock()
        kwargs = {"agent_snapshot": agents} if agents is not None else {}
        self.inter = Intermediary(config=config_mod.parse(raw, path=Path("test.toml")),
                                  clock=self.clock, **kwargs)
        self.acme, self.globex = Link(), Link()
        self.inter.attach_vts("acme", self.acme)
        self.inter.attach_vts("globex", self.globex)

    def call(self, venue: str = "acme-venue", **extra: str) -> tuple[str, Responder]:
        r = Responder()
        handle = self.inter.route_request(env(venue, **extra), r)
        assert handle is not None
        return handle, r


def env(venue: str, **extra: str) -> dict[str, str]:
    return {"agi_context": venue, "agi_extension": "100", "agi_callerid": "555",
            "agi_channel": "PJSIP/x", **extra}


def disposition(handle: str, **fields: Any) -> dict[str, Any]:
    return {"type": "disposition", "handle": handle, **fields}


def ext(value: str) -> Target:
    return Target.extension(value)


def with_venue(**venue: Any) -> dict[str, Any]:
    raw = copy.deepcopy(RAW)
    raw["tenants"]["acme"]["venues"]["acme-venue"].update(venue)
    return raw


def test_route_reaches_only_the_venues_vts() -> None:
    w = World()
    handle, r = w.call()
    [req] = w.acme.of_type(m.RouteRequest)
    assert req.handle == handle and w.globex.sent == []
    assert (req.tenant, req.venue, req.timeout_ms, req.call.dnis) == ("acme", "acme-venue",
                                                                      100, "100")
    assert "agi_channel" not in str(req) and "PJSIP/x" not in str(req)
    w.inter.on_vts_message("acme", disposition(handle, action="route", target="extension:1001"))
    assert r.dispositions == [Disposition("route", target=ext("1001"))]
    assert w.inter.pending_count() == 0 and w.clock.armed() == 0


def test_unknown_venue_and_no_vts_default_at_once(caplog: pytest.LogCaptureFixture) -> None:
    w = World()
    r1, r2 = Responder(), Responder()
    with caplog.at_level(logging.WARNING):
        assert w.inter.route_request(env("nobody-venue"), r1) is None
    assert r1.dispositions == [Disposition("default", cause="unknown-venue")]
    w.inter.detach_vts("globex")
    assert w.inter.route_request(env("globex-venue"), r2) is None
    assert r2.dispositions == [Disposition("default", cause="no-vts")]
    assert w.globex.of_type(m.RouteRequest) == []
    assert "unknown venue 'nobody-venue'" in caplog.text


def test_silent_vts_times_out_at_the_venues_timeout_then_late_reply_is_refused() -> None:
    w = World()
    handle, r = w.call()
    w.clock.run_until(0.099)
    assert r.dispositions == []  # not before the venue's 0.1 s
    w.clock.run_until(0.1)
    # the venue's 0.1 s, not the global 0.2 s
    assert r.dispositions == [Disposition("default", cause="timeout")]
    assert w.acme.of_type(m.DefaultRouted) == [m.DefaultRouted(handle, reason="timeout")]
    w.inter.on_vts_message("acme", disposition(handle, action="route", target="extension:1001"))
    [error] = w.acme.of_type(m.Error)
    assert error.code == "not-pending" and "default:timeout" in error.message
    assert len(r.dispositions) == 1  # never acted on


def test_a_venue_without_its_own_timeout_takes_the_global_one() -> None:
    w = World()
    _, r = w.call("globex-venue")
    w.clock.run_until(0.199)
    assert r.dispositions == []
    w.clock.run_until(0.2)
    assert r.dispositions == [Disposition("default", cause="timeout")]


def test_duplicate_and_unknown_handles_are_refused() -> None:
    w = World()
    handle, r = w.call()
    for message in [disposition(handle, action="route", target="extension:1001")] * 2 + [
            disposition("feedface", action="route", target="extension:1001"),
            {"type": "disposition", "action": "default"},
            {"type": "disposition", "handle": ["not", "a", "string"], "action": "default"}]:
        w.inter.on_vts_message("acme", message)
    assert [e.code for e in w.acme.of_type(m.Error)] == ["not-pending"] * 4
    assert "missing handle" in w.acme.of_type(m.Error)[-1].message
    assert len(r.dispositions) == 1


def test_messages_a_vts_may_not_send_are_refused_without_touching_the_call() -> None:
    w = World()
    handle, r = w.call()
    w.inter.on_vts_message("acme", {"type": "hello", "v": PROTOCOL_VERSION})
    w.inter.on_vts_message("acme", {"type": "dance", "handle": handle})
    w.inter.on_vts_message("acme", {"type": "route_request", "handle": handle})
    assert [e.code for e in w.acme.of_type(m.Error)] == ["unknown-type"] * 3
    assert r.dispositions == [] and w.inter.pending_count() == 1


def test_abandon_cancels_timer_and_tells_only_the_vts() -> None:
    w = World()
    handle, r = w.call()
    w.inter.abandon(handle)
    assert w.clock.armed() == 0
    w.clock.run_until(0.25)  # past the router timeout: no default route may fire
    assert r.dispositions == []
    assert w.acme.of_type(m.Abandoned) == [m.Abandoned(handle)]
    assert w.globex.sent == []
    assert w.inter.pending_count() == 0


def test_foreign_target_is_refused_and_default_routed(caplog: pytest.LogCaptureFixture) -> None:
    w = World()
    handle, r = w.call()
    with caplog.at_level(logging.ERROR):
        w.inter.on_vts_message("acme", disposition(handle, action="route",
                                                   target="extension:2001"))
    assert r.dispositions == [Disposition("default", cause="refused")]
    [error] = w.acme.of_type(m.Error)
    assert error.code == "invalid-disposition" and error.handle == handle
    assert "tenant globex" in caplog.text and "tenant acme" in caplog.text


def test_acting_on_another_tenants_handle_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    w = World()
    handle, r = w.call("globex-venue")
    with caplog.at_level(logging.ERROR):
        w.inter.on_vts_message("acme", disposition(handle, action="reject", cause="busy"))
    assert r.dispositions == []  # globex's VTS still decides its own call
    assert [e.code for e in w.acme.of_type(m.Error)] == ["not-yours"]
    assert handle not in str(w.acme.sent)  # the refusal does not echo the handle
    w.inter.on_vts_message("globex", disposition(handle, action="route", target="extension:2001"))
    assert r.dispositions == [Disposition("route", target=ext("2001"))]
    assert "tenant acme" in caplog.text and "tenant globex" in caplog.text


@pytest.mark.parametrize("bad", [
    {"action": "route", "target": "extension:1001\nEXEC"},
    {"action": "route", "target": "extension:1001\n"},
    {"action": "route", "target": "1001"},  # v2: a target on the wire says its kind
    {"action": "route", "target": ["extension:1001"]},  # a list: was a TypeError in v1
    {"action": "route", "target": {"extension": "1001"}},
    {"action": "route", "target": "extension:1001", "dial_timeout": "20"},
    {"action": "route"}, {"action": "reject", "cause": "x"}, {"action": "reject", "cause": []},
    {"action": "dance"}, {"action": ["route"]}, {"action": None},
])
def test_invalid_dispositions_default_route_and_keep_the_link(bad: dict[str, Any]) -> None:
    w = World()
    handle, r = w.call()
    w.inter.on_vts_message("acme", disposition(handle, **bad))
    assert r.dispositions == [Disposition("default", cause="refused")]
    [error] = w.acme.of_type(m.Error)
    assert (error.code, error.handle) == ("invalid-disposition", handle)
    assert w.inter.connected("acme")
    other, r2 = w.call()  # the link still routes
    w.inter.on_vts_message("acme", disposition(other, action="route", target="extension:1001"))
    assert r2.dispositions == [Disposition("route", target=ext("1001"))]


def test_lost_vts_default_routes_its_calls_only() -> None:
    w = World()
    _, ra = w.call()
    _, rg = w.call("globex-venue")
    w.inter.detach_vts("acme")
    assert ra.dispositions == [Disposition("default", cause="vts-lost")]
    assert rg.dispositions == []
    assert w.inter.pending_count("globex") == 1


def test_pending_cap_per_vts() -> None:
    w = World()
    responders = [Responder() for _ in range(4)]
    handles = [w.inter.route_request(env("globex-venue"), r) for r in responders]
    assert None not in handles[:3] and handles[3] is None
    assert responders[3].dispositions == [Disposition("default", cause="vts-overloaded")]
    # another tenant is not affected by globex's backlog
    assert w.inter.route_request(env("acme-venue"), Responder()) is not None


def test_reload_keeps_pending_calls_and_sends_a_fresh_hello() -> None:
    w = World()
    handle, r = w.call()
    raw = copy.deepcopy(RAW)
    raw["tenants"]["acme"]["targets"] = ["1001", "1002"]
    w.inter.reload(config_mod.parse(raw, path=Path("test.toml")))
    [hello] = w.acme.of_type(m.Hello)
    assert hello.v == PROTOCOL_VERSION and hello.tenants["acme"].targets == ("1001", "1002")
    w.inter.on_vts_message("acme", disposition(handle, action="route", target="extension:1002"))
    assert r.dispositions == [Disposition("route", target=ext("1002"))]


def test_route_kinds_stay_in_the_tenants_namespace() -> None:
    w = World()
    cases = [("queue:sales", Target("queue", "sales")),
             ("external:+4930123", Target("external", "+4930123")),
             ("extension:operator", ext("operator")),
             ("queue:support", None), ("external:+1212555", None), ("queue:1001", None),
             ("extension:sales", None), ("outbound:+4930123", None), ("queues:sales", None)]
    for text, expected in cases:
        handle, r = w.call()
        w.inter.on_vts_message("acme", disposition(handle, action="route", target=text))
        [d] = r.dispositions
        assert (d.target if d.action == "route" else None) == expected, (text, d)


def test_treatment_keeps_the_call_pending_and_returns_digits() -> None:
    w = World(with_venue(router_timeout=5.0))
    handle, r = w.call()
    w.inter.on_vts_message("acme", disposition(handle, action="treatment", prompt="welcome",
                                               collect_digits=4, timeout_ms=3000))
    assert r.treatments == [Treatment(prompt="acme/welcome", collect_digits=4, timeout_ms=3000)]
    assert w.inter.pending_count() == 1 and r.dispositions == []
    # a second treatment while the first runs is refused, the call goes on
    w.inter.on_vts_message("acme", disposition(handle, action="treatment", moh=True))
    assert w.acme.of_type(m.Error)[-1].code == "treatment-busy"
    r.done[0]("1234")
    assert w.acme.of_type(m.TreatmentDone) == [m.TreatmentDone(handle, ok=True, digits="1234")]
    w.inter.on_vts_message("acme", disposition(handle, action="treatment", moh=True))
    assert r.treatments[-1] == Treatment(moh_class="acme-moh")  # the tenant's own class
    w.inter.on_vts_message("acme", disposition(handle, action="route", target="extension:1001"))
    assert r.dispositions == [Disposition("route", target=ext("1001"))]


def test_treatment_timeout_is_bounded_by_the_router_timer() -> None:
    w = World(with_venue(router_timeout=1.0))
    handle, r = w.call()
    w.clock.run_until(0.4)
    w.inter.on_vts_message("acme", disposition(handle, action="treatment", prompt="p",
                                               collect_digits=2, timeout_ms=60_000))
    assert r.treatments[0].timeout_ms == 600 - 100  # what is left, less a margin
    w.clock.run_until(1.0)  # the overall router timeout still holds
    assert r.dispositions == [Disposition("default", cause="timeout")]
    r.done[0]("12")  # a treatment that ends after the call left is not reported
    assert w.acme.of_type(m.TreatmentDone) == []


def test_too_little_time_left_for_a_treatment() -> None:
    w = World(with_venue(router_timeout=1.0))
    handle, r = w.call()
    w.clock.run_until(0.85)
    w.inter.on_vts_message("acme", disposition(handle, action="treatment", prompt="p"))
    assert r.treatments == [] and r.dispositions == [Disposition("default", cause="refused")]


@pytest.mark.parametrize("bad", [{"prompt": "../x"}, {"prompt": "a,b"}, {"moh": "yes"},
                                 {"prompt": "a", "collect_digits": 99}, {},
                                 {"moh": True, "prompt": "a"}, {"prompt": ["a"]}])
def test_bad_treatments_are_refused(bad: dict[str, Any]) -> None:
    w = World(with_venue(router_timeout=5.0))
    handle, r = w.call()
    w.inter.on_vts_message("acme", disposition(handle, action="treatment", **bad))
    assert r.treatments == []
    assert r.dispositions == [Disposition("default", cause="refused")]


def test_default_targets_in_turn_then_reject() -> None:
    w = World(with_venue(default_targets=["91", "92"]))
    got = []
    for _ in range(3):  # the call comes back each time its default target failed
        handle, r = w.call(agi_uniqueid="c1")
        w.inter.on_vts_message("acme", disposition(handle, action="default"))
        got += r.dispositions
    assert got == [Disposition("route", target=ext("91"), cause="vts"),
                   Disposition("route", target=ext("92"), cause="vts"),
                   Disposition("reject", cause="congestion")]


def test_redirect_limit_is_reset_by_a_real_instruction() -> None:
    w = World(with_venue(default_targets=["91", "92", "operator"], redirect_limit=2))
    actions = []
    for reply in ["default", "default", "route", "default"]:
        handle, r = w.call(agi_uniqueid="c2")
        fields = {"target": "extension:1001"} if reply == "route" else {}
        w.inter.on_vts_message("acme", disposition(handle, action=reply, **fields))
        actions.append(r.dispositions[0].action)
    assert actions == ["route", "route", "route", "route"]
    # two defaults in a row are allowed, the third is not
    for _ in range(2):
        handle, r = w.call(agi_uniqueid="c3")
        w.inter.on_vts_message("acme", disposition(handle, action="default"))
    handle, r = w.call(agi_uniqueid="c3")
    w.inter.on_vts_message("acme", disposition(handle, action="default"))
    assert r.dispositions == [Disposition("reject", cause="congestion")]


def test_route_requests_per_call_are_capped() -> None:
    raw = copy.deepcopy(RAW)
    raw["bridge"]["max_route_requests"] = 3
    w = World(raw)
    for _ in range(3):
        handle, _r = w.call(agi_uniqueid="loop")
        w.inter.on_vts_message("acme", disposition(handle, action="route",
                                                   target="extension:1001"))
    r = Responder()
    assert w.inter.route_request(env("acme-venue", agi_uniqueid="loop"), r) is None
    assert r.dispositions == [Disposition("reject", cause="congestion")]
    assert len(w.acme.of_type(m.RouteRequest)) == 3


def test_one_tenants_route_requests_never_count_against_anothers_call() -> None:
    """Call history is keyed by tenant and unique id: requests in globex's venue with the
    unique id of an acme call (a hostile peer, or a clash) leave acme's loop guard alone."""
    raw = copy.deepcopy(RAW)
    raw["bridge"]["max_route_requests"] = 3
    w = World(raw)
    for _ in range(3):
        w.call("globex-venue", agi_uniqueid="victim")
    for _ in range(3):
        handle, r = w.call(agi_uniqueid="victim")
        w.inter.on_vts_message("acme", disposition(handle, action="route",
                                                   target="extension:1001"))
        assert r.dispositions == [Disposition("route", target=ext("1001"))]


def test_previous_attempt_reaches_the_vts() -> None:
    raw = copy.deepcopy(RAW)
    raw["bridge"]["max_pending_per_vts"] = 10
    w = World(raw)
    for last, status in [("queue:sales", "NOANSWER"), ("internal/1001", "NOANSWER"),
                         ("bogus:1001", "BUSY"), ("extension:1001", "no answer"),
                         ("1001", "BUSY")]:
        w.call(agi_arg_1=last, agi_arg_2=status)
    first, *others = w.acme.of_type(m.RouteRequest)
    assert first.call.previous == m.Previous(Target("queue", "sales"), "NOANSWER")
    assert [o.call.previous for o in others] == [None] * 4
    assert m.to_wire(first)["call"]["previous"] == {"target": "queue:sales",
                                                    "status": "NOANSWER"}


# -- from the AMI side -------------------------------------------------------------------

def agent(tenant: str, device: str) -> m.AgentState:
    return m.AgentState(tenant=tenant, device=device, available=True, state="NOT_INUSE",
                        paused=False, idle_since=None)


def test_agent_state_goes_to_its_own_tenants_vts_only() -> None:
    w = World()
    w.inter.forward_agent_state(agent("acme", "PJSIP/a"))
    w.inter.forward_agent_state(agent("globex", "PJSIP/g"))
    w.inter.forward_agent_state(agent("initech", "PJSIP/i"))  # nobody's
    assert w.acme.of_type(m.AgentState) == [agent("acme", "PJSIP/a")]
    assert w.globex.of_type(m.AgentState) == [agent("globex", "PJSIP/g")]


def test_a_connecting_vts_gets_its_tenants_agents_from_the_snapshot() -> None:
    asked: list[str] = []

    def snapshot(tenant: str) -> list[m.AgentState]:
        asked.append(tenant)
        return [agent(tenant, f"PJSIP/{tenant}")]

    w = World(agents=snapshot)
    assert asked == ["acme", "globex"]
    assert w.acme.sent == [agent("acme", "PJSIP/acme")]
    assert w.globex.sent == [agent("globex", "PJSIP/globex")]


def call_event(venue: str, tenant: str) -> CallEvent:
    return CallEvent(kind="dial_end", venue=venue, tenant=tenant, call="u1", uniqueid="u2",
                     channel="PJSIP/acme-agent-1", detail={"status": "BUSY"})


def test_call_events_go_to_the_venues_vts_and_only_there() -> None:
    w = World()
    w.inter.forward_call_event(call_event("acme-venue", "acme"))
    assert w.acme.sent == [m.CallProgress(kind="dial_end", venue="acme-venue", uniqueid="u1",
                                          leg="u2", channel="PJSIP/acme-agent-1",
                                          detail={"status": "BUSY"})]
    assert w.globex.sent == [] and w.inter.counters.call_events == 1
    # a venue and tenant that disagree, or an unknown venue, reach nobody
    w.inter.forward_call_event(call_event("acme-venue", "globex"))
    w.inter.forward_call_event(call_event("nobody-venue", "acme"))
    assert len(w.acme.sent) == 1 and w.globex.sent == []
    w.inter.forward_call_event(call_event("globex-venue", "globex"))
    assert len(w.globex.sent) == 1 and len(w.acme.sent) == 1


def test_a_vts_gets_only_the_event_kinds_it_subscribed_to(
        caplog: pytest.LogCaptureFixture) -> None:
    asked: list[str] = []

    def snapshot(tenant: str) -> list[m.AgentState]:
        asked.append(tenant)
        return [agent(tenant, f"PJSIP/{tenant}")]

    w = World(agents=snapshot)
    asked.clear()
    acme, globex = Link(), Link()
    w.inter.attach_vts("acme", acme, events=["agent_state", "call_end", "a-kind-from-2030"])
    w.inter.attach_vts("globex", globex, events=[])  # nothing at all, not even the snapshot
    assert asked == ["acme"] and acme.sent == [agent("acme", "PJSIP/acme")]
    assert globex.sent == []
    # A kind this bridge does not know is said once, by name (a typo would starve the VTS).
    [unknown] = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "VTS acme" in unknown.getMessage() and "a-kind-from-2030" in unknown.getMessage()
    w.inter.forward_call_event(call_event("acme-venue", "acme"))  # dial_end: not asked for
    end = CallEvent(kind="call_end", venue="acme-venue", tenant="acme", call="u1",
                    uniqueid="u1", channel="", detail={"reason": "hangup"})
    w.inter.forward_call_event(end)
    w.inter.forward_call_event(call_event("globex-venue", "globex"))
    w.inter.forward_agent_state(agent("acme", "PJSIP/a"))
    w.inter.forward_agent_state(agent("globex", "PJSIP/g"))
    assert acme.sent[1:] == [
        m.CallProgress(kind="call_end", venue="acme-venue", uniqueid="u1", leg="u1",
                       channel="", detail={"reason": "hangup"}),
        agent("acme", "PJSIP/a")]
    assert globex.sent == []
    assert (w.inter.counters.call_events, w.inter.counters.call_events_unsubscribed) == (3, 2)
    # Handle-bound events are not subscriptions: an abandon still reaches globex.
    handle, _ = w.call("globex-venue")
    w.inter.abandon(handle)
    assert [type(x) for x in globex.sent] == [m.RouteRequest, m.Abandoned]
    # A reconnect without `events` (protocol 2.0) gets every kind again.
    w.inter.detach_vts("acme")
    again = Link()
    w.inter.attach_vts("acme", again)
    w.inter.forward_call_event(call_event("acme-venue", "acme"))
    assert again.of_type(m.CallProgress) != []


def test_status_and_hello() -> None:
    w = World()
    w.call()
    status = w.inter.status()
    assert status["pending"] == {"acme": 1, "globex": 0}
    assert status["venues"]["acme-venue"] == {"tenant": "acme", "vts": "acme",
                                              "connected": True}
    hello = w.inter.hello_for("acme")
    assert (hello.v, hello.vts, list(hello.tenants)) == (PROTOCOL_VERSION, "acme", ["acme"])
    assert hello.minor == PROTOCOL_MINOR and hello.events is None
    assert hello.tenants["acme"].targets == ("1001", "91", "92", "operator")


# -- security property 6: any JSON in any field of a disposition --------------------------

@settings(max_examples=max(300, settings.default.max_examples), deadline=None, database=None)
@given(st.data())
def test_any_disposition_ends_that_one_call_and_keeps_the_link(data: st.DataObject) -> None:
    w = World(with_venue(router_timeout=5.0))
    handle, r = w.call()
    _, rb = w.call()  # another call of the same VTS: must not be touched
    message = data.draw(dispositions(handle))
    w.inter.on_vts_message("acme", message)  # must not raise
    assert w.inter.connected("acme")
    errors = w.acme.of_type(m.Error)
    if message.get("handle") != handle:
        assert r.dispositions == [] and [e.code for e in errors] == ["not-pending"]
        return
    if r.treatments:  # a valid treatment: still pending, nothing refused
        assert r.dispositions == [] and errors == [] and w.inter.pending_count() == 2
        return
    assert len(r.dispositions) == 1  # the call left, exactly once
    if errors:
        assert [(e.code, e.handle) for e in errors] == [("invalid-disposition", handle)]
        assert r.dispositions == [Disposition("default", cause="refused")]
    assert rb.dispositions == [] and w.inter.pending_count() == 1  # the other call waits


@pytest.mark.parametrize("prompt", ["globex/welcome", "tenants/globex/welcome", "globex"])
def test_a_tenant_without_prompts_cannot_play_another_tenants(prompt: str) -> None:
    raw = with_venue(router_timeout=5.0)
    del raw["tenants"]["acme"]["prompts"]
    w = World(raw)
    handle, r = w.call()
    w.inter.on_vts_message("acme", disposition(handle, action="treatment", prompt=prompt))
    assert r.treatments == []
    assert r.dispositions == [Disposition("default", cause="refused")]
    # the shared sounds stay playable
    handle, r = w.call()
    w.inter.on_vts_message("acme", disposition(handle, action="treatment", prompt="hello-world"))
    assert [t.prompt for t in r.treatments] == ["hello-world"]


def test_a_call_entering_a_venue_is_reported_for_the_ami_tracker() -> None:
    # The AMI link binds the call to its venue from this, even while its session is down
    # (a resync cannot tell the venue of a call that has already left it for its route).
    entered: list[tuple[str, str, str]] = []
    inter = Intermediary(config=config_mod.parse(RAW, path=Path("test.toml")),
                         clock=FakeClock(),
                         on_call_entered=lambda *call: entered.append(call))
    inter.route_request(env("acme-venue", agi_uniqueid="1795657017.0"), Responder())
    inter.route_request(env("nobody-venue", agi_uniqueid="1795657017.5"), Responder())
    inter.route_request(env("globex-venue"), Responder())  # no unique id: nothing to bind
    assert entered == [("1795657017.0", "acme-venue", "acme")]
