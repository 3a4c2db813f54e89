"""Per-call venue tracking and per-tenant agent state from AMI events; no I/O.

Contract. The bridge calls `bind(uniqueid, venue, tenant)` when a call enters a venue
(the FastAGI route request carries agi_uniqueid). `handle(event)` consumes every AMI
`Event` and returns the normalised `CallEvent`s it implies (kinds and keys are listed in
EVENTS.md), each tagged with the venue and tenant of the call, for that venue's VTS
only; events of channels that belong to no bound call yield nothing. A call owns the
channel it was bound by, every channel sharing its Linkedid (dial legs, both halves of a
Local channel, which Asterisk gives the caller's Linkedid), every channel a Dial or a
transfer of one of its channels reaches, and any channel that enters a bridge holding
one of its channels; the first owner of a channel keeps it, so a call never moves to
another tenant. A live-channel table (uniqueid -> name, linkedid) is kept for every
channel so that a late `bind` still finds its Linkedid; a call is forgotten, with a
final `call_end`, when its last channel hangs up, and hung-up uniqueids are remembered
in a bounded ring so a late `bind` of a dead channel is refused. `resync(...)` rebuilds
both tables from CoreShowChannels (and device/queue lists) after a reconnect; calls
whose channels all vanished meanwhile end with `call_end` {"reason": "lost"}. A call
that entered a venue while the session was down is known only by its `bind` (by then
CoreShowChannels shows the context of its route, not the venue); the resync attaches
its live legs to it. Agent
state: DeviceStateChange, QueueMemberStatus/Pause/Added/Removed and QueueMember update
an `AgentState` per device; the tenant of a device comes from the `devices` mapping.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from ami_bridge.ami.protocol import Event

# Hung-up uniqueids remembered to refuse a bind that arrives after the Hangup (the AGI
# socket can lag the AMI one). A few seconds of traffic at 300 calls/s, 4 legs each.
RECENT_HANGUPS = 8192
DIAL_STATUSES = frozenset({"ANSWER", "NOANSWER", "BUSY", "CANCEL", "CHANUNAVAIL",
                           "CONGESTION"})  # fmt: skip
# Device states that mean "not on a call and reachable" (Asterisk devicestate names).
IDLE_STATES = frozenset({"NOT_INUSE"})
# QueueMemberStatus Status numbers -> device state names (ast_device_state enum).
_QUEUE_STATUS = ("UNKNOWN", "NOT_INUSE", "INUSE", "BUSY", "INVALID", "UNAVAILABLE",
                 "RINGING", "RINGINUSE", "ONHOLD")  # fmt: skip
_TRANSFER_ROLES = ("Transferer", "Transferee", "OrigTransferer", "SecondTransferer",
                   "TransferTarget")  # fmt: skip
_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class CallEvent:
    """One normalised event for one venue's VTS (see EVENTS.md for `detail` keys)."""

    kind: str
    venue: str
    tenant: str
    call: str  # the uniqueid the call was bound by (the route request's channel)
    uniqueid: str  # the channel this event is about
    channel: str
    detail: Mapping[str, str] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True)
class AgentState:
    device: str  # "PJSIP/acme-agent"
    tenant: str
    device_state: str = "UNKNOWN"  # Asterisk device state name
    paused: bool = False
    pause_reason: str = ""
    queues: frozenset[str] = frozenset()
    last_call_end: float | None = None  # epoch seconds; None = no call seen

    @property
    def in_use(self) -> bool:
        return self.device_state not in IDLE_STATES | {"UNAVAILABLE", "INVALID", "UNKNOWN"}

    @property
    def available(self) -> bool:
        return self.device_state in IDLE_STATES and not self.paused


@dataclass
class _Call:
    venue: str
    tenant: str
    root: str
    channels: set[str] = field(default_factory=set)  # live uniqueids owned
    linkedids: set[str] = field(default_factory=set)
    answered: set[str] = field(default_factory=set)


