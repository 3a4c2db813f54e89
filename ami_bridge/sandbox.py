"""Test harness: a real Asterisk 22 and SIPp, run inside the provisioned sandbox root.

Contract. ``scripts/provision-sandbox`` builds a Debian unstable root (Asterisk 22, SIPp
3.8) at :func:`sandbox_root`; :func:`sandbox_ready` says whether it finished. Everything
here runs as root and reaches that root through ``chroot``; the network namespace is the
host's, so the host talks to Asterisk (SIP 127.0.0.1:5060, AMI 127.0.0.1:5038, FastAGI
client to 127.0.0.1:``agi_port``) and to SIPp over loopback. Each :class:`Asterisk` owns
the directory ``<root>/run/ami-bridge/<name>/``, rebuilt on every start from a config
directory (``asterisk-conf/``) plus per-test overrides, and leaves no process behind when
stopped. SIPp runs as short-lived processes per test: :class:`SippUas` plays an agent's
or operator's phone on one port and :func:`run_uac` / :func:`start_uac` play a carrier
trunk; both report :class:`SippStats` read from SIPp's own final statistics dump
(``-trace_stat``), written when SIPp quits gracefully. Nothing here is used by the daemon.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import IO, Self

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONF_SRC = REPO_ROOT / "asterisk-conf"
SIPP_SCENARIO_DIR = REPO_ROOT / "tests" / "sipp"

READY_STAMP = ".ami-bridge-ready"
# Inside the root; the same path seen from the host is <root>/run/ami-bridge.
INSIDE_RUN_DIR = "/run/ami-bridge"
ASTERISK_BIN = "/usr/sbin/asterisk"
SIPP_BIN = "/usr/bin/sipp"

# Fixed by asterisk-conf/pjsip.conf; SIPp's UAC dials it.
ASTERISK_SIP = "127.0.0.1:5060"
DEFAULT_UAC_PORT = 5090

# A cold boot measured 0.7 s here; 30 s leaves room for a loaded CI machine.
BOOT_TIMEOUT_S = 30.0
# Grace between `core stop now`, SIGTERM and SIGKILL; Asterisk stops in well under 1 s.
STOP_GRACE_S = 5.0
# How long a started SIPp may take to bind its SIP port.
SIPP_BIND_TIMEOUT_S = 5.0
# Only one sandbox Asterisk can hold SIP 5060 and AMI 5038 at a time; concurrent test
# runs (developers, CI, the demo) queue on this lock instead of failing. 20 minutes is
# longer than any test module holds it.
LOCK_TIMEOUT_S = 20 * 60.0
# Lines of a log quoted in an error message.
LOG_TAIL_LINES = 40

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_AGI_URL_RE = re.compile(r"^(AB_AGI_URL\s*=>?\s*agi://127\.0\.0\.1:)\d+", re.MULTILINE)
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
    _run(["mount", "-t", "proc", "proc", str(proc)], what=f"mounting /proc at {proc}")


def _require_ready(root: Path) -> None:
    if not sandbox_ready(root):
        raise SandboxError(
            f"sandbox not provisioned at {root} (no {READY_STAMP}); "
            "run `sudo scripts/provision-sandbox` (or `make test`, which runs it)"
        )
    ensure_proc_mounted(root)


def _run(argv: list[str], *, what: str, timeout: float = 30.0) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise SandboxError(f"{what} failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    return proc.stdout


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<no log at {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def _fresh_dir(path: Path) -> None:
    """Empty `path`, which must lie under <root>/run/ami-bridge (a guard against rm -rf /)."""
    if "/run/ami-bridge/" not in f"{path}/":
        raise SandboxError(f"refusing to wipe {path}: not an ami-bridge instance directory")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise SandboxError(f"bad instance name {name!r}: use letters, digits, '.', '_', '-'")


def _pids_in_root(root: Path, needle: str) -> list[int]:
    """Live processes chrooted into `root` whose command line contains `needle`."""
    real_root = os.path.realpath(root)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = (entry / "stat").read_text()
            proc_root = os.readlink(entry / "root")
        except OSError:
            continue  # gone, or a kernel thread
        state = stat.rsplit(")", 1)[-1].split()[0]
        if needle in cmdline and proc_root == real_root and state != "Z":
            found.append(int(entry.name))
    return found


def _terminate(pids: list[int], grace_s: float) -> None:
    """SIGTERM, then SIGKILL what is left after `grace_s`; returns when all are gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            pids = [p for p in pids if Path(f"/proc/{p}").exists() and not _is_zombie(p)]
            if not pids:
                return
            time.sleep(0.05)
    if pids:
        raise SandboxError(f"processes {pids} survived SIGKILL")


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return True


