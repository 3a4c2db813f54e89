"""The ARI call-event normaliser (ami_bridge/drivers/ari_calls.py): ARI events, shaped as
Asterisk 22 sends them to the bridge's application (recorded on the sandbox, trimmed to
the fields read), become the AMI tracker's call events (EVENTS.md) for the bound call's
venue only, with the subscriptions that keep them coming; bounded and tenant-safe."""

from __future__ import annotations

from typing import Any

import pytest

from ami_bridge.ami.tracker import CallEvent
from ami_bridge.drivers import ari_calls
from ami_bridge.drivers.ari_calls import AriCallTracker

CALLER = {"id": "1795967684.0", "name": "PJSIP/acme-trunk-00000000", "state": "Ring"}
PEER = {"id": "1795967684.1", "name": "PJSIP/acme-agent-00000001", "state": "Down"}


def dial(status: str, dialstring: str = "") -> dict[str, Any]:
    return {"type": "Dial", "dialstatus": status, "forward": "", "dialstring": dialstring,
            "caller": CALLER, "peer": PEER}


def chan(kind: str, channel: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": kind, "channel": channel, **extra}


# The sequence the sandbox sent for one routed call answered by acme-agent (after the
# StasisEnd and five ChannelDialplan of the caller; ChannelVarset omitted).
ROUTED_CALL = [
    dial("", "acme-agent"),
    chan("ChannelConnectedLine", CALLER),
    dial("RINGING"),
    chan("ChannelStateChange", {**PEER, "state": "Up"}),
    dial("ANSWER"),
    dial("ANSWER"),  # the same Dial once more, through the peer's subscription
    chan("ChannelStateChange", {**CALLER, "state": "Up"}),
    chan("ChannelHangupRequest", CALLER, cause=16),
    chan("ChannelDestroyed", {**PEER, "state": "Up"}, cause=16, cause_txt="Normal Clearing"),
    chan("ChannelDestroyed", {**CALLER, "state": "Up"}, cause=16,
         cause_txt="Normal Clearing"),
]


def feed(tracker: AriCallTracker,
         messages: list[dict[str, Any]]) -> tuple[list[CallEvent], list[str]]:
    events: list[CallEvent] = []
    subscribe: list[str] = []
    for message in messages:
        observed = tracker.handle(message)
        events += observed.events
        subscribe += observed.subscribe
    return events, subscribe


def test_a_routed_call_becomes_the_amis_call_events_ending_with_call_end() -> None:
    tracker = AriCallTracker()
    assert tracker.bind(CALLER["id"], "acme-venue", "acme")
    events, subscribe = feed(tracker, ROUTED_CALL)
    assert [(e.kind, e.uniqueid) for e in events] == [
        ("dial_begin", CALLER["id"]), ("answer", PEER["id"]), ("dial_end", CALLER["id"]),
        ("answer", CALLER["id"]), ("hangup", PEER["id"]), ("hangup", CALLER["id"]),
        ("call_end", CALLER["id"])]
    assert subscribe == [f"channel:{PEER['id']}"]  # the dialled leg, once
    assert {(e.venue, e.tenant, e.call) for e in events} == {
        ("acme-venue", "acme", CALLER["id"])}
    assert dict(events[0].detail) == {"dest_channel": PEER["name"],
                                      "dest_uniqueid": PEER["id"],
                                      "dial_string": "acme-agent"}
    assert events[0].channel == CALLER["name"]
    assert dict(events[2].detail)["status"] == "ANSWER"
    assert dict(events[4].detail) == {"cause": "16", "cause_txt": "Normal Clearing"}
    assert dict(events[-1].detail) == {"reason": "hangup"} and events[-1].channel == ""
    assert tracker.calls() == {} and tracker.channels() == set()


def test_channels_of_no_bound_call_yield_nothing() -> None:
    tracker = AriCallTracker()
    events, subscribe = feed(tracker, ROUTED_CALL)
    assert (events, subscribe) == ([], [])


def test_a_late_bind_of_a_destroyed_channel_is_refused() -> None:
    tracker = AriCallTracker()
    tracker.bind(CALLER["id"], "acme-venue", "acme")
    feed(tracker, ROUTED_CALL)
    assert not tracker.bind(CALLER["id"], "acme-venue", "acme")
    assert not tracker.bind("bad/id", "acme-venue", "acme")


def test_a_channel_keeps_its_first_tenant() -> None:
    tracker = AriCallTracker()
    tracker.bind(CALLER["id"], "acme-venue", "acme")
    assert not tracker.bind(CALLER["id"], "globex-venue", "globex")
    assert tracker.bind(CALLER["id"], "acme-default", "acme")  # venue -> default: same call
    tracker.bind("9.9", "globex-venue", "globex")
    # globex's channel enters a bridge acme's call knows: it stays globex's.
    bridge = {"id": "br-1", "bridge_class": "basic", "channels": [CALLER["id"], "9.9"]}
    events, _ = feed(tracker, [chan("ChannelEnteredBridge", {"id": CALLER["id"]},
                                    bridge={**bridge, "channels": [CALLER["id"]]}),
                               chan("ChannelEnteredBridge", {"id": "9.9"}, bridge=bridge)])
    assert [(e.kind, e.tenant, e.venue) for e in events] == [
        ("bridge_enter", "acme", "acme-default"), ("bridge_enter", "globex", "globex-venue")]


def test_bridges_hold_and_transfer_keep_the_amis_detail_keys() -> None:
    tracker = AriCallTracker()
    tracker.bind(CALLER["id"], "acme-venue", "acme")
    bridge = {"id": "br-1", "bridge_class": "basic", "bridge_type": "mixing",
              "channels": [CALLER["id"], "5.5"]}
    events, subscribe = feed(tracker, [
        chan("ChannelEnteredBridge", CALLER, bridge=bridge),
        chan("ChannelHold", CALLER, musicclass="acme"),
        chan("ChannelUnhold", CALLER),
        {"type": "BridgeBlindTransfer", "result": "Success", "context": "acme-internal",
         "exten": "1002", "channel": CALLER, "transferee": {"id": "5.5", "name": "X/5"},
         "bridge": bridge},
        chan("ChannelLeftBridge", CALLER, bridge={**bridge, "channels": ["5.5"]}),
    ])
    assert [e.kind for e in events] == ["bridge_enter", "hold", "unhold", "transfer",
                                        "bridge_leave"]
    assert dict(events[0].detail) == {"bridge_id": "br-1", "bridge_type": "basic",
                                      "channels": "2"}
    assert dict(events[1].detail) == {"music_class": "acme"}
    assert dict(events[3].detail) == {
        "type": "blind", "result": "Success", "context": "acme-internal", "exten": "1002",
        "transferer_uniqueid": CALLER["id"], "transferee_uniqueid": "5.5"}
    assert dict(events[4].detail)["channels"] == "1"
    assert subscribe == ["bridge:br-1", "channel:5.5"]  # the bridge and its mate


def test_an_attended_transfer_names_its_parties_as_ami_does() -> None:
    tracker = AriCallTracker()
    tracker.bind("1.1", "acme-venue", "acme")
    events, subscribe = feed(tracker, [{
        "type": "BridgeAttendedTransfer", "result": "Success", "destination_type": "bridge",
        "transferer_first_leg": {"id": "1.1"}, "transferer_second_leg": {"id": "1.3"},
        "transferee": {"id": "1.2"}, "transfer_target": {"id": "1.4"}}])
    assert dict(events[0].detail) == {
        "type": "attended", "result": "Success", "dest_type": "bridge",
        "orig_transferer_uniqueid": "1.1", "second_transferer_uniqueid": "1.3",
        "transferee_uniqueid": "1.2", "transfer_target_uniqueid": "1.4"}
    assert subscribe == ["channel:1.3", "channel:1.2", "channel:1.4"]


def test_after_a_reconnection_calls_whose_channels_vanished_end_lost() -> None:
    tracker = AriCallTracker()
    tracker.bind("1.1", "acme-venue", "acme")
    tracker.bind("2.1", "acme-venue", "acme")
    ended = tracker.lost({"2.1"})
    assert [(e.kind, e.call, dict(e.detail)) for e in ended] == [
        ("call_end", "1.1", {"reason": "lost"})]
    assert set(tracker.calls()) == {"2.1"}


def test_calls_and_channels_per_call_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ari_calls, "MAX_CALLS", 2)
    monkeypatch.setattr(ari_calls, "MAX_CHANNELS_PER_CALL", 2)
    tracker = AriCallTracker()
    assert tracker.bind("1.1", "v", "t") and tracker.bind("2.1", "v", "t")
    assert not tracker.bind("3.1", "v", "t")
    for peer in ("1.2", "1.3"):
        tracker.handle({"type": "Dial", "dialstatus": "", "caller": {"id": "1.1"},
                        "peer": {"id": peer}})
    assert tracker.channels() == {"1.1", "1.2", "2.1"} and tracker.refused == 2
    feed(tracker, [chan("ChannelDestroyed", {"id": c}) for c in ("1.1", "1.2")])
    assert tracker.bind("3.1", "v", "t")  # a call ended: room again
