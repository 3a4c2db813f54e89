"""Shared plumbing of the benchmarks: machine facts, JSON result lines, a progress bar,
the kernel's CPU and memory accounting of a process tree, and the servers under test.

Every figure that says "CPU" comes from /proc/PID/stat (utime + stime, clock ticks of
1/SC_CLK_TCK s, all threads of the process) summed over a process and its children at
the moment of reading; every "PSS" from /proc/PID/smaps_rollup. Servers run as harness
children (harness.procs: they die with the benchmark); the bridge runs exactly as an
operator runs it, `python -m ami_bridge run --config FILE`, through the harness's one
bridge launcher (harness.bridge), ready when `ctl status` says so. A target or variant
named `NAME@baseline` runs the bridge and its VTS from another checkout (`--baseline
PATH`, see `baseline_env`) with this interpreter, so "before" and "after" share one run.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from harness.procs import spawn

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Tests use FastAGI 4573; every benchmark server listens from here on.
BENCH_PORT_BASE = 4690


# -- machine and output -------------------------------------------------------------------

_MACHINE: dict[str, Any] | None = None


def asterisk_version() -> str | None:
    try:
        from harness.asterisk import ASTERISK_BIN, sandbox_ready, sandbox_root
        if not sandbox_ready():
            return None
        out = subprocess.run(["chroot", str(sandbox_root()), ASTERISK_BIN, "-V"],
                             capture_output=True, text=True, timeout=10, check=False)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine() -> dict[str, Any]:
    global _MACHINE
    if _MACHINE is None:
        try:
            import uvloop
            uv = uvloop.__version__
        except ImportError:
            uv = None
        _MACHINE = {"cores": os.cpu_count(), "python": platform.python_version(),
                    "asterisk": asterisk_version(), "uvloop": uv,
                    "kernel": platform.release()}
    return _MACHINE


def emit(record: dict[str, Any], *, sink: IO[str] | None = None) -> None:
    """One result: one JSON object on one line of stdout (and the optional sink file)."""
    record = {**record, "machine": machine(), "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    line = json.dumps(record, sort_keys=False)
    print(line, flush=True)
    if sink is not None:
        sink.write(line + "\n")
        sink.flush()


def median(values: Iterable[float]) -> float:
    data = sorted(values)
    if not data:
        return float("nan")
    mid = len(data) // 2
    return data[mid] if len(data) % 2 else (data[mid - 1] + data[mid]) / 2


class Progress:
    """A one-line progress bar on stderr (a plain line per step when stderr is no tty)."""

    def __init__(self, total: int, label: str) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.label = label
        self.started = time.monotonic()
        self.tty = sys.stderr.isatty()

    def step(self, note: str = "") -> None:
        self.done += 1
        self.show(note)

    def show(self, note: str = "") -> None:
        frac = min(self.done / self.total, 1.0)
        bar = "#" * int(frac * 30)
        elapsed = time.monotonic() - self.started
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        text = (f"[{bar:<30}] {self.done}/{self.total} {self.label} "
                f"{elapsed:5.0f}s eta {eta:4.0f}s {note}")
        if self.tty:
            sys.stderr.write("\r" + text[:150].ljust(150))
            if self.done >= self.total:
                sys.stderr.write("\n")
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def log(self, text: str) -> None:
        if self.tty:
            sys.stderr.write("\r" + " " * 150 + "\r")
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


# -- kernel accounting --------------------------------------------------------------------

def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds."""
    f = _stat_fields(pid)
    if f is None:
        return 0.0
    return (int(f[11]) + int(f[12])) / CLK_TCK


