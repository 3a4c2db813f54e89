"""Supervision of virtual transaction server processes: desired state against running.

`Supervisor.reconcile(desired)` makes the running VTS processes follow a map of
`VtsConfig` specs (at start-up and on every reload): the pure `reconcile` decides which
to stop, restart, start or keep, so an edited `command`, `grace_period`, tenant list or
restart knob restarts that VTS and an unchanged one keeps its process. Each
`VtsProcess` keeps one VTS OS process alive: it makes a connected Unix socket pair,
starts the VTS with one end (its number in AMI_BRIDGE_VTS_FD), hands the other end to
the bridge (`on_connect`), waits for the process to exit, asks the pure
`RestartPolicy` how long to wait, and starts it again. Stopping is SIGTERM, the spec's
grace period, then SIGKILL. The VTS holds no Asterisk credentials: its environment is
the bridge's minus anything named like a secret, plus the two AMI_BRIDGE_VTS_* variables.
How a process starts is the spawner seam: with a `ForkServer` (`[bridge] vts_spawn =
"fork"`), a VTS it `serves` (the shipped runtime, no per-VTS paths) is forked from it,
confined the same way (ami_bridge.supervision.forkclient); any other VTS, and any VTS
when the fork server fails, is exec'd (bubblewrap + setpriv, or unconfined).
Nothing here is imported by the VTS runtime (a test checks it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Protocol

from ami_bridge.config import VtsConfig
from ami_bridge.supervision.confine import (
    Sandbox,
    confined_argv,
    environment_without_secrets,
    unconfined_warning,
)
from ami_bridge.supervision.forkclient import ForkServer, ForkServerError
from ami_bridge.supervision.reconcile import Plan, reconcile
from ami_bridge.supervision.restart_policy import RestartPolicy
from ami_bridge.supervision.vts_output import start_captured
from ami_bridge.tenants.protocol import FD_ENV

log = logging.getLogger(__name__)

NAME_ENV = "AMI_BRIDGE_VTS_NAME"

OnConnect = Callable[[str, socket.socket], None]
Clock = Callable[[], float]


class ChildProcess(Protocol):
    """What the supervisor uses of a VTS process: an asyncio subprocess (exec) or a
    `ForkedProcess` (fork server)."""

    @property
    def pid(self) -> int: ...
    @property
    def returncode(self) -> int | None: ...
    async def wait(self) -> int: ...
    def send_signal(self, sig: int) -> None: ...
    def kill(self) -> None: ...


def default_command(name: str) -> list[str]:
    return [sys.executable, "-m", "ami_bridge.tenants.worker", "--vts", name]


def _child_env(fd: int, name: str) -> dict[str, str]:
    return environment_without_secrets({FD_ENV: str(fd), NAME_ENV: name})


def changed(old: VtsConfig, new: VtsConfig) -> list[str]:
    """The spec fields that differ, for the log line that explains a restart."""
    return [f.name for f in fields(old) if getattr(old, f.name) != getattr(new, f.name)]


class Supervisor:
    """The running VTS processes, one per name, reconciled against desired specs."""

    def __init__(self, *, on_connect: OnConnect, clock: Clock = time.monotonic,
                 forkserver: ForkServer | None = None) -> None:
        self._on_connect = on_connect
        self._clock = clock
        self.forkserver = forkserver  # None: every VTS is exec'd ([bridge] vts_spawn)
        self.processes: dict[str, VtsProcess] = {}
        # Reloads may overlap (SIGHUP while `ctl reload` runs): one reconcile at a time,
        # else both could start a process for the same name.
        self._lock = asyncio.Lock()

    async def reconcile(self, desired: Mapping[str, VtsConfig],
                        sandboxes: Mapping[str, Sandbox | None] | None = None) -> Plan:
        """Make the running processes follow `desired`. `sandboxes`: how each VTS to start
        is confined (`confine.plan_for_host`; None or a missing name: unconfined)."""
        sandboxes = sandboxes or {}
        async with self._lock:
            running = {name: p.spec for name, p in self.processes.items()}
            plan = reconcile(desired, running)
            for name in plan.stop:
                log.info("VTS %s: no longer configured; stopping it", name)
            for name in plan.restart:
                log.info("VTS %s: %s changed; restarting it", name,
                         ", ".join(changed(self.processes[name].spec, desired[name])))
            stopping = [self.processes.pop(name) for name in plan.to_stop]
            await asyncio.gather(*(p.stop() for p in stopping))
            for name in plan.to_start:
                sandbox = sandboxes.get(name)
                forks = self.forkserver is not None and self.forkserver.serves(desired[name],
                                                                               sandbox)
                process = VtsProcess(spec=desired[name], on_connect=self._on_connect,
                                     clock=self._clock, sandbox=sandbox,
                                     forkserver=self.forkserver if forks else None)
                self.processes[name] = process
                process.start()
            return plan

    async def stop(self) -> None:
        async with self._lock:
            stopping = list(self.processes.values())
            self.processes.clear()
            await asyncio.gather(*(p.stop() for p in stopping))
            if self.forkserver is not None:
                await self.forkserver.stop()


class VtsProcess:
    """One VTS process kept alive per its spec; `stop()` ends it for good."""

    def __init__(self, *, spec: VtsConfig, on_connect: OnConnect,
                 clock: Clock = time.monotonic, sandbox: Sandbox | None = None,
                 forkserver: ForkServer | None = None) -> None:
        self.spec = spec
        self.sandbox = sandbox
        self._capture: asyncio.Task[None] | None = None
        self.name = spec.name
        self.command = list(spec.command) or default_command(spec.name)
        self.grace_period = spec.grace_period
        self.policy = RestartPolicy(spec.restart)
        self._on_connect = on_connect
        self._clock = clock
        self._proc: ChildProcess | None = None
        self.forkserver = forkserver  # set: forked from it (the caller checked `serves`)
        self._wanted = False
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.starts = 0
        self.flapping = False
        self.started_at: float | None = None  # on the supervisor's clock, for `status`

    @property
    def restarts(self) -> int:
        """Starts after the first (metrics and `status`)."""
        return max(0, self.starts - 1)

    def uptime(self) -> float | None:
        """Seconds the current process has run (None when none runs)."""
        if self.pid is None or self.started_at is None:
            return None
        return self._clock() - self.started_at

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    def start(self) -> None:
        self._wanted = True
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"vts-{self.name}")

    async def stop(self) -> None:
        """SIGTERM, the grace period, SIGKILL; returns once the process is reaped."""
        self._wanted = False
        self._wake.set()
        await self._terminate()
        if self._task is not None:
            # Awaited, not cancelled: a cancel landing inside create_subprocess_exec could
            # leave a child that nobody waits for. The loop sees _wanted and ends itself
            # (a process spawned meanwhile is terminated by _spawn_and_wait).
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._capture is not None:
            self._capture.cancel()
            self._capture = None

    async def _run(self) -> None:
        while self._wanted:
            try:
                await self._spawn_and_wait()
            except OSError as exc:
                log.error("VTS %s: cannot start %s: %s", self.name, self.command[0], exc)
            if not self._wanted:
                return
            decision = self.policy.exited(self._clock())
            self.flapping = decision.flapping
            if decision.flapping:
                log.error("VTS %s is flapping (%d quick exits); next start in %.1f s",
                          self.name, decision.attempt, decision.delay)
            else:
                log.warning("VTS %s: restart in %.2f s (attempt %d)", self.name,
                            decision.delay, decision.attempt)
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), decision.delay)

    async def _spawn_and_wait(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.policy.started(self._clock())
            self.starts += 1
            if self.sandbox is None:
                log.warning("%s", unconfined_warning(self.name))
            if self._capture is not None:  # the last run's output reader, if still open
                self._capture.cancel()
            self._proc, self._capture = await self._start_process(child.fileno())
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        if not self._wanted:  # stop() came while the process was being spawned
            parent.close()
            await self._terminate()
            return
        log.info("VTS %s started (pid %d)", self.name, self._proc.pid)
        self.started_at = self._clock()
        self._on_connect(self.name, parent)
        code = await self._proc.wait()
        if self._wanted:
            how = f"signal {-code}" if code < 0 else f"status {code}"
            log.error("VTS %s (pid %d) exited with %s", self.name, self._proc.pid, how)

    async def _start_process(self, fd: int) -> tuple[ChildProcess, asyncio.Task[None]]:
        if self.forkserver is not None:
            identity = self.sandbox.identity if self.sandbox is not None else None
            try:
                return await self.forkserver.spawn(self.name, vts_fd=fd, identity=identity)
            except ForkServerError as exc:
                log.error("VTS %s: %s; starting it by exec instead", self.name, exc)
        env = _child_env(fd, self.name)
        if self.sandbox is None:
            argv = self.command
        else:
            argv = confined_argv(self.command, sandbox=self.sandbox,
                                 env={FD_ENV: env[FD_ENV], NAME_ENV: self.name})
        return await start_captured(argv, name=self.name, pass_fd=fd, env=env)

    async def _terminate(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.grace_period)
        except TimeoutError:
            log.warning("VTS %s did not stop in %.1f s; SIGKILL", self.name, self.grace_period)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
