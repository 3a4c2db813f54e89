"""Composition root of the `ami-bridge` daemon.

Builds the intermediary, the FastAGI server and one supervised VTS process per
`[vts.NAME]`, wires each VTS socket to a `VtsLinkProtocol`, and runs until SIGTERM or
SIGINT. SIGHUP (or `ctl reload`) reloads the config file: the venue map is swapped (pending
calls keep the venue they entered with, so none is dropped or routed twice), the
supervisor reconciles the VTS processes with the new `[vts.NAME]` specs (new ones
started, removed ones stopped, changed ones restarted, unchanged ones left alone), and
every connected VTS gets a fresh `hello` with its tenants' routing protocols. A config
that fails to load leaves the running one in place. `ctl apply` does the same and also
renders, checks and reloads the tenants' dialplan fragments in Asterisk, with rollback
(ami_bridge.apply); with `[cluster]`, on every node or none: the bridge serves the
other nodes on `[cluster] listen` and coordinates when it is asked (ami_bridge.cluster).
At start the confinement plan (its probe start) runs in a thread, before the FastAGI
listener opens, as on every reload: a call is refused or answered at once, never held by
a start step (docs/operations.md, "Start-up"). Under systemd (`Type=notify`) it reports
READY=1 once the listener is up and the VTS processes are connected, RELOADING=1/READY=1
around reloads and STOPPING=1 at stop (ami_bridge.lifecycle, ami_bridge.sdnotify). A stop
is graceful: the FastAGI listener closes first, every pending call is answered or
default-routed, then AMI, the VTS processes and the personal service stop, and the
control socket is removed.
`ctl status` answers with the status document that `ami-bridge status` prints
(ami_bridge.status), including the last warnings and errors logged. The VTS processes'
saved state (protocol 2.2, ami_bridge.vts_state) is loaded from the store before they
start and saved to it while the bridge runs, when the bridge has a store (the personal
router's, or `[store] backend = "postgresql"`); otherwise it is kept in memory only.
With the PostgreSQL store the bridge also runs the bus between bridges
(ami_bridge.cluster.bus): it shares its agent states over it
(ami_bridge.cluster.share.AgentShare) and the personal service, if any, its directory,
pops and session ends; the bus starts once all of them have subscribed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from aiohttp import web

from ami_bridge import config as config_mod
from ami_bridge import control, lifecycle
from ami_bridge import status as status_mod
from ami_bridge.agi.server import Listener, serve_listener
from ami_bridge.agi_adapter import RouteHandler
from ami_bridge.ami.admin import reload_modules
from ami_bridge.ami_link import AmiLink
from ami_bridge.apply import ApplyResult, Undo, apply_config, revert
from ami_bridge.cluster import peers, tenant_files
from ami_bridge.cluster.apply import Node, Participant, cluster_apply, new_tx
from ami_bridge.cluster.bus import Bus
from ami_bridge.cluster.share import AgentShare, StateShare
from ami_bridge.drivers.ari import AriDriver
from ami_bridge.intermediary import Intermediary, no_users
from ami_bridge.metrics import service as metrics
from ami_bridge.personal.model import Store
from ami_bridge.personal.service import PersonalService, open_store
from ami_bridge.sdnotify import Notifier
from ami_bridge.supervision import confine
from ami_bridge.supervision.confine import Sandbox, plan_for_host
from ami_bridge.supervision.forkclient import ForkServer
from ami_bridge.supervision.supervisor import Supervisor, VtsProcess
from ami_bridge.tenants import messages as m
from ami_bridge.vts_link import VtsLinkProtocol
from ami_bridge.vts_state import StateWriter, VtsStates

log = logging.getLogger(__name__)


class Bridge:
    def __init__(self, config: config_mod.BridgeConfig, *, notifier: Notifier | None = None,
                 recent: status_mod.RecentLog | None = None) -> None:
        self.config = config
        self.notifier = notifier if notifier is not None else Notifier()
        self.recent = recent  # the last warnings and errors, for `status`
        self._started = time.monotonic()
        self._listener: Listener | None = None
        self._control_path: str | None = None
        self.stopping = False
        self.intermediary: Intermediary | None = None
        # [bridge] vts_spawn (read at start only): the shipped runtime forked from one
        # fork server, confined like the bridge's confine switch says.
        forkserver = (ForkServer(confined=config.confine == "required",
                                 zones=sorted({t.timezone for t in config.tenants.values()}))
                      if config.vts_spawn == "fork" else None)
        self.supervisor = Supervisor(on_connect=self._on_vts_socket, forkserver=forkserver)
        self._server: asyncio.Server | None = None
        self._control: asyncio.AbstractServer | None = None
        self.ami: AmiLink | None = None
        self.ari: AriDriver | None = None  # [ari]: the ARI driver's one WebSocket
        self.personal: PersonalService | None = None
        # The bus between bridges: on with the PostgreSQL store, read at start only.
        # With [cluster], its id names the node (a:3f9c...): logs and status say which
        # bridge sent what; the random part makes a restarted bridge a new sender.
        self.bus = Bus(config.store.dsn, bridge_id=bus_id(config)) \
            if config.store.backend == "postgresql" else None
        self.agent_share: AgentShare | None = None
        self.metrics: metrics.Metrics | None = None
        self.state_writer: StateWriter | None = None  # None: VTS state in memory only
        self._state_store: Store | None = None  # opened for the VTS state alone
        self._apply_lock = asyncio.Lock()
        # [cluster] (read at start only): this node's side of a cluster apply and the
        # endpoint the other nodes reach it on (ami_bridge.cluster).
        self._cluster = config.cluster
        self.cluster_node: Participant | None = None
        self._cluster_runner: web.AppRunner | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # First, before anything listens: the confinement plan runs a probe start of a
        # confined interpreter (150 ms idle here, longer loaded). On the loop after the
        # listener opened, it held every call that arrived meanwhile (issue 16: up to
        # 750 ms on a restarting bridge); in a thread and before the listener, a call
        # during start is refused (the venue asks its next bridge, or takes its fallback)
        # or, once the listener is up, answered at once (`no-vts` until the VTS connect).
        sandboxes = await plan_sandboxes(self.config)
        if self.config.personal or self.config.api is not None:
            # Users, their rules and the route trace (ami_bridge.personal.service); the
            # store and the API are read from the config at start only.
            self.personal = PersonalService(self.config, lambda: self.config.tenants,
                                            bus=self.bus)
            await self.personal.start()
        personal = self.personal
        states = await self._start_vts_state()
        # Per-venue counts, the per-call log line and the alarms (ami_bridge.metrics).
        self.metrics = metrics.Metrics(self, clock=loop.time)
        self.intermediary = Intermediary(
            config=self.config, clock=loop,
            agent_snapshot=lambda tenant: self.ami.agent_snapshot(tenant) if self.ami else [],
            on_call_entered=self._call_entered,
            personal=personal.directory.by_number if personal else no_users,
            users=personal.directory.user_portion if personal else no_users,
            on_decision=personal.record if personal else None,
            # asked calls pop up on workstations only where the API serves them
            pops=personal.pops if personal and self.config.api is not None else None,
            observer=self.metrics.stats, states=states,
            on_agent_state=self._agent_state if self.bus is not None else None)
        if personal is not None:
            personal.pops.decide = self.intermediary.client_choice
        if self.bus is not None:
            self.agent_share = AgentShare(self.bus, self.intermediary, self._local_agents)
            self.agent_share.start()
            if self.state_writer is not None:  # the VTS's round-robin, shared
                self.state_writer.on_saved = StateShare(self.bus, self.intermediary).publish
            await self.bus.start()  # every user has subscribed: the first resync is theirs
        if self.config.agi_secret is None:
            log.warning("no [bridge] agi_secret_file: any local process that reaches %s:%d "
                        "can start route requests (docs/security.md)", self.config.agi_host,
                        self.config.agi_port)
        self._listener = Listener(RouteHandler(self.intermediary, secret=self.config.agi_secret),
                                  self.config.agi_policy, loop)
        self._server = await serve_listener(self._listener, host=self.config.agi_host,
                                            port=self.config.agi_port)
        await self.supervisor.reconcile(self.config.vts, sandboxes)
        if self.config.ami is not None:
            self.ami = AmiLink(settings=self.config.ami, config=self.config,
                               intermediary=self.intermediary,
                               on_channel=self.metrics.stats.entered)
            self.ami.start()
        if self.config.ari is not None:  # read at start only: a change needs a restart
            # An ARI-only bridge takes its call events from ARI (ami_bridge.drivers.ari_calls);
            # with [ami] the AMI tracker is the one source (no duplicates).
            self.ari = AriDriver(settings=self.config.ari, intermediary=self.intermediary,
                                 call_events=self.config.ami is None)
            self.ari.start()
        self._control_path = self.config.control_socket  # stays here if a reload renames it
        self._control = await control.serve(self._control_path, self._on_control)
        if self._cluster is not None:
            self.cluster_node = Participant(node=self._cluster.node,
                                            steps=_ClusterSteps(self), clock=loop.time)
            self._cluster_runner = await peers.serve(
                self.cluster_node, self._cluster.secret, host=self._cluster.host,
                port=self._cluster.port)
        log.info("ami-bridge: FastAGI on %s:%d, %d venues, %d VTS", self.config.agi_host,
                 self.config.agi_port, len(self.config.venues), len(self.config.vts))
        await self.metrics.start()  # /metrics when the config has [metrics]

    async def _start_vts_state(self) -> VtsStates:
        """The VTS's saved states, loaded before any VTS starts: from the personal
        router's store, or a PostgreSQL `[store]` opened for them alone (several
        bridges); a bridge with neither keeps them in memory (the single-node default
        opens no store it did not open before)."""
        states = VtsStates()
        store: Store | None = self.personal.store if self.personal is not None else None
        if store is None and self.config.store.backend == "postgresql":
            self._state_store = store = open_store(self.config.store)
            await store.open()
        if store is not None:
            self.state_writer = StateWriter(states, store)
            await self.state_writer.load()
            self.state_writer.start()
        return states

    def _agent_state(self, state: m.AgentState) -> None:
        if self.agent_share is not None:
            self.agent_share.publish(state)

    def _local_agents(self) -> list[m.AgentState]:
        """Every agent state this bridge's Asterisk gave, all tenants (for the bus); none
        while the AMI session is down: what the tracker holds then is stale, and the other
        bridges forget this one's reports when it stops refreshing them."""
        if self.ami is None or not self.ami.client.connected:
            return []
        return [a for tenant in self.config.tenants for a in self.ami.agent_snapshot(tenant)]

    def _call_entered(self, uniqueid: str, venue: str, tenant: str) -> None:
        """A route request: the call-event source (AMI, else an ARI-only bridge's ARI
        driver) binds the call to its venue."""
        if self.ami is not None:
            self.ami.call_entered(uniqueid, venue, tenant)
        elif self.ari is not None:
            self.ari.call_entered(uniqueid, venue, tenant)

    @property
    def processes(self) -> dict[str, VtsProcess]:
        """The running VTS processes by name (the supervisor's)."""
        return self.supervisor.processes

    def _on_vts_socket(self, name: str, sock: socket.socket) -> None:
        assert self.intermediary is not None
        intermediary = self.intermediary

        def factory() -> VtsLinkProtocol:
            return VtsLinkProtocol(name, intermediary)

        async def connect() -> None:
            try:
                await asyncio.get_running_loop().create_unix_connection(factory, sock=sock)
            except OSError as exc:
                log.error("VTS %s: cannot attach its socket: %s", name, exc)
                sock.close()

        asyncio.get_running_loop().create_task(connect())

    async def _on_control(self, request: dict[str, object]) -> dict[str, object]:
        command = request.get("cmd")
        if command == "status":
            assert self.intermediary is not None
            status = self.intermediary.status()
            status["vts"] = {
                name: {"pid": p.pid, "starts": p.starts, "restarts": p.restarts,
                       "uptime_s": _rounded(p.uptime()), "flapping": p.flapping,
                       "connected": self.intermediary.connected(name)}
                for name, p in sorted(self.processes.items())}
            status |= {"version": status_mod.version(), "pid": os.getpid(),
                       "uptime_s": _rounded(time.monotonic() - self._started),
                       "stopping": self.stopping,
                       "recent": self.recent.records() if self.recent is not None else [],
                       "tenants": _tenants(self.config)}
            if self.ami is not None:
                status["ami"] = {"connected": self.ami.client.connected,
                                 "attempts": self.ami.client.attempts,
                                 "resyncs": self.ami.resyncs,
                                 "reconnects": self.ami.reconnects,
                                 "calls": len(self.ami.tracker.calls())}
            if self.ari is not None:
                status["ari"] = self.ari.status()
            if self.personal is not None:
                status["personal"] = self.personal.status()
            if self._cluster is not None and self.cluster_node is not None:
                status["cluster"] = {"node": self._cluster.node,
                                     "nodes": sorted(self._cluster.nodes),
                                     "apply_held_by": self.cluster_node.holder}
            if self.bus is not None:
                status["bus"] = self.bus.status()
            # For leak checks (the fault run, docs/reliability.md): tasks that outlive
            # their call or session show here before they show as memory.
            status["runtime"] = {"tasks": len(asyncio.all_tasks())}
            return {"ok": True, "status": status}
        if command == "reload":
            error = await self.reload()
            return {"ok": error is None, "error": error}
        if command == "apply":
            result = await self.apply()
            return {"ok": result.ok, "error": None if result.ok else result.message,
                    "changed": result.changed}
        return {"ok": False, "error": f"unknown command {command!r} (status, reload, apply)"}

    async def reload(self) -> str | None:
        """Reload the config file; None on success, else why it was refused."""
        if self.stopping:  # a SIGHUP during the drain: no READY=1 after STOPPING=1
            return "the bridge is stopping"
        self.notifier.reloading(f"reloading {self.config.path}")
        try:
            new = config_mod.load(self.config.path)
            await self._swap(new)  # refuses (ConfineError) before it changes anything
        except config_mod.ConfigError as exc:
            log.error("reload refused, running config kept: %s", exc)
            self.notifier.ready(f"routing; reload refused: {exc}")
            return str(exc)
        self.notifier.ready(f"routing; config reloaded from {self.config.path}")
        return None

    async def apply(self) -> ApplyResult:
        """Reload the config and make Asterisk's dialplan follow it (ami_bridge.apply);
        with [cluster], on every node or on none (ami_bridge.cluster.apply)."""
        if self.cluster_node is not None:
            return await self._cluster_apply(self.cluster_node)
        try:
            new = config_mod.load(self.config.path)
            await plan_sandboxes(new)  # a VTS this host cannot confine: refused before Asterisk
        except config_mod.ConfigError as exc:
            log.error("apply refused, running config kept: %s", exc)
            return ApplyResult(False, f"{exc}; nothing changed")
        return await self.apply_new(new)

    def _asterisk_steps(self) -> tuple[Callable[[], Awaitable[None]],
                                       Callable[[list[str]], Awaitable[list[str]]]]:
        """Reload Asterisk's dialplan and queues; find venue contexts it lacks. Raises
        ConfigError without the AMI login that may reload."""
        ami = self.config.ami
        if self.ami is None or ami is None or not ami.reload_username:
            raise config_mod.ConfigError("apply needs [ami] with reload_username and "
                                         "reload_secret (the login that may reload the "
                                         "dialplan)")
        link, reload_user = self.ami, ami.reload_username

        async def reload_asterisk() -> None:
            await reload_modules(host=ami.host, port=ami.port, username=reload_user,
                                 secret=ami.reload_secret, modules=["pbx_config", "app_queue"])

        async def missing(contexts: list[str]) -> list[str]:
            absent = []
            for context in contexts:
                response, _ = await link.client.send_list_action("ShowDialPlan",
                                                                  Context=context)
                if not response.success:
                    absent.append(context)
            return absent

        return reload_asterisk, missing

    async def apply_new(self, new: config_mod.BridgeConfig) -> ApplyResult:
        """Apply an already loaded config: fragments, venue map, Asterisk (ami_bridge.apply)."""
        try:
            reload_asterisk, missing = self._asterisk_steps()
        except config_mod.ConfigError as exc:
            return ApplyResult(False, str(exc))
        async with self._apply_lock:
            return await apply_config(current=self.config, new=new, swap_bridge=self._swap,
                                      reload_asterisk=reload_asterisk, missing_contexts=missing)

    async def revert(self, undo: Undo) -> None:
        """Put back a successful apply (a cluster rollback)."""
        reload_asterisk, _ = self._asterisk_steps()
        async with self._apply_lock:
            await revert(undo, swap_bridge=self._swap, reload_asterisk=reload_asterisk)

    async def _cluster_apply(self, local: Participant) -> ApplyResult:
        cluster, tenants_dir = self._cluster, self.config.tenants_dir
        assert cluster is not None and tenants_dir is not None  # the loader requires both
        tenants = tenant_files.read_all(tenants_dir)
        async with peers.client_session() as session:
            nodes: list[Node] = [local, *(peers.RemoteNode(name, url, cluster.secret, session)
                                          for name, url in cluster.nodes.items())]
            result = await cluster_apply(nodes, coordinator=cluster.node, tenants=tenants,
                                         tx=new_tx(cluster.node))
        return ApplyResult(result.ok, result.message, [
            f"{node}: {name}" for node, names in sorted(result.changed.items())
            for name in names])

    async def _swap(self, new: config_mod.BridgeConfig) -> None:
        assert self.intermediary is not None
        sandboxes = await plan_sandboxes(new)  # ConfineError (a ConfigError) before any swap
        self.config = new
        self.intermediary.reload(new)
        if self.ami is not None:
            self.ami.reload(new)
        await self.supervisor.reconcile(new.vts, sandboxes)
        log.info("config loaded from %s: %d venues, %d VTS", new.path, len(new.venues),
                 len(new.vts))

    async def stop(self) -> None:
        """Graceful stop (ami_bridge.lifecycle): listener first, pending calls answered,
        then AMI, the VTS processes, the personal service; the control socket removed."""
        self.stopping = True
        self.notifier.stopping("stopping: FastAGI listener closed, answering pending calls")
        if self._server is not None:
            self._server.close()  # new sessions are refused: the venue's AGISTATUS fallback
        if self.intermediary is not None and self._listener is not None:
            loop = asyncio.get_running_loop()
            await lifecycle.drain(self.intermediary, bound=lifecycle.drain_bound(self.config),
                                  open_sessions=self._listener.sessions.total,
                                  clock=loop.time, notifier=self.notifier)
        if self.ari is not None:  # after the drain: its dispositions go out over ARI
            await self.ari.stop()
        if self.ami is not None:
            await self.ami.stop()
        if self._control is not None:
            self._control.close()
        if self._cluster_runner is not None:
            await self._cluster_runner.cleanup()
        if self._control_path is not None:
            control.remove(self._control_path)
        await self.supervisor.stop()
        if self.state_writer is not None:  # the VTS's last state, before the store closes
            await self.state_writer.stop()
        if self._state_store is not None:
            await self._state_store.close()
        if self.agent_share is not None:
            await self.agent_share.stop()
        if self.personal is not None:
            await self.personal.stop()
        if self.bus is not None:
            await self.bus.stop()
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        if self.metrics is not None:  # last: a scrape sees the stop to its end
            await self.metrics.stop()
        log.info("ami-bridge stopped")