def _udp_bound(port: int) -> bool:
    """Whether some socket is bound to UDP 127.0.0.1:`port` (read from /proc/net/udp)."""
    wanted = f"0100007F:{port:04X}"
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(line.split()[1] == wanted for line in lines)


def _acquire_lock(root: Path) -> IO[bytes]:
    path = root / INSIDE_RUN_DIR.lstrip("/") / ".asterisk.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.open("ab")
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return lock
        except BlockingIOError:
            if time.monotonic() > deadline:
                lock.close()
                raise SandboxError(f"another sandbox Asterisk held {path} for "
                                   f"{LOCK_TIMEOUT_S:.0f} s") from None
            time.sleep(0.2)


class Asterisk:
    """One Asterisk 22 in the sandbox, configured from `conf_src`; a context manager.

    `extra_files` maps paths relative to the config directory to file contents, written
    after the copy (so they may override it). `agi_port` replaces the port of the
    `AB_AGI_URL=agi://127.0.0.1:PORT` line of extensions.conf. `verbose` is Asterisk's
    verbosity; with a logger.conf that sends `verbose` to the console, dialplan traces
    land in `log_path`.
    """

    def __init__(
        self,
        *,
        conf_src: Path,
        name: str = "test",
        agi_port: int = 4573,
        extra_files: Mapping[str, str] = _NO_FILES,
        root: Path | None = None,
        boot_timeout_s: float = BOOT_TIMEOUT_S,
        verbose: int = 0,
    ) -> None:
        _check_name(name)
        self.conf_src = conf_src
        self.name = name
        self.agi_port = agi_port
        self.extra_files = dict(extra_files)
        self.root = root or sandbox_root()
        self.boot_timeout_s = boot_timeout_s
        self.verbose = verbose
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
        if self._proc is not None:
            raise SandboxError(f"asterisk {self.name} already started")
        _require_ready(self.root)
        self._lock = _acquire_lock(self.root)
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
        stale = _pids_in_root(self.root, self.conf_inside)
        if stale:
            _terminate(stale, STOP_GRACE_S)
        sip_port = int(ASTERISK_SIP.rsplit(":", 1)[1])
        if _udp_bound(sip_port):
            others = _pids_in_root(self.root, f"{ASTERISK_BIN} ")
            raise SandboxError(
                f"UDP {ASTERISK_SIP} is already bound (other sandbox Asterisk pids: {others}); "
                "stop that instance first"
            )
        self._write_config()
        started = time.monotonic()
        self._log = self.log_path.open("wb")
        self._proc = subprocess.Popen(
            ["chroot", str(self.root), ASTERISK_BIN, "-f", "-C", self.conf_inside],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as one on stop
        )
        try:
            self._wait_booted(started + self.boot_timeout_s)
        except BaseException:
            self.stop()
            raise
        self.boot_time_s = time.monotonic() - started

    def _write_config(self) -> None:
        _fresh_dir(self.instance_dir)
        etc = self.instance_dir / "etc"
        shutil.copytree(self.conf_src, etc)
        for rel, text in self.extra_files.items():
            target = etc / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        ext = etc / "extensions.conf"
        dialplan, count = _AGI_URL_RE.subn(rf"\g<1>{self.agi_port}", ext.read_text())
        if count != 1:
            raise SandboxError(f"{ext}: expected one line AB_AGI_URL=agi://127.0.0.1:PORT")
        ext.write_text(dialplan)
        for sub in ("run", "log", "spool", "db", "cache"):
            (self.instance_dir / sub).mkdir()
        d = self.inside_dir
        (etc / "asterisk.conf").write_text(
            "; Written by ami_bridge/sandbox.py for this instance.\n"
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
        )

    def _wait_booted(self, deadline: float) -> None:
        assert self._proc is not None
        while True:
            if self._proc.poll() is not None:
                raise SandboxError(
                    f"asterisk {self.name} exited ({self._proc.returncode}) while booting; "
                    f"tail of {self.log_path}:\n{_tail(self.log_path)}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SandboxError(
                    f"asterisk {self.name} not fully booted after {self.boot_timeout_s} s; "
                    f"tail of {self.log_path}:\n{_tail(self.log_path)}"
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

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """`core stop now`, then SIGTERM, then SIGKILL; no Asterisk is left running."""
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
            stale = _pids_in_root(self.root, self.conf_inside)
            if stale:
                _terminate(stale, grace_s)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None
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


# -- SIPp --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SippStats:
    """SIPp's cumulative counters from the last line of its -trace_stat CSV."""

    successful: int
    failed: int
    total: int
    raw: Mapping[str, str]

    @classmethod
    def from_csv(cls, text: str) -> SippStats:
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) < 2:
            raise SandboxError(f"SIPp statistics file has no data line: {text[:200]!r}")
        header = lines[0].rstrip(";").split(";")
        values = lines[-1].rstrip(";").split(";")
        raw = dict(zip(header, values, strict=False))
        try:
            return cls(
                successful=int(raw["SuccessfulCall(C)"]),
                failed=int(raw["FailedCall(C)"]),
                total=int(raw["TotalCallCreated"]),
                raw=MappingProxyType(raw),
            )
        except (KeyError, ValueError) as exc:
            raise SandboxError(f"SIPp statistics line not understood ({exc}): {raw}") from exc

    @property
    def response_time_s(self) -> float:
        """Mean INVITE -> 200 OK time over all calls (SIPp's ResponseTime1(C)), seconds."""
        text = self.raw.get("ResponseTime1(C)", "")
        try:
            hours, minutes, seconds, micros = (int(part) for part in text.split(":"))
        except ValueError:
            raise SandboxError(f"SIPp response time not understood: {text!r}") from None
        return hours * 3600 + minutes * 60 + seconds + micros / 1e6

    @property
    def failure_reasons(self) -> dict[str, int]:
        """Non-zero Failed*(C) counters, e.g. {'FailedTimeoutOnRecv': 3}."""
        return {
            key[: -len("(C)")]: int(value)
            for key, value in self.raw.items()
            if key.startswith("Failed") and key.endswith("(C)") and value not in ("", "0")
        }


