"""Run the bridge as a real subprocess, for the demo and the integration tests.

`BridgeProcess` starts `python -m ami_bridge run --config FILE`, waits until its
FastAGI port accepts connections and every configured VTS has connected (it reads the
bridge's own log lines for that), and stops it with SIGTERM (SIGKILL after a grace
period), leaving no VTS process behind. `vts_pids(name)` finds a VTS's processes so a
test can kill one.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from ami_bridge import config as config_mod

START_TIMEOUT_S = 15.0
STOP_GRACE_S = 5.0


class BridgeError(RuntimeError):
    pass


def _parent_pid(pid: str) -> int:
    try:
        stat = (Path("/proc") / pid / "stat").read_text()
    except OSError:
        return -1
    return int(stat.rsplit(")", 1)[1].split()[1])


def vts_pids(name: str, parent: int | None = None) -> list[int]:
    """PIDs of running shipped-runtime VTS processes named `name` (children of `parent`)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"ami_bridge.tenants.worker" in argv and name.encode() in argv:
            i = argv.index(b"--vts") if b"--vts" in argv else -1
            if i >= 0 and i + 1 < len(argv) and argv[i + 1] == name.encode() and (
                    parent is None or _parent_pid(entry.name) == parent):
                pids.append(int(entry.name))
    return pids


class BridgeProcess:
    def __init__(self, config_path: Path, *, log_path: Path, log_level: str = "info",
                 wait_for: list[str] | None = None) -> None:
        self.config_path = config_path
        self.config = config_mod.load(config_path)
        # The VTS names whose connection `start` waits for (default: all of them).
        self.wait_for = list(self.config.vts) if wait_for is None else wait_for
        self.log_path = log_path
        self.log_level = log_level
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._offset = self.log_path.stat().st_size
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "ami_bridge", "run", "--config", str(self.config_path),
             "--log-level", self.log_level],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        wanted = {f"VTS {name} connected" for name in self.wait_for}
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BridgeError(f"bridge exited with {self._proc.returncode}:\n{self.log()}")
            text = self.log()
            if self._listening() and all(w in text for w in wanted):
                return
            time.sleep(0.05)
        self.stop()
        raise BridgeError(f"bridge not ready in {START_TIMEOUT_S} s:\n{self.log()[-3000:]}")

    def _listening(self) -> bool:
        try:
            with socket.create_connection((self.config.agi_host, self.config.agi_port), 0.2):
                return True
        except OSError:
            return False

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
            time.sleep(0.05)
        raise BridgeError(f"{text!r} not logged {count} times in {timeout_s} s")

    def reload(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGHUP)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def vts_pids(self, name: str) -> list[int]:
        """This bridge's running VTS processes named `name`."""
        return vts_pids(name, parent=self.pid) if self.pid is not None else []

    def stop(self) -> int | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE_S + max((v.grace_period for v in
                                              self.config.vts.values()), default=0))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for name in self.config.vts:
            for pid in vts_pids(name, parent=1):  # orphans (re-parented to init) would be a
                os.kill(pid, signal.SIGKILL)  # bug; never leave them running
        if self._log is not None:
            self._log.close()
        return proc.returncode

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
