"""The sandbox root and one Asterisk 22 inside it, behind a lock shared by every run.

Contract. ``scripts/provision-sandbox`` builds a Debian unstable root (Asterisk 22, SIPp
3.8) at :func:`sandbox_root`; :func:`sandbox_ready` says whether it finished. Everything
here runs as root and reaches that root through ``chroot``; the network namespace is the
host's, so the host talks to Asterisk (SIP 127.0.0.1:5060, AMI 127.0.0.1:5038, FastAGI
client to 127.0.0.1:``agi_port``) over loopback. Each :class:`Asterisk` owns the directory
``<root>/run/ami-bridge/<name>/``, rebuilt on every start from a config directory
(``asterisk-conf/``) plus per-test overrides, and leaves no process behind when stopped —
nor when its harness process dies (:mod:`harness.procs`). Several Asterisks may run at
once, one per *slot*: slot N binds its SIP, AMI and HTTP ports on 127.0.0.N (all of 127/8
is loopback) and its SIPp phones live there too (:func:`slot_host`); slot 1 is the one
every single-Asterisk test uses, unchanged. One Asterisk runs per slot at a time:
:func:`acquire_lock` queues concurrent runs on the slot's own lock, records the holder,
and first reaps what a dead holder left running. SIPp lives in :mod:`harness.sipp`;
several Asterisks with their bridges in :mod:`harness.cluster`.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import IO, Self

from ami_bridge.agi.variables import FIRST_FAILOVER_URL
from harness.procs import (
    owner_token,
    pids_in_root,
    reap_orphans,
    spawn,
    tail,
    terminate,
    udp_bound,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONF_SRC = REPO_ROOT / "asterisk-conf"

READY_STAMP = ".ami-bridge-ready"
# Inside the root; the same path seen from the host is <root>/run/ami-bridge.
INSIDE_RUN_DIR = "/run/ami-bridge"
LOCK_NAME = ".asterisk.lock"
ASTERISK_BIN = "/usr/sbin/asterisk"

# Fixed by asterisk-conf/pjsip.conf; SIPp's UAC dials it. Slot 1's address.
ASTERISK_SIP = "127.0.0.1:5060"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_SLOT = 1
# 127.0.0.N for slot N; a handful is all two cores carry (the cluster test uses two).
MAX_SLOTS = 8
# The files of asterisk-conf/ that bind or name slot 1's address (SIP transport and the
# phones' contacts, AMI, HTTP): another slot gets its own address in them. The AMI
# permit (manager.d/) stays: a host connecting to 127.0.0.N comes from 127.0.0.1
# (`ip route get 127.0.0.2`: src 127.0.0.1).
SLOT_ADDRESS_FILES = ("pjsip.conf", "manager.conf", "http.conf")

# A cold boot measured 0.7 s here; 30 s leaves room for a loaded CI machine.
BOOT_TIMEOUT_S = 30.0
# Grace between `core stop now`, SIGTERM and SIGKILL; Asterisk stops in well under 1 s.
STOP_GRACE_S = 5.0
# Only one sandbox Asterisk can hold a slot's SIP 5060 and AMI 5038 at a time; concurrent
# test runs (developers, CI, the demo) queue on the slot's lock instead of failing. 20
# minutes is longer than any test module holds it.
LOCK_TIMEOUT_S = 20 * 60.0

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_AGI_URL_RE = re.compile(r"^(AB_AGI_URL\s*=>?\s*agi://127\.0\.0\.1:)\d+(.*)$", re.MULTILINE)
_CHANNELS_RE = re.compile(r"^(\d+) active channels?$", re.MULTILINE)
_NO_FILES: Mapping[str, str] = MappingProxyType({})


class SandboxError(RuntimeError):
    """The sandbox, Asterisk or SIPp did not do what the harness needed."""


def sandbox_root() -> Path:
    """Where the provisioned root lives: $AMI_BRIDGE_SANDBOX or ~/.cache/ami-bridge/sandbox."""
    env = os.environ.get("AMI_BRIDGE_SANDBOX")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "ami-bridge" / "sandbox"


def sandbox_ready(root: Path | None = None) -> bool:
    """True once scripts/provision-sandbox finished (its stamp file exists)."""
    return ((root or sandbox_root()) / READY_STAMP).is_file()


def ensure_proc_mounted(root: Path | None = None) -> None:
    """Mount /proc in the root (lost on reboot); Asterisk and SIPp need it."""
    proc = (root or sandbox_root()) / "proc"
    if os.path.ismount(proc):
        return
    proc.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "proc", "proc", str(proc)], capture_output=True,
                          text=True, timeout=30.0, check=False)
    if done.returncode != 0:
        raise SandboxError(f"mounting /proc at {proc} failed ({done.returncode}): "
                           f"{done.stderr or done.stdout}")


def require_ready(root: Path) -> None:
    if not sandbox_ready(root):
        raise SandboxError(
            f"sandbox not provisioned at {root} (no {READY_STAMP}); "
            "run `sudo scripts/provision-sandbox` (or `make test`, which runs it)"
        )
    ensure_proc_mounted(root)


def fresh_dir(path: Path) -> None:
    """Empty `path`, which must lie under <root>/run/ami-bridge (a guard against rm -rf /)."""
    if f"{INSIDE_RUN_DIR}/" not in f"{path}/":
        raise SandboxError(f"refusing to wipe {path}: not an ami-bridge instance directory")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


def check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise SandboxError(f"bad instance name {name!r}: use letters, digits, '.', '_', '-'")


def slot_host(slot: int) -> str:
    """The loopback address of an Asterisk slot and its SIPp phones: 127.0.0.`slot`."""
    if not 1 <= slot <= MAX_SLOTS:
        raise SandboxError(f"bad Asterisk slot {slot}: 1 to {MAX_SLOTS}")
    return f"127.0.0.{slot}"


def lock_path(root: Path, slot: int = DEFAULT_SLOT) -> Path:
    name = LOCK_NAME if slot == DEFAULT_SLOT else f"{LOCK_NAME}.{slot}"
    return root / INSIDE_RUN_DIR.lstrip("/") / name


def acquire_lock(root: Path, timeout_s: float = LOCK_TIMEOUT_S,
                 slot: int = DEFAULT_SLOT) -> IO[bytes]:
    """Take the sandbox lock of `slot` (closing the returned file releases it).

    A holder killed outright releases the flock but may leave processes running; those
    carry the dead holder's tag (harness.procs), so they are reaped here before the new
    holder starts anything. The lock file then names the new holder, for whoever waits."""
    path = lock_path(root, slot)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.open("a+b")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                lock.seek(0)
                holder = lock.read().decode(errors="replace").strip() or "unknown"
                lock.close()
                raise SandboxError(f"holder {holder} held {path} for more than "
                                   f"{timeout_s:.0f} s") from None
            time.sleep(0.2)
    try:
        reap_orphans()
        lock.truncate(0)
        lock.write(f"{owner_token()}\n".encode())
        lock.flush()
    except BaseException:
        lock.close()
        raise
    return lock


class Asterisk:
    """One Asterisk 22 in the sandbox, configured from `conf_src`; a context manager.

    `extra_files` maps paths relative to the config directory to file contents, written
    after the copy (so they may override it). `agi_port` replaces the port of the
    `AB_AGI_URL=agi://127.0.0.1:PORT` line of extensions.conf, and `agi_secret` (if any)
    becomes its path (`agi://127.0.0.1:PORT/SECRET`: the bridge's route-request secret,
    `[bridge] agi_secret_file`); `agi_failover` URLs follow it as the venue failover's
    `AB_AGI_URL_2`, `AB_AGI_URL_3`, ... (docs/scale-out.md). `slot` picks the slot (its
    address `host`, its lock). `verbose` is Asterisk's
    verbosity; with a logger.conf that sends `verbose` to the console, dialplan traces
    land in `log_path`. `systemname` (asterisk.conf) prefixes every channel's uniqueid:
    several Asterisks whose calls share one trace store need one each (docs/scale-out.md).
    """

    def __init__(
        self,
        *,
        conf_src: Path,
        name: str = "test",
        agi_port: int = 4573,
        agi_secret: str | None = None,
        agi_failover: Sequence[str] = (),
        slot: int = DEFAULT_SLOT,
        extra_files: Mapping[str, str] = _NO_FILES,
        root: Path | None = None,
        boot_timeout_s: float = BOOT_TIMEOUT_S,
        verbose: int = 0,
        systemname: str | None = None,
    ) -> None:
        check_name(name)
        self.conf_src = conf_src
        self.name = name
        self.agi_port = agi_port
        self.agi_secret = agi_secret
        self.agi_failover = list(agi_failover)
        self.slot = slot
        self.host = slot_host(slot)
        self.sip = f"{self.host}:{ASTERISK_SIP.rsplit(':', 1)[1]}"
        self.extra_files = dict(extra_files)
        self.root = root or sandbox_root()
        self.boot_timeout_s = boot_timeout_s
        self.verbose = verbose
        if systemname is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", systemname):
            raise SandboxError(f"systemname {systemname!r}: 1 to 32 of A-Z a-z 0-9 _ -")
        self.systemname = systemname
        self.inside_dir = f"{INSIDE_RUN_DIR}/{name}"
        self.instance_dir = self.root / self.inside_dir.lstrip("/")
        self.conf_inside = f"{self.inside_dir}/etc/asterisk.conf"
        self.log_path = self.instance_dir / "asterisk.log"
        self.boot_time_s: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._lock: IO[bytes] | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Take the sandbox lock (unless still held from `stop(keep_lock=True)`), boot."""
        if self._proc is not None:
            raise SandboxError(f"asterisk {self.name} already started")
        require_ready(self.root)
        if self._lock is None:
            self._lock = acquire_lock(self.root, slot=self.slot)
        try:
            self._start_locked()
        except BaseException:
            self._release_lock()
            raise

    def _release_lock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.close()  # closing the descriptor drops the flock

    def _start_locked(self) -> None:
        stale = pids_in_root(self.root, self.conf_inside)
        if stale:
            terminate(stale, STOP_GRACE_S)
        sip_port = int(self.sip.rsplit(":", 1)[1])
        if udp_bound(sip_port, self.host):
            others = pids_in_root(self.root, f"{ASTERISK_BIN} ")
            raise SandboxError(
                f"UDP {self.sip} is already bound (other sandbox Asterisk pids: {others}); "
                "stop that instance first"
            )
        self._write_config()
        started = time.monotonic()
        self._log = self.log_path.open("wb")
        # Its own process group (spawn), killed as one on stop.
        self._proc = spawn([ASTERISK_BIN, "-f", "-C", self.conf_inside], root=self.root,
                           stdin=subprocess.DEVNULL, stdout=self._log,
                           stderr=subprocess.STDOUT)
        try:
            self._wait_booted(started + self.boot_timeout_s)
        except BaseException:
            self.stop()
            raise
        self.boot_time_s = time.monotonic() - started

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _write_config(self) -> None:
        fresh_dir(self.instance_dir)
        etc = self.instance_dir / "etc"
        shutil.copytree(self.conf_src, etc)
        if self.slot != DEFAULT_SLOT:
            for rel in SLOT_ADDRESS_FILES:
                path = etc / rel
                path.write_text(path.read_text().replace(DEFAULT_HOST, self.host))
        for rel, text in self.extra_files.items():
            target = etc / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        ext = etc / "extensions.conf"
        url = f"{self.agi_port}/{self.agi_secret}" if self.agi_secret else str(self.agi_port)
        failover = "".join(f"\nAB_AGI_URL_{n}={other}"
                           for n, other in enumerate(self.agi_failover, FIRST_FAILOVER_URL))
        dialplan, count = _AGI_URL_RE.subn(
            lambda m: f"{m.group(1)}{url}{m.group(2)}{failover}", ext.read_text())
        if count != 1:
            raise SandboxError(f"{ext}: expected one line AB_AGI_URL=agi://127.0.0.1:PORT")
        ext.write_text(dialplan)
        for sub in ("run", "log", "spool", "db", "cache"):
            (self.instance_dir / sub).mkdir()
        d = self.inside_dir
        (etc / "asterisk.conf").write_text(
            "; Written by harness/asterisk.py for this instance.\n"
            "[directories]\n"
            f"astetcdir => {d}/etc\n"
            f"astrundir => {d}/run\n"
            f"astlogdir => {d}/log\n"
            f"astspooldir => {d}/spool\n"
            f"astdbdir => {d}/db\n"
            f"astcachedir => {d}/cache\n"
            "astmoddir => /usr/lib/x86_64-linux-gnu/asterisk/modules\n"
            "astvarlibdir => /var/lib/asterisk\n"
            "astkeydir => /var/lib/asterisk\n"
            "astdatadir => /usr/share/asterisk\n"
            "astagidir => /usr/share/asterisk/agi-bin\n"
            "astsbindir => /usr/sbin\n"
            "\n[options]\n"
            "nocolor = yes\n"
            f"verbose = {self.verbose}\n"
            + (f"systemname = {self.systemname}\n" if self.systemname else "")
        )

    def _wait_booted(self, deadline: float) -> None:
        assert self._proc is not None
        while True:
            if self._proc.poll() is not None:
                raise SandboxError(
                    f"asterisk {self.name} exited ({self._proc.returncode}) while booting; "
                    f"tail of {self.log_path}:\n{tail(self.log_path)}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SandboxError(
                    f"asterisk {self.name} not fully booted after {self.boot_timeout_s} s; "
                    f"tail of {self.log_path}:\n{tail(self.log_path)}"
                )
            # Fails fast while the control socket does not exist yet, then blocks
            # inside Asterisk until the boot is complete.
            try:
                out = self._remote(["-rx", "core waitfullybooted"], timeout=remaining)
            except subprocess.TimeoutExpired:
                continue
            if out.returncode == 0 and "fully booted" in out.stdout:
                return
            time.sleep(0.05)

    def stop(self, grace_s: float = STOP_GRACE_S, *, keep_lock: bool = False) -> None:
        """`core stop now`, then SIGTERM, then SIGKILL; no Asterisk is left running.

        `keep_lock`: an Asterisk restart within a test. The bridge and SIPp of the test
        keep their ports meanwhile, so another run must not take the sandbox now."""
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.poll() is None:
                try:
                    self._remote(["-rx", "core stop now"], timeout=grace_s)
                    proc.wait(grace_s)
                except subprocess.TimeoutExpired:
                    for sig in (signal.SIGTERM, signal.SIGKILL):
                        try:
                            os.killpg(proc.pid, sig)
                        except ProcessLookupError:
                            break
                        try:
                            proc.wait(grace_s)
                            break
                        except subprocess.TimeoutExpired:
                            continue
            stale = pids_in_root(self.root, self.conf_inside)
            if stale:
                terminate(stale, grace_s)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None
            if not keep_lock:
                self._release_lock()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- inspection -------------------------------------------------------------------

    def _remote(self, args: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
        argv = ["chroot", str(self.root), ASTERISK_BIN, "-C", self.conf_inside, *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)

    def rx(self, command: str, *, timeout: float = 10.0) -> str:
        """Run one CLI command (`asterisk -rx`) and return its output."""
        out = self._remote(["-rx", command], timeout=timeout)
        if out.returncode != 0:
            raise SandboxError(f"asterisk -rx {command!r} failed: {out.stderr or out.stdout}")
        return out.stdout

    def channel_count(self) -> int:
        out = self.rx("core show channels count")
        match = _CHANNELS_RE.search(out)
        if match is None:
            raise SandboxError(f"unexpected `core show channels count` output: {out!r}")
        return int(match.group(1))

    @property
    def messages_path(self) -> Path:
        return self.instance_dir / "log" / "messages"

    def messages_log(self) -> str:
        """Asterisk's `messages` file log (notices, warnings, errors) so far."""
        try:
            return self.messages_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
