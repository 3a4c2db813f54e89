"""A VTS's saved state per tenant (protocol 2.2): the latest in memory, saved coalesced.

Contract. A VTS has no network and cannot reach the store, so its small persistent state
(the shipped runtime's round-robin cursors) travels as `state` frames and the bridge
keeps it. :class:`VtsStates` (no I/O) holds the latest state of each tenant and which
tenants changed since the last save: the intermediary `put`s into it on the call path
(a dict assignment, never a write) and reads it when a VTS connects, so what a VTS gets
back is from memory. :class:`StateWriter` is the asyncio side: `load` fills it from the
store at start, before any VTS connects; `run` saves the changed tenants every
:data:`STATE_FLUSH_S` in one store write, so a tenant is written at most once per
interval however often its VTS sends; a save that fails leaves those tenants changed
(retried at the next interval, unless a newer state replaced them meanwhile, which is
then saved instead) and is counted; `stop` saves what is left once. What was saved goes
to `on_saved` (the bus, with several bridges: their VTS of the same tenant carry on
from it; `replace` takes it in there without saving it again). Without a store the
state lives in memory only: it survives a VTS restart, not a bridge restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from ami_bridge.personal.model import Store, StoreError

log = logging.getLogger(__name__)

# How often the changed tenants' states are saved: what a bridge that dies loses of the
# round-robin is the cursor moves of at most this long (a VTS sends after every batch).
STATE_FLUSH_S = 1.0


class VtsStates:
    """Tenant -> the latest state its VTS sent (or that the store held at start)."""

    def __init__(self) -> None:
        self._latest: dict[str, Mapping[str, Any]] = {}
        self._changed: set[str] = set()
        self.received = 0  # state frames kept
        self.saved = 0  # tenant states written to the store
        self.save_failures = 0  # store writes that failed (each retried later)

    def get(self, tenant: str) -> Mapping[str, Any] | None:
        return self._latest.get(tenant)

    def put(self, tenant: str, state: Mapping[str, Any]) -> None:
        """A VTS's latest state for `tenant` (checked by the intermediary: its own)."""
        self._latest[tenant] = state
        self._changed.add(tenant)
        self.received += 1

    def replace(self, tenant: str, state: Mapping[str, Any]) -> None:
        """Another bridge saved this state of `tenant` (the bus): the latest here too, but
        not changed (that bridge wrote it to the store already)."""
        self._latest[tenant] = state
        self._changed.discard(tenant)

    def load(self, saved: Mapping[str, Mapping[str, Any]]) -> None:
        """What the store holds (at start): not changed, so not written back."""
        for tenant, state in saved.items():
            self._latest.setdefault(tenant, state)

    def take_changed(self) -> dict[str, Mapping[str, Any]]:
        """The changed tenants' latest states, now counted as saved."""
        taken = {tenant: self._latest[tenant] for tenant in self._changed}
        self._changed.clear()
        return taken

    def save_failed(self, states: Mapping[str, Mapping[str, Any]]) -> None:
        """A save of `states` failed: mark them changed again for the next attempt (a
        tenant whose state was replaced meanwhile is changed already, with the newer)."""
        self.save_failures += 1
        self._changed.update(states)

    def status(self) -> dict[str, int]:
        return {"tenants": len(self._latest), "unsaved": len(self._changed),
                "received": self.received, "saved": self.saved,
                "save_failures": self.save_failures}


class StateWriter:
    """Saves `states` to `store` (see the module docstring); one task per bridge."""

    def __init__(self, states: VtsStates, store: Store, *,
                 interval: float = STATE_FLUSH_S,
                 on_saved: Callable[[Mapping[str, Mapping[str, Any]]], None] | None = None
                 ) -> None:
        self.states = states
        self.on_saved = on_saved  # what was saved, for the other bridges (the bus)
        self._store = store
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._failing = False  # said once when saves start failing, once when they work

    async def load(self) -> None:
        """The saved states into memory; a store that cannot answer leaves it empty
        (VTS then start their round-robin afresh), said once."""
        try:
            saved = await self._store.vts_states()
        except (StoreError, OSError) as exc:
            log.error("VTS state: not loaded from the store, VTS start afresh: %s", exc)
            return
        self.states.load({s.tenant: s.body for s in saved})
        log.info("VTS state: %d tenants' saved state loaded", len(saved))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.save()

    async def save(self) -> bool:
        """One write of every changed tenant's state; False if the store refused it."""
        changed = self.states.take_changed()
        if not changed:
            return True
        try:
            await self._store.put_vts_states(changed)
        except (StoreError, OSError) as exc:
            self.states.save_failed(changed)
            if not self._failing:
                log.error("VTS state: %d tenants not saved (retried every %.0f s, "
                          "failures counted in status): %s", len(changed), self._interval,
                          exc)
            self._failing = True
            return False
        if self._failing:
            log.info("VTS state: saved again (%d failed saves)", self.states.save_failures)
            self._failing = False
        self.states.saved += len(changed)
        if self.on_saved is not None:
            self.on_saved(changed)
        return True

    async def stop(self) -> None:
        """Stop the task and save what is left (before the store closes)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.save()