def children(pid: int) -> list[int]:
    """Direct children of `pid` (from /proc/PID/task/*/children)."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids.extend(int(x) for x in (task / "children").read_text().split())
        except OSError:
            continue
    return kids


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children(p))
    return out


def tree_cpu(pids: Sequence[int]) -> dict[int, float]:
    return {p: cpu_seconds(p) for p in pids}


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def threads(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def listening(port: int) -> bool:
    """Whether a TCP socket listens on 127.0.0.1:`port` (read from /proc/net/tcp).

    Not probed with connect(): panoramisk's FastAGI handler spins forever, freezing its
    event loop, on a connection that closes before sending an AGI environment."""
    wanted = (f"0100007F:{port:04X}", f"00000000:{port:04X}")
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(parts[1] in wanted and parts[3] == "0A"
               for parts in (line.split() for line in lines))


def wait_listening(port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None,
                   ) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        if listening(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


# -- the baseline checkout ---------------------------------------------------------------

BASELINE_SUFFIX = "@baseline"


def is_baseline(name: str) -> bool:
    return name.endswith(BASELINE_SUFFIX)


def baseline_checkout(path: str | Path) -> Path:
    """`path` resolved, once it looks like a checkout of this project (its ami_bridge
    package, with the agi/tenants links, and its asterisk-conf/); ValueError otherwise."""
    root = Path(path).resolve()
    for need in ("ami_bridge/__init__.py", "ami_bridge/agi", "ami_bridge/tenants",
                 "asterisk-conf/extensions.conf", "asterisk-conf/manager.d"):
        if not (root / need).exists():
            raise ValueError(f"--baseline {path}: no {need} there; give a checkout of this "
                             "repository, e.g. `git worktree add /work/wt/baseline c8cddc6`")
    return root


def baseline_env(root: Path) -> dict[str, str]:
    """The environment that makes `python -m ami_bridge ...` (this interpreter and venv)
    import the package of checkout `root`, in the bridge and in every VTS it starts.

    PYTHONPATH puts `root` before site-packages, where the venv's editable install of
    this checkout sits (its finder comes after the path entries). PYTHONSAFEPATH keeps
    `-m` from putting the working directory first (the harness starts the bridge from
    this repository, whose ami_bridge would win); it is inherited by unconfined VTS
    processes, and a confined VTS gets PYTHONPATH = the directory of the package the
    bridge imported (ami_bridge/supervision/confine.py `runtime`)."""
    return {"PYTHONPATH": str(root), "PYTHONSAFEPATH": "1"}


def checkout_commit(root: Path) -> str | None:
    """The commit checked out at `root` (None when git cannot tell)."""
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


# -- servers under test -------------------------------------------------------------------

class Server:
    """A server under test run as a subprocess (its own process group)."""

    def __init__(self, name: str, argv: list[str], port: int, log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout_s: float = 15.0) -> None:
        if listening(self.port) or not port_free(self.port):
            raise RuntimeError(f"port {self.port} is in use; not starting {self.name}")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        env = {**os.environ, "PYTHONPATH": str(REPO), **(self.env or {})}
        self.proc = spawn(self.argv, stdout=self._log, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL, cwd=REPO, env=env)
        wait_listening(self.port, timeout_s, self.proc)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, grace_s: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc is not None:
            # The process group: VTS children left behind by a crash (they were started
            # by the bridge inside our session, so they share its group).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None


class BridgeServer:
    """The bridge under test: harness.bridge.BridgeProcess with a benchmark's name and
    port. Ready once `ctl status` shows every VTS connected and, when the config has
    `[ami]`, the AMI session resynced, so a measurement never starts before the bridge
    holds everything it runs with. `argv`: a wrapper instead of `python -m ami_bridge run`
    (bench.servers.bridge_uvloop); `env`: added to its environment."""

    def __init__(self, name: str, config_path: Path, port: int, log_path: Path, *,
                 argv: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        from harness.bridge import BridgeProcess

        self.name = name
        self.port = port
        self.log_path = log_path
        self._bridge = BridgeProcess(config_path, log_path=log_path, argv=argv, env=env)

    @property
    def pid(self) -> int:
        pid = self._bridge.pid
        assert pid is not None, f"{self.name} is not running"
        return pid

    @property
    def running(self) -> bool:
        return self._bridge.running

    @property
    def ready_s(self) -> float:
        return self._bridge.ready_s or 0.0

    def start(self, timeout_s: float = 30.0) -> None:
        if listening(self.port) or not port_free(self.port):
            raise RuntimeError(f"port {self.port} is in use; not starting {self.name}")
        self.log_path.unlink(missing_ok=True)  # one run per file, as for the other servers
        self._bridge.start(timeout_s)

    def log_text(self) -> str:
        return self._bridge.log() if self.log_path.exists() else ""

    def stop(self, grace_s: float = 10.0) -> None:
        self._bridge.stop(grace_s)