class CallTracker:
    def __init__(self, *, devices: Mapping[str, str] = _EMPTY,
                 venues: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """`devices`: device -> tenant. `venues`: venue -> tenant; when given, a channel
        seen in a venue context binds itself (used to rebuild after a bridge restart)."""
        self._devices = dict(devices)
        self._venues = dict(venues) if venues is not None else None
        self._clock = clock
        self._channels: dict[str, tuple[str, str]] = {}  # uniqueid -> (name, linkedid)
        self._owner: dict[str, _Call] = {}  # uniqueid -> call
        self._by_linkedid: dict[str, _Call] = {}
        self._local_pairs: dict[str, _Call] = {}  # "Local/x@ctx-0001" -> call
        self._bridges: dict[str, set[str]] = {}  # bridge id -> uniqueids inside
        self._in_bridge: dict[str, str] = {}  # uniqueid -> bridge id
        self._recent_hangups: OrderedDict[str, None] = OrderedDict()
        self.agents: dict[str, AgentState] = {}
        # Devices whose AgentState was (re)written since the owner last cleared this;
        # lets the owner diff only those instead of every agent per event.
        self.changed_agents: set[str] = set()

    def set_mapping(self, *, devices: Mapping[str, str], venues: Mapping[str, str]) -> None:
        """New device and venue maps (config reload); calls already tracked keep theirs."""
        self._devices = dict(devices)
        self._venues = dict(venues)

    # -- calls ----------------------------------------------------------------------

    def bind(self, uniqueid: str, venue: str, tenant: str) -> bool:
        """A call entered `venue`; False if its channel already hung up."""
        if uniqueid in self._recent_hangups:
            return False
        call = self._owner.get(uniqueid)
        if call is not None:
            if call.tenant == tenant:
                call.venue = venue  # routed venue -> default -> venue: same call
            return call.tenant == tenant
        call = _Call(venue=venue, tenant=tenant, root=uniqueid)
        name, linkedid = self._channels.get(uniqueid, ("", ""))
        self._adopt(call, uniqueid, name, linkedid)
        return True

    def calls(self) -> dict[str, tuple[str, str]]:
        """Live calls: root uniqueid -> (venue, tenant)."""
        seen = {id(c): c for c in self._owner.values()}
        return {c.root: (c.venue, c.tenant) for c in seen.values()}

    def owner(self, uniqueid: str) -> tuple[str, str] | None:
        call = self._owner.get(uniqueid)
        return None if call is None else (call.venue, call.tenant)

    def handle(self, event: Event) -> list[CallEvent]:
        name = event.name
        if name in _AGENT_EVENTS:
            self._agent_event(event)
            return []
        ix = event.index()  # lower-cased keys: one dict lookup per header below
        uid = ix.get("uniqueid") or ""
        self._track_bridges(name, ix, uid)
        if uid:
            self._channels[uid] = (ix.get("channel") or "", ix.get("linkedid") or "")
        else:  # transfers name their channels by role only
            uid = next((u for key in _TRANSFER_UID_KEYS
                        if (u := ix.get(key) or "") in self._owner), "")
        call = self._claim(event, uid)
        out: list[CallEvent] = []
        if call is not None:
            self._claim_related(name, ix, call)
            out = self._normalise(event, ix, call, uid)
        if name == "Hangup" and uid:
            out += self._hangup(uid)
        return out

    def _claim(self, event: Event, uid: str) -> _Call | None:
        if not uid:
            return None
        call = self._owner.get(uid)
        name, linkedid = self._channels.get(uid, ("", ""))
        if call is None:
            call = self._by_linkedid.get(linkedid) or self._local_pairs.get(_local_base(name))
            if call is None and self._venues is not None:
                tenant = self._venues.get(event.get("Context") or "")
                if tenant is not None and uid not in self._recent_hangups:
                    call = _Call(venue=event.get("Context") or "", tenant=tenant, root=uid)
            if call is None:
                return None
        self._adopt(call, uid, name, linkedid)
        return call

    def _adopt(self, call: _Call, uid: str, name: str, linkedid: str) -> None:
        if self._owner.setdefault(uid, call) is not call:
            return  # first owner keeps the channel
        call.channels.add(uid)
        if linkedid and linkedid not in self._by_linkedid:
            self._by_linkedid[linkedid] = call
            call.linkedids.add(linkedid)
        if _local_base(name):
            self._local_pairs.setdefault(_local_base(name), call)

    def _track_bridges(self, name: str, ix: Mapping[str, str], uid: str) -> None:
        """Who is in which bridge, for every channel (an unowned channel may be joined
        by an owned one later); entries go with BridgeLeave or Hangup (and BridgeDestroy,
        which the shipped manager user no longer receives: by then every member left).
        `ix` is the event's lower-cased key index, `uid` its Uniqueid ("" if none)."""
        if name not in _BRIDGE_TRACKED:
            return
        bridge = ix.get("bridgeuniqueid") or ""
        if name == "BridgeEnter" and bridge and uid:
            self._in_bridge[uid] = bridge
            if uid in self._owner:
                return  # _claim_related adds it after adopting the mates
            self._bridges.setdefault(bridge, set()).add(uid)
        elif name in ("BridgeLeave", "Hangup") and uid:
            left = self._in_bridge.pop(uid, "")
            mates = self._bridges.get(left)
            if mates is not None:
                mates.discard(uid)
                if not mates:
                    del self._bridges[left]
        elif name == "BridgeDestroy" and bridge:
            for mate in self._bridges.pop(bridge, set()):
                self._in_bridge.pop(mate, None)

    def _claim_related(self, name: str, ix: Mapping[str, str], call: _Call) -> None:
        """Channels an owned channel reaches: dial destinations, transfer parties,
        Local halves, and bridge mates (`ix`: the event's lower-cased key index)."""
        for uid_key, channel_key, linkedid_key in _RELATED_KEYS:
            other = ix.get(uid_key)
            if other and other not in self._recent_hangups:
                channel = ix.get(channel_key) or ""
                linkedid = ix.get(linkedid_key) or ""
                self._channels.setdefault(other, (channel, linkedid))
                self._adopt(call, other, channel, linkedid)
        if name == "BridgeEnter":
            bridge = ix.get("bridgeuniqueid")
            if bridge:
                mates = self._bridges.setdefault(bridge, set())
                for mate in mates:
                    if mate not in self._owner:
                        self._adopt(call, mate, *self._channels.get(mate, ("", "")))
                mates.add(ix.get("uniqueid") or "")

    def _normalise(self, event: Event, ix: Mapping[str, str], call: _Call,
                   uid: str) -> list[CallEvent]:
        name = event.name
        kind, detail = _KINDS.get(name, (None, None))
        if name == "Newstate":
            if ix.get("channelstate") != "6" or uid in call.answered:
                return []
            call.answered.add(uid)
            kind, detail = "answer", {}
        elif name in ("BlindTransfer", "AttendedTransfer"):
            kind, detail = "transfer", _transfer_detail(event)
        elif kind is None or detail is None:
            return []
        else:
            detail = {out: ix.get(key) or "" for out, key in detail.items()}
        channel = ix.get("channel") or self._channels.get(uid, ("", ""))[0]
        return [CallEvent(kind=kind, venue=call.venue, tenant=call.tenant, call=call.root,
                          uniqueid=uid, channel=channel,
                          detail=MappingProxyType(detail))]

    def _hangup(self, uid: str) -> list[CallEvent]:
        self._channels.pop(uid, None)
        self._recent_hangups[uid] = None
        if len(self._recent_hangups) > RECENT_HANGUPS:
            self._recent_hangups.popitem(last=False)
        call = self._owner.pop(uid, None)
        if call is None:
            return []
        call.channels.discard(uid)
        call.answered.discard(uid)
        return self._end_if_empty(call, "hangup")

    def _end_if_empty(self, call: _Call, reason: str) -> list[CallEvent]:
        if call.channels:
            return []
        for linkedid in call.linkedids:
            self._by_linkedid.pop(linkedid, None)
        for base in [b for b, c in self._local_pairs.items() if c is call]:
            del self._local_pairs[base]
        return [CallEvent(kind="call_end", venue=call.venue, tenant=call.tenant,
                          call=call.root, uniqueid=call.root, channel="",
                          detail=MappingProxyType({"reason": reason}))]

    def resync(self, channels: Iterable[Event], device_states: Iterable[Event] = (),
               queue_members: Iterable[Event] = ()) -> list[CallEvent]:
        """Make the view equal Asterisk's: `channels` are CoreShowChannel events,
        `device_states` DeviceStateChange events of DeviceStateList, `queue_members`
        QueueMember events of QueueStatus. Returns `call_end` for calls that vanished."""
        live = {e.get("Uniqueid") or "": e for e in channels if e.get("Uniqueid")}
        self._channels = {u: (e.get("Channel") or "", e.get("Linkedid") or "")
                          for u, e in live.items()}
        self._bridges, self._in_bridge = {}, {}
        for uid, e in live.items():
            if e.get("BridgeId"):
                self._bridges.setdefault(e.get("BridgeId") or "", set()).add(uid)
                self._in_bridge[uid] = e.get("BridgeId") or ""
        out: list[CallEvent] = []
        calls = {id(c): c for c in [*self._owner.values(), *self._by_linkedid.values()]}
        self._owner = {u: c for u, c in self._owner.items() if u in live}
        for call in calls.values():
            call.channels &= set(live)
            call.answered &= set(live)
            out += self._end_if_empty(call, "lost")
        # Adopt legs created while we were away. Calls bound meanwhile (route requests
        # need no AMI) have usually left their venue for their route, and Asterisk may
        # list a leg before the channel whose Linkedid links it: claim the known and
        # venue channels first, then the rest until no more are adopted.
        pending = sorted(live, key=lambda u: u not in self._owner)
        while pending:
            before = len(pending)
            pending = [u for u in pending if self._claim(live[u], u) is None]
            if len(pending) == before:
                break
        for e in device_states:
            self._agent_event(e)
        for e in queue_members:
            self._agent_event(e)
        return out

    # -- agents ---------------------------------------------------------------------

    def _agent_event(self, event: Event) -> None:
        device = event.get("Device") or event.get("StateInterface") or \
            event.get("Interface") or event.get("Location") or ""
        tenant = self._devices.get(device)
        if tenant is None:
            return
        state = self.agents.get(device) or AgentState(device=device, tenant=tenant)
        now = self._clock()
        if event.name == "DeviceStateChange":
            new = event.get("State") or "UNKNOWN"
            if state.in_use and new in IDLE_STATES:
                state = replace(state, last_call_end=now)
            state = replace(state, device_state=new)
        else:
            queue = event.get("Queue") or ""
            queues = state.queues - {queue} if event.name == "QueueMemberRemoved" \
                else state.queues | {queue}
            status = event.get("Status") or ""
            new_state = _QUEUE_STATUS[int(status)] if status.isdigit() \
                and int(status) < len(_QUEUE_STATUS) else state.device_state
            last = float(event.get("LastCall") or 0) or state.last_call_end
            if state.in_use and new_state in IDLE_STATES:
                # The queue member event may overtake the DeviceStateChange of the same
                # hang-up; whichever reports the return to idle dates the call's end.
                last = max(last or 0.0, now)
            state = replace(
                state, queues=queues, paused=(event.get("Paused") == "1"),
                pause_reason=event.get("PausedReason") or "", last_call_end=last,
                device_state=new_state,
            )
        self.agents[device] = state
        self.changed_agents.add(device)

    def agents_of(self, tenant: str) -> list[AgentState]:
        return [a for a in self.agents.values() if a.tenant == tenant]

    def available_agents(self, tenant: str) -> list[AgentState]:
        """Available agents of `tenant`, longest idle first (never-called ones first)."""
        free = [a for a in self.agents_of(tenant) if a.available]
        return sorted(free, key=lambda a: (a.last_call_end or 0.0, a.device))


_AGENT_EVENTS = frozenset({"DeviceStateChange", "QueueMemberStatus", "QueueMemberPause",
                           "QueueMemberAdded", "QueueMemberRemoved", "QueueMember"})
# AMI event -> (kind, {detail key: AMI field}); Newstate and transfers are special.
_KINDS: dict[str, tuple[str, dict[str, str]]] = {
    "DialBegin": ("dial_begin", {"dest_channel": "DestChannel",
                                 "dest_uniqueid": "DestUniqueid",
                                 "dial_string": "DialString"}),
    "DialEnd": ("dial_end", {"dest_channel": "DestChannel", "dest_uniqueid": "DestUniqueid",
                             "status": "DialStatus"}),
    "BridgeEnter": ("bridge_enter", {"bridge_id": "BridgeUniqueid",
                                     "bridge_type": "BridgeType",
                                     "channels": "BridgeNumChannels"}),
    "BridgeLeave": ("bridge_leave", {"bridge_id": "BridgeUniqueid",
                                     "bridge_type": "BridgeType",
                                     "channels": "BridgeNumChannels"}),
    "Hold": ("hold", {"music_class": "MusicClass"}),
    "Unhold": ("unhold", {}),
    "Hangup": ("hangup", {"cause": "Cause", "cause_txt": "Cause-txt"}),
}  # fmt: skip
# The same maps with the AMI field names lower-cased, as `Event.index()` keys them.
_KINDS = {name: (kind, {out: key.lower() for out, key in detail.items()})
          for name, (kind, detail) in _KINDS.items()}
# Headers naming a channel an owned channel reaches: (uniqueid, channel, linkedid) keys.
_RELATED_KEYS = tuple((f"{p}uniqueid", f"{p}channel", f"{p}linkedid")
                      for p in (r.lower() for r in ("Dest", "LocalOne", "LocalTwo",
                                                     *_TRANSFER_ROLES)))
_TRANSFER_UID_KEYS = tuple(f"{r.lower()}uniqueid" for r in _TRANSFER_ROLES)
# Events that can change who is in which bridge (BridgeEnter/Leave/Destroy, Hangup).
_BRIDGE_TRACKED = frozenset({"BridgeEnter", "BridgeLeave", "BridgeDestroy", "Hangup"})


def _transfer_detail(event: Event) -> dict[str, str]:
    blind = event.name == "BlindTransfer"
    detail = {"type": "blind" if blind else "attended", "result": event.get("Result") or ""}
    if blind:
        detail["context"] = event.get("Context") or ""
        detail["exten"] = event.get("Extension") or ""
    else:
        detail["dest_type"] = event.get("DestType") or ""
    for role in _TRANSFER_ROLES:
        uid = event.get(f"{role}Uniqueid")
        if uid:
            detail[f"{_snake(role)}_uniqueid"] = uid
    return detail


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


def _local_base(channel: str) -> str:
    """"Local/1001@ctx-00000001;2" -> "Local/1001@ctx-00000001"; other channels -> ""."""
    if channel.startswith("Local/") and channel[-2:] in (";1", ";2"):
        return channel[:-2]
    return ""
