"""The personal router inside the daemon: its store, directory, HTTP API and route trace.

`PersonalService.start` opens the store the config names (`[store]`: SQLite by default,
PostgreSQL for several bridges), loads every user and portion into the `Directory` the
intermediary reads at call time, and serves the HTTP API (`[api]`) if configured. The
intermediary hands every routing decision to `record` (no I/O, never blocks a call):
records queue in memory and are written in batches by one task; if the store is slow or
down, a batch it refused goes back to the queue and is written when it returns, and only
past `MAX_QUEUED_TRACES` are the oldest queued records dropped (counted), so a database
outage never costs a call its route. Old traces and expired sessions are
pruned every `PRUNE_INTERVAL_S`. The store and API settings are read at start only.
With the PostgreSQL store (several bridges on one database) it also uses the bus
(ami_bridge.cluster.bus): the directory kept in step with the other bridges
(ami_bridge.cluster.share), workstation pops and session ends across bridges
(ami_bridge.personal.pops); `bus` is None with SQLite. The daemon passes its own bus
(which it starts once every user has subscribed, and stops); without one the service
makes, starts and stops its own. A route trace is stored by Asterisk's uniqueid, which
is unique across Asterisks only with a `systemname`: with the shared store, the first
decision whose uniqueid has none is logged once as a warning (docs/scale-out.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Mapping

from aiohttp import web

from ami_bridge.cluster.bus import Bus
from ami_bridge.cluster.share import DirectorySync
from ami_bridge.config import BridgeConfig, TenantConfig
from ami_bridge.personal.directory import Directory
from ami_bridge.personal.model import Store, StoreError, TraceRecord
from ami_bridge.personal.pops import (
    PEER_KINDS,
    PopHub,
    directory_saved,
    session_authenticator,
)
from ami_bridge.personal.settings import StoreConfig

log = logging.getLogger(__name__)

MAX_QUEUED_TRACES = 20_000  # decisions waiting for the store (minutes of traffic)
TRACE_BATCH = 500  # written in one transaction
TRACE_FLUSH_S = 0.2  # a decision shows in `ami-bridge trace` within this (plus the write)
# After the store refused a batch (down): the next try. Short, so traces queued during a
# restart are written within a second of its end.
TRACE_RETRY_S = 0.5
PRUNE_INTERVAL_S = 600.0
# Asterisk's uniqueid without a `systemname` prefix: the channel's creation second and
# a counter of its own process (main/channel.c), so two Asterisks started alike hand out
# the same ones; with one (`pbx1-1795986862.246`) it is unique across them.
_UNNAMED_UNIQUEID = re.compile(r"\d+\.\d+")


def unnamed_uniqueid(uniqueid: str) -> bool:
    """Whether `uniqueid` comes from an Asterisk without a `systemname`."""
    return _UNNAMED_UNIQUEID.fullmatch(uniqueid) is not None


def open_store(config: StoreConfig) -> Store:
    """The backend the config names (not yet opened)."""
    if config.backend == "postgresql":
        from ami_bridge.personal.postgres import PostgresStore

        return PostgresStore(config.dsn)
    from ami_bridge.personal.sqlite import SqliteStore

    return SqliteStore(config.path)


class PersonalService:
    def __init__(self, config: BridgeConfig, tenants: Callable[[], Mapping[str, TenantConfig]],
                 *, store: Store | None = None, bus: Bus | None = None) -> None:
        self.config = config
        self.directory = Directory()
        self.store = store if store is not None else open_store(config.store)
        self._tenants = tenants
        self._queue: deque[TraceRecord] = deque()
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        # Live call pops (issue 11): the workstations' WebSocket side; the daemon sets
        # `pops.decide` to the intermediary's `client_choice`.
        self.pops = PopHub(authenticate=session_authenticator(self.store),
                           saved=directory_saved(self.directory))
        self.dropped_traces = 0
        self.written_traces = 0
        self.trace_failures = 0  # batches the store refused (retried)
        self._store_failing = False
        self._unnamed_said = False  # the systemname warning: once per process
        # Several bridges on one PostgreSQL store: the bus between them.
        self.bus: Bus | None = None
        self.sync: DirectorySync | None = None
        self._own_bus = bus is None and config.store.backend == "postgresql"
        if config.store.backend == "postgresql":
            shared = self.bus = bus if bus is not None else Bus(config.store.dsn)
            self.sync = DirectorySync(shared, self.store, self.directory)
            self.pops.peer = lambda kind, body, to: shared.publish(kind, body, to=to)
            shared.subscribe(PEER_KINDS, self.pops.on_peer, self.pops.resync)

    async def start(self) -> None:
        await self.store.open()
        self.directory.load(await self.store.list_users(), await self.store.all_portions())
        log.info("personal router: %d users loaded from the %s store", len(self.directory),
                 self.config.store.backend)
        if self.bus is not None and self.sync is not None:
            self.sync.start()
            if self._own_bus:
                await self.bus.start()
        self._tasks = [asyncio.create_task(self._write_traces()),
                       asyncio.create_task(self._prune())]
        if self.config.api is not None:
            from ami_bridge.api.app import make_app, serve

            app = make_app(store=self.store, directory=self.directory, tenants=self._tenants,
                           config=self.config.api, pops=self.pops)
            self._runner = await serve(app, self.config.api)

    def record(self, trace: TraceRecord) -> None:
        """One routing decision (from the intermediary): queued, written soon."""
        if self.bus is not None and not self._unnamed_said \
                and unnamed_uniqueid(trace.uniqueid):
            self._unnamed_said = True
            log.warning("route trace: uniqueid %s has no systemname prefix; if several "
                        "Asterisks share this store, give each its own systemname "
                        "(asterisk.conf [options]), or their calls' uniqueids collide and "
                        "`ami-bridge trace` mixes them (docs/scale-out.md)", trace.uniqueid)
        if len(self._queue) >= MAX_QUEUED_TRACES:
            self._queue.popleft()
            self.dropped_traces += 1
        self._queue.append(trace)
        if len(self._queue) >= TRACE_BATCH:
            self._wakeup.set()

    def status(self) -> dict[str, object]:
        status: dict[str, object] = {
            "users": len(self.directory), "traces_queued": len(self._queue),
            "traces_written": self.written_traces, "traces_dropped": self.dropped_traces,
            "api": self._runner is not None, "pops": self.pops.status()}
        if self.sync is not None:
            status["directory_sync"] = self.sync.status()
        return status

    async def _write_traces(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), TRACE_FLUSH_S)
            self._wakeup.clear()
            if not await self._flush():
                await asyncio.sleep(TRACE_RETRY_S)

    async def _flush(self) -> bool:
        """Write what is queued; False if the store refused (the batch is queued again,
        ahead of newer ones; past MAX_QUEUED_TRACES the oldest are dropped, counted)."""
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(TRACE_BATCH, len(self._queue)))]
            try:
                await self.store.add_traces(batch)
            except (StoreError, OSError) as exc:
                self.trace_failures += 1
                if not self._store_failing:  # once per outage
                    self._store_failing = True
                    log.error("route trace: the store refused %d decisions (kept, %d "
                              "queued; retried): %s", len(batch),
                              len(batch) + len(self._queue), exc)
                self._queue.extendleft(reversed(batch))
                while len(self._queue) > MAX_QUEUED_TRACES:
                    self._queue.popleft()
                    self.dropped_traces += 1
                return False
            self.written_traces += len(batch)
            if self._store_failing:
                self._store_failing = False
                log.info("route trace: the store takes decisions again")
        return True

    async def _prune(self) -> None:
        while True:
            now = time.time()
            try:
                pruned = await self.store.prune_traces(
                    before=now - self.config.store.trace_max_age,
                    max_rows_per_tenant=self.config.store.trace_max_rows)
                await self.store.purge_sessions(now)
                if pruned:
                    log.info("route trace: %d old decisions pruned", pruned)
            except (StoreError, OSError) as exc:
                log.error("route trace: pruning failed: %s", exc)
            await asyncio.sleep(PRUNE_INTERVAL_S)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self.sync is not None:
            await self.sync.stop()
        if self.bus is not None and self._own_bus:
            await self.bus.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._flush()
        await self.store.close()