class _Sipp:
    """One SIPp process in the root, with its scenario, log and statistics in `workdir`."""

    def __init__(
        self,
        *,
        root: Path,
        workdir_name: str,
        scenario: str,
        port: int,
        substitutions: Mapping[str, str] = _NO_FILES,
    ) -> None:
        _check_name(workdir_name)
        self.substitutions = dict(substitutions)
        self.root = root
        self.port = port
        self.inside_dir = f"{INSIDE_RUN_DIR}/sipp/{workdir_name}"
        self.workdir = root / self.inside_dir.lstrip("/")
        self.scenario = scenario
        self.log_path = self.workdir / "sipp.log"
        self._stats_path = self.workdir / "stats.csv"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, extra_args: list[str], *, wait_bound: bool) -> None:
        _require_ready(self.root)
        stale = _pids_in_root(self.root, f"{self.inside_dir}/")
        if stale:
            _terminate(stale, STOP_GRACE_S)
        _fresh_dir(self.workdir)
        text = (SIPP_SCENARIO_DIR / self.scenario).read_text()
        for marker, replacement in self.substitutions.items():
            if marker not in text:
                raise SandboxError(f"{self.scenario}: marker {marker!r} not found")
            text = text.replace(marker, replacement)
        (self.workdir / self.scenario).write_text(text)
        d = self.inside_dir
        argv = [
            "chroot", str(self.root), SIPP_BIN,
            "-sf", f"{d}/{self.scenario}",
            "-i", "127.0.0.1", "-p", str(self.port),
            # Media port in the SDP, distinct per SIPp so several can run at once.
            "-mp", str(self.port + 10000),
            "-nostdin",
            "-trace_stat", "-stf", f"{d}/stats.csv",
            "-trace_err",
            *extra_args,
        ]  # fmt: skip
        self._log = self.log_path.open("wb")
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        if wait_bound:
            self._wait_bound()

    def _wait_bound(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + SIPP_BIND_TIMEOUT_S
        while not _udp_bound(self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise SandboxError(
                    f"SIPp did not bind 127.0.0.1:{self.port}; tail of {self.log_path}:\n"
                    f"{_tail(self.log_path)}"
                )
            time.sleep(0.02)

    def wait(self, timeout_s: float) -> SippStats:
        """Wait for SIPp to exit by itself and read its final statistics."""
        assert self._proc is not None
        try:
            rc = self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise SandboxError(
                f"SIPp on port {self.port} still running after {timeout_s} s; killed. "
                f"Tail of {self.log_path}:\n{_tail(self.log_path)}"
            ) from None
        self._close_log()
        # 0: all calls succeeded, 1: some failed; anything else is SIPp itself failing.
        if rc not in (0, 1) or not self._stats_path.exists():
            raise SandboxError(
                f"SIPp on port {self.port} exited with {rc}; tail of {self.log_path}:\n"
                f"{_tail(self.log_path)}"
            )
        return SippStats.from_csv(self._stats_path.read_text())

    def quit(self, timeout_s: float) -> SippStats:
        """Graceful quit (SIGUSR1: no new calls, let current ones end), final statistics."""
        assert self._proc is not None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGUSR1)
        return self.wait(timeout_s)

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class SippUas:
    """A SIPp UAS (tests/sipp/uas.xml) answering every call on 127.0.0.1:`port`.

    A context manager; `stop()` returns how many calls it answered and completed.
    """

    def __init__(self, port: int, name: str, *, root: Path | None = None) -> None:
        self.port = port
        self.name = name
        self._sipp = _Sipp(
            root=root or sandbox_root(), workdir_name=f"uas-{name}", scenario="uas.xml", port=port
        )
        self.stats: SippStats | None = None

    @property
    def log_path(self) -> Path:
        return self._sipp.log_path

    def start(self) -> None:
        self._sipp.start([], wait_bound=True)

    def stop(self, timeout_s: float = 30.0) -> SippStats:
        if self.stats is None:
            self.stats = self._sipp.quit(timeout_s)
        return self.stats

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.stats is None:
            try:
                self.stop()
            except SandboxError:
                self._sipp.kill()
                if exc is None:
                    raise


class SippUac:
    """A running SIPp UAC started by :func:`start_uac`; `wait()` gives its statistics."""

    def __init__(self, sipp: _Sipp, timeout_s: float) -> None:
        self._sipp = sipp
        self._timeout_s = timeout_s

    @property
    def log_path(self) -> Path:
        return self._sipp.log_path

    def wait(self) -> SippStats:
        # SIPp's own -timeout fires first; the margin covers its final dump and exit.
        return self._sipp.wait(self._timeout_s + 10.0)

    def kill(self) -> None:
        self._sipp.kill()


_DTMF_MARKER = "<!-- ami-bridge:dtmf"
_DTMF_RE = re.compile(r"[0-9*#A-D]{1,90}")
# One SIP INFO per digit, as sent by most phones configured for dtmf_mode=info.
_DTMF_INFO = """
  <send retrans="500">
    <![CDATA[
      INFO sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[$from_user]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} INFO
      Contact: <sip:[$from_user]@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: application/dtmf-relay
      Content-Length: [len]

      Signal={digit}
      Duration=100
    ]]>
  </send>
  <recv response="200" />
  <pause milliseconds="100" />
"""


def _dtmf_info_requests(digits: str) -> str:
    if not _DTMF_RE.fullmatch(digits):
        raise SandboxError(f"bad DTMF string {digits!r}: 1 to 90 of 0-9 * # A-D")
    blocks = [_DTMF_INFO.format(cseq=2 + i, digit=d) for i, d in enumerate(digits)]
    return "".join(blocks) + _DTMF_MARKER


def start_uac(
    *,
    from_user: str,
    dnis: str,
    calls: int,
    rate: float,
    hold_ms: int = 200,
    port: int = DEFAULT_UAC_PORT,
    timeout_s: float = 60.0,
    dtmf: str | None = None,
    root: Path | None = None,
    scenario: str = "uac.xml",
) -> SippUac:
    """Start placing `calls` calls at `rate` calls/s from trunk `from_user` to `dnis`.

    With `dtmf`, each answered call keys those digits as SIP INFO, 100 ms apart, before
    its hold time (tests/sipp/uac_dtmf.xml). `scenario` picks another caller from
    tests/sipp/: uac_cancel.xml hangs up after `hold_ms` while still ringing (an
    abandon), uac_reject.xml succeeds only when the call is rejected (486 or 503).
    """
    if dtmf is None:
        substitutions = {}
    else:
        scenario, substitutions = "uac_dtmf.xml", {_DTMF_MARKER: _dtmf_info_requests(dtmf)}
    sipp = _Sipp(
        root=root or sandbox_root(),
        workdir_name=f"uac-{port}",
        scenario=scenario,
        port=port,
        substitutions=substitutions,
    )
    args = [
        ASTERISK_SIP,
        "-s", dnis,
        "-set", "from_user", from_user,
        "-m", str(calls),
        "-r", f"{rate:g}",
        "-d", str(hold_ms),
        "-timeout", f"{timeout_s:g}s",
    ]  # fmt: skip
    sipp.start(args, wait_bound=False)
    return SippUac(sipp, timeout_s)


def run_uac(
    *,
    from_user: str,
    dnis: str,
    calls: int,
    rate: float,
    hold_ms: int = 200,
    port: int = DEFAULT_UAC_PORT,
    timeout_s: float = 60.0,
    dtmf: str | None = None,
    root: Path | None = None,
    scenario: str = "uac.xml",
) -> SippStats:
    """Place the calls (see :func:`start_uac`) and return SIPp's final counters."""
    return start_uac(
        from_user=from_user,
        dnis=dnis,
        calls=calls,
        rate=rate,
        hold_ms=hold_ms,
        port=port,
        timeout_s=timeout_s,
        dtmf=dtmf,
        root=root,
        scenario=scenario,
    ).wait()
