"""CallTracker: venue attribution across legs, normalised events, agents, resync."""

from __future__ import annotations

from pathlib import Path

from ami_bridge.ami.protocol import NEED_DATA, AmiConnection, Event
from ami_bridge.ami.tracker import RECENT_HANGUPS, AgentState, CallTracker

DATA = Path(__file__).resolve().parents[1] / "data" / "ami"
A_IN, G_IN = "1700000000.10", "1700000000.20"


def events(name: str) -> list[Event]:
    conn = AmiConnection()
    conn.receive_data((DATA / f"{name}.ami").read_bytes())
    out = []
    while (msg := conn.next_event()) is not NEED_DATA:
        if isinstance(msg, Event):
            out.append(msg)
    return out


def run_scenario(tracker: CallTracker) -> list[tuple[str, str, str, dict[str, str]]]:
    evs = events("tracker_scenario")
    out = []
    for i, event in enumerate(evs):
        if i == 2:  # the route requests arrive after the Newchannels, as in real life
            assert tracker.bind(A_IN, "acme-venue", "acme")
            assert tracker.bind(G_IN, "globex-venue", "globex")
        for m in tracker.handle(event):
            assert (m.venue, m.tenant) in (("acme-venue", "acme"), ("globex-venue", "globex"))
            out.append((m.tenant, m.kind, m.uniqueid, dict(m.detail)))
    return out


def test_scenario_attribution_and_kinds() -> None:
    tracker = CallTracker()
    got = run_scenario(tracker)
    acme = [(k, u) for t, k, u, _ in got if t == "acme"]
    globex = [(k, d) for t, k, _, d in got if t == "globex"]
    # Every acme leg (Local ;1/;2 pair, agent, the operator reached by the transfer).
    assert {u for _, u in acme} == {A_IN, "1700000000.11", "1700000000.12",
                                    "1700000000.13", "1700000000.14"}
    assert [k for k, _ in globex] == ["dial_begin", "dial_end", "hangup", "dial_begin",
                                      "dial_end", "hangup", "hangup", "call_end"]
    assert [d["status"] for k, d in globex if k == "dial_end"] == ["NOANSWER", "BUSY"]
    assert globex[-2][1] == {"cause": "17", "cause_txt": "User busy"}
    kinds = [k for k, _ in acme]
    for kind in ("dial_begin", "dial_end", "answer", "bridge_enter", "bridge_leave", "hold",
                 "unhold", "transfer", "hangup"):
        assert kind in kinds
    assert kinds[-1] == "call_end" and kinds.count("call_end") == 1
    transfer = next(d for t, k, _, d in got if k == "transfer")
    assert transfer["type"] == "blind" and transfer["exten"] == "operator"
    assert tracker.calls() == {}  # forgotten: bounded memory
    assert tracker._channels == {} and tracker._bridges == {}


def test_unbound_calls_yield_nothing() -> None:
    tracker = CallTracker()
    assert all(tracker.handle(e) == [] for e in events("tracker_scenario"))


def test_auto_bind_by_venue_context() -> None:
    tracker = CallTracker(venues={"acme-venue": "acme", "globex-venue": "globex"})
    msgs = [m for e in events("tracker_scenario") for m in tracker.handle(e)]
    assert {m.call for m in msgs if m.tenant == "acme"} == {A_IN}
    assert {m.call for m in msgs if m.tenant == "globex"} == {G_IN}


def test_late_bind_of_dead_channel_is_refused() -> None:
    tracker = CallTracker()
    for e in events("tracker_scenario"):
        tracker.handle(e)
    assert not tracker.bind(G_IN, "globex-venue", "globex")
    assert tracker.calls() == {}
    assert RECENT_HANGUPS >= 1000


def test_attended_transfer_is_reported_to_the_owner() -> None:
    tracker = CallTracker()
    tracker.bind("1700000000.13", "acme-venue", "acme")
    (msg,) = tracker.handle(events("attended_transfer")[0])
    assert msg.kind == "transfer" and msg.tenant == "acme"
    assert msg.detail["type"] == "attended" and msg.detail["dest_type"] == "Bridge"
    assert msg.detail["transferee_uniqueid"] == "1700000000.12"
    assert tracker.owner("1700000000.14") == ("acme-venue", "acme")  # target adopted


def test_resync_rebuilds_and_ends_lost_calls() -> None:
    tracker = CallTracker()
    evs = events("tracker_scenario")
    for e in evs[:20]:
        tracker.handle(e)
    tracker.bind(A_IN, "acme-venue", "acme")
    tracker.bind(G_IN, "globex-venue", "globex")
    # After a reconnect Asterisk lists only the acme legs: globex's call ended unseen.
    live = [Event(name="CoreShowChannel", fields=(
        ("Event", "CoreShowChannel"), ("Channel", ch), ("Uniqueid", uid),
        ("Linkedid", A_IN), ("Context", "acme-internal"), ("BridgeId", "bridge-acme-1")))
        for ch, uid in (("PJSIP/acme-trunk-00000010", A_IN),
                        ("PJSIP/acme-agent-00000099", "1700000000.99"))]
    ended = tracker.resync(live)
    assert [(m.kind, m.tenant, dict(m.detail)) for m in ended] == [
        ("call_end", "globex", {"reason": "lost"})]
    assert tracker.owner("1700000000.99") == ("acme-venue", "acme")  # new leg adopted
    assert tracker.owner(G_IN) is None
    assert set(tracker.calls()) == {A_IN}


