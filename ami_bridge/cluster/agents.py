"""Agent states across bridges: what one VTS sees of an agent that several nodes report.

Contract. Each bridge learns agent device states from its own Asterisk (AMI) and
publishes them on the bus; `AgentMerge` keeps the latest report of every other bridge
(`remote`) and this bridge's own (`local`), per (tenant, device), and answers the one
state a VTS gets: a KNOWN state wins over an unknown one (a device registered on one
Asterisk reads UNAVAILABLE, UNKNOWN or INVALID on the others, which know nothing of it:
`UNKNOWN_STATES`); among reports equally known, the latest received wins (nodes that
share one Asterisk report the same thing, so the order matters only in a race). `local`
and `remote` return the merged state when it differs from what was last given for that
device (None: nothing to tell the VTS). A bridge that stops reporting is forgotten
after `ttl` seconds without a refresh (`expire`): every bridge republishes its agents
every `REFRESH_S` (ami_bridge.personal.service). Pure: no I/O, the clock passed in.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ami_bridge.tenants import messages as m

# Asterisk device states (ast_device_state names) that say "this node does not know the
# device" rather than "the device is in this state".
UNKNOWN_STATES = frozenset({"UNKNOWN", "UNAVAILABLE", "INVALID"})
LOCAL = ""  # the node key of this bridge's own reports
REFRESH_S = 30.0  # every bridge republishes its whole agent table this often
TTL_S = 3 * REFRESH_S  # a bridge silent this long is forgotten (two refreshes missed)
# Agents per bus message: an agent_state is ~150 bytes of JSON, so 40 stay well under
# NOTIFY's 8000-byte payload.
CHUNK = 40


@dataclass(frozen=True)
class _Report:
    state: m.AgentState
    order: int  # when it was received: larger is later


def known(state: m.AgentState) -> bool:
    return state.state.upper() not in UNKNOWN_STATES


def agent_json(state: m.AgentState) -> dict[str, Any]:
    return {"tenant": state.tenant, "device": state.device, "available": state.available,
            "state": state.state, "paused": state.paused, "idle_since": state.idle_since}


def agent_from_json(raw: Mapping[str, Any]) -> m.AgentState:
    """ValueError if another bridge's report is malformed."""
    tenant, device, state = raw.get("tenant"), raw.get("device"), raw.get("state")
    available, paused, idle = raw.get("available"), raw.get("paused"), raw.get("idle_since")
    if not (isinstance(tenant, str) and isinstance(device, str) and device
            and isinstance(state, str) and isinstance(available, bool)
            and isinstance(paused, bool)
            and (idle is None or (isinstance(idle, (int, float))
                                  and not isinstance(idle, bool)))):
        raise ValueError(f"an agent_state from another bridge is malformed: {str(raw)[:120]}")
    return m.AgentState(tenant=tenant, device=device, available=available, state=state,
                        paused=paused, idle_since=None if idle is None else float(idle))


def chunks(states: Iterable[m.AgentState]) -> list[list[dict[str, Any]]]:
    """A table of agent states cut into bus-sized lists."""
    rows = [agent_json(s) for s in states]
    return [rows[i:i + CHUNK] for i in range(0, len(rows), CHUNK)] or [[]]


class AgentMerge:
    def __init__(self, *, clock: Callable[[], float], ttl: float = TTL_S) -> None:
        self._clock = clock
        self._ttl = ttl
        self._order = itertools.count()
        # (tenant, device) -> node -> its latest report
        self._reports: dict[tuple[str, str], dict[str, _Report]] = {}
        self._heard: dict[str, float] = {}  # node -> when it last reported
        self._given: dict[tuple[str, str], m.AgentState] = {}  # last merged state told

    @property
    def remote_nodes(self) -> int:
        return len(self._heard)

    def local(self, state: m.AgentState) -> m.AgentState | None:
        return self._put(LOCAL, state)

    def remote(self, node: str, state: m.AgentState) -> m.AgentState | None:
        self._heard[node] = self._clock()
        return self._put(node, state)

    def reported_elsewhere(self, state: m.AgentState) -> bool:
        """Whether another bridge reports this device."""
        return any(node != LOCAL for node in self._reports.get((state.tenant, state.device),
                                                               ()))

    def heard(self, node: str) -> None:
        """A node's refresh began: it is alive even if it reports no agent."""
        self._heard[node] = self._clock()

    def _put(self, node: str, state: m.AgentState) -> m.AgentState | None:
        key = (state.tenant, state.device)
        self._reports.setdefault(key, {})[node] = _Report(state, next(self._order))
        return self._changed(key)

    def _changed(self, key: tuple[str, str]) -> m.AgentState | None:
        merged = self._merged(key)
        if merged is None or self._given.get(key) == merged:
            return None
        self._given[key] = merged
        return merged

    def _merged(self, key: tuple[str, str]) -> m.AgentState | None:
        reports = self._reports.get(key)
        if not reports:
            return None
        best = max(reports.values(), key=lambda r: (known(r.state), r.order))
        return best.state

    def expire(self) -> list[m.AgentState]:
        """Forget the nodes silent for `ttl`; the merged states that changed by it."""
        now = self._clock()
        gone = {node for node, at in self._heard.items() if now - at >= self._ttl}
        if not gone:
            return []
        for node in gone:
            del self._heard[node]
        changed = []
        for key, reports in list(self._reports.items()):
            if not gone & reports.keys():
                continue
            for node in gone:
                reports.pop(node, None)
            if not reports:
                del self._reports[key]
                continue
            merged = self._changed(key)
            if merged is not None:
                changed.append(merged)
        return changed

    def snapshot(self, tenant: str, local: Iterable[m.AgentState]) -> list[m.AgentState]:
        """A tenant's agents for a VTS's hello: `local` (this bridge's Asterisk, read
        now) merged with the other bridges' reports."""
        mine = {s.device: s for s in local if s.tenant == tenant}
        devices = dict.fromkeys([*mine, *(d for (t, d) in self._reports if t == tenant)])
        out = []
        for device in devices:
            reports = self._reports.get((tenant, device), {})
            candidates = [(known(r.state), r.order, r.state)
                          for node, r in reports.items() if node != LOCAL]
            if device in mine:  # read now: the latest of all
                candidates.append((known(mine[device]), -1 if not candidates else
                                   max(c[1] for c in candidates) + 1, mine[device]))
            if candidates:  # none: only our own old report, and the AMI link has it no more
                out.append(max(candidates, key=lambda c: (c[0], c[1]))[2])
        return out