class _ClusterSteps:
    """What this node's Participant may do to its bridge (a cluster.apply.LocalSteps)."""

    def __init__(self, bridge: Bridge) -> None:
        self._bridge = bridge

    def current(self) -> config_mod.BridgeConfig:
        return self._bridge.config

    async def load(self, tenants: Mapping[str, str]) -> config_mod.BridgeConfig:
        new = config_mod.load(self._bridge.config.path, tenant_texts=tenants)
        await plan_sandboxes(new)  # a VTS this host cannot confine: refused at prepare
        self._bridge._asterisk_steps()  # no AMI login that may reload: refused at prepare
        return new

    async def apply(self, new: config_mod.BridgeConfig) -> ApplyResult:
        return await self._bridge.apply_new(new)

    async def revert(self, undo: Undo) -> None:
        await self._bridge.revert(undo)


async def run(config_path: Path) -> int:
    recent = status_mod.RecentLog()
    logging.getLogger().addHandler(recent)
    try:
        return await _run(Bridge(config_mod.load(config_path), recent=recent))
    finally:
        logging.getLogger().removeHandler(recent)


async def _run(bridge: Bridge) -> int:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(bridge.reload()))
    await bridge.start()
    # Everything allocated so far (modules, config, servers) lives as long as the daemon:
    # keep it out of the garbage collector's generations so per-call collections stay
    # short (bench/README.md: ~10 us of GC per route before).
    gc.freeze()
    intermediary = bridge.intermediary
    assert intermediary is not None
    ready = loop.create_task(lifecycle.wait_ready(
        bridge.config.vts, intermediary.connected, notifier=bridge.notifier, clock=loop.time))
    await stopping.wait()
    ready.cancel()
    await bridge.stop()
    return 0