def test_agent_state_per_tenant() -> None:
    now = [1700000500.0]
    tracker = CallTracker(devices={"PJSIP/acme-agent": "acme",
                                   "PJSIP/globex-agent": "globex"}, clock=lambda: now[0])
    evs = events("agents")
    for e in evs[:3]:
        tracker.handle(e)
    acme = tracker.agents["PJSIP/acme-agent"]
    assert acme == AgentState(device="PJSIP/acme-agent", tenant="acme",
                              device_state="NOT_INUSE", queues=frozenset({"acme-support"}),
                              last_call_end=1700000100.0)
    assert acme.available and tracker.available_agents("acme") == [acme]
    assert tracker.available_agents("globex") == []  # UNAVAILABLE
    tracker.handle(evs[3])  # paused for lunch
    assert tracker.available_agents("acme") == []
    assert tracker.agents["PJSIP/acme-agent"].pause_reason == "lunch"
    tracker.handle(evs[4])  # INUSE
    now[0] = 1700000600.0
    tracker.handle(evs[5])  # NOT_INUSE: a call just ended
    assert tracker.agents["PJSIP/acme-agent"].last_call_end == 1700000600.0
    assert tracker.agents_of("globex")[0].tenant == "globex"
    assert "PJSIP/acme-operator" not in tracker.agents  # not in the mapping: ignored


def test_call_end_is_dated_whichever_event_reports_idle_first() -> None:
    # Seen on the real Asterisk: the queue member event of a hang-up can overtake the
    # DeviceStateChange, and the return to idle must still date the end of the call.
    clock = iter([100.0, 101.0, 102.0, 103.0])
    tracker = CallTracker(devices={"PJSIP/a": "acme"}, clock=lambda: next(clock))
    tracker.handle(Event(name="DeviceStateChange", fields=(
        ("Event", "DeviceStateChange"), ("Device", "PJSIP/a"), ("State", "INUSE"))))
    tracker.handle(Event(name="QueueMemberStatus", fields=(
        ("Event", "QueueMemberStatus"), ("Queue", "acme-sales"),
        ("StateInterface", "PJSIP/a"), ("Status", "1"), ("LastCall", "0"))))
    tracker.handle(Event(name="DeviceStateChange", fields=(
        ("Event", "DeviceStateChange"), ("Device", "PJSIP/a"), ("State", "NOT_INUSE"))))
    agent = tracker.agents["PJSIP/a"]
    assert agent.available and agent.last_call_end == 101.0


def csc(channel: str, uid: str, linkedid: str, context: str) -> Event:
    return Event(name="CoreShowChannel", fields=(
        ("Event", "CoreShowChannel"), ("Channel", channel), ("Uniqueid", uid),
        ("Linkedid", linkedid), ("Context", context)))


def test_resync_picks_up_calls_that_entered_a_venue_while_ami_was_down() -> None:
    # Seen on the real Asterisk (tests/data/ami/core_show_channels.ami): by the time the
    # session is back, a call that entered acme-venue meanwhile has left it for the
    # Gosub of its route (Context acme-internal, as is its dial leg's), and
    # CoreShowChannels lists the leg before the caller. Its venue comes from the route
    # request (`bind`, which needs no AMI); the resync must attach the leg as well.
    tracker = CallTracker(venues={"acme-venue": "acme", "globex-venue": "globex"})
    caller, leg, waiting = "1795657017.0", "1795657017.1", "1795657017.2"
    assert tracker.bind(caller, "acme-venue", "acme")  # route request during the outage
    ended = tracker.resync([
        csc("PJSIP/acme-agent-00000001", leg, caller, "acme-internal"),
        csc("PJSIP/acme-trunk-00000000", caller, caller, "acme-internal"),
        csc("PJSIP/globex-trunk-00000002", waiting, waiting, "globex-venue")])  # in AGI
    assert ended == []
    assert tracker.calls() == {caller: ("acme-venue", "acme"),
                               waiting: ("globex-venue", "globex")}
    assert tracker.owner(leg) == ("acme-venue", "acme")
    got = [(m.kind, m.tenant, m.call, m.uniqueid)
           for uid, ch in ((leg, "PJSIP/acme-agent-00000001"),
                           (caller, "PJSIP/acme-trunk-00000000"))
           for m in tracker.handle(Event(name="Hangup", fields=(
               ("Event", "Hangup"), ("Channel", ch), ("Uniqueid", uid),
               ("Linkedid", caller), ("Cause", "16"))))]
    assert got == [("hangup", "acme", caller, leg), ("hangup", "acme", caller, caller),
                   ("call_end", "acme", caller, caller)]



CORPUS_WITH_BRIDGES = ("real_session", "call_operator", "bare_lf")


def test_the_tracker_needs_no_bridge_destroy() -> None:
    # The shipped manager user no longer asks for BridgeDestroy (one event per bridged
    # call): every channel in a bridge leaves it by BridgeLeave or Hangup first, which
    # already empties the bridge's entries. On every transcript with a BridgeDestroy,
    # with every channel tracked (each binds itself in its context): when it arrives the
    # tracker that never sees it already holds nothing of that bridge, and both give
    # the same call events.
    for name in CORPUS_WITH_BRIDGES:
        evs = events(name)
        contexts = {e.get("Context") or "" for e in evs if e.name == "Newchannel"}
        venues = {c: "t" for c in contexts if c}
        full, without = CallTracker(venues=venues), CallTracker(venues=venues)
        got_full: list[object] = []
        got_without: list[object] = []
        destroyed = 0
        for event in evs:
            got_full += full.handle(event)
            if event.name == "BridgeDestroy":
                bridge = event.get("BridgeUniqueid") or ""
                assert bridge not in without._bridges, name
                assert bridge not in without._in_bridge.values(), name
                destroyed += 1
            else:
                got_without += without.handle(event)
        assert destroyed and got_full and got_without == got_full, name
        assert (without._bridges, without._in_bridge) == (full._bridges, full._in_bridge)
