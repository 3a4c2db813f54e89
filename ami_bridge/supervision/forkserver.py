"""The VTS fork server (zygote): `python -m ami_bridge.supervision.forkserver`.

Contract. The bridge execs this program (never forks it from itself: the bridge's memory
holds secrets), confined by `confine.zygote_argv` or, with the bridge's confine = "off",
unconfined. It imports the shipped VTS runtime (and uvloop, and any module named with
--module), warms it (`warm`: a hello decoded, protocols parsed in the tenants' zones),
freezes what it allocated out of the garbage collector's reach (gc.freeze), and then
forks one child per spawn request, the requests queued at once forked back to back:
1,000 VTS processes share one copy of the runtime, copy-on-write
(bench/README.md: ~3 MB per forked VTS, ~15 MB per exec'd one). It never
creates an event loop nor a thread, so a fork copies no loop state; the child confines
itself (ami_bridge.supervision.forkchild), makes its own loop and runs the requested
module as `python -m MODULE --vts NAME --log-level LEVEL` would (the shipped runtime
through its `run`, sparing each child an argparse parser; any other through
`main(argv)`). Its one peer is the bridge, over the
SOCK_SEQPACKET socket whose descriptor is --fd: one JSON object per packet (`Spawn` in,
with the VTS socket and the stdout/stderr pipe write ends as SCM_RIGHTS; `Ready`,
`Spawned` with a pidfd of the child, `Failed` and `Exited` out). Pids in `Spawned` are of
the fork server's PID namespace; when confined it also sends SCM_CREDENTIALS naming the
child, which the kernel translates into the bridge's namespace. It ends when the bridge
closes the socket (children SIGKILLed first), and dies with the bridge (bubblewrap's
--die-with-parent, or PR_SET_PDEATHSIG when unconfined). The wire format (`encode`,
`decode_request`, `decode_reply`) is pure and shared with the bridge's side
(ami_bridge.supervision.forkclient).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import os
import select
import signal
import socket
import struct
import sys
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ami_bridge.supervision import forkchild
from ami_bridge.supervision.confine import Identity

# The module of the shipped runtime; the bridge never names another.
WORKER_MODULE = "ami_bridge.tenants.worker"
# One request or reply: a few hundred bytes of JSON; the bound refuses garbage early.
MAX_PACKET = 64 * 1024
# Descriptors of one Spawn: the VTS socket, stdout's and stderr's write ends.
SPAWN_FDS = 3
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid


class WireError(ValueError):
    """A packet that is not a message of this protocol; says which and why."""


@dataclass(frozen=True)
class Spawn:
    """Bridge -> fork server: start VTS `name` running `module` (SPAWN_FDS descriptors)."""

    id: int
    name: str
    module: str
    log_level: str
    uid: int | None  # None (with gid): unconfined
    gid: int | None


@dataclass(frozen=True)
class Ready:
    """Fork server -> bridge, once: imports done, spawn requests welcome."""

    pid: int
    modules: tuple[str, ...]


@dataclass(frozen=True)
class Spawned:
    """The child runs; `pid` in the fork server's namespace; a pidfd comes along."""

    id: int
    pid: int


@dataclass(frozen=True)
class Failed:
    id: int
    error: str


@dataclass(frozen=True)
class Exited:
    """The child of `id` ended: `returncode` as asyncio spells it (-N: killed by signal N)."""

    id: int
    returncode: int


Reply = Ready | Spawned | Failed | Exited
_KINDS: dict[str, type[Any]] = {"spawn": Spawn, "ready": Ready, "spawned": Spawned,
                                "failed": Failed, "exited": Exited}
_NAMES = {cls: kind for kind, cls in _KINDS.items()}


def encode(message: Spawn | Reply) -> bytes:
    body = {"type": _NAMES[type(message)], **asdict(message)}
    data = json.dumps(body, separators=(",", ":")).encode()
    if len(data) > MAX_PACKET:
        raise WireError(f"fork server message of {len(data)} bytes exceeds {MAX_PACKET}")
    return data


