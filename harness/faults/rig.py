"""Asterisk, the bridge and its config for one fault scenario, and the faults' levers.

Contract. :func:`boot_asterisk` starts the sandbox Asterisk with asterisk-conf/ and the
tenants' channel limit raised to :data:`TENANT_CHANNEL_LIMIT` (the rendered limit of 50
calls per tenant is a tenant setting, not what the fault run measures; the soak holds
about 50 calls per tenant). :func:`write_config` writes a bridge config with AMI, the two
example tenants and both VTS as `python -m harness.fault_vts` (acme with the scenario's
behaviour options, globex plain), confined with the harness mounted read-only.
:class:`Rig` holds the scenario's Asterisk and bridge and pulls the levers: the acme VTS's
worker process (inside its bwrap sandbox) for signals, the AMI session kick, Asterisk's
`core restart now`, the bridge's SIGKILL/SIGTERM and restart. Each lever returns when the
fault is in place, not when the system has recovered, except where it says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.asterisk import DEFAULT_CONF_SRC, REPO_ROOT, Asterisk, SandboxError
from harness.bridge import BridgeProcess
from harness.faults.census import descendants
from harness.procs import alive, environ

AGI_PORT = 4573
# Above the soak's ~50 concurrent calls per tenant and a burst's; see the module doc.
TENANT_CHANNEL_LIMIT = 400
_LIMIT_RE = re.compile(r"(GROUP_COUNT\(\w+@ami-bridge-tenant\)\} > )\d+")
RENDERED = DEFAULT_CONF_SRC / "ami-bridge" / "tenants"
HARNESS_DIR = REPO_ROOT / "harness"
# How long after `core restart now` Asterisk must be fully booted again.
RESTART_TIMEOUT_S = 30.0
RESTART_COMMAND_TIMEOUT_S = 2.0
# A bridge that got SIGTERM must be gone by then (its own grace: VTS grace + margin).
TERM_EXIT_TIMEOUT_S = 15.0
# How long a killed bridge's VTS processes get to notice and exit by themselves before
# the harness counts the ones left as orphans (and kills them).
ORPHAN_GRACE_S = 5.0


def asterisk_overrides() -> dict[str, str]:
    """The rendered tenant fragments with the channel limit raised."""
    out = {}
    for path in sorted(RENDERED.glob("*.conf")):
        text, count = _LIMIT_RE.subn(rf"\g<1>{TENANT_CHANNEL_LIMIT}", path.read_text())
        if count != 1:
            raise SandboxError(f"{path}: expected one GROUP_COUNT channel limit, found {count}")
        out[f"ami-bridge/tenants/{path.name}"] = text
    return out


def boot_asterisk(name: str = "faults") -> Asterisk:
    asterisk = Asterisk(conf_src=DEFAULT_CONF_SRC, name=name, agi_port=AGI_PORT,
                        extra_files=asterisk_overrides())
    asterisk.start()
    return asterisk


def write_config(directory: Path, *, acme_args: Sequence[str] = (),
                 router_timeout: float = 2.0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)

    def command(name: str, extra: Sequence[str]) -> str:
        return json.dumps([sys.executable, "-m", "harness.fault_vts", "--vts", name, *extra])

    mounts = f'read_only_paths = ["{HARNESS_DIR}"]'
    text = f"""
[bridge]
agi_listen = "127.0.0.1:{AGI_PORT}"
router_timeout = {router_timeout}
control_socket = "{directory}/control.sock"

[ami]
host = "127.0.0.1"
port = 5038
username = "ami-bridge"
secret = "ami-bridge-secret"

[vts.acme]
command = {command("acme", acme_args)}
grace_period = 1.0
{mounts}

[vts.globex]
command = {command("globex", ())}
grace_period = 1.0
{mounts}

[tenants.acme]
timezone = "Europe/Berlin"
targets = ["1001", "1002", "operator"]

[tenants.acme.venues.acme-venue]
vts = "acme"

[[tenants.acme.rules]]
name = "sales"
targets = ["1001"]

[tenants.globex]
timezone = "America/New_York"
targets = ["2001", "operator"]

[tenants.globex.venues.globex-venue]
vts = "globex"

