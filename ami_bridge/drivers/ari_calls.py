"""ARI events -> the AMI tracker's normalised call events, for ARI-only bridges; no I/O.

Contract. Where the bridge has ARI venues and no `[ami]` section, the ARI driver is the
source of call events for its venues' calls. `bind(channel_id, venue, tenant)` starts a
call when its route request arrives (the Stasis channel id is its `agi_uniqueid`);
`handle(message)` takes one decoded ARI WebSocket message and returns an `Observed`:
the `CallEvent`s it implies (the kinds and detail keys of ami_bridge/ami/EVENTS.md,
tagged with the call's venue and tenant, so the intermediary sends them to that venue's
VTS only) and the event sources (`channel:ID`, `bridge:ID`) the driver must subscribe
its application to so that the rest of the call is seen once the channel has left
Stasis. A call owns its bound channel, the peers its channels Dial, the parties of a
transfer one of them makes, and every channel in a bridge one of them entered; the first
owner keeps a channel, so a call never moves to another tenant. The call ends with
`call_end` {"reason": "hangup"} when its last channel is destroyed, or {"reason":
"lost"} when `lost(present)` (after a WebSocket reconnection) finds none of its channels
left. Bounded: at most MAX_CALLS calls and MAX_CHANNELS_PER_CALL channels each are
tracked (more are refused, not evicted), and destroyed ids are remembered in a ring of
RECENT_GONE so a late bind of a dead channel is refused. ARI has no Linkedid and no
LocalBridge: the far half of a Local channel (and what it dials) is not followed.
No asyncio, socket or logging here (tests/unit/test_core_purity.py keeps it so).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ami_bridge.ami.tracker import CallEvent
from ami_bridge.drivers.ari_events import is_safe_id

# Calls tracked at once. Each costs a few ids and one application subscription per
# channel in Asterisk; 10 000 concurrent calls is beyond what one Asterisk routes
# through one bridge (docs/drivers.md measures 20 calls/s), so the cap only stops a
# leak (events lost with the WebSocket) from growing without end.
MAX_CALLS = 10_000
# Channels one call may own: a ring group, a queue's members, transfers. A call that
# reaches more keeps reporting on the ones it has.
MAX_CHANNELS_PER_CALL = 64
# Destroyed channel ids remembered to refuse a bind that arrives after the destruction
# (the AMI tracker's RECENT_HANGUPS, for the same reason and the same traffic).
RECENT_GONE = 8192
# Dial statuses that are progress, not an end (AMI reports them as DialState, which the
# tracker does not forward): app_dial publishes them between the begin and the end.
DIAL_PROGRESS = frozenset({"RINGING", "PROCEEDING", "PROGRESS"})

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class Observed:
    events: tuple[CallEvent, ...] = ()
    subscribe: tuple[str, ...] = ()  # ARI event sources: "channel:ID", "bridge:ID"


NOTHING = Observed()


@dataclass
class _Call:
    venue: str
    tenant: str
    root: str
    channels: dict[str, str] = field(default_factory=dict)  # live id -> name
    answered: set[str] = field(default_factory=set)
    dials: set[tuple[str, str, str]] = field(default_factory=set)  # (caller, peer, phase)


class AriCallTracker:
    def __init__(self) -> None:
        self._owner: dict[str, _Call] = {}  # channel id -> its call
        self._bridges: dict[str, _Call] = {}  # bridge id -> the call that entered it
        self._calls = 0
        self._gone: OrderedDict[str, None] = OrderedDict()
        self.refused = 0  # binds and channels refused by the caps

    # -- calls ----------------------------------------------------------------------
    def bind(self, channel_id: str, venue: str, tenant: str) -> bool:
        """A call entered `venue`; False if refused (dead channel, cap, other tenant)."""
        if channel_id in self._gone or not is_safe_id(channel_id):
            return False
        call = self._owner.get(channel_id)
        if call is not None:
            if call.tenant == tenant:
                call.venue = venue  # routed venue -> default -> venue: the same call
            return call.tenant == tenant
        if self._calls >= MAX_CALLS:
            self.refused += 1
            return False
        self._calls += 1
        call = _Call(venue=venue, tenant=tenant, root=channel_id)
        self._owner[channel_id] = call
        call.channels[channel_id] = ""
        return True

    def owns(self, channel_id: str) -> bool:
        return channel_id in self._owner

    def calls(self) -> dict[str, tuple[str, str]]:
        """Live calls: root channel id -> (venue, tenant)."""
        seen = {id(c): c for c in self._owner.values()}
        return {c.root: (c.venue, c.tenant) for c in seen.values()}

    def channels(self) -> set[str]:
        return set(self._owner)

    def lost(self, present: Iterable[str]) -> list[CallEvent]:
        """After a reconnection: channels not in `present` went unseen; calls left with
        none end with `call_end` {"reason": "lost"}."""
        live = set(present)
        out: list[CallEvent] = []
        for cid in [c for c in self._owner if c not in live]:
            call = self._owner.pop(cid)
            call.channels.pop(cid, None)
            self._remember_gone(cid)
            out += self._end_if_empty(call, "lost")
        return out

    # -- events ---------------------------------------------------------------------
    def handle(self, message: Mapping[str, Any]) -> Observed:
        kind = message.get("type")
        if kind == "Dial":
            return self._dial(message)
        if kind in ("BridgeBlindTransfer", "BridgeAttendedTransfer"):
            return self._transfer(message)
        cid, name = _channel(message.get("channel"))
        if not cid:
            return NOTHING
        if kind == "ChannelEnteredBridge":
            return self._entered_bridge(message, cid, name)
        call = self._owner.get(cid)
        if call is None:
            return NOTHING
        call.channels[cid] = name or call.channels.get(cid, "")
        if kind == "ChannelStateChange":
            state = _table(message.get("channel")).get("state")
            if state != "Up" or cid in call.answered:
                return NOTHING
            call.answered.add(cid)
            return self._emit(call, "answer", cid, {})
        if kind == "ChannelLeftBridge":
            return self._emit(call, "bridge_leave", cid, _bridge_detail(message))
        if kind == "ChannelHold":
            return self._emit(call, "hold", cid,
                              {"music_class": _text(message.get("musicclass"))})
        if kind == "ChannelUnhold":
            return self._emit(call, "unhold", cid, {})
        if kind == "ChannelDestroyed":
            return self._destroyed(message, call, cid)
        return NOTHING

    def _dial(self, message: Mapping[str, Any]) -> Observed:
        caller, caller_name = _channel(message.get("caller"))
        peer, peer_name = _channel(message.get("peer"))
        call = self._owner.get(caller) if caller else None
        if call is None or not peer:
            return NOTHING
        status = _text(message.get("dialstatus"))
        if status in DIAL_PROGRESS:
            return NOTHING
        phase = "end" if status else "begin"
        if (caller, peer, phase) in call.dials:
            return NOTHING  # the same Dial through the peer's subscription
        if len(call.dials) < 4 * MAX_CHANNELS_PER_CALL:  # bounded like the channels
            call.dials.add((caller, peer, phase))
        if caller_name:
            call.channels[caller] = caller_name
        subscribe = self._claim(call, peer, peer_name)
        if phase == "begin":
            detail = {"dest_channel": peer_name, "dest_uniqueid": peer,
                      "dial_string": _text(message.get("dialstring"))}
            return self._emit(call, "dial_begin", caller, detail, subscribe)
        detail = {"dest_channel": peer_name, "dest_uniqueid": peer, "status": status}
        return self._emit(call, "dial_end", caller, detail, subscribe)

    def _entered_bridge(self, message: Mapping[str, Any], cid: str,
                        name: str) -> Observed:
        bridge = _table(message.get("bridge"))
        bridge_id = _text(bridge.get("id"))
        call = self._owner.get(cid) or (self._bridges.get(bridge_id) if bridge_id else None)
        if call is None:
            return NOTHING
        subscribe = list(self._claim(call, cid, name))
        if is_safe_id(bridge_id) and bridge_id not in self._bridges:
            self._bridges[bridge_id] = call
            subscribe.append(f"bridge:{bridge_id}")
        mates = bridge.get("channels")
        for mate in mates if isinstance(mates, list) else ():
            if isinstance(mate, str) and mate != cid:
                subscribe += self._claim(call, mate, "")
        if self._owner.get(cid) is not call:
            return Observed(subscribe=tuple(subscribe))  # another call's channel
        return self._emit(call, "bridge_enter", cid, _bridge_detail(message),
                          tuple(subscribe))

    def _transfer(self, message: Mapping[str, Any]) -> Observed:
        blind = message.get("type") == "BridgeBlindTransfer"
        roles = (("transferer", "channel"), ("transferee", "transferee"),
                 ("replace", "replace_channel")) if blind else \
            (("orig_transferer", "transferer_first_leg"),
             ("second_transferer", "transferer_second_leg"),
             ("transferee", "transferee"), ("transfer_target", "transfer_target"),
             ("replace", "replace_channel"))
        parties = [(role, *_channel(message.get(key))) for role, key in roles]
        call = next((self._owner[cid] for _, cid, _ in parties if cid in self._owner), None)
        if call is None:
            return NOTHING
        subscribe: list[str] = []
        for _, cid, name in parties:
            if cid:
                subscribe += self._claim(call, cid, name)
        detail = {"type": "blind" if blind else "attended",
                  "result": _text(message.get("result"))}
        if blind:
            detail["context"] = _text(message.get("context"))
            detail["exten"] = _text(message.get("exten"))
        else:
            detail["dest_type"] = _text(message.get("destination_type"))
        for role, cid, _ in parties:
            if cid and role != "replace":
                detail[f"{role}_uniqueid"] = cid
        about = next((cid for _, cid, _ in parties if cid and self._owner.get(cid) is call),
                     call.root)
        return self._emit(call, "transfer", about, detail, tuple(subscribe))

    def _destroyed(self, message: Mapping[str, Any], call: _Call, cid: str) -> Observed:
        name = call.channels.pop(cid, "")
        del self._owner[cid]
        call.answered.discard(cid)
        self._remember_gone(cid)
        detail = {"cause": _text(message.get("cause")),
                  "cause_txt": _text(message.get("cause_txt"))}
        hangup = CallEvent(kind="hangup", venue=call.venue, tenant=call.tenant,
                           call=call.root, uniqueid=cid, channel=name,
                           detail=MappingProxyType(detail))
        return Observed(events=(hangup, *self._end_if_empty(call, "hangup")))

    # -- helpers --------------------------------------------------------------------
    def _claim(self, call: _Call, cid: str, name: str) -> tuple[str, ...]:
        """Own `cid` for `call` if nobody does; the sources to subscribe to for it."""
        if not is_safe_id(cid) or cid in self._gone:
            return ()
        owner = self._owner.get(cid)
        if owner is not None:
            if owner is call and name:
                call.channels[cid] = name
            return ()
        if len(call.channels) >= MAX_CHANNELS_PER_CALL:
            self.refused += 1
            return ()
        self._owner[cid] = call
        call.channels[cid] = name
        return (f"channel:{cid}",)

    def _emit(self, call: _Call, kind: str, cid: str, detail: Mapping[str, str],
              subscribe: tuple[str, ...] = ()) -> Observed:
        event = CallEvent(kind=kind, venue=call.venue, tenant=call.tenant, call=call.root,
                          uniqueid=cid, channel=call.channels.get(cid, ""),
                          detail=MappingProxyType(dict(detail)))
        return Observed(events=(event,), subscribe=subscribe)

    def _end_if_empty(self, call: _Call, reason: str) -> list[CallEvent]:
        if call.channels:
            return []
        self._calls -= 1
        for bridge in [b for b, c in self._bridges.items() if c is call]:
            del self._bridges[bridge]
        return [CallEvent(kind="call_end", venue=call.venue, tenant=call.tenant,
                          call=call.root, uniqueid=call.root, channel="",
                          detail=MappingProxyType({"reason": reason}))]

    def _remember_gone(self, cid: str) -> None:
        self._gone[cid] = None
        if len(self._gone) > RECENT_GONE:
            self._gone.popitem(last=False)


def _table(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else _EMPTY


def _channel(value: object) -> tuple[str, str]:
    """An ARI Channel object -> (id, name); ("", "") when it is not one."""
    channel = _table(value)
    cid = channel.get("id")
    if not isinstance(cid, str) or not is_safe_id(cid):
        return "", ""
    return cid, _text(channel.get("name"))


def _bridge_detail(message: Mapping[str, Any]) -> dict[str, str]:
    """AMI's BridgeUniqueid, BridgeType (the bridge's class: "basic", ARI's
    `bridge_class`) and BridgeNumChannels (counted after the change, as AMI does)."""
    bridge = _table(message.get("bridge"))
    channels = bridge.get("channels")
    return {"bridge_id": _text(bridge.get("id")), "bridge_type": _text(bridge.get("bridge_class")),
            "channels": str(len(channels)) if isinstance(channels, list) else ""}


def _text(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return ""
    return str(value) if isinstance(value, str | int) else ""
