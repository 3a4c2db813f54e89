"""The bridge's AMI side: one session, per-call tracking, events to the owning VTS only.

`AmiLink` owns the single `AmiClient` (the one CTI attachment besides FastAGI) and a
`CallTracker`. Every AMI event goes through the tracker, which knows which venue (and so
which tenant) each channel belongs to; the normalised `CallEvent`s it returns are handed
to the intermediary, which sends each to that venue's VTS and nobody else; the
daemon hands `agent_snapshot` to the intermediary for a VTS that connects. After every
(re)connect the client waits for FullyBooted and the link resyncs the tracker from
`CoreShowChannels`, `DeviceStateList` and `QueueStatus`, so its view equals Asterisk's.
VTS processes never see AMI: no credentials, no raw blocks. The session also carries
the AsyncAGI driver (`ami_bridge.drivers.asyncagi`): its events go to the driver, its
AGI commands go out with `AmiClient.send_nowait` (written once, never resent), and the
resync's CoreShowChannels tells it which channels still wait in AsyncAGI.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable

from ami_bridge.ami.client import DEFAULT_READ_PAUSE, AmiClient, AmiError
from ami_bridge.ami.protocol import Event, LocalProtocolError, Response
from ami_bridge.ami.tracker import AgentState, CallTracker
from ami_bridge.config import AmiConfig, BridgeConfig
from ami_bridge.drivers import asyncagi
from ami_bridge.intermediary import Intermediary
from ami_bridge.tenants import messages

log = logging.getLogger(__name__)

# Seconds the AMI reader pauses after each read to take events in batches (see
# ami_bridge/ami/client.py); the variable exists for measurements (bench/ami_census.py).
READ_PAUSE_ENV = "AMI_BRIDGE_AMI_READ_PAUSE"


# Calls bound to their venue (route requests) while the AMI session is down, kept for
# the next resync; a session that never comes back must not grow the tracker forever.
MAX_UNSYNCED_BINDS = 50_000

AGENT_EVENTS = frozenset({"DeviceStateChange", "QueueMemberStatus", "QueueMemberPause",
                          "QueueMemberAdded", "QueueMemberRemoved"})


def agent_message(agent: AgentState) -> messages.AgentState:
    """The `agent_state` message a VTS gets (docs/vts-protocol.md)."""
    return messages.AgentState(tenant=agent.tenant, device=agent.device,
                               available=agent.available, state=agent.device_state,
                               paused=agent.paused, idle_since=agent.last_call_end)


def asyncagi_venues(config: BridgeConfig) -> list[str]:
    """The contexts of the venues whose driver is AsyncAGI."""
    return [v.context for v in config.venues.values() if v.driver == asyncagi.DRIVER]


def devices_of(config: BridgeConfig) -> dict[str, str]:
    """Device -> its one owning tenant (the config loader's `devices`, ami_bridge.ownership):
    the channels tenants' extensions, devices and queue members dial; shared ones: none."""
    return dict(config.devices)


class AmiLink:
    def __init__(self, *, settings: AmiConfig, config: BridgeConfig,
                 intermediary: Intermediary,
                 on_channel: Callable[[str], object] | None = None) -> None:
        """`on_channel(context)`: every Newchannel's context (calls entering a venue, for
        the metrics' no-requests alarm; the event is already in the manager user's
        eventfilter, so this costs Asterisk nothing)."""
        self._intermediary = intermediary
        self._on_channel = on_channel
        self.tracker = CallTracker(devices=devices_of(config),
                                   venues={v.context: v.tenant for v in config.venues.values()})
        self.client = AmiClient(
            host=settings.host, port=settings.port, username=settings.username,
            secret=settings.secret, on_event=self._on_event, on_connected=self._resync,
            on_disconnected=self._on_disconnected,
            read_pause=float(os.environ.get(READ_PAUSE_ENV, DEFAULT_READ_PAUSE)))
        self.asyncagi = asyncagi.AsyncAgiDriver(intermediary, send=self._send_agi,
                                                venues=asyncagi_venues(config))
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.resyncs = 0
        self._sent_agents: dict[str, messages.AgentState] = {}  # device -> last one sent
        self._held_binds: list[tuple[str, str, str]] | None = None  # during a resync
        self._unsynced_binds = 0  # binds without a session since the last resync

    @property
    def reconnects(self) -> int:
        """Sessions established after the first (every session starts with a resync)."""
        return max(0, self.resyncs - 1)

    def start(self) -> None:
        self._task = asyncio.create_task(self.client.run(), name="ami-link")

    async def stop(self) -> None:
        self._stopping = True  # the session's end is ours, not a loss (no warning)
        await self.client.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def reload(self, config: BridgeConfig) -> None:
        """New venues and devices; calls already tracked keep their venue."""
        self.tracker.set_mapping(devices=devices_of(config),
                                 venues={v.context: v.tenant for v in config.venues.values()})
        self.asyncagi.set_venues(asyncagi_venues(config))

    def call_entered(self, uniqueid: str, venue: str, tenant: str) -> None:
        """A route request: bind the call to its venue. Needs no AMI session, so a call
        that enters a venue while the session is down is known to the resync after the
        reconnect (CoreShowChannels shows the context of its route by then, not the
        venue). During a resync the bind waits for its end: a channel newer than the
        CoreShowChannels snapshot would otherwise end at once as "lost". Without a
        session, at most MAX_UNSYNCED_BINDS binds wait for the next resync."""
        if self._held_binds is not None:
            self._held_binds.append((uniqueid, venue, tenant))
            return
        if not self.client.connected:
            if self._unsynced_binds >= MAX_UNSYNCED_BINDS:
                return
            self._unsynced_binds += 1
            if self._unsynced_binds == MAX_UNSYNCED_BINDS:
                log.warning("AMI down: %d calls entered venues since the last resync; "
                            "later ones get no call events", MAX_UNSYNCED_BINDS)
        self.tracker.bind(uniqueid, venue, tenant)

    def _on_event(self, event: Event) -> None:
        if self._on_channel is not None and event.name == "Newchannel":
            self._on_channel(event.get("Context") or "")
        if event.name in asyncagi.EVENTS:
            self.asyncagi.on_event(event)
        for call_event in self.tracker.handle(event):
            self._intermediary.forward_call_event(call_event)
        if event.name in AGENT_EVENTS:
            self._send_agent_changes(self.tracker.changed_agents)

    def _send_agi(self, channel: str, command: str, command_id: str) -> bool:
        """One AsyncAGI command as an `AGI` action, written now or not at all."""
        try:
            return self.client.send_nowait(
                "AGI", [("Channel", channel), ("Command", command), ("CommandID", command_id)],
                on_response=lambda r: _agi_refused(channel, command, r))
        except LocalProtocolError as exc:  # a channel name the AMI wire refuses
            log.error("AsyncAGI command for %r not sent: %s", channel, exc)
            return True

    def agent_snapshot(self, tenant: str) -> list[messages.AgentState]:
        return [agent_message(a) for a in self.tracker.agents_of(tenant)]

    def _send_agent_changes(self, only: set[str] | None = None) -> None:
        """Send the agent_state of every agent that differs from what was last sent.

        `only`: the devices the tracker wrote since the last call (its `changed_agents`,
        one per agent event), the only ones that can differ; None scans every agent
        (after a resync). Either way the tracker's set is cleared; messages go out in
        the order of `tracker.agents`."""
        agents = self.tracker.agents
        if only is None:
            devices: list[str] = list(agents)
        elif len(only) == 1:
            devices = [*only]
        else:
            devices = [d for d in agents if d in only]
        self.tracker.changed_agents.clear()
        for device in devices:
            agent = agents.get(device)
            if agent is None:
                continue
            message = agent_message(agent)
            if self._sent_agents.get(device) != message:
                self._sent_agents[device] = message
                self._intermediary.forward_agent_state(message)

    async def _resync(self) -> None:
        self._held_binds = []
        try:
            _, channels = await self.client.send_list_action("CoreShowChannels")
            _, devices = await self.client.send_list_action("DeviceStateList")
            _, members = await self.client.send_list_action("QueueStatus")
            ended = self.tracker.resync(channels, devices,
                                        [e for e in members if e.name == "QueueMember"])
            self.asyncagi.resync(channels)
            self._unsynced_binds = 0
        except AmiError as exc:
            log.error("AMI resync failed: %s; the session will be re-established", exc)
            raise
        finally:
            held, self._held_binds = self._held_binds, None
            for uniqueid, venue, tenant in held:
                self.tracker.bind(uniqueid, venue, tenant)
        for call_event in ended:
            self._intermediary.forward_call_event(call_event)
        self._send_agent_changes()
        self.resyncs += 1
        log.info("AMI connected; resync: %d live channels, %d calls, %d agents",
                 len(channels), len(self.tracker.calls()), len(self.tracker.agents))

    def _on_disconnected(self, reason: str) -> None:
        if self._stopping:
            log.info("AMI session closed (the bridge is stopping)")
            return
        log.warning("AMI session lost: %s; reconnecting with backoff", reason)


def _agi_refused(channel: str, command: str, response: Response | None) -> None:
    """Asterisk refused an AGI action (the channel is gone, or not ours), or the session
    dropped before its answer: the venue's fallback or its abandon covers the call."""
    if response is not None and not response.success:
        log.info("AsyncAGI %s: %r refused: %s", channel, command.partition(" ")[0],
                 response.message)
