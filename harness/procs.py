"""Child processes of the harness that die with it, and the reaping of those that did not.

Contract. :func:`spawn` starts every process the harness runs (Asterisk, SIPp, the bridge)
in a session of its own, tagged in its environment with :data:`OWNER_ENV` = the spawning
process's identity (pid and start time, so a reused pid never matches), and with
``PR_SET_PDEATHSIG`` = SIGKILL: however the harness process ends, SIGKILL included, the
kernel kills its direct children. Their own children (a bridge's VTS processes) inherit
the tag and the process group. :func:`reap_orphans` kills every tagged process whose owner
is gone; the sandbox lock calls it on acquisition, so whatever escaped the first net (a
VTS that ignored its bridge's death, a process started in the instant the owner died) is
cleaned up before the next run binds its ports. Also small /proc readers the rest of the
harness shares. Linux only, like the sandbox.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# Not AMI_...: the bridge's supervisor drops variables whose names contain "AMI_",
# "SECRET", "TOKEN" or "PASSWORD" from a VTS's environment, and the VTS must keep the tag.
OWNER_ENV = "AB_HARNESS_OWNER"
# <linux/prctl.h>
PR_SET_PDEATHSIG = 1
# Lines of a log quoted in an error message.
LOG_TAIL_LINES = 40
# How long reaping waits for SIGKILLed processes to disappear from /proc.
REAP_WAIT_S = 5.0


class ProcessError(RuntimeError):
    """A harness child could not be started or stopped as needed."""


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (field 3 onwards), or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (stat field 22), None if gone."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None else None


def alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def parent_pid(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields is not None else None


def owner_token(pid: int | None = None) -> str:
    """`pid.starttime` of `pid` (default: this process), the value of OWNER_ENV."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}.{start_time(pid)}"


def _owner_alive(token: str) -> bool:
    pid, _, started = token.partition(".")
    if not pid.isdigit():
        return True  # not ours to judge: leave it alone
    return alive(int(pid)) and str(start_time(int(pid))) == started


def environ(pid: int) -> dict[str, str]:
    """The environment `pid` was started with ({} if gone or unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs}


def all_pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def tagged(owner: str) -> list[int]:
    """Live processes whose environment carries OWNER_ENV=`owner`."""
    return [pid for pid in all_pids() if environ(pid).get(OWNER_ENV) == owner and alive(pid)]


def reap_orphans() -> list[int]:
    """SIGKILL every tagged process whose owner is gone; return their pids once gone."""
    me = os.getpid()
    orphans = [pid for pid in all_pids() if pid != me
               and (owner := environ(pid).get(OWNER_ENV)) is not None
               and not _owner_alive(owner) and alive(pid)]
    terminate(orphans, grace_s=0.0)
    return orphans


def terminate(pids: Sequence[int], grace_s: float) -> None:
    """SIGTERM (skipped when `grace_s` is 0), then SIGKILL what is left; wait until gone."""
    left = list(pids)
    steps = [(signal.SIGTERM, grace_s)] if grace_s > 0 else []
    for sig, wait_s in [*steps, (signal.SIGKILL, REAP_WAIT_S)]:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while left and time.monotonic() < deadline:
            left = [pid for pid in left if alive(pid)]
            if left:
                time.sleep(0.05)
        if not left:
            return
    raise ProcessError(f"processes {left} survived SIGKILL")


def pids_in_root(root: Path, needle: str) -> list[int]:
    """Live processes chrooted into `root` whose command line contains `needle`."""
    real_root = os.path.realpath(root)
    found = []
    for pid in all_pids():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            proc_root = os.readlink(f"/proc/{pid}/root")
        except OSError:
            continue  # gone, or a kernel thread
        if needle in cmdline and proc_root == real_root and alive(pid):
            found.append(pid)
    return found


def udp_bound(port: int, host: str = "127.0.0.1") -> bool:
    """Whether some socket is bound to UDP `host`:`port` (read from /proc/net/udp, whose
    addresses are the IPv4 bytes in host order: 127.0.0.2 is 0200007F)."""
    wanted = f"{bytes(reversed(socket.inet_aton(host))).hex().upper()}:{port:04X}"
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(line.split()[1] == wanted for line in lines)


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<no log at {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


# -- spawning ------------------------------------------------------------------------------


class _Spawner:
    """The one thread that forks the harness's children, for as long as the process lives.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, not the process
    (prctl(2)). Tests start Asterisk from worker threads (`asyncio.to_thread`) that end
    with their event loop, which would kill a module's Asterisk mid-module; forking from
    a thread that ends only with the process ties each child's life to the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = -1
        self._executor: ThreadPoolExecutor | None = None

    def run(self, fn: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._executor is None or self._pid != os.getpid():  # new, or forked since
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="harness-spawner")
                self._pid = os.getpid()
            executor = self._executor
        return executor.submit(fn).result()


_SPAWNER = _Spawner()  # process-wide by nature: see the class docstring
_LIBC = ctypes.CDLL(None, use_errno=True)


def _child_setup(parent: int, root: str | None, cwd: str | None) -> Callable[[], None]:
    """What the child runs between fork and exec (only async-signal-safe-ish calls)."""
    prctl = _LIBC.prctl

    def setup() -> None:
        if prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the harness died before prctl took effect
            os._exit(1)
        if root is not None:
            os.chroot(root)
            os.chdir(cwd or "/")

    return setup


def spawn(argv: Sequence[str], *, root: Path | None = None, cwd: str | Path | None = None,
          env: Mapping[str, str] | None = None, **popen: Any) -> subprocess.Popen[bytes]:
    """Start `argv` as a harness child: own session, OWNER_ENV tag, dies with the harness.

    With `root`, the child is chrooted there and `cwd` is a path inside the root (the
    binary in `argv[0]` too); without it, `cwd` is a host path. `popen` goes to Popen
    (stdout, stderr, stdin)."""
    child_env = dict(os.environ if env is None else env)
    child_env[OWNER_ENV] = owner_token()
    setup = _child_setup(os.getpid(), None if root is None else str(root),
                         None if cwd is None or root is None else str(cwd))

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(list(argv), env=child_env, start_new_session=True,
                                preexec_fn=setup,
                                cwd=None if root is not None else cwd, **popen)

    return _SPAWNER.run(start)
