"""Protocol cores do no I/O: they import no asyncio, socket or logging (STYLE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORES = ["agi/protocol.py", "agi/wire.py", "agi/variables.py", "tenants/protocol.py",
         "tenants/routing.py", "tenants/restart_policy.py"]
FORBIDDEN = {"asyncio", "socket", "logging", "selectors", "subprocess", "threading"}


@pytest.mark.parametrize("path", CORES)
def test_core_imports_no_io(path: str) -> None:
    tree = ast.parse((ROOT / path).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"{path} imports {sorted(imported & FORBIDDEN)}"
