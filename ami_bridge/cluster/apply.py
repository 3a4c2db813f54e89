"""Cluster apply: a tenant change lands on every node of the cluster, or on none.

`ctl apply` on any node makes it the coordinator (`cluster_apply`). It reads its own
tenant files and runs two phases over every node, itself included, one node at a time
in the order of their names:

- PREPARE: each node loads its own bridge config with the shipped tenant files in place
  of its own, renders and lints the fragments against its own Asterisk conf dir
  (ami_bridge.apply.refusal), writes nothing, and holds its apply lock for this
  transaction (`HOLD_SECONDS`). A refusal, a node busy with another apply, a node that
  does not answer: every node is released, none has changed, and the error names each
  node and why. Nodes are locked in one cluster-wide order, so of two concurrent applies
  one wins and the other is refused at the first node they share ("busy").
- COMMIT: each node writes the tenant files (ami_bridge.cluster.tenant_files), then runs
  the single-node apply (write fragments, swap the venue map, reload Asterisk, check the
  venues; that node rolls itself back on failure). If any commit fails or does not
  answer, every node is sent ABORT: committed ones revert (old tenant files, old
  fragments, old venue map, Asterisk reloaded), prepared ones are released; the error
  names the failing node and the outcome of each rollback. After the last commit every
  node is sent FINISH, which releases its lock.

Every hop has a timeout (`Timeouts`). `Participant` is one node's side, the same object
whether the coordinator reaches it in-process (itself) or over HTTP
(ami_bridge.cluster.peers); `Node` is what the coordinator needs of either. The
participant's lock expires by the clock it is given (no timer task): a coordinator that
dies mid-apply leaves each node locked at most `HOLD_SECONDS`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from ami_bridge.apply import ApplyResult, Undo, refusal
from ami_bridge.cluster import tenant_files
from ami_bridge.cluster.settings import NODE_RE
from ami_bridge.config import BridgeConfig
from ami_bridge.validation import ConfigError

log = logging.getLogger(__name__)

# How long a prepared (or committed, not yet finished) node holds its apply lock without
# hearing from its coordinator again. Each request of the transaction renews it; it must
# outlast the other nodes' prepares and the commits before this node's (a few seconds
# each on the sandbox; Timeouts bound them), and it bounds how long a coordinator that
# died mid-apply blocks the next apply.
HOLD_SECONDS = 120.0
TX_RE = re.compile(r"[a-z0-9_-]{1,100}")  # fullmatch; a transaction id: NODE-HEX


@dataclass(frozen=True)
class Timeouts:
    """Seconds the coordinator waits for one node's answer to each phase."""
    prepare: float = 20.0  # load + render + lint of one node's tree (well under 1 s here)
    commit: float = 30.0  # write + Asterisk reload + ShowDialPlan per venue (as ctl reload)
    abort: float = 30.0  # the same work backwards
    finish: float = 5.0  # only releases a lock (it expires anyway)


DEFAULT_TIMEOUTS = Timeouts()


@dataclass(frozen=True)
class Reply:
    """One node's answer to one phase."""
    ok: bool
    error: str = ""
    changed: tuple[str, ...] = ()  # commit: the fragments written
    detail: str = ""  # abort: "rolled back", "released" or "nothing held"
    busy: bool = False  # refused because another apply holds the node
    reached: bool = True  # False: the node did not answer (unreachable, timed out)


class Node(Protocol):
    """One node as the coordinator sees it (the local Participant, or a RemoteNode)."""

    @property
    def name(self) -> str: ...

    async def prepare(self, tx: str, coordinator: str, tenants: Mapping[str, str]) -> Reply: ...

    async def commit(self, tx: str) -> Reply: ...

    async def abort(self, tx: str) -> Reply: ...

    async def finish(self, tx: str) -> Reply: ...


@dataclass(frozen=True)
class ClusterResult:
    ok: bool
    message: str
    changed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # node -> files


def new_tx(node: str) -> str:
    return f"{node}-{secrets.token_hex(8)}"


