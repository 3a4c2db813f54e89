"""Protocol 2.2, a VTS's saved state: the round-robin cursors as state (routing.py), the
runtime sending and restoring them (worker.py), the bridge keeping them per tenant and
refusing what is not the VTS's own (intermediary.py), and their coalesced saves
(vts_state.py). The store methods are in tests/unit/test_store.py (both backends); the
isolation property (tests/unit/test_isolation_property.py) sends state frames too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from ami_bridge.intermediary import Intermediary
from ami_bridge.personal.model import StoreError, VtsState
from ami_bridge.tenants import messages as m
from ami_bridge.tenants.messages import Target
from ami_bridge.tenants.protocol import PROTOCOL_VERSION, encode
from ami_bridge.tenants.routing import CallInfo, parse_protocol
from ami_bridge.tenants.worker import Worker
from ami_bridge.vts_state import StateWriter, VtsStates
from tests.unit.memory_store import MemoryStore
from tests.unit.test_intermediary import Link, World
from tests.unit.test_worker import Transport

RR = {"name": "rr", "targets": ["1001", "1002", "1003"], "strategy": "round_robin"}
FIRST = {"name": "first", "dnis": "9", "targets": ["1001"]}


def hello(minor: int = 2, rules: tuple[Mapping[str, Any], ...] = (FIRST, RR)) -> bytes:
    return encode(m.to_wire(m.Hello(v=PROTOCOL_VERSION, minor=minor, vts="acme", tenants={
        "acme": m.TenantRouting(timezone="UTC", targets=("1001", "1002", "1003"),
                                rules=rules)})))


def request(handle: str, dnis: str = "100") -> bytes:
    return encode(m.to_wire(m.RouteRequest(handle=handle, tenant="acme", venue="acme-venue",
                                           timeout_ms=2000,
                                           call=m.CallerData(ani="1", dnis=dnis))))


def frame(message: m.Message) -> bytes:
    return encode(m.to_wire(message))


@pytest.fixture
def done() -> Iterator[asyncio.Future[None]]:
    loop = asyncio.new_event_loop()
    yield loop.create_future()
    loop.close()


def started(done: asyncio.Future[None], minor: int = 2,
            rules: tuple[Mapping[str, Any], ...] = (FIRST, RR)) -> tuple[Worker, Transport]:
    worker = Worker(name="acme", done=done)
    transport = Transport()
    worker.connection_made(transport)  # type: ignore[arg-type]
    transport.sent()  # its hello
    worker.data_received(hello(minor, rules))
    assert transport.sent() == []
    return worker, transport


def targets(sent: list[m.Message]) -> list[str]:
    return [x.target.value for x in sent if isinstance(x, m.RouteTo)]


def states(sent: list[m.Message]) -> list[m.State]:
    return [x for x in sent if isinstance(x, m.State)]


# -- routing.py: the cursors as state ----------------------------------------------------------

def test_round_robin_marks_its_cursors_changed_and_they_restore_modulo_the_targets() -> None:
    p = parse_protocol([FIRST, RR, {"name": "two", "targets": ["1001", "1002"],
                                    "strategy": "round_robin", "dnis": "2"}], timezone="UTC")
    call = CallInfo(ani="1", dnis="100")
    rng = random.Random(0)
    p.evaluate(CallInfo(ani="1", dnis="9"), _now(), rng)  # the "first" rule: no cursor
    assert not p.cursors_changed and p.cursors() == {}
    p.evaluate(call, _now(), rng)
    assert p.cursors_changed and p.cursors() == {"rr": 1}
    fresh = parse_protocol([FIRST, RR], timezone="UTC")
    # other rules' names, the "first" rule, bad values: ignored; 7 -> 7 % 3
    assert fresh.restore_cursors({"rr": 7, "first": 0, "gone": 1, "two": True}) == 1
    assert fresh.cursors() == {"rr": 1} and not fresh.cursors_changed
    for bad in ({"rr": -1}, {"rr": "1"}, {"rr": 1.5}, ["rr"], None):
        assert parse_protocol([RR], timezone="UTC").restore_cursors(bad) == 0
    decision = fresh.evaluate(call, _now(), rng)
    assert decision.target == Target.extension("1002")


def _now() -> dt.datetime:
    return dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


# -- worker.py: sending and restoring ----------------------------------------------------------

def test_the_runtime_sends_its_cursors_once_per_batch_and_only_when_they_moved(
        done: asyncio.Future[None]) -> None:
    worker, transport = started(done)
    worker.data_received(request("h1") + request("h2") + request("h3"))  # one batch
    sent = transport.sent()
    assert targets(sent) == ["1001", "1002", "1003"]
    assert sent[-1] == m.State("acme", {"round_robin": {"rr": 0}})  # after the answers
    assert len(states(sent)) == 1
    worker.data_received(request("h4", dnis="9"))  # the "first" rule: nothing moved
    assert states(transport.sent()) == []
    worker.data_received(request("h5"))
    assert states(transport.sent()) == [m.State("acme", {"round_robin": {"rr": 1}})]


def test_a_bridge_older_than_2_2_is_sent_no_state(done: asyncio.Future[None]) -> None:
    worker, transport = started(done, minor=1)
    worker.data_received(request("h1") + request("h2"))
    sent = transport.sent()
    assert targets(sent) == ["1001", "1002"] and states(sent) == []


def test_a_restarted_runtime_resumes_the_round_robin_where_it_was(
        done: asyncio.Future[None]) -> None:
    """What one VTS would route for calls 1..7, two VTS (the second started from the
    first's last state, as the bridge gives it back) route the same."""
    one, t_one = started(done)
    for i in range(7):
        one.data_received(request(f"a{i}"))
    straight = targets(t_one.sent())

    first, t_first = started(done)
    for i in range(4):
        first.data_received(request(f"b{i}"))
    sent = t_first.sent()
    saved = states(sent)[-1]
    second, t_second = started(done)
    second.data_received(frame(saved))  # what the bridge sends after the hello
    for i in range(4, 7):
        second.data_received(request(f"b{i}"))
    assert targets(sent) + targets(t_second.sent()) == straight


def test_a_reload_keeps_the_cursors_and_foreign_state_is_ignored(
        done: asyncio.Future[None], caplog: pytest.LogCaptureFixture) -> None:
    worker, transport = started(done)
    worker.data_received(request("h1"))
    worker.data_received(hello(rules=(RR, FIRST)))  # a reload: new hello, same rule
    worker.data_received(request("h2"))
    with caplog.at_level(logging.WARNING, logger="ami_bridge.tenants.worker"):
        worker.data_received(frame(m.State("globex", {"round_robin": {"rr": 0}})))
    worker.data_received(request("h3"))
    assert targets(transport.sent()) == ["1001", "1002", "1003"]
    assert "globex, which it does not serve" in caplog.text


def test_cursors_past_the_limit_are_not_sent(done: asyncio.Future[None],
                                             caplog: pytest.LogCaptureFixture) -> None:
    many = tuple({"name": f"rule-{'x' * 60}-{i}", "dnis": str(i), "targets": ["1001", "1002"],
                  "strategy": "round_robin"} for i in range(80))
    worker, transport = started(done, rules=many)
    with caplog.at_level(logging.ERROR, logger="ami_bridge.tenants.worker"):
        for i in range(80):
            worker.data_received(request(f"h{i}", dnis=str(i)))
    sent = transport.sent()
    assert len(targets(sent)) == 80
    assert all(len(m.to_wire(s)["state"]) < m.MAX_STATE_BYTES for s in states(sent))
    assert caplog.text.count(f"exceed {m.MAX_STATE_BYTES} bytes") == 1


# -- intermediary.py: kept per tenant, refused otherwise ---------------------------------------

def test_a_vts_state_is_kept_for_its_own_tenant_and_given_back_after_its_hello() -> None:
    w = World()
    w.inter.on_vts_message("acme", {"type": "state", "tenant": "acme",
                                    "state": {"round_robin": {"rr": 2}}})
    assert w.acme.sent == []  # accepted silently
    assert w.inter.states.get("acme") == {"round_robin": {"rr": 2}}
    assert w.inter.status()["vts_state"]["received"] == 1
    new, old, other = Link(), Link(), Link()
    w.inter.detach_vts("acme")
    w.inter.attach_vts("acme", new, minor=2)
    assert new.sent == [m.State("acme", {"round_robin": {"rr": 2}})]
    w.inter.detach_vts("acme")
    w.inter.attach_vts("acme", old, minor=1)  # a 2.1 VTS gets none
    assert old.sent == []
    w.inter.detach_vts("globex")
    w.inter.attach_vts("globex", other, minor=2)  # nothing saved for globex
    assert other.sent == []


def test_a_state_for_another_tenant_is_refused_and_not_kept(
        caplog: pytest.LogCaptureFixture) -> None:
    w = World()
    with caplog.at_level(logging.ERROR, logger="ami_bridge.intermediary"):
        w.inter.on_vts_message("acme", {"type": "state", "tenant": "globex",
                                        "state": {"round_robin": {"rr": 0}}})
    assert w.acme.of_type(m.Error)[0].code == "not-yours"
    assert w.inter.states.get("globex") is None and w.globex.sent == []
    assert "VTS acme (tenant acme) sent state for tenant 'globex'" in caplog.text
    other = Link()
    w.inter.detach_vts("globex")
    w.inter.attach_vts("globex", other, minor=2)
    assert other.sent == []


@pytest.mark.parametrize("state, why", [
    ({"pad": "x" * m.MAX_STATE_BYTES}, f"limit of {m.MAX_STATE_BYTES}"),
    ([1, 2], "must be an object"), (None, "must be an object")])
def test_a_state_too_large_or_not_an_object_is_refused_naming_why(state: Any, why: str) -> None:
    w = World()
    w.inter.on_vts_message("acme", {"type": "state", "tenant": "acme", "state": state})
    errors = w.acme.of_type(m.Error)
    assert [e.code for e in errors] == ["invalid-state"] and why in errors[0].message
    assert w.inter.states.get("acme") is None
    handle, _ = w.call()  # the link is up and routes as before
    w.inter.on_vts_message("acme", {"type": "disposition", "handle": handle,
                                    "action": "route", "target": "extension:1001"})
    assert w.inter.counters.routed == 1


def test_the_state_goes_out_before_the_agent_snapshot() -> None:
    agents = [m.AgentState(tenant="acme", device="PJSIP/a", available=True,
                           state="NOT_INUSE", paused=False)]
    states_ = VtsStates()
    states_.load({"acme": {"round_robin": {"rr": 1}}, "globex": {"x": 1}})
    w = World()
    inter = Intermediary(config=w.inter.config, clock=w.clock, states=states_,
                         agent_snapshot=lambda tenant: agents if tenant == "acme" else [])
    link = Link()
    inter.attach_vts("acme", link, minor=2)
    assert link.sent == [m.State("acme", {"round_robin": {"rr": 1}}), agents[0]]


# -- vts_state.py: coalesced saves, retries, load, stop ----------------------------------------

class FlakyStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__(clock=lambda: 5.0)
        self.down = False
        self.writes: list[dict[str, Mapping[str, Any]]] = []

    async def put_vts_states(self, states: Mapping[str, Mapping[str, Any]]) -> None:
        if self.down:
            raise StoreError("store down")
        self.writes.append(dict(states))
        await super().put_vts_states(states)

    async def vts_states(self) -> list[VtsState]:
        if self.down:
            raise StoreError("store down")
        return await super().vts_states()


def test_saves_are_coalesced_retried_when_they_fail_and_counted() -> None:
    async def main() -> None:
        store = FlakyStore()
        states_ = VtsStates()
        writer = StateWriter(states_, store)
        for i in range(50):  # fifty frames in one interval: one write, the latest
            states_.put("acme", {"rr": i})
        states_.put("globex", {"rr": 0})
        assert await writer.save()
        assert store.writes == [{"acme": {"rr": 49}, "globex": {"rr": 0}}]
        assert await writer.save() and len(store.writes) == 1  # nothing changed
        store.down = True
        states_.put("acme", {"rr": 50})
        assert not await writer.save() and not await writer.save()
        assert states_.status() == {"tenants": 2, "unsaved": 1, "received": 52, "saved": 2,
                                    "save_failures": 2}
        states_.put("acme", {"rr": 51})  # newer meanwhile: that one is saved
        store.down = False
        assert await writer.save()
        assert store.writes[-1] == {"acme": {"rr": 51}}
        assert await store.vts_states() == [VtsState("acme", {"rr": 51}, 5.0),
                                            VtsState("globex", {"rr": 0}, 5.0)]

    asyncio.run(main())


def test_load_fills_memory_without_writing_back_and_stop_saves_the_rest(
        caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        store = FlakyStore()
        await store.put_vts_states({"acme": {"rr": 2}})
        store.writes.clear()
        states_ = VtsStates()
        writer = StateWriter(states_, store, interval=3600.0)
        await writer.load()
        assert states_.get("acme") == {"rr": 2}
        writer.start()
        await writer.save()
        assert store.writes == []  # loaded is not changed
        states_.put("globex", {"rr": 1})
        await writer.stop()  # long before the interval: saved at stop
        assert store.writes == [{"globex": {"rr": 1}}]
        store.down = True
        fresh = VtsStates()
        with caplog.at_level(logging.ERROR, logger="ami_bridge.vts_state"):
            await StateWriter(fresh, store).load()
        assert fresh.get("acme") is None and "start afresh" in caplog.text

    asyncio.run(main())


# -- across bridges: the saved state goes over the bus (cluster/share.py StateShare) ----------

class FakeBus:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.on_message: Any = None

    def subscribe(self, kinds: Any, on_message: Any, on_resync: Any = None) -> None:
        self.on_message = on_message

    def publish(self, kind: str, body: Mapping[str, Any], *, to: str = "") -> bool:
        self.sent.append((kind, dict(body)))
        return True


def test_a_state_saved_on_one_bridge_reaches_the_same_tenants_vts_on_another_only() -> None:
    from ami_bridge.cluster.share import VTS_STATE, StateShare

    a_bus, b_bus = FakeBus(), FakeBus()
    a, b = World(), World()
    a_share = StateShare(a_bus, a.inter)  # type: ignore[arg-type]
    StateShare(b_bus, b.inter)  # type: ignore[arg-type]
    b.inter.detach_vts("acme")
    b.inter.detach_vts("globex")
    acme_b, globex_b, old_b = Link(), Link(), Link()
    b.inter.attach_vts("acme", acme_b, minor=2)
    b.inter.attach_vts("globex", globex_b, minor=2)
    a_share.publish({"acme": {"round_robin": {"rr": 2}}})  # A's StateWriter saved it
    assert a_bus.sent == [(VTS_STATE, {"t": "acme", "s": {"round_robin": {"rr": 2}}})]
    b_bus.on_message("bridge-a", VTS_STATE, a_bus.sent[0][1])
    assert acme_b.sent == [m.State("acme", {"round_robin": {"rr": 2}})]
    assert globex_b.sent == []  # never another tenant's VTS
    assert b.inter.states.get("acme") == {"round_robin": {"rr": 2}}
    assert b.inter.states.take_changed() == {}  # A wrote it to the store; B does not again
    b.inter.detach_vts("acme")
    b.inter.attach_vts("acme", old_b, minor=1)  # a 2.1 VTS gets no state frame
    b_bus.on_message("bridge-a", VTS_STATE, {"t": "acme", "s": {"round_robin": {"rr": 0}}})
    assert old_b.sent == []
    b_bus.on_message("bridge-a", VTS_STATE, {"t": "nobody", "s": {}})  # unknown tenant
    b_bus.on_message("bridge-a", VTS_STATE, {"t": "acme", "s": "x" * 9000})  # malformed
    assert b.inter.states.get("nobody") is None
    assert b.inter.states.get("acme") == {"round_robin": {"rr": 0}}


def test_the_writer_hands_what_it_saved_to_the_bus_and_nothing_it_failed_to_save(
        ) -> None:
    states = VtsStates()
    store = FlakyStore()
    shared: list[dict[str, Any]] = []
    writer = StateWriter(states, store, on_saved=lambda saved: shared.append(dict(saved)))

    async def main() -> None:
        states.put("acme", {"round_robin": {"rr": 1}})
        store.down = True
        assert not await writer.save()
        assert shared == []  # not saved: not sent either (retried at the next save)
        store.down = False
        assert await writer.save()
        assert shared == [{"acme": {"round_robin": {"rr": 1}}}]
        assert await writer.save() and len(shared) == 1  # nothing changed: nothing sent

    asyncio.run(main())
