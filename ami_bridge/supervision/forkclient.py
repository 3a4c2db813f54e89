"""The bridge's side of the VTS fork server: start it, ask it for VTS processes.

Contract. `ForkServer` execs the fork server (ami_bridge.supervision.forkserver) on the
first `spawn`, confined by `confine.zygote_argv` when `confined`, else unconfined with the
bridge's environment minus anything named like a secret; its output goes to the bridge's
log under `ami_bridge.supervision.forkserver` the way a VTS's does (vts_output). `spawn`
hands it one VTS: the VTS's socket end and the write ends of two fresh pipes travel as
SCM_RIGHTS, the read ends are pumped into the log labelled with the VTS's name exactly
as for an exec'd VTS; it returns a `ForkedProcess` (pid in the bridge's PID namespace,
`wait()`, `send_signal`, `terminate`, `kill`: what the supervisor uses of an asyncio
subprocess) and the output task. Signals go through a pidfd the fork server sent, so a
recycled pid is never signalled; exit statuses come from the fork server, which is the
parent. If the fork server dies, every child it had is reported killed (they die with
it) and the next `spawn` starts a new one. `serves(spec, sandbox)` says which VTS it may
start: the shipped runtime (no `command`), no per-VTS paths, and confined exactly when it
is. A failure to start or to spawn raises `ForkServerError`; the supervisor then starts
that VTS by exec.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import struct
import sys
from collections.abc import Sequence

from ami_bridge.config import VtsConfig
from ami_bridge.supervision import confine
from ami_bridge.supervision.forkserver import (
    MAX_PACKET,
    WORKER_MODULE,
    Exited,
    Failed,
    Ready,
    Spawn,
    Spawned,
    WireError,
    decode_reply,
    encode,
)
from ami_bridge.supervision.vts_output import pump_output

log = logging.getLogger("ami_bridge.supervision.forkserver")

# Importing the runtime and uvloop took ~0.3 s here; bwrap adds ~60 ms. A generous bound
# for a loaded machine: past it, the supervisor falls back to exec.
START_TIMEOUT = 30.0
# Spawn requests in flight at once: each holds three descriptors in the socket's queue;
# the fork server handles them one after the other anyway.
MAX_IN_FLIGHT = 32
STOP_TIMEOUT = 5.0
_UCRED = struct.Struct("iII")
OUTPUT_NAME = "fork server"  # the label of its own output lines (no VTS name has a space)


class ForkServerError(RuntimeError):
    """The fork server could not start, or refused or failed one spawn; says why."""


class ForkedProcess:
    """One VTS child of the fork server, as the supervisor sees a process."""

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._pidfd = pidfd
        self._done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def wait(self) -> int:
        return await asyncio.shield(self._done)

    def send_signal(self, sig: int) -> None:
        if self._pidfd < 0:
            raise ProcessLookupError(f"VTS pid {self.pid} has exited")
        signal.pidfd_send_signal(self._pidfd, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def exited(self, returncode: int) -> None:
        if self.returncode is not None:
            return
        self.returncode = returncode
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        if not self._done.done():
            self._done.set_result(returncode)


class ForkServer:
    """The one fork server of a bridge (started on the first spawn)."""

    def __init__(self, *, confined: bool, modules: Sequence[str] = (),
                 python_paths: Sequence[str] = (), zones: Sequence[str] = (),
                 start_timeout: float = START_TIMEOUT) -> None:
        self.confined = confined
        # The tenants' timezones: the fork server's rehearsal loads them once for all.
        self.zones = tuple(zones)
        self.modules = tuple(modules)  # besides the runtime: tests name a hostile one
        self._paths = tuple(python_paths)
        self._start_timeout = start_timeout
        self._sock: socket.socket | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._capture: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[Ready] | None = None
        self._pending: dict[int, asyncio.Future[ForkedProcess]] = {}
        self._children: dict[int, ForkedProcess] = {}
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.pid: int | None = None  # the fork server's, once running (bench, tests)

    def serves(self, spec: VtsConfig, sandbox: confine.Sandbox | None) -> bool:
        settings = spec.confinement
        return (not spec.command and not settings.read_only_paths
                and not settings.writable_paths and (sandbox is not None) == self.confined)

    async def spawn(self, name: str, *, vts_fd: int, identity: confine.Identity | None,
                    module: str = WORKER_MODULE, log_level: str = "info",
                    ) -> tuple[ForkedProcess, asyncio.Task[None]]:
        async with self._slots:
            sock = await self._started()
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            ident = next(self._ids)
            future: asyncio.Future[ForkedProcess] = asyncio.get_running_loop().create_future()
            self._pending[ident] = future
            request = Spawn(id=ident, name=name, module=module, log_level=log_level,
                            uid=identity.uid if identity else None,
                            gid=identity.gid if identity else None)
            try:
                sock.sendmsg([encode(request)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                  struct.pack("3i", vts_fd, out_w, err_w))])
                proc = await future
            except BaseException:
                os.close(out_r)
                os.close(err_r)
                self._pending.pop(ident, None)
                raise
            finally:
                os.close(out_w)
                os.close(err_w)
        return proc, await _capture(name, out_r, err_r)

    async def _started(self) -> socket.socket:
        async with self._lock:
            if self._sock is None:
                try:
                    await self._start()
                except (OSError, TimeoutError, WireError, ForkServerError) as exc:
                    await self.stop()
                    raise ForkServerError(f"the fork server did not start: {exc}") from exc
            assert self._sock is not None
            return self._sock

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        command = [sys.executable, "-m", "ami_bridge.supervision.forkserver",
                   "--fd", str(child.fileno()), *(a for m in self.modules for a in ("--module", m)),
                   *(a for z in self.zones for a in ("--zone", z))]
        try:
            if self.confined:
                parent.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
                rt = confine.runtime()
                rt = confine.Runtime(read_only=(*rt.read_only, *self._paths),
                                     pythonpath=":".join((rt.pythonpath, *self._paths)))
                argv = confine.zygote_argv([*command, "--confined"], rt=rt, env={})
                env = confine.environment_without_secrets({})
            else:
                argv = [*command, "--parent", str(os.getpid())]
                paths = os.pathsep.join(self._paths)
                env = confine.environment_without_secrets({"PYTHONUNBUFFERED": "1"} | (
                    {"PYTHONPATH": os.pathsep.join(filter(None, (paths, os.environ.get(
                        "PYTHONPATH", ""))))} if paths else {}))
            self._proc = await asyncio.create_subprocess_exec(
                *argv, pass_fds=(child.fileno(),), close_fds=True, env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._capture = asyncio.create_task(_pump_both(OUTPUT_NAME, self._proc.stdout,
                                                       self._proc.stderr, logger=log))
        parent.setblocking(False)
        self._sock = parent
        self._ready = loop.create_future()
        loop.add_reader(parent.fileno(), self._readable)
        ready = await asyncio.wait_for(asyncio.shield(self._ready), self._start_timeout)
        self.pid = self._proc.pid
        log.info("VTS fork server started (pid %d, %s; modules %s)", self._proc.pid,
                 "confined" if self.confined else "UNCONFINED", ", ".join(ready.modules))

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        while True:
            try:
                data, ancdata, _, _ = sock.recvmsg(
                    MAX_PACKET, socket.CMSG_SPACE(4) + socket.CMSG_SPACE(_UCRED.size))
            except BlockingIOError:
                return
            except OSError as exc:
                log.error("VTS fork server: socket broke: %s", exc)
                data, ancdata = b"", []
            if not data:
                self._gone("it exited")
                return
            fds: list[int] = []
            pid: int | None = None
            for level, kind, raw in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds += struct.unpack(f"{len(raw) // 4}i", raw[:len(raw) - len(raw) % 4])
                elif level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = _UCRED.unpack(raw[:_UCRED.size])[0]
            try:
                self._on_reply(decode_reply(data), fds, pid)
            except WireError as exc:
                for fd in fds:
                    os.close(fd)
                log.error("VTS fork server: %s", exc)

    def _on_reply(self, reply: Ready | Spawned | Failed | Exited, fds: list[int],
                  cred_pid: int | None) -> None:
        if isinstance(reply, Ready):
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(reply)
            return
        if isinstance(reply, Exited):
            child = self._children.pop(reply.id, None)
            if child is not None:
                child.exited(reply.returncode)
            return
        future = self._pending.pop(reply.id, None)
        if isinstance(reply, Failed):
            if future is not None and not future.done():
                future.set_exception(ForkServerError(reply.error))
            else:
                log.error("VTS fork server: %s", reply.error)
            return
        if len(fds) != 1:
            raise WireError(f"spawned {reply.id}: {len(fds)} descriptors, expected a pidfd")
        # Confined, its pids are of its own PID namespace: the kernel's translation of
        # the child's SCM_CREDENTIALS is the pid as this bridge sees it.
        pid = cred_pid if self.confined and cred_pid else reply.pid
        child = ForkedProcess(pid, fds[0])
        if future is None or future.done():  # the spawn was given up: no one to own it
            child.kill()
            child.exited(-signal.SIGKILL)
            return
        self._children[reply.id] = child
        future.set_result(child)

    def _gone(self, why: str) -> None:
        """The fork server is gone: its children died with it (PID namespace or death
        signal); the next spawn starts a new one."""
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
        error = ForkServerError(f"the fork server ended ({why})")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)
        for child in self._children.values():
            with contextlib.suppress(ProcessLookupError, OSError):
                child.kill()
            child.exited(-signal.SIGKILL)
        self._children.clear()

    async def stop(self) -> None:
        """Close its socket (it kills what children are left and exits); reap it."""
        self._gone("stopped")
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._capture is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._capture, STOP_TIMEOUT)
            self._capture = None
        self.pid = None


async def _reader(fd: int) -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                 os.fdopen(fd, "rb", buffering=0))
    return reader


async def _capture(name: str, out_fd: int, err_fd: int) -> asyncio.Task[None]:
    """A VTS's stdout and stderr into the log, as vts_output.start_captured does."""
    try:
        stdout = await _reader(out_fd)
    except BaseException:
        os.close(err_fd)
        raise
    stderr = await _reader(err_fd)
    return asyncio.create_task(_pump_both(name, stdout, stderr), name=f"vts-{name}-output")


async def _pump_both(name: str, stdout: asyncio.StreamReader, stderr: asyncio.StreamReader,
                     *, logger: logging.Logger | None = None) -> None:
    await asyncio.gather(pump_output(stdout, name, level=logging.INFO, logger=logger),
                         pump_output(stderr, name, level=logging.INFO, logger=logger))