[[tenants.globex.rules]]
name = "support"
targets = ["2001"]
"""
    path = directory / "bridge.toml"
    path.write_text(text)
    return path


class Rig:
    """One scenario's Asterisk (shared or its own) and bridge (replaced on restarts)."""

    def __init__(self, asterisk: Asterisk, config: Path, workdir: Path) -> None:
        self.asterisk = asterisk
        self.config = config
        self.workdir = workdir
        self.bridge = self._new_bridge()
        # Counters of bridges that were replaced (killed or stopped), oldest first.
        self.past_counters: list[dict[str, Any]] = []
        self.orphans = 0
        self.term_exit: dict[str, Any] = {}

    def _new_bridge(self) -> BridgeProcess:
        return BridgeProcess(self.config, log_path=self.workdir / "bridge.log")

    def start(self) -> None:
        self.bridge.start()

    def stop(self) -> None:
        self.bridge.stop()

    def status(self) -> dict[str, Any] | None:
        try:
            return self.bridge.status(timeout_s=2.0)
        except (OSError, ValueError, RuntimeError):
            return None

    # -- the VTS ------------------------------------------------------------------------
    def vts_worker(self, name: str = "acme") -> int | None:
        """The pid of VTS `name`'s own process (the fault VTS inside bwrap)."""
        for top in self.bridge.vts_pids(name):
            for pid in [top, *descendants(top)]:
                with contextlib.suppress(OSError):
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                    if b"harness.fault_vts" in cmd and b"bwrap" not in cmd.split(b"\0")[0]:
                        return pid
        return None

    def signal_vts(self, sig: signal.Signals, name: str = "acme") -> bool:
        pid = self.vts_worker(name)
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
            return True
        return False

    # -- AMI and Asterisk -----------------------------------------------------------------
    def kick_ami(self) -> bool:
        out = self.asterisk.rx("manager show connected")
        for line in out.splitlines():
            fields = line.split()
            if fields and fields[0] == "ami-bridge" and len(fields) > 4:
                self.asterisk.rx(f"manager kick session {fields[4]}")
                return True  # Username IP Start Elapsed FileDes ...
        return False

    def restart_asterisk(self) -> float:
        """`core restart now`; returns when Asterisk is fully booted again (seconds)."""
        started = time.monotonic()
        # The remote console stays attached while Asterisk goes down: do not wait on it.
        with contextlib.suppress(SandboxError, OSError, subprocess.TimeoutExpired):
            self.asterisk.rx("core restart now", timeout=RESTART_COMMAND_TIMEOUT_S)
        deadline = started + RESTART_TIMEOUT_S
        while time.monotonic() < deadline:
            if not self.asterisk.running:  # it exited instead of re-executing itself
                self.asterisk.stop(keep_lock=True)
                self.asterisk.start()
                return time.monotonic() - started
            with contextlib.suppress(SandboxError, OSError, subprocess.TimeoutExpired):
                if "fully booted" in self.asterisk.rx("core waitfullybooted", timeout=5.0):
                    uptime = self.asterisk.rx("core show uptime seconds")
                    if "System uptime: " in uptime and _uptime_s(uptime) < (
                            time.monotonic() - started + 1):
                        return time.monotonic() - started
            time.sleep(0.1)
        raise SandboxError(f"Asterisk not back within {RESTART_TIMEOUT_S} s of core restart")

    # -- the bridge -----------------------------------------------------------------------
    def kill_bridge(self, sig: signal.Signals) -> None:
        """Send `sig` to the bridge; once it is gone, count its VTS processes left after
        ORPHAN_GRACE_S (orphans), then start a new bridge on the same config and wait
        until it is ready. With SIGTERM, record how the bridge exited."""
        old = self.bridge
        pid = old.pid
        assert pid is not None
        status = self.status()
        if status is not None:
            self.past_counters.append(status.get("counters", {}))
        vts = [p for p in descendants(pid)]
        sent = time.monotonic()
        os.kill(pid, sig)
        if sig == signal.SIGTERM:
            deadline = sent + TERM_EXIT_TIMEOUT_S
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            self.term_exit = {"exited": not alive(pid),
                              "exit_s": round(time.monotonic() - sent, 3)}
        deadline = time.monotonic() + ORPHAN_GRACE_S
        while time.monotonic() < deadline and any(alive(p) for p in vts):
            time.sleep(0.05)
        self.orphans += sum(1 for p in vts if alive(p) and environ(p))
        code = old.stop()
        if sig == signal.SIGTERM:
            self.term_exit["code"] = code
        self.bridge = self._new_bridge()
        self.bridge.start()


def _uptime_s(text: str) -> float:
    match = re.search(r"System uptime: (\d+)", text)
    return float(match.group(1)) if match else float("inf")
