"""The bridge as a real subprocess, for the integration tests, the demo and the benchmarks.

Contract. :class:`BridgeProcess` starts `python -m ami_bridge run --config FILE` (or a
wrapper's argv) as a harness child (:func:`harness.procs.spawn`: it and its VTS processes
die with the harness) from the repository root, so test VTS programs such as
`python -m harness.fault_vts` import. It is ready when its control socket answers
`status` (what `ami-bridge ctl status` prints) with every awaited VTS connected and, when
the config has an `[ami]` section, the AMI session connected and resynced (and with
`[ari]`, the ARI WebSocket connected). The control
socket opens only after the FastAGI listener, so ready also means listening. Nothing here
reads the log to decide readiness; `log()` is for tests that assert what the bridge said.
`stop()` sends SIGTERM (SIGKILL after a grace period) and leaves no VTS process behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from ami_bridge import config as config_mod
from ami_bridge import control
from harness.asterisk import REPO_ROOT
from harness.procs import alive, all_pids, spawn, terminate

# A cold start with two VTS processes took under 1 s here; a loaded 2-core machine with
# several test runs needs more, and the benchmarks start hundreds of VTS (they pass more).
START_TIMEOUT_S = 15.0
STOP_GRACE_S = 5.0
# Each poll opens the control socket once; 50 ms keeps start-up latency low for tests.
POLL_S = 0.05
# A status request to a bridge that is still starting must not hang the poll loop.
STATUS_TIMEOUT_S = 2.0

Status = dict[str, Any]


class BridgeError(RuntimeError):
    """The bridge did not start, answer or stop as the harness needed."""


def ready_problem(status: Status, *, vts: Sequence[str], ami: bool,
                  ari: bool = False) -> str | None:
    """Why a `ctl status` answer is not ready yet (None when it is)."""
    states = status.get("vts", {})
    waiting = [name for name in vts if not states.get(name, {}).get("connected")]
    if waiting:
        return f"VTS not connected: {', '.join(waiting)}"
    if ami:
        session = status.get("ami") or {}
        if not session.get("connected") or not session.get("resyncs"):
            return f"AMI session not connected and resynced: {session}"
    if ari and not (status.get("ari") or {}).get("connected"):
        # Until then Stasis() fails and every call of an ari venue takes its fallback.
        return f"ARI WebSocket not connected: {status.get('ari')}"
    return None


class BridgeProcess:
    """`python -m ami_bridge run` with `config_path`; a context manager.

    `wait_for`: the VTS names whose connection `start` waits for (default: all of the
    config's). `wait_ami`: also wait for the AMI session (default: when the config has
    `[ami]`). `argv`: the command before `--config` (default: this interpreter with
    `-m ami_bridge run`). `env`: added to the environment.
    """

    def __init__(self, config_path: Path, *, log_path: Path, log_level: str = "info",
                 wait_for: Sequence[str] | None = None, wait_ami: bool | None = None,
                 argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None,
                 start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.config_path = config_path.resolve()  # the bridge runs from the repository
        self.config = config_mod.load(self.config_path)
        self.wait_for = list(self.config.vts) if wait_for is None else list(wait_for)
        self.wait_ami = self.config.ami is not None if wait_ami is None else wait_ami
        self.argv = list(argv) if argv is not None else [sys.executable, "-m", "ami_bridge",
                                                         "run"]
        self.env = dict(env or {})
        self.log_path = log_path
        self.log_level = log_level
        self.start_timeout_s = start_timeout_s
        self.ready_s: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._offset = 0

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, timeout_s: float | None = None) -> None:
        if self._proc is not None:
            raise BridgeError(f"bridge for {self.config_path} already started")
        timeout_s = self.start_timeout_s if timeout_s is None else timeout_s
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._offset = self.log_path.stat().st_size
        path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
        started = time.monotonic()
        self._proc = spawn(
            [*self.argv, "--config", str(self.config_path), "--log-level", self.log_level],
            cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": path, **self.env},
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            self._wait_ready(started + timeout_s, timeout_s)
        except BaseException:
            self.stop()
            raise
        self.ready_s = time.monotonic() - started

    def _wait_ready(self, deadline: float, timeout_s: float) -> None:
        assert self._proc is not None
        problem = "control socket not answering"
        while True:
            if self._proc.poll() is not None:
                raise BridgeError(f"bridge exited with {self._proc.returncode} while "
                                  f"starting ({problem}):\n{self.log()[-3000:]}")
            status = self._try_status()
            if status is not None:
                problem = ready_problem(status, vts=self.wait_for, ami=self.wait_ami,
                                        ari=self.config.ari is not None) or ""
                if not problem:
                    return
            if time.monotonic() > deadline:
                raise BridgeError(f"bridge not ready in {timeout_s} s ({problem}):\n"
                                  f"{self.log()[-3000:]}")
            time.sleep(POLL_S)

    def _try_status(self) -> Status | None:
        try:
            return self.status(timeout_s=STATUS_TIMEOUT_S)
        except (OSError, ValueError, BridgeError):
            return None  # not listening yet, or a half-written answer while it starts

    def stop(self, grace_s: float | None = None) -> int | None:
        """SIGTERM, then SIGKILL after `grace_s` (default: STOP_GRACE_S plus the longest
        VTS grace period); kill any VTS left behind. Returns the bridge's exit status."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if grace_s is None:
            grace_s = STOP_GRACE_S + max((v.grace_period for v in self.config.vts.values()),
                                         default=0)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # The bridge's session: VTS processes it failed to stop would be a bug, but must
        # never outlive the test that started them.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        left = [pid for pid in all_pids() if _session_of(pid) == proc.pid and alive(pid)]
        terminate(left, grace_s=0.0)
        if self._log is not None:
            self._log.close()
            self._log = None
        return proc.returncode

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- talking to it --------------------------------------------------------------------

    def status(self, *, timeout_s: float = control.CLIENT_TIMEOUT) -> Status:
        """The bridge's `ctl status` answer (venues, VTS, pending, counters, AMI)."""
        answer = control.request(self.config.control_socket, "status", timeout=timeout_s)
        if not answer.get("ok") or not isinstance(answer.get("status"), dict):
            raise BridgeError(f"status refused by the bridge: {answer}")
        status: Status = answer["status"]
        return status

    def wait_status(self, check: Callable[[Status], bool], *, what: str,
                    timeout_s: float = 10.0) -> Status:
        """Poll `ctl status` until `check` holds; return that status."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self._try_status()
            if status is not None and check(status):
                return status
            if time.monotonic() > deadline:
                raise BridgeError(f"{what}: not within {timeout_s} s; last status {status}")
            time.sleep(POLL_S)

    def reload(self) -> None:
        """SIGHUP: the daemon reloads its config file."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGHUP)

    def log(self) -> str:
        """What the bridge (and its VTS processes) logged since this start."""
        with self.log_path.open("rb") as f:
            f.seek(self._offset)
            return f.read().decode("utf-8", errors="replace")

    def wait_for_log(self, text: str, *, count: int = 1, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.log().count(text) >= count:
                return
            time.sleep(POLL_S)
        raise BridgeError(f"{text!r} not logged {count} times in {timeout_s} s")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def vts_pids(self, name: str) -> list[int]:
        """This bridge's running VTS process for `[vts.NAME]` (whatever their command), as
        its `ctl status` names it: an exec'd VTS's bwrap, a forked one's own process (a
        child of the fork server, not of the bridge; `vts_spawn`, docs/operations.md)."""
        if self.pid is None:
            return []
        status = self._try_status()
        if status is None:
            return []
        pid = status.get("vts", {}).get(name, {}).get("pid")
        return [pid] if isinstance(pid, int) and alive(pid) else []


def _session_of(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None