def _tenants(config: config_mod.BridgeConfig) -> dict[str, dict[str, list[str]]]:
    """Each tenant's venues and the VTS processes that serve them, for `status`."""
    tenants: dict[str, dict[str, list[str]]] = {
        name: {"venues": [], "vts": []} for name in sorted(config.tenants)}
    for venue in sorted(config.venues.values(), key=lambda v: v.context):
        entry = tenants.setdefault(venue.tenant, {"venues": [], "vts": []})
        entry["venues"].append(venue.context)
        if venue.vts not in entry["vts"]:
            entry["vts"].append(venue.vts)
    return tenants


def _rounded(seconds: float | None) -> float | None:
    return round(seconds, 1) if seconds is not None else None


def sandboxes_for(config: config_mod.BridgeConfig) -> dict[str, Sandbox | None]:
    """How each VTS runs confined on this host (a probe start when any is); ConfineError
    names the `confine` switch when the host cannot confine one that must be. Blocks
    for the probe: the daemon's loop calls `plan_sandboxes`."""
    return plan_for_host(confine.DEFAULT_MODE,
                         {name: vts.confinement for name, vts in config.vts.items()})


async def plan_sandboxes(config: config_mod.BridgeConfig) -> dict[str, Sandbox | None]:
    """`sandboxes_for` in a worker thread: its probe start (a subprocess run to its end)
    must not stop the loop from answering calls, at start or at a reload."""
    return await asyncio.to_thread(sandboxes_for, config)


def bus_id(config: config_mod.BridgeConfig) -> str:
    """This bridge process's name on the bus: `[cluster] node` (if any) and a random part."""
    random_part = secrets.token_hex(6)
    return f"{config.cluster.node}:{random_part}" if config.cluster is not None \
        else random_part