async def cluster_apply(nodes: Sequence[Node], *, coordinator: str,
                        tenants: Mapping[str, str], tx: str,
                        timeouts: Timeouts = DEFAULT_TIMEOUTS) -> ClusterResult:
    """PREPARE every node, then COMMIT every node, or ABORT them all (module docstring)."""
    ordered = sorted(nodes, key=lambda n: n.name)  # one lock order for the whole cluster
    asked: list[Node] = []
    refused: list[tuple[str, Reply]] = []
    for node in ordered:
        asked.append(node)  # a prepare that timed out may still land: abort it too
        reply = await _call(node.prepare(tx, coordinator, tenants), timeouts.prepare)
        if not reply.ok:
            refused.append((node.name, reply))
            if reply.busy:
                break  # the other apply holds the rest in the same order: stop here
    if refused:
        rollback = await _abort(asked, tx, timeouts)
        lines = [f"  node {name}: {_why(reply)}" for name, reply in refused]
        message = ("cluster apply refused at prepare; no node changed:\n" + "\n".join(lines)
                   + _rollback_problems(rollback))
        log.error("%s", message)
        return ClusterResult(False, message)
    changed: dict[str, tuple[str, ...]] = {}
    for node in ordered:
        reply = await _call(node.commit(tx), timeouts.commit)
        if not reply.ok:
            rollback = await _abort(list(reversed(ordered)), tx, timeouts)
            message = (f"cluster apply failed at commit on node {node.name}: {_why(reply)}\n"
                       + "\n".join(f"  node {name}: {outcome}" for name, outcome in rollback))
            log.error("%s", message)
            return ClusterResult(False, message)
        changed[node.name] = reply.changed
    for node in ordered:
        reply = await _call(node.finish(tx), timeouts.finish)
        if not reply.ok:  # its lock expires by itself; the change is in place
            log.warning("cluster apply %s: node %s did not finish: %s", tx, node.name,
                        _why(reply))
    log.info("cluster apply %s committed on %s", tx, ", ".join(n.name for n in ordered))
    return ClusterResult(True, "applied on " + ", ".join(n.name for n in ordered), changed)


async def _call(step: Awaitable[Reply], timeout: float) -> Reply:
    try:
        return await asyncio.wait_for(step, timeout)
    except TimeoutError:
        return Reply(False, f"no answer within {timeout:g} s", reached=False)


async def _abort(nodes: Sequence[Node], tx: str, timeouts: Timeouts) -> list[tuple[str, str]]:
    """ABORT every node; (name, outcome) for each, outcome words for the error."""
    outcomes = []
    for node in nodes:
        reply = await _call(node.abort(tx), timeouts.abort)
        outcome = (reply.detail or "released") if reply.ok \
            else f"ROLLBACK FAILED: {_why(reply)}"
        outcomes.append((node.name, outcome))
    return outcomes


def _rollback_problems(outcomes: list[tuple[str, str]]) -> str:
    bad = [f"  node {name}: {outcome}" for name, outcome in outcomes
           if outcome.startswith("ROLLBACK FAILED")]
    return "\n" + "\n".join(bad) if bad else ""


def _why(reply: Reply) -> str:
    if not reply.reached:
        return f"unreachable: {reply.error}"
    if reply.busy:
        return f"busy: {reply.error}"
    return reply.error.replace("\n", "\n    ")  # lint findings, indented under the node


class LocalSteps(Protocol):
    """What a node's bridge lends its participant (ami_bridge.daemon)."""

    def current(self) -> BridgeConfig: ...

    async def load(self, tenants: Mapping[str, str]) -> BridgeConfig:
        """The bridge config with `tenants` as its tenant files; raises ConfigError.
        Async: it may start a probe process (the confinement plan) off the loop."""
        ...

    async def apply(self, new: BridgeConfig) -> ApplyResult: ...

    async def revert(self, undo: Undo) -> None: ...


@dataclass(frozen=True)
class _Held:
    tx: str
    coordinator: str
    since: float
    deadline: float
    new: BridgeConfig  # the node's config with the shipped tenant files
    tenants: Mapping[str, str]  # the shipped tenant files: name -> text
    committed: bool = False
    tenant_backup: tenant_files.Backup | None = None
    undo: Undo | None = None


