"""The bus's envelope, its bounds and its delivery rules, and the agent-state merge,
without a database: payloads are fed to `Bus.deliver` as the listener would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ami_bridge import config as config_mod
from ami_bridge.cluster import agents as agents_mod
from ami_bridge.cluster.agents import AgentMerge
from ami_bridge.cluster.bus import MAX_PAYLOAD, Bus, BusError, decode, encode
from ami_bridge.intermediary import Intermediary
from ami_bridge.tenants import messages as m
from tests.unit.test_intermediary import RAW, FakeClock, Link


class Recorder:
    def __init__(self) -> None:
        self.messages: list[tuple[str, str, dict[str, Any]]] = []
        self.resyncs = 0

    def message(self, sender: str, kind: str, body: Any) -> None:
        self.messages.append((sender, kind, dict(body)))

    def resync(self) -> None:
        self.resyncs += 1


def bus_with_recorder(kinds: tuple[str, ...] = ("user",)) -> tuple[Bus, Recorder]:
    bus = Bus("host=/nonexistent", bridge_id="me")
    rec = Recorder()
    bus.subscribe(kinds, rec.message, rec.resync)
    return bus, rec


def test_own_messages_and_other_bridges_messages_are_not_delivered() -> None:
    bus, rec = bus_with_recorder()
    bus.deliver(encode("me", 1, "user", {"t": "acme"}))  # our own echo
    bus.deliver(encode("b", 1, "user", {"t": "acme"}, to="c"))  # for bridge c
    bus.deliver(encode("b", 2, "pop", {}))  # a kind nobody here asked for
    bus.deliver(encode("b", 3, "user", {"t": "acme"}, to="me"))
    bus.deliver(encode("b", 4, "user", {"t": "globex"}))
    assert rec.messages == [("b", "user", {"t": "acme"}), ("b", "user", {"t": "globex"})]
    assert bus.received == 3  # the pop counted, delivered to nobody


def test_a_skipped_sequence_number_tells_the_subscribers_to_resync() -> None:
    bus, rec = bus_with_recorder()
    bus.deliver(encode("b", 7, "user", {}))  # the first heard from b: no gap known
    bus.deliver(encode("b", 8, "user", {}))
    assert rec.resyncs == 0
    bus.deliver(encode("b", 9, "user", {}, to="c"))  # heard, for another bridge
    bus.deliver(encode("b", 10, "user", {}))
    assert rec.resyncs == 0
    bus.deliver(encode("b", 13, "user", {}))  # 11 and 12 lost
    assert rec.resyncs == 1 and len(rec.messages) == 4


@pytest.mark.parametrize("payload", ["not json", "[1]", json.dumps({"b": "x", "n": 1}),
                                     json.dumps({"b": "", "n": 1, "k": "user", "to": "",
                                                 "d": {}})])
def test_a_malformed_payload_is_ignored(payload: str) -> None:
    bus, rec = bus_with_recorder()
    with pytest.raises(BusError):
        decode(payload)
    bus.deliver(payload)
    assert rec.messages == [] and bus.received == 0


def test_publish_refuses_what_notify_cannot_carry_and_bounds_its_queue() -> None:
    bus = Bus("host=/nonexistent", bridge_id="me", max_queued=3)
    assert not bus.publish("pop", {"x": "y" * MAX_PAYLOAD})
    assert bus.refused == 1
    with pytest.raises(BusError, match="8000"):
        encode("me", 1, "pop", {"x": "é" * (MAX_PAYLOAD // 2)})  # bytes, not characters
    for n in range(5):
        assert bus.publish("user", {"n": n})
    assert bus.dropped == 2 and bus.status()["queued"] == 3
    # The refused message took no sequence number: a receiver sees 1, 2, ... and no gap
    # (a gap would make every other bridge reload everything for nothing).
    receiver = Bus("host=/nonexistent", bridge_id="other")
    resyncs: list[int] = []
    receiver.subscribe(("user",), lambda *_: None, lambda: resyncs.append(1))
    for n in range(1, 3):
        receiver.deliver(encode("me", n, "user", {"n": n}))
    assert [decode(p).seq for p in bus._queue] == [3, 4, 5] and resyncs == []


def state(device: str, st: str, *, tenant: str = "acme", available: bool = False
          ) -> m.AgentState:
    return m.AgentState(tenant=tenant, device=device, available=available, state=st,
                        paused=False)


def test_a_known_state_wins_over_unavailable_then_the_latest_wins() -> None:
    now = [0.0]
    merge = AgentMerge(clock=lambda: now[0], ttl=90)
    # Registered on node b's Asterisk only: ours says UNAVAILABLE, b's says NOT_INUSE.
    assert merge.local(state("PJSIP/a", "UNAVAILABLE")) == state("PJSIP/a", "UNAVAILABLE")
    idle = state("PJSIP/a", "NOT_INUSE", available=True)
    assert merge.remote("b", idle) == idle
    assert merge.local(state("PJSIP/a", "UNAVAILABLE")) is None  # still b's known state
    busy = state("PJSIP/a", "INUSE")
    assert merge.local(busy) == busy  # both known: the latest
    assert merge.remote("b", idle) == idle
    assert merge.snapshot("acme", [state("PJSIP/a", "UNAVAILABLE")]) == [idle]
    assert merge.snapshot("acme", [busy]) == [busy]  # read now: the latest of all
    assert merge.snapshot("globex", []) == []
    # b goes silent: forgotten after the TTL; ours is what is left.
    now[0] = 100.0
    assert merge.expire() == [busy]
    assert merge.snapshot("acme", []) == []


def test_agent_reports_round_trip_and_malformed_ones_are_refused() -> None:
    one = m.AgentState("acme", "PJSIP/a", True, "NOT_INUSE", False, 12.5)
    assert agents_mod.agent_from_json(agents_mod.agent_json(one)) == one
    for bad in [{}, {**agents_mod.agent_json(one), "available": "yes"},
                {**agents_mod.agent_json(one), "idle_since": True}]:
        with pytest.raises(ValueError, match="malformed"):
            agents_mod.agent_from_json(bad)
    rows = agents_mod.chunks(one for _ in range(agents_mod.CHUNK * 2 + 1))
    assert [len(r) for r in rows] == [agents_mod.CHUNK, agents_mod.CHUNK, 1]
    assert all(len(encode("x" * 16, 10**9, "agents", {"a": r})) < MAX_PAYLOAD
               for r in rows)


def test_the_intermediary_sends_the_merged_state_and_publishes_its_own() -> None:
    published: list[m.AgentState] = []
    local = [state("PJSIP/a", "UNAVAILABLE")]
    inter = Intermediary(config=config_mod.parse(RAW, path=Path("test.toml")),
                         clock=FakeClock(), agent_snapshot=lambda t: local if t == "acme"
                         else [], on_agent_state=published.append)
    acme, globex = Link(), Link()
    inter.attach_vts("globex", globex)
    idle = state("PJSIP/a", "NOT_INUSE", available=True)
    inter.remote_agent_state("b", idle)
    inter.forward_agent_state(local[0])  # ours: unknown there, b's known state stays
    inter.remote_agent_state("b", state("PJSIP/g", "INUSE", tenant="globex"))
    assert published == [local[0]]
    inter.attach_vts("acme", acme)
    assert acme.of_type(m.AgentState) == [idle]  # the snapshot: b's known state
    assert globex.of_type(m.AgentState) == [state("PJSIP/g", "INUSE", tenant="globex")]


def test_the_bus_figures_are_scraped_only_where_there_is_a_bus() -> None:
    from prometheus_client import generate_latest

    from ami_bridge.metrics.collector import Sources, registry_for
    from ami_bridge.metrics.routes import RouteStats

    config = config_mod.parse(RAW, path=Path("test.toml"))
    bus = Bus("host=/nonexistent", bridge_id="me", max_queued=1)
    bus.publish("user", {})
    bus.publish("user", {})  # the first one dropped
    bus.deliver(encode("b", 1, "user", {}))
    current: list[Bus | None] = [None]
    stats = RouteStats(clock=lambda: 0.0, venues=lambda: config.venues)
    registry, _ = registry_for(Sources(stats=stats, venues=lambda: config.venues,
                                       intermediary=lambda: None, processes=dict,
                                       ami=lambda: None, bus=lambda: current[0]))
    assert "bus_" not in generate_latest(registry).decode()
    current[0] = bus
    text = generate_latest(registry).decode()
    for line in ("ami_bridge_bus_listening 0.0", "ami_bridge_bus_received_total 1.0",
                 "ami_bridge_bus_dropped_total 1.0", "ami_bridge_bus_published_total 0.0"):
        assert line in text.splitlines()


def test_pop_hubs_exchange_pops_and_ends_through_their_peer_hook() -> None:
    from ami_bridge.personal.pops import Pop, PopHub, pop_from_json, pop_json

    now = 1_800_000_000.0
    sent: list[tuple[str, dict[str, Any], str]] = []
    keeper, other = PopHub(clock=lambda: now), PopHub(clock=lambda: now)
    keeper.peer = lambda kind, body, to: sent.append((kind, dict(body), to))
    pop = Pop(call_id="c1", tenant="acme", user_id="ann", number="2001", ani="+4930",
              ani_name="", asked=("ann",), lookup={"k": "v"}, expires_at=now + 10)
    keeper.offer(pop)
    assert sent == [("pop", pop_json(pop), "")]
    assert pop_from_json(pop_json(pop)) == pop
    other.on_peer("keeper", "pop", sent[0][1])
    assert other.waiting("acme", "ann") == [pop] and other.waiting("globex", "ann") == []
    keeper.on_peer("late", "pops_wanted", {})  # a bridge that reconnected asks again
    assert sent[-1] == ("pop", pop_json(pop), "late")
    other.on_peer("mallory", "gone", {"call": "c1", "reason": "taken", "by": "x"})
    assert other.waiting("acme", "ann") == [pop]  # only the keeper ends its pops
    keeper.gone("c1", "timeout")
    assert sent[-1] == ("gone", {"call": "c1", "reason": "timeout", "by": ""}, "")
    other.on_peer("keeper", "gone", sent[-1][1])
    assert other.waiting("acme", "ann") == []
    with pytest.raises(ValueError, match="malformed"):
        pop_from_json({**pop_json(pop), "asked": []})
