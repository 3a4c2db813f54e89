"""The intermediary's personal venues: the user's rules reach that tenant's VTS only, a
VTS's answer is held to the tenant's devices and the user's mailbox, the bridge's own
default is the user's phones then voicemail, and every decision lands in the trace.

Same fake clock, links and responders as test_intermediary.py; the directory is the real
in-memory `Directory`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from ami_bridge import config as config_mod
from ami_bridge.calls import Disposition
from ami_bridge.intermediary import Intermediary
from ami_bridge.personal.directory import Directory
from ami_bridge.personal.model import Portion, TraceRecord, User
from ami_bridge.personal.pops import Pop
from ami_bridge.tenants import messages as m
from ami_bridge.tenants.messages import Target
from tests.unit.test_intermediary import RAW, FakeClock, Link, Responder, disposition

PERSONAL_RAW: dict[str, Any] = copy.deepcopy(RAW)
PERSONAL_RAW["tenants"]["acme"] |= {
    "extensions": {"1011": "PJSIP/acme-desk1", "1012": "PJSIP/acme-desk2",
                   "1013": "PJSIP/acme-desk3", "operator": "PJSIP/acme-operator"},
    "personal": {"context": "acme-personal", "vts": "acme", "ring_time": 15,
                 "router_timeout": 0.5,
                 "numbers": {"2101": "1011", "2102": "1012", "2103": "1013"},
                 "pickup_groups": {"sales": ["alice", "bob"]}},
}
PERSONAL_RAW["tenants"]["globex"] |= {"extensions": {"2001": "PJSIP/globex-agent",
                                                     "operator": "PJSIP/globex-operator"}}
ALICE = User("acme", "alice", "2101", bindings=("1011", "1012"))
BOB = User("acme", "bob", "2102", bindings=("1013",))
BODY = {"rules": [{"name": "dnd", "action": "dnd", "then": "voicemail"}],
        "vip": ["+4930111"], "blocked": [], "saved": []}


class FakePops:
    def __init__(self) -> None:
        self.offered: list[Pop] = []
        self.gone: list[tuple[str, str, str]] = []

    def offer(self, pop: Pop) -> None:
        self.offered.append(pop)

    def gone_(self, call_id: str, reason: str, by: str = "") -> None:
        self.gone.append((call_id, reason, by))


class World:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.directory = Directory()
        self.directory.load([ALICE, BOB], [
            Portion("acme", "alice", 3, BODY),
            Portion("acme", "bob", 1, {"saved": ["extension:1012", "external:+49301"]})])
        self.traces: list[TraceRecord] = []
        self.pops = FakePops()
        hub: Any = type("Hub", (), {"offer": lambda _, p: self.pops.offer(p),
                                    "gone": lambda _, c, r, by="": self.pops.gone_(c, r, by)})()
        self.inter = Intermediary(
            config=config_mod.parse(PERSONAL_RAW, path=Path("test.toml")), clock=self.clock,
            personal=self.directory.by_number, on_decision=self.traces.append,
            wall_clock=lambda: 1_800_000_000.0, users=self.directory.user_portion, pops=hub)
        self.acme, self.globex = Link(), Link()
        self.inter.attach_vts("acme", self.acme)
        self.inter.attach_vts("globex", self.globex)

    def call(self, number: str = "2101", **extra: str) -> tuple[str | None, Responder]:
        r = Responder()
        env = {"agi_context": "acme-personal", "agi_extension": number,
               "agi_callerid": "+4930222", "agi_uniqueid": "1700000000.1", **extra}
        return self.inter.route_request(env, r), r


def test_the_users_rules_and_bindings_go_to_the_tenants_vts_only() -> None:
    w = World()
    handle, _ = w.call()
    [request] = w.acme.of_type(m.RouteRequest)
    assert request.handle == handle and request.user is not None
    assert (request.user.user_id, request.user.number, request.user.bindings,
            request.user.version) == ("alice", "2101", ("1011", "1012"), 3)
    assert request.user.portion == BODY
    assert w.globex.sent == []


def test_a_rule_change_in_the_directory_reaches_the_next_call() -> None:
    w = World()
    w.call()
    w.directory.put_portion(Portion("acme", "alice", 4, {"rules": []}))
    w.directory.put_portion(Portion("acme", "alice", 2, {"rules": ["stale"]}))  # older: kept out
    w.call()
    versions = [r.user.version for r in w.acme.of_type(m.RouteRequest) if r.user]
    assert versions == [3, 4]


def test_phones_are_written_as_the_tenants_own_devices() -> None:
    w = World()
    handle, r = w.call()
    w.inter.on_vts_message("acme", disposition(handle, action="route", target="phones:1011&1012",
                                               dial_timeout=15))
    assert r.dispositions == [Disposition("route", target=Target("phones", "1011&1012"),
                                          dial_timeout=15,
                                          dial="PJSIP/acme-desk1&PJSIP/acme-desk2")]


def test_foreign_phones_and_mailboxes_are_refused_and_the_user_still_rings() -> None:
    for target in ("phones:1011&2001", "phones:operator&9999", "voicemail:2001",
                   "voicemail:9999"):
        w = World()
        handle, r = w.call()
        w.inter.on_vts_message("acme", disposition(handle, action="route", target=target))
        [error] = w.acme.of_type(m.Error)
        assert error.code == "invalid-disposition", target
        # the bridge's own default: the user's phones for the ring time
        assert r.dispositions == [Disposition(
            "route", target=Target("phones", "1011&1012"), dial_timeout=15,
            dial="PJSIP/acme-desk1&PJSIP/acme-desk2")], target


def test_personal_kinds_are_refused_in_an_ordinary_venue() -> None:
    w = World()
    r = Responder()
    handle = w.inter.route_request({"agi_context": "acme-venue", "agi_extension": "100"}, r)
    w.inter.on_vts_message("acme", disposition(handle, action="route", target="phones:1011"))
    [error] = w.acme.of_type(m.Error)
    assert error.code == "invalid-disposition" and "personal venues only" in error.message
    assert r.dispositions[0].action == "default"


def test_without_a_vts_the_user_rings_then_voicemail_then_the_call_ends() -> None:
    w = World()
    w.inter.detach_vts("acme")
    _, first = w.call()
    assert first.dispositions == [Disposition(
        "route", target=Target("phones", "1011&1012"), dial_timeout=15,
        dial="PJSIP/acme-desk1&PJSIP/acme-desk2")]
    _, second = w.call(agi_arg_1="phones:1011&1012", agi_arg_2="NOANSWER")
    assert second.dispositions == [Disposition("route", target=Target("voicemail", "2101"))]
    _, third = w.call(agi_arg_1="voicemail:2101", agi_arg_2="ANSWER")
    assert third.dispositions == [Disposition("reject", cause="congestion")]


def test_a_silent_vts_times_out_into_the_same_default() -> None:
    w = World()
    _, r = w.call()
    w.clock.run_until(0.5)
    assert r.dispositions[0].target == Target("phones", "1011&1012")
    [event] = w.acme.of_type(m.DefaultRouted)
    assert event.reason == "timeout"


def test_a_number_without_a_user_takes_the_dialplans_own_fallback() -> None:
    w = World()
    handle, r = w.call("2103")
    assert handle is None and r.dispositions == [Disposition("default", cause="no-user")]
    assert w.acme.of_type(m.RouteRequest) == []


def test_every_decision_is_traced_with_the_vts_reason() -> None:
    w = World()
    handle, _ = w.call()
    w.inter.on_vts_message("acme", disposition(
        handle, action="route", target="voicemail:2101",
        trace={"rule": "#1 dnd", "why": "do not disturb", "inputs": {"caller_class": "other"}}))
    _, _ = w.call(agi_arg_1="voicemail:2101", agi_arg_2="ANSWER")  # comes back: VTS decides
    [first] = w.traces
    assert (first.tenant, first.user_id, first.uniqueid, first.request) == (
        "acme", "alice", "1700000000.1", 1)
    assert (first.outcome, first.rule, first.why) == ("route voicemail:2101", "#1 dnd",
                                                      "do not disturb")
    assert first.inputs == {"caller_class": "other"}
    assert first.call["ani"] == "+4930222" and first.call["bindings"] == "1011&1012"
    w.clock.run_until(0.5)  # the second request times out: traced as the bridge's default
    second = w.traces[1]
    assert second.previous == "voicemail:2101 ANSWER" and second.request == 2
    assert second.rule == "bridge" and "timeout" in second.why


# -- ask: live call disposition from the workstations ------------------------------------

def ask(group: str = "", timeout_ms: int = 10_000) -> dict[str, Any]:
    return {"action": "ask", "timeout_ms": timeout_ms, "group": group,
            "otherwise": {"action": "route", "target": "voicemail:2101"},
            "lookup": {"customer": "Initech"}}


def test_an_ask_pops_the_call_up_for_the_group_and_the_first_choice_wins() -> None:
    w = World()
    handle, r = w.call()
    assert handle is not None
    w.inter.on_vts_message("acme", disposition(handle, **ask("sales")))
    [pop] = w.pops.offered
    assert (pop.call_id, pop.asked, pop.number, pop.ani, pop.lookup, pop.group) == (
        handle, ("alice", "bob"), "2101", "+4930222", {"customer": "Initech"}, "sales")
    assert r.dispositions == []  # still pending, past the router timeout
    w.clock.run_until(0.6)
    assert r.dispositions == []
    # bob takes it: it rings bob's own phone, not alice's
    assert w.inter.client_choice(handle, "acme", "bob", "take") is None
    assert r.dispositions == [Disposition("route", target=Target("phones", "1013"),
                                          dial_timeout=15, dial="PJSIP/acme-desk3")]
    assert w.pops.gone == [(handle, "taken", "bob")]
    assert w.inter.client_choice(handle, "acme", "alice", "take") == \
        "the call is no longer waiting"
    assert w.traces[-1].rule == "ask" and "bob chose take" in w.traces[-1].why


def test_only_the_asked_users_of_the_tenant_may_choose() -> None:
    w = World()
    handle, r = w.call()
    assert handle is not None
    w.inter.on_vts_message("acme", disposition(handle, **ask()))  # alice's own workstations
    assert w.pops.offered[0].asked == ("alice",)
    for tenant, user in (("acme", "bob"), ("globex", "alice"), ("acme", "mallory")):
        assert w.inter.client_choice(handle, tenant, user, "take") is not None
    assert w.inter.client_choice("no-such-call", "acme", "alice", "take") is not None
    assert r.dispositions == []


def test_a_forward_choice_is_held_to_the_choosers_saved_targets_and_the_tenant() -> None:
    w = World()
    handle, r = w.call()
    assert handle is not None
    w.inter.on_vts_message("acme", disposition(handle, **ask("sales")))
    assert "saved" in (w.inter.client_choice(handle, "acme", "bob", "forward",
                                             "extension:2001") or "")
    assert "unknown choice" in (w.inter.client_choice(handle, "acme", "bob", "pickup") or "")
    assert w.inter.client_choice(handle, "acme", "bob", "forward", "external:+49301") is None
    assert r.dispositions == [Disposition("route", target=Target("external", "+49301"),
                                          dial_timeout=15)]


def test_no_choice_in_time_the_users_rules_decide() -> None:
    w = World()
    handle, r = w.call()
    assert handle is not None
    w.inter.on_vts_message("acme", disposition(handle, **ask(timeout_ms=8000)))
    w.clock.run_until(7.9)
    assert r.dispositions == []
    w.clock.run_until(8.1)
    assert r.dispositions == [Disposition("route", target=Target("voicemail", "2101"))]
    assert w.pops.gone == [(handle, "timeout", "")]
    assert "chose in time" in w.traces[-1].why


def test_the_caller_hanging_up_while_asked_takes_no_route() -> None:
    w = World()
    handle, r = w.call()
    assert handle is not None
    w.inter.on_vts_message("acme", disposition(handle, **ask()))
    w.inter.abandon(handle)
    assert w.pops.gone == [(handle, "abandoned", "")] and r.dispositions == []
    assert w.inter.client_choice(handle, "acme", "alice", "take") is not None
    w.clock.run_until(20.0)
    assert r.dispositions == []


def test_an_ask_with_a_foreign_otherwise_is_refused_and_the_vts_cannot_overrule_it() -> None:
    w = World()
    handle, r = w.call()
    assert handle is not None
    bad = ask()
    bad["otherwise"] = {"action": "route", "target": "phones:2001"}
    w.inter.on_vts_message("acme", disposition(handle, **bad))
    assert w.acme.of_type(m.Error)[0].code == "invalid-disposition" and w.pops.offered == []
    handle, r = w.call()
    assert handle is not None
    w.inter.on_vts_message("acme", disposition(handle, **ask()))
    w.inter.on_vts_message("acme", disposition(handle, action="route",
                                               target="phones:1011"))
    assert w.acme.of_type(m.Error)[-1].code == "asking" and r.dispositions == []