class Participant:
    """One node's side of a cluster apply: prepare, commit, abort, finish (a `Node`)."""

    def __init__(self, *, node: str, steps: LocalSteps, clock: Callable[[], float],
                 hold: float = HOLD_SECONDS) -> None:
        self._node = node
        self._steps = steps
        self._clock = clock
        self._hold = hold
        self._held: _Held | None = None
        self._lock = asyncio.Lock()  # one phase at a time (a commit awaits Asterisk)

    @property
    def name(self) -> str:
        return self._node

    @property
    def holder(self) -> str | None:
        """The transaction holding this node's apply lock, if any (for status)."""
        held = self._live()
        return held.tx if held is not None else None

    def _live(self) -> _Held | None:
        held = self._held
        if held is not None and self._clock() > held.deadline:
            log.warning("cluster apply %s from node %s: no word from its coordinator for "
                        "%g s; lock released%s", held.tx, held.coordinator, self._hold,
                        " (its commit stays in place)" if held.committed else "")
            self._held = held = None
        return held

    async def prepare(self, tx: str, coordinator: str, tenants: Mapping[str, str]) -> Reply:
        if not TX_RE.fullmatch(tx) or not NODE_RE.fullmatch(coordinator):
            return Reply(False, f"malformed transaction {tx!r} from {coordinator!r}")
        if bad := tenant_files.bad_names(list(tenants)):
            return Reply(False, f"not tenant names: {', '.join(repr(n) for n in bad)}")
        async with self._lock:
            held = self._live()
            if held is not None:
                return Reply(False, f"node {self._node} is held by apply {held.tx} from "
                             f"node {held.coordinator} since "
                             f"{self._clock() - held.since:.0f} s (lock expires within "
                             f"{held.deadline - self._clock():.0f} s); try again",
                             busy=True)
            try:
                new = await self._steps.load(tenants)
            except ConfigError as exc:
                return Reply(False, f"{exc}")
            why = refusal(new)
            if why is not None:
                return Reply(False, why)
            now = self._clock()
            self._held = _Held(tx=tx, coordinator=coordinator, since=now,
                               deadline=now + self._hold, new=new,
                               tenants=dict(tenants))
            log.info("cluster apply %s from node %s prepared (%d tenant files)", tx,
                     coordinator, len(tenants))
            return Reply(True)

    async def commit(self, tx: str) -> Reply:
        async with self._lock:
            held = self._live()
            if held is None or held.tx != tx:
                return Reply(False, f"apply {tx} is not prepared here (its lock expired, or "
                             f"{'another apply holds it' if held else 'it was released'})")
            if held.committed:
                return Reply(True)  # a repeated commit: already done
            tenants_dir = self._tenants_dir()
            try:
                backup = tenant_files.replace(tenants_dir, held.tenants)
            except (OSError, ValueError) as exc:
                self._held = None
                return Reply(False, f"cannot write the tenant files in {tenants_dir}: {exc}")
            result = await self._steps.apply(held.new)
            if not result.ok:  # apply_config rolled its own part back
                tenant_files.restore(tenants_dir, backup)
                self._held = None
                return Reply(False, result.message)
            self._held = replace(held, committed=True, tenant_backup=backup, undo=result.undo,
                                 deadline=self._clock() + self._hold)
            return Reply(True, changed=tuple(result.changed))

    async def abort(self, tx: str) -> Reply:
        async with self._lock:
            held = self._live()
            if held is None or held.tx != tx:
                return Reply(True, detail="nothing held")
            self._held = None
            if not held.committed:
                log.info("cluster apply %s released before its commit", tx)
                return Reply(True, detail="released")
            try:
                if held.tenant_backup is not None:
                    tenant_files.restore(self._tenants_dir(), held.tenant_backup)
                if held.undo is not None:
                    await self._steps.revert(held.undo)
            except Exception as exc:
                log.error("cluster apply %s: rollback failed: %s", tx, exc)
                return Reply(False, f"rollback failed: {exc}")
            log.info("cluster apply %s rolled back", tx)
            return Reply(True, detail="rolled back")

    async def finish(self, tx: str) -> Reply:
        async with self._lock:
            held = self._live()
            if held is not None and held.tx == tx:
                self._held = None
            return Reply(True)

    def _tenants_dir(self) -> Path:
        directory = self._steps.current().tenants_dir
        if directory is None:  # the config loader requires it with [cluster]
            raise ConfigError("[bridge] tenants_dir is not set")
        return directory

