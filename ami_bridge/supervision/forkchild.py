"""What a child of the fork server does between fork() and the VTS code: its confinement.

Contract. `become_vts(plan)` runs in a freshly forked child of the fork server
(ami_bridge.supervision.forkserver) and leaves it as confined as a VTS that
`confine.confined_argv` starts through bubblewrap and setpriv, or returns only by
raising. Confined (`plan.identity` set; the fork server then runs inside bubblewrap with
CAP_SYS_ADMIN, CAP_SETUID, CAP_SETGID and CAP_SETPCAP kept, and has already put the child
into a PID namespace of its own, where it is PID 1): new mount, network, IPC, UTS and
(where the kernel allows) cgroup namespaces; the mount tree made private, then a private
/proc of its own PID namespace and fresh tmpfs on /tmp and /dev/shm (`TMP_SIZE_BYTES`),
so no sibling's files or processes are visible; a session of its own; SIGKILL when the
fork server dies; no supplementary groups, its own gid and uid, an empty bounding set,
no capabilities in any set and no_new_privs. Unconfined (`identity` None: the bridge's
`confine = "off"`): only the session, the death signal, the descriptors and the
environment. Always: only stdin (/dev/null), stdout and stderr (the bridge's pipes) and
the VTS socket (descriptor `SOCKET_FD`) stay open, and the environment is the fork
server's (itself cleared by bubblewrap, or stripped of secrets by the bridge) plus the
two AMI_BRIDGE_VTS_* variables. Python 3.11 has no os.unshare nor os.mount: the system
calls go through ctypes to the C library, each checked, each error naming the call.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass

from ami_bridge.supervision.confine import TMP_SIZE_BYTES, Identity

# <linux/sched.h>
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
# <linux/mount.h>
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MNT_DETACH = 0x2
# <linux/prctl.h>
PR_SET_PDEATHSIG = 1
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
# <linux/capability.h>: the 64-bit capability sets (two data structs)
LINUX_CAPABILITY_VERSION_3 = 0x20080522

# Where the VTS finds its socket (AMI_BRIDGE_VTS_FD): the first descriptor after stdio,
# as a VTS started by exec would most often see it.
SOCKET_FD = 3
CAP_LAST_CAP_FILE = "/proc/sys/kernel/cap_last_cap"

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


class ChildSetupError(OSError):
    """A confinement step failed in the child; it names the call and the kernel's reason."""


def _check(result: int, what: str) -> int:
    if result == -1:
        errno = ctypes.get_errno()
        raise ChildSetupError(errno, f"{what}: {os.strerror(errno)}")
    return result


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                              ctypes.c_ulong(arg4), ctypes.c_ulong(arg5)), f"prctl({option})")


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), f"unshare({flags:#x})")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), f"setns({nstype:#x})")


def mount(source: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None) -> None:
    def c(text: str | None) -> bytes | None:
        return text.encode() if text is not None else None

    _check(_libc.mount(c(source), c(target), c(fstype), ctypes.c_ulong(flags), c(data)),
           f"mount {fstype or source} on {target}")


def umount2(target: str, flags: int) -> None:
    _check(_libc.umount2(target.encode(), ctypes.c_int(flags)), f"umount {target}")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def clear_capabilities() -> None:
    """Effective, permitted and inheritable sets emptied (ambient follows: it can hold
    nothing that is not permitted and inheritable)."""
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset(empty)")


def last_cap() -> int:
    with open(CAP_LAST_CAP_FILE) as f:
        return int(f.read())


def drop_bounding_set(last: int) -> None:
    for cap in range(last + 1):
        prctl(PR_CAPBSET_DROP, cap)


def warm_up() -> int:
    """Run every call path of `become_vts` once in the fork server, harmlessly (reads, a
    no-op unshare, mounts that fail), so that ctypes' lazily built function pointers and
    converters and Python 3.11's specialised bytecode exist before the fork: built in
    each child instead, they dirtied ~110 kB more of its pages (bench/README.md).
    Returns the highest capability number (`ChildPlan.last_cap`): read once here."""
    prctl(PR_CAPBSET_READ, 0)
    unshare(0)
    with contextlib.suppress(ChildSetupError):
        mount(None, "/nonexistent-warm-up", None, MS_REC | MS_PRIVATE)
    with contextlib.suppress(ChildSetupError):
        umount2("/nonexistent-warm-up", MNT_DETACH)
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(header), data), "capget")
    return last_cap()


@dataclass(frozen=True)
class ChildPlan:
    """One child's setup, from its spawn request."""

    name: str
    identity: Identity | None  # None: unconfined (the bridge's confine = "off")
    env: Mapping[str, str]  # set on top of the fork server's environment
    socket_fd: int  # as received: moved to SOCKET_FD
    stdout_fd: int
    stderr_fd: int
    server_pid: int  # the fork server, for the death-signal race check when unconfined
    last_cap: int = 40  # the kernel's highest capability number (warm_up; 40 on 6.x)


def become_vts(plan: ChildPlan) -> None:
    """Confine this freshly forked child as the module docstring says."""
    signal.set_wakeup_fd(-1)  # the fork server's: never write into its pipe
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if plan.identity is None and os.getppid() != plan.server_pid:
        os._exit(1)  # the fork server died before the death signal was armed
    if plan.identity is not None:
        _namespaces()
    os.setsid()
    _descriptors(plan)
    if plan.identity is not None:
        _identity(plan.identity, plan.last_cap)
    for key, value in plan.env.items():
        os.environ[key] = value
    os.chdir("/")


def _namespaces() -> None:
    unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)
    # bwrap's --unshare-cgroup-try: kernels without cgroup namespaces go on
    with contextlib.suppress(ChildSetupError):
        unshare(CLONE_NEWCGROUP)
    # Mount events must not travel back to the fork server's tree (and its other children).
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    # The fork server's /proc shows its whole PID namespace (every sibling); this child
    # is PID 1 of a namespace of its own, and a fresh proc shows only that one.
    umount2("/proc", MNT_DETACH)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    tmpfs = f"mode=1777,size={TMP_SIZE_BYTES}"
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, tmpfs)
    # bwrap's /dev/shm is a directory of the fork server's /dev, shared by all its
    # children: a fresh one each, or siblings could trade files there.
    if os.path.isdir("/dev/shm"):
        mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, tmpfs)


def _descriptors(plan: ChildPlan) -> None:
    """stdin /dev/null, stdout/stderr the bridge's pipes, SOCKET_FD the VTS socket; every
    other descriptor (the fork server's control socket, its pipes) closed."""
    null = os.open(os.devnull, os.O_RDWR)
    wanted = {0: null, 1: plan.stdout_fd, 2: plan.stderr_fd, SOCKET_FD: plan.socket_fd}
    # Copies above the targets first, so that no dup2 overwrites a source still needed.
    moved = {target: fcntl.fcntl(fd, fcntl.F_DUPFD, SOCKET_FD + 1) for target, fd in wanted.items()}
    for target, fd in moved.items():
        os.dup2(fd, target, inheritable=target != SOCKET_FD)
    os.closerange(SOCKET_FD + 1, os.sysconf("SC_OPEN_MAX"))


def _identity(identity: Identity, last: int) -> None:
    drop_bounding_set(last)
    os.setgroups([])
    os.setresgid(identity.gid, identity.gid, identity.gid)
    os.setresuid(identity.uid, identity.uid, identity.uid)
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    clear_capabilities()
    prctl(PR_SET_NO_NEW_PRIVS, 1)