def _decode(data: bytes) -> Spawn | Reply:
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"fork server packet is not JSON ({exc}): {data[:80]!r}") from None
    if not isinstance(body, dict) or body.get("type") not in _KINDS:
        raise WireError(f"fork server packet has no known type: {data[:80]!r}")
    cls = _KINDS[body.pop("type")]
    try:
        message = cls(**body)
    except TypeError as exc:
        raise WireError(f"fork server {_NAMES[cls]} packet: {exc}: {data[:80]!r}") from None
    if isinstance(message, Ready):
        message = Ready(pid=message.pid, modules=tuple(message.modules))
    _check_fields(message, data)
    return message  # type: ignore[no-any-return]


def _check_fields(message: Spawn | Reply, data: bytes) -> None:
    ints = [v for k, v in asdict(message).items() if k in ("id", "pid", "returncode")]
    if isinstance(message, Spawn):
        ints += [v for v in (message.uid, message.gid) if v is not None]
        if (message.uid is None) != (message.gid is None):
            raise WireError(f"fork server spawn: uid and gid go together: {data[:80]!r}")
        if message.log_level not in LOG_LEVELS or not message.name or not message.module:
            raise WireError(f"fork server spawn: bad name, module or log level: {data[:80]!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints):
        raise WireError(f"fork server {_NAMES[type(message)]}: numbers expected: {data[:80]!r}")


def decode_request(data: bytes) -> Spawn:
    message = _decode(data)
    if not isinstance(message, Spawn):
        raise WireError(f"fork server: expected a spawn request, got {data[:80]!r}")
    return message


def decode_reply(data: bytes) -> Reply:
    message = _decode(data)
    if isinstance(message, Spawn):
        raise WireError(f"fork server: a spawn request where a reply was due: {data[:80]!r}")
    return message


# -- the fork server process --------------------------------------------------------

class Server:
    """The zygote's state: its socket, its children (pid -> spawn id)."""

    def __init__(self, sock: socket.socket, *, modules: Sequence[str], confined: bool,
                 last_cap: int) -> None:
        self.sock = sock
        self.last_cap = last_cap
        self.modules = tuple(modules)
        self.confined = confined
        self.children: dict[int, int] = {}
        # The fork server's own PID namespace: after each child is forked into a new one,
        # the namespace for later children is set back to this (unshare(CLONE_NEWPID)
        # refuses while another one is pending).
        self._pidns = os.open("/proc/self/ns/pid", os.O_RDONLY) if confined else -1
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def serve(self) -> int:
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # the wakeup byte is the news
        self._send(Ready(pid=os.getpid(), modules=self.modules))
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            for fd, _ in poller.poll():
                if fd == self._wake_r:
                    while True:
                        try:
                            os.read(self._wake_r, 512)
                        except BlockingIOError:
                            break
                elif not self._on_request():
                    self._shutdown()
                    return 0
            self._reap()

    def _on_request(self) -> bool:
        """Every packet the bridge has queued, spawned as one batch; False at EOF.

        One batch, forked back to back: whatever the server writes between two forks
        (reference counts of the objects decoding a request touches, at least) leaves
        each child before it with a copy of those pages that no other process shares.
        Decoding a whole batch first and then forking in a tight loop made an idle child
        ~480 kB smaller (bench/README.md, "Notes: the VTS fork server")."""
        batch: list[tuple[Spawn, list[int]]] = []
        flags = 0
        while True:
            try:
                data, ancdata, _, _ = self.sock.recvmsg(
                    MAX_PACKET, socket.CMSG_SPACE(4 * SPAWN_FDS), flags)
            except BlockingIOError:
                break
            flags = socket.MSG_DONTWAIT  # after the first: only what is already queued
            fds: list[int] = []
            for level, kind, raw in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds += struct.unpack(f"{len(raw) // 4}i", raw[:len(raw) - len(raw) % 4])
            if not data and not fds:
                self._spawn_batch(batch)
                return False
            request = self._checked(data, fds)
            if request is not None:
                batch.append((request, fds))
        self._spawn_batch(batch)
        return True

    def _checked(self, data: bytes, fds: list[int]) -> Spawn | None:
        try:
            request = decode_request(data)
            if len(fds) != SPAWN_FDS:
                raise WireError(f"spawn {request.name}: {len(fds)} descriptors, "
                                f"expected {SPAWN_FDS}")
            if request.module not in self.modules:
                raise WireError(f"spawn {request.name}: module {request.module!r} is not "
                                f"one this fork server loaded ({', '.join(self.modules)})")
            if (request.uid is None) == self.confined:
                raise WireError(f"spawn {request.name}: uid and gid are required by a confined "
                                "fork server and refused by an unconfined one")
        except WireError as exc:
            for fd in fds:
                os.close(fd)
            self._send(Failed(id=_id_of(data), error=str(exc)))
            return None
        return request

    def _spawn_batch(self, batch: list[tuple[Spawn, list[int]]]) -> None:
        plans = [(request, fds, self._plan(request, fds)) for request, fds in batch]
        sys.stdout.flush()
        sys.stderr.flush()
        forked = [(request, fds, self._fork(plan, request)) for request, fds, plan in plans]
        for request, fds, result in forked:
            for fd in fds:
                os.close(fd)
            if isinstance(result, OSError):
                self._send(Failed(id=request.id, error=f"fork for {request.name}: {result}"))
            else:
                self._spawned(request, result)

    def _plan(self, request: Spawn, fds: list[int]) -> forkchild.ChildPlan:
        identity = (Identity(uid=request.uid, gid=request.gid, derived=False)
                    if request.uid is not None and request.gid is not None else None)
        return forkchild.ChildPlan(
            name=request.name, identity=identity,
            env={"AMI_BRIDGE_VTS_FD": str(forkchild.SOCKET_FD),
                 "AMI_BRIDGE_VTS_NAME": request.name},
            socket_fd=fds[0], stdout_fd=fds[1], stderr_fd=fds[2], server_pid=os.getpid(),
            last_cap=self.last_cap)

    def _fork(self, plan: forkchild.ChildPlan, request: Spawn) -> int | OSError:
        """The child's pid (the child itself never returns from here), or the error."""
        try:
            if self.confined:  # the next child is PID 1 of a namespace of its own
                forkchild.unshare(forkchild.CLONE_NEWPID)
            pid = os.fork()
        except OSError as exc:
            pid, error = -1, exc
        if pid != 0 and self.confined:  # the parent: later children start the same way
            forkchild.setns(self._pidns, forkchild.CLONE_NEWPID)
        if pid == 0:
            _child(plan, request)  # never returns
        return pid if pid > 0 else error

    def _spawned(self, request: Spawn, pid: int) -> None:
        self.children[pid] = request.id
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as exc:  # only if the kernel lacks pidfds (< 5.3)
            self._send(Failed(id=request.id, error=f"pidfd_open: {exc}"))
            return
        try:
            self._send(Spawned(id=request.id, pid=pid), fds=[pidfd],
                       creds=pid if self.confined else None)
        finally:
            os.close(pidfd)

    def _send(self, message: Reply, *, fds: Sequence[int] = (), creds: int | None = None) -> None:
        ancdata = []
        if fds:
            ancdata.append((socket.SOL_SOCKET, socket.SCM_RIGHTS,
                            struct.pack(f"{len(fds)}i", *fds)))
        if creds is not None:  # CAP_SYS_ADMIN lets it name the child; the kernel translates
            ancdata.append((socket.SOL_SOCKET, socket.SCM_CREDENTIALS,
                            _UCRED.pack(creds, os.getuid(), os.getgid())))
        # BrokenPipeError: the bridge is gone; the next recvmsg sees EOF
        with contextlib.suppress(BrokenPipeError):
            self.sock.sendmsg([encode(message)], ancdata)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            ident = self.children.pop(pid, None)
            if ident is not None:
                self._send(Exited(id=ident, returncode=os.waitstatus_to_exitcode(status)))

    def _shutdown(self) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.children.clear()


def _id_of(data: bytes) -> int:
    try:
        value = json.loads(data).get("id", -1)
    except (ValueError, AttributeError):
        return -1
    return value if isinstance(value, int) else -1


def _child(plan: forkchild.ChildPlan, request: Spawn) -> None:
    """In the forked child: confine, run the module's main, exit; never returns."""
    code = 1
    try:
        forkchild.become_vts(plan)
        gc.enable()
        argv = ["--vts", request.name, "--log-level", request.log_level]
        sys.argv = [request.module, *argv]
        module = sys.modules[request.module]
        if request.module == WORKER_MODULE:
            # What its main() does once argparse is done; argparse's parser alone dirtied
            # ~600 kB of the child's pages (bench/README.md, attempt 2).
            name = request.name
            code = module.run(name, request.log_level,
                              lambda done: module.Worker(name=name, done=done))
        else:
            code = module.main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code if isinstance(code, int) else 1)


