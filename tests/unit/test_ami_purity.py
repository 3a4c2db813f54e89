"""The AMI cores (framing, tracker, backoff) do no I/O (STYLE.md habit 1)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {"asyncio", "socket", "logging", "selectors", "subprocess", "threading"}


@pytest.mark.parametrize("path", ["ami_bridge/ami/protocol.py", "ami_bridge/ami/tracker.py",
                                  "ami_bridge/ami/backoff.py"])
def test_core_imports_no_io(path: str) -> None:
    imported = set()
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN
