"""The fan-out: call events, agent states and saved VTS state out to the VTS links.

Contract. `Fanout` decides which connected VTS gets which event frame, and sends it; it
never touches a pending call. A tracked call's event (`forward_call_event`) goes to its
venue's VTS only, and only when the event's tenant is that venue's tenant. An agent
device's state goes to the VTS processes serving its tenant only. Each VTS gets only the
kinds it asked for in its hello (`subscribe`: its `events`, None meaning every kind,
protocol 2.0); a kind it did not ask for is never built, only counted
(`call_events_unsubscribed`), and a kind this bridge does not send is warned about once,
at hello. Agent states across bridges (ami_bridge.cluster.agents): this bridge's own
(`forward_agent_state`, from AMI) go to `on_agent_state` (the bus) and another bridge's
arrive by `remote_agent_state`; a VTS gets the merged state of a device (a known state
wins over UNAVAILABLE/UNKNOWN, then the latest) and, at hello (`greet`), the merged
snapshot, after its tenants' saved `state` frames if its hello's minor is
`STATE_MINOR` or more. Another bridge's saved state of a tenant (`remote_state`) replaces
this bridge's copy and goes to this bridge's VTS of that tenant (minor >= 2), never to
another tenant's. Without other bridges every agent state goes out as it comes, as on a
single node. The links are the Intermediary's (read here, never added or removed); the
config is swapped by `reconfigure`. No I/O and no event loop: the links, the clock and
the AMI link's agent snapshot are passed in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from ami_bridge.ami.tracker import CallEvent
from ami_bridge.cluster.agents import AgentMerge
from ami_bridge.config import BridgeConfig
from ami_bridge.tenants import messages as m
from ami_bridge.vts_state import VtsStates

log = logging.getLogger("ami_bridge.intermediary")  # the same logger as before the split

# The minor version from which a VTS reads `state` frames (protocol 2.2,
# docs/vts-protocol.md).
STATE_MINOR = 2


class VtsLink(Protocol):
    def send(self, message: m.Message) -> None: ...


AgentSnapshot = Callable[[str], Iterable[m.AgentState]]  # tenant -> its agents' state


def no_agents(tenant: str) -> list[m.AgentState]:
    return []


class EventCounters(Protocol):
    """The counters the fan-out adds to (the Intermediary's `Counters`)."""

    call_events: int  # of connected VTS's calls, sent or not subscribed to
    call_events_unsubscribed: int  # kinds the VTS did not ask for: not sent


class Fanout:
    def __init__(self, *, config: BridgeConfig, links: Mapping[str, VtsLink],
                 states: VtsStates, counters: EventCounters, clock: Callable[[], float],
                 agent_snapshot: AgentSnapshot = no_agents,
                 on_agent_state: Callable[[m.AgentState], object] | None = None) -> None:
        """`links`: the connected VTS links by name (the Intermediary's own dict, read
        live); `clock`: seconds, for forgetting silent bridges' agent reports."""
        self._config = config
        self._links = links
        self._states = states
        self._counters = counters
        self._agent_snapshot = agent_snapshot
        self._on_agent_state = on_agent_state  # this bridge's agent states, for the bus
        self._agents = AgentMerge(clock=clock)  # and the other bridges'
        # VTS -> the event kinds it asked for in its hello (None: all, protocol 2.0);
        # a kind nobody asked for is never built or encoded.
        self._wants: dict[str, frozenset[str] | None] = {}
        self._minors: dict[str, int] = {}  # VTS -> its hello's minor version

    @property
    def agents(self) -> AgentMerge:
        """The merged agent states of this and the other bridges."""
        return self._agents

    def reconfigure(self, config: BridgeConfig) -> None:
        self._config = config

    # -- a VTS comes and goes ----------------------------------------------------------
    def subscribe(self, name: str, events: Iterable[str] | None, minor: int) -> None:
        """The VTS `name` said hello asking for `events` (None: every kind) at `minor`."""
        self._wants[name] = None if events is None else frozenset(events)
        self._minors[name] = minor
        unknown = sorted(set(events or ()) - set(m.SUBSCRIBABLE))
        if unknown:  # a typo would otherwise silently starve the VTS of those events
            log.warning("VTS %s asked for event kinds this bridge does not send: %s "
                        "(known: %s)", name, ", ".join(unknown), ", ".join(m.SUBSCRIBABLE))

    def greet(self, name: str) -> None:
        """Right after `subscribe`, before any route request: the VTS's tenants' saved
        state (minor >= STATE_MINOR), then the agents' merged snapshot (if asked for)."""
        link = self._links.get(name)
        if link is None:
            return
        served = self._config.vts[name].tenants if name in self._config.vts else ()
        if self._minors.get(name, 0) >= STATE_MINOR:
            for tenant in served:  # each tenant's own, never another's
                saved = self._states.get(tenant)
                if saved is not None:
                    link.send(m.State(tenant, saved))
        if not self._wants_kind(name, m.AGENT_STATE):
            return
        for tenant in served:  # what the AMI links know of its agents so far
            for agent in self._agents.snapshot(tenant, self._agent_snapshot(tenant)):
                link.send(agent)

    def forget(self, name: str) -> None:
        """The VTS link `name` is gone."""
        self._wants.pop(name, None)
        self._minors.pop(name, None)

    # -- call events -------------------------------------------------------------------
    def _wants_kind(self, vts: str, kind: str) -> bool:
        wants = self._wants.get(vts)
        return wants is None or kind in wants

    def forward_call_event(self, event: CallEvent) -> None:
        """A tracked call's event goes to its venue's VTS, and only there (if that VTS
        asked for its kind)."""
        venue = self._config.venues.get(event.venue)
        link = self._links.get(venue.vts) if venue is not None else None
        if venue is None or link is None or venue.tenant != event.tenant:
            return
        self._counters.call_events += 1
        if not self._wants_kind(venue.vts, event.kind):
            self._counters.call_events_unsubscribed += 1
            return
        link.send(m.CallProgress(kind=event.kind, venue=event.venue, uniqueid=event.call,
                                 leg=event.uniqueid, channel=event.channel,
                                 detail=dict(event.detail)))

    # -- agent states ------------------------------------------------------------------
    def forward_agent_state(self, message: m.AgentState) -> None:
        """An agent device's state (this bridge's AMI) goes to the VTS processes serving
        its tenant only (those that asked for `agent_state`), merged with what other
        bridges report of it; and to the other bridges."""
        if self._on_agent_state is not None:
            self._on_agent_state(message)
        merged = self._agents.local(message)
        if merged is not None or not self._agents.reported_elsewhere(message):
            self._send_agent(merged or message)

    def remote_agent_state(self, node: str, message: m.AgentState) -> None:
        """Another bridge's report of an agent device (the bus)."""
        merged = self._agents.remote(node, message)
        if merged is not None:
            self._send_agent(merged)

    def agent_node_heard(self, node: str) -> None:
        self._agents.heard(node)

    def expire_agents(self) -> int:
        """Forget the reports of bridges silent too long; returns how many states changed."""
        changed = self._agents.expire()
        for merged in changed:
            self._send_agent(merged)
        return len(changed)

    def _send_agent(self, message: m.AgentState) -> None:
        for name, vts in self._config.vts.items():
            link = self._links.get(name)
            if link is not None and message.tenant in vts.tenants and \
                    self._wants_kind(name, m.AGENT_STATE):
                link.send(message)

    # -- saved VTS state from other bridges --------------------------------------------
    def remote_state(self, tenant: str, state: Mapping[str, Any]) -> None:
        """Another bridge's VTS of `tenant` saved this state (the bus): it becomes this
        bridge's latest (not saved again from here) and goes to this bridge's VTS of that
        tenant, never to another tenant's, so the round-robin goes on from there."""
        if tenant not in self._config.tenants:
            return
        self._states.replace(tenant, state)
        for name, vts in self._config.vts.items():
            link = self._links.get(name)
            if link is not None and tenant in vts.tenants and \
                    self._minors.get(name, 0) >= STATE_MINOR:
                link.send(m.State(tenant, state))