# The warm-up's tenant: one rule of each kind the runtime parses, so that their parsing
# code runs (and Python 3.11 specialises it) once here (bench/README.md).
_WARM_RULES: tuple[dict[str, Any], ...] = (
    {"name": "anon", "ani_withheld": True, "targets": ["operator"]},
    {"name": "holiday", "holiday": True, "targets": ["operator"]},
    {"name": "vip", "ani_prefix": ["+4930555"], "targets": ["1001"]},
    {"name": "night", "hours": "20:00-07:00", "targets": ["operator", "1002"],
     "strategy": "round_robin"},
    {"name": "weekend", "days": ["sat", "sun"], "targets": ["1002"]},
    {"name": "work", "days": ["mon", "tue", "wed", "thu", "fri"], "hours": "07:00-20:00",
     "dnis_prefix": "1", "targets": ["1001", "1002"], "strategy": "round_robin"},
    {"name": "rest", "targets": ["1001"]},
)


def warm(zones: Sequence[str]) -> str | None:
    """What every child does first with the bridge's hello, done once here: decode a hello
    and parse a routing protocol in each of the tenants' timezones (`zones`, from the
    bridge). The zones loaded, the caches of re and json and the specialised bytecode
    are then shared by every child instead of being built again in each (about 300 kB
    per VTS, measured). No event loop: none may exist when the server forks. None, or
    why it failed (forking works without it)."""
    from ami_bridge.tenants import messages as m
    from ami_bridge.tenants import routing
    from ami_bridge.tenants.protocol import PROTOCOL_VERSION

    try:
        for zone in dict.fromkeys(("UTC", *zones)):
            hello = m.Hello(v=PROTOCOL_VERSION, vts="warm", tenants={"t": m.TenantRouting(
                timezone=zone, holidays=("2026-12-25",), targets=("1001", "1002", "operator"),
                rules=_WARM_RULES)})
            parsed = m.parse(json.loads(json.dumps(m.to_wire(hello))))
            assert isinstance(parsed, m.Hello)
            for tenant in parsed.tenants.values():
                routing.parse_protocol(tenant.rules, timezone=tenant.timezone,
                                       holidays=tenant.holidays)
    except Exception as exc:  # reported; forking works without it
        return f"{type(exc).__name__}: {exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ami_bridge.supervision.forkserver",
        description="ami-bridge's VTS fork server (started by the bridge, never by hand).")
    parser.add_argument("--fd", type=int, required=True, help="the bridge's SEQPACKET socket")
    parser.add_argument("--confined", action="store_true",
                        help="runs inside bubblewrap: children get their own namespaces and uid")
    parser.add_argument("--parent", type=int, default=0,
                        help="the bridge's pid (unconfined: die with it)")
    parser.add_argument("--zone", action="append", default=[],
                        help="a timezone the tenants use, loaded once here (see warm)")
    parser.add_argument("--module", action="append", default=[],
                        help="a module with main(argv) children may run (besides the runtime)")
    args = parser.parse_args(argv)
    gc.disable()  # until the freeze: no collection moves what the children will share
    if not args.confined:
        forkchild.prctl(forkchild.PR_SET_PDEATHSIG, signal.SIGKILL)
        if args.parent and os.getppid() != args.parent:
            return 1  # the bridge died before the death signal was armed
    modules = [WORKER_MODULE, *(m for m in args.module if m != WORKER_MODULE)]
    for name in modules:
        module = importlib.import_module(name)
        if not callable(getattr(module, "main", None)):
            print(f"fork server: module {name} has no main(argv)", file=sys.stderr)
            return 2
    importlib.import_module("ami_bridge.eventloop")
    # What each child would import on its way to the hello (measured: uvloop and, for
    # the loop's default executor, concurrent.futures.thread): imported once here.
    for name in ("uvloop", "concurrent.futures.thread"):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    failed = warm(args.zone)
    if failed is not None:
        print(f"fork server: warming the runtime failed ({failed}); forking without it",
              file=sys.stderr)
    last_cap = forkchild.warm_up()
    gc.collect()
    gc.freeze()
    gc.enable()  # for what the server itself allocates from now on (the frozen stay put)
    sock = socket.socket(fileno=args.fd)
    return Server(sock, modules=modules, confined=args.confined, last_cap=last_cap).serve()


if __name__ == "__main__":
    sys.exit(main())
