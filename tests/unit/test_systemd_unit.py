"""systemd/ami-bridge.service: systemd's own verifier, and the keys the daemon relies on.

`systemd-analyze verify` checks a unit as systemd would load it, including that the
ExecStart binary exists and is executable; the test points ExecStart at a stub in a
temporary directory (the one line it changes) since no ami-bridge is installed in
/usr/local/bin here. The parse checks what this project's code assumes of the unit:
notify readiness, the config path, the directories the defaults live in, a stop timeout
above the drain bound, KillMode=mixed for the drain, and the sandbox's capabilities.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ami_bridge import config as config_mod
from ami_bridge import lifecycle
from ami_bridge.personal.settings import DEFAULT_STATE_DIR

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "ami-bridge.service"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
DEFAULT_CONFIG = "/etc/ami-bridge/bridge.toml"
# What bwrap + setpriv need as root (measured with setpriv --bounding-set and the
# confinement probe; see the unit's comment).
SANDBOX_CAPS = {"CAP_SYS_ADMIN", "CAP_SETUID", "CAP_SETGID", "CAP_NET_ADMIN"}


def parse(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value (systemd keys may repeat); comments skipped."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, f"{UNIT}:{number}: not a key: {raw!r}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "min": 60.0}
    for suffix, factor in units.items():
        if value.endswith(suffix) and value[: -len(suffix)].isdigit():
            return int(value[: -len(suffix)]) * factor
    return float(value)


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse(UNIT.read_text())


def one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit[section].get(key, [])
    assert len(values) == 1, f"[{section}] {key}: expected one value, got {values}"
    return values[0]


@pytest.mark.skipif(not Path(SYSTEMD_ANALYZE).exists(), reason="no systemd-analyze")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    stub = tmp_path / "bin" / "ami-bridge"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = UNIT.read_text()
    assert text.count("/usr/local/bin/ami-bridge ") == 1
    copy = tmp_path / "ami-bridge.service"
    copy.write_text(text.replace("/usr/local/bin/ami-bridge ", f"{stub} "))
    done = subprocess.run([SYSTEMD_ANALYZE, "verify", str(copy)], capture_output=True,
                          text=True, timeout=60, check=False)
    # Warnings (unknown keys, bad values) go to stderr with exit status 0: both must be clean.
    problems = [line for line in done.stderr.splitlines() if copy.name in line or
                "ami-bridge" in line]
    assert done.returncode == 0 and problems == [], done.stderr


def test_readiness_and_reload(unit: dict[str, dict[str, list[str]]]) -> None:
    assert one(unit, "Service", "Type") == "notify"
    assert one(unit, "Service", "NotifyAccess") == "main"
    assert one(unit, "Service", "ExecReload") == "/bin/kill -HUP $MAINPID"


def test_execstart_runs_the_daemon_with_the_default_config(
        unit: dict[str, dict[str, list[str]]]) -> None:
    argv = one(unit, "Service", "ExecStart").split()
    assert argv[0].endswith("/ami-bridge") and argv[1] == "run"
    assert argv[argv.index("--config") + 1] == DEFAULT_CONFIG


def test_directories_are_where_the_defaults_point(unit: dict[str, dict[str, list[str]]]) -> None:
    runtime = one(unit, "Service", "RuntimeDirectory")
    assert str(Path(config_mod.DEFAULT_CONTROL_SOCKET).parent) == f"/run/{runtime}"
    assert f"/var/lib/{one(unit, 'Service', 'StateDirectory')}" == DEFAULT_STATE_DIR


def test_stop_leaves_time_for_the_drain(unit: dict[str, dict[str, list[str]]]) -> None:
    assert one(unit, "Service", "KillMode") == "mixed"  # the VTS answer during the drain
    default_vts_grace = 3.0  # config.py: [vts.NAME] grace_period default
    needed = (config_mod.DEFAULT_ROUTER_TIMEOUT + lifecycle.DRAIN_MARGIN_S
              + lifecycle.ANSWER_FLUSH_S + default_vts_grace)
    assert seconds(one(unit, "Service", "TimeoutStopSec")) >= 5 * needed


def test_capabilities_are_the_sandboxs_and_no_more(unit: dict[str, dict[str, list[str]]]) -> None:
    assert set(one(unit, "Service", "CapabilityBoundingSet").split()) == SANDBOX_CAPS
    assert one(unit, "Service", "AmbientCapabilities") == ""
    namespaces = set(one(unit, "Service", "RestrictNamespaces").split())
    assert "user" not in namespaces
    assert {"mnt", "net", "pid", "ipc", "uts", "cgroup"} <= namespaces
    assert "AF_NETLINK" in one(unit, "Service", "RestrictAddressFamilies").split()
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices",
                "ProtectKernelTunables", "ProtectKernelModules", "ProtectControlGroups"):
        assert one(unit, "Service", key) == "yes", key
    assert one(unit, "Service", "ProtectSystem") == "strict"
    assert "PrivateUsers" not in unit["Service"]  # would void the capabilities
    assert "SystemCallFilter" not in unit["Service"]  # bwrap needs mount, unshare


def test_every_hardening_option_is_explained(unit: dict[str, dict[str, list[str]]]) -> None:
    # The house rule: an option nobody can justify is an option nobody can safely drop.
    lines = UNIT.read_text().splitlines()
    for key in ("KillMode", "TimeoutStopSec", "CapabilityBoundingSet", "RestrictNamespaces",
                "RestrictAddressFamilies", "ProtectSystem", "ProtectHome", "LimitNOFILE"):
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{key}="))
        assert lines[index - 1].startswith("#"), f"{key} has no comment above it"
