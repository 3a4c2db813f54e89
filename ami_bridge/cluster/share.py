"""What the bridges of one PostgreSQL store keep in step over the bus (ami_bridge.cluster.bus).

Contract. `DirectorySync`: every user, binding or portion write this bridge's API makes
(the `Directory`'s `changed`) is published as `{"k": "user", "d": {"t": tenant, "u":
user id}}`: the reference, never the content, so no message nears NOTIFY's limit and
an old message can never roll a change back. A bridge that gets one reads that user and
portion from the store (one task, in order, duplicates folded) and puts them in its
`Directory` (`refresh`); the next call it routes follows. After every bus (re)connect,
or a lost message, it reloads the whole directory from the store instead. A read the
store refuses (down) is retried every `RETRY_S` as a full reload. The call path never
waits for any of it: it reads the Directory as before.

`AgentShare`: this bridge's agent states (from its AMI) are published as they change
(`{"k": "agents", "d": {"a": [...]}}`), and the whole table every `agents.REFRESH_S`
and to a bridge that asks (`agents_wanted`, sent after every (re)connect, and to a
bridge heard from for the first time: it may have started after our ask); other
bridges' reports go to the intermediary's merge (ami_bridge.cluster.agents), whose
silent bridges are forgotten at each refresh.

`StateShare`: the VTS states (protocol 2.2: round-robin cursors) this bridge saved to
the store (ami_bridge.vts_state, at most once a second per tenant) are published as
`{"k": "vts_state", "d": {"t": tenant, "s": state}}`; another bridge takes each as its
latest for that tenant and hands it to its own VTS of that tenant, so two bridges'
VTS of one tenant share one rotation (to within a second) and the survivor of a bridge
carries on from where the dead one was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ami_bridge.cluster import agents as agents_mod
from ami_bridge.cluster.bus import Bus
from ami_bridge.personal.directory import Directory
from ami_bridge.personal.model import Store, StoreError
from ami_bridge.tenants import messages as m
from ami_bridge.tenants.protocol import encoded_size

if TYPE_CHECKING:
    from ami_bridge.intermediary import Intermediary

log = logging.getLogger(__name__)

USER = "user"
AGENTS = "agents"
AGENTS_WANTED = "agents_wanted"
VTS_STATE = "vts_state"
RETRY_S = 1.0  # a store read refused (PostgreSQL down): the next try, as a full reload


class DirectorySync:
    def __init__(self, bus: Bus, store: Store, directory: Directory,
                 applied: Callable[[str, str], None] | None = None) -> None:
        self._bus = bus
        self._store = store
        self._directory = directory
        self._todo: dict[tuple[str, str], None] = {}  # ordered set: users to read again
        self._reload = False
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.applied = applied  # (tenant, user id) now in the directory (tests, figures)
        self.refreshed = 0
        self.reloads = 0
        directory.changed = self._changed
        bus.subscribe((USER,), self._on_message, self._on_resync)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="directory-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _changed(self, tenant: str, user_id: str) -> None:
        self._bus.publish(USER, {"t": tenant, "u": user_id})

    def _on_message(self, sender: str, kind: str, body: Mapping[str, Any]) -> None:
        tenant, user_id = body.get("t"), body.get("u")
        if isinstance(tenant, str) and isinstance(user_id, str):
            self._todo[(tenant, user_id)] = None
            self._wakeup.set()

    def _on_resync(self) -> None:
        self._reload = True
        self._wakeup.set()

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self._step()
            except (StoreError, OSError) as exc:
                log.warning("directory sync: the store refused a read (%s); full reload "
                            "in %.0f s", exc, RETRY_S)
                self._reload = True
                await asyncio.sleep(RETRY_S)
                self._wakeup.set()

    async def _step(self) -> None:
        if self._reload:
            self._todo.clear()  # the reload reads them too
            self._reload = False
            try:
                users = await self._store.list_users()
                portions = await self._store.all_portions()
            except BaseException:
                self._reload = True
                raise
            self._directory.load(users, portions)
            self.reloads += 1
            log.info("directory sync: %d users reloaded from the store", len(users))
        while self._todo:
            tenant, user_id = key = next(iter(self._todo))
            user = await self._store.get_user(tenant, user_id)
            portion = await self._store.get_portion(tenant, user_id) if user else None
            if self._reload:  # a resync came meanwhile: it reads everything
                return
            self._todo.pop(key, None)
            self._directory.refresh(tenant, user_id, user, portion)
            self.refreshed += 1
            if self.applied is not None:
                self.applied(tenant, user_id)

    def status(self) -> dict[str, int]:
        return {"refreshed": self.refreshed, "reloads": self.reloads,
                "waiting": len(self._todo)}


class AgentShare:
    def __init__(self, bus: Bus, intermediary: Intermediary,
                 local: Callable[[], Iterable[m.AgentState]]) -> None:
        self._bus = bus
        self._intermediary = intermediary
        self._local = local  # this bridge's whole agent table (its AMI link's)
        self._task: asyncio.Task[None] | None = None
        self._peers: set[str] = set()  # bridges heard from (a restarted one is new)
        self.malformed = 0
        bus.subscribe((AGENTS, AGENTS_WANTED), self._on_message, self._on_resync)

    def publish(self, state: m.AgentState) -> None:
        """One agent state changed here (the intermediary's `on_agent_state`)."""
        self._bus.publish(AGENTS, {"a": [agents_mod.agent_json(state)]})

    def publish_all(self, to: str = "") -> None:
        for chunk in agents_mod.chunks(self._local()):
            self._bus.publish(AGENTS, {"a": chunk}, to=to)

    def start(self) -> None:
        self._task = asyncio.create_task(self._refresh(), name="agent-share")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(agents_mod.REFRESH_S)
            self.publish_all()
            self._intermediary.expire_agents()

    def _on_message(self, sender: str, kind: str, body: Mapping[str, Any]) -> None:
        if sender not in self._peers:  # a bridge that started after our own ask
            self._peers.add(sender)
            self._bus.publish(AGENTS_WANTED, {}, to=sender)
        if kind == AGENTS_WANTED:
            self.publish_all(to=sender)
            return
        self._intermediary.agent_node_heard(sender)
        rows = body.get("a")
        for raw in rows if isinstance(rows, list) else ():
            try:
                state = agents_mod.agent_from_json(raw if isinstance(raw, dict) else {})
            except ValueError as exc:
                self.malformed += 1
                log.warning("%s", exc)
                continue
            self._intermediary.remote_agent_state(sender, state)

    def _on_resync(self) -> None:
        self._bus.publish(AGENTS_WANTED, {})


class StateShare:
    def __init__(self, bus: Bus, intermediary: Intermediary) -> None:
        self._bus = bus
        self._intermediary = intermediary
        self.malformed = 0
        bus.subscribe((VTS_STATE,), self._on_message)

    def publish(self, saved: Mapping[str, Mapping[str, Any]]) -> None:
        """The states the StateWriter just saved (its `on_saved`)."""
        for tenant, state in saved.items():
            self._bus.publish(VTS_STATE, {"t": tenant, "s": dict(state)})

    def _on_message(self, sender: str, kind: str, body: Mapping[str, Any]) -> None:
        tenant, state = body.get("t"), body.get("s")
        if not isinstance(tenant, str) or not isinstance(state, dict) \
                or encoded_size(state) > m.MAX_STATE_BYTES:
            self.malformed += 1
            log.warning("bus: a vts_state message from bridge %s without a tenant name "
                        "and a state object of at most %d bytes; ignored", sender,
                        m.MAX_STATE_BYTES)
            return
        self._intermediary.remote_state(tenant, state)
