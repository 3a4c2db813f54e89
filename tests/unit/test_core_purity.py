"""Cores do no I/O (STYLE.md habit 1), and the VTS runtime imports nothing of the daemon.

The one list of the modules that must stay pure: protocol cores (AGI, AMI, the VTS
wire), the pure policies (routing, backoff, restart policy, reconcile), and the dialplan
checker's layers. A module is a core when its contract says so in its header; add it
here when you write one. Pure means it imports no asyncio, socket, logging, selectors,
subprocess or threading; reading a file through pathlib (the dialplan parser's disk
source) is allowed.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {"asyncio", "socket", "logging", "selectors", "subprocess", "threading"}
CORES = [
    "agi/protocol.py", "agi/wire.py", "agi/variables.py",
    "tenants/protocol.py", "tenants/routing.py",
    "ami_bridge/ami/protocol.py", "ami_bridge/ami/tracker.py",
    "ami_bridge/backoff.py", "ami_bridge/drivers/ari_events.py",
    "ami_bridge/drivers/ari_calls.py",
    "ami_bridge/supervision/restart_policy.py", "ami_bridge/supervision/reconcile.py",
    # The cluster's request signing and its config section (ami_bridge/cluster).
    "ami_bridge/cluster/signing.py", "ami_bridge/cluster/settings.py",
    # The dialplan layers (syntax -> parser -> targets -> taint -> lint -> check, and
    # findings) by glob, so a new layer is covered at once; the renderer writes files.
    *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "ami_bridge/dialplan").glob("*.py")
            if p.name != "render.py"),
    # Still to add when they land (engineer A's branch): the typed VTS messages, the
    # dialplan contract and the namespace patterns modules, if they are new files.
]


def _imports(path: Path) -> set[str]:
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    return imported


@pytest.mark.parametrize("path", CORES)
def test_core_imports_no_io(path: str) -> None:
    imported = _imports(ROOT / path)
    assert not imported & FORBIDDEN, f"{path} imports {sorted(imported & FORBIDDEN)}"


def test_the_check_sees_an_io_import(tmp_path: Path) -> None:
    # The test above must be able to fail: an import inside a function counts too.
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    import socket.something\n")
    assert _imports(sample) & FORBIDDEN == {"socket"}


def test_the_vts_runtime_imports_nothing_of_the_daemon() -> None:
    # A fresh interpreter: what `python -m ami_bridge.tenants.worker` loads at import.
    code = ("import sys, ami_bridge.tenants.worker\n"
            "print('\\n'.join(m for m in sys.modules if m.startswith('ami_bridge')))")
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                            text=True).stdout.split()
    assert "ami_bridge.tenants.worker" in loaded
    daemon_side = ("ami_bridge.supervision", "ami_bridge.daemon", "ami_bridge.config",
                   "ami_bridge.intermediary", "ami_bridge.ami")
    assert [m for m in loaded if m.startswith(daemon_side)] == []
