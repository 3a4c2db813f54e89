"""The personal router inside the daemon: its store, directory, HTTP API and route trace.

`PersonalService.start` opens the store the config names (`[store]`: SQLite by default,
PostgreSQL for several bridges), loads every user and portion into the `Directory` the
intermediary reads at call time, and serves the HTTP API (`[api]`) if configured. The
intermediary hands every routing decision to `record` (no I/O, never blocks a call):
records queue in memory and are written in batches by one task; if the store is slow or
down, the oldest queued records are dropped past `MAX_QUEUED_TRACES` and counted, so a
database outage never costs a call its route. Old traces and expired sessions are
pruned every `PRUNE_INTERVAL_S`. The store and API settings are read at start only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping

from aiohttp import web

from ami_bridge.config import BridgeConfig, TenantConfig
from ami_bridge.personal.directory import Directory
from ami_bridge.personal.model import Store, StoreError, TraceRecord
from ami_bridge.personal.pops import PopHub, directory_saved, session_authenticator
from ami_bridge.personal.settings import StoreConfig

log = logging.getLogger(__name__)

MAX_QUEUED_TRACES = 20_000  # decisions waiting for the store (minutes of traffic)
TRACE_BATCH = 500  # written in one transaction
TRACE_FLUSH_S = 0.2  # a decision shows in `ami-bridge trace` within this (plus the write)
PRUNE_INTERVAL_S = 600.0


def open_store(config: StoreConfig) -> Store:
    """The backend the config names (not yet opened)."""
    if config.backend == "postgresql":
        from ami_bridge.personal.postgres import PostgresStore

        return PostgresStore(config.dsn)
    from ami_bridge.personal.sqlite import SqliteStore

    return SqliteStore(config.path)


class PersonalService:
    def __init__(self, config: BridgeConfig, tenants: Callable[[], Mapping[str, TenantConfig]],
                 *, store: Store | None = None) -> None:
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

    async def start(self) -> None:
        await self.store.open()
        self.directory.load(await self.store.list_users(), await self.store.all_portions())
        log.info("personal router: %d users loaded from the %s store", len(self.directory),
                 self.config.store.backend)
        self._tasks = [asyncio.create_task(self._write_traces()),
                       asyncio.create_task(self._prune())]
        if self.config.api is not None:
            from ami_bridge.api.app import make_app, serve

            app = make_app(store=self.store, directory=self.directory, tenants=self._tenants,
                           config=self.config.api, pops=self.pops)
            self._runner = await serve(app, self.config.api)

    def record(self, trace: TraceRecord) -> None:
        """One routing decision (from the intermediary): queued, written soon."""
        if len(self._queue) >= MAX_QUEUED_TRACES:
            self._queue.popleft()
            self.dropped_traces += 1
        self._queue.append(trace)
        if len(self._queue) >= TRACE_BATCH:
            self._wakeup.set()

    def status(self) -> dict[str, object]:
        return {"users": len(self.directory), "traces_queued": len(self._queue),
                "traces_written": self.written_traces, "traces_dropped": self.dropped_traces,
                "api": self._runner is not None, "pops": self.pops.status()}

    async def _write_traces(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), TRACE_FLUSH_S)
            self._wakeup.clear()
            await self._flush()

    async def _flush(self) -> None:
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(TRACE_BATCH, len(self._queue)))]
            try:
                await self.store.add_traces(batch)
            except (StoreError, OSError) as exc:
                log.error("route trace: %d decisions not stored: %s", len(batch), exc)
                self.dropped_traces += len(batch)
                return
            self.written_traces += len(batch)

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
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._flush()
        await self.store.close()
