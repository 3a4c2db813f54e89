"""`ami-bridge calltest` against the sandbox Asterisk with the example tenants (issue 13).

The bridge routes with the example tenant files; calltest derives a case per reachable
rule of each venue, places them with SIPp (caller numbers in P-Asserted-Identity),
follows them over AMI and cancels them while the sandbox phones ring. Every call must
ring where its rule says (exit 0). Then a copy of acme's file whose 'sales' rule points
at the operator instead — not applied: the bridge still routes by the original — makes
calltest report exactly that case as a mismatch and exit 1.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from harness.asterisk import Asterisk
from harness.calltest import ringing_phones, run_calltest

pytestmark = pytest.mark.asterisk
ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, tenants_dir: Path) -> Path:
    """examples/bridge.toml with its tenants in `tenants_dir` and its files under tmp."""
    text = (ROOT / "examples" / "bridge.toml").read_text(encoding="utf-8")
    for old, new in [('tenants_dir = "tenants.d"', f'tenants_dir = "{tenants_dir}"'),
                     ('control_socket = "/run/ami-bridge/control.sock"',
                      f'control_socket = "{tmp_path / "control.sock"}"'),
                     ('path = "/var/lib/ami-bridge/personal.sqlite3"',
                      f'path = "{tmp_path / "personal.sqlite3"}"')]:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / f"bridge-{tenants_dir.name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _rows(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(("acme ", "globex "))]


def test_calltest_matches_the_rules_then_reports_an_unapplied_change(
        asterisk: Asterisk, run_bridge: Any, tmp_path: Path) -> None:
    live = tmp_path / "tenants.d"
    shutil.copytree(ROOT / "examples" / "tenants.d", live)
    run_bridge(_config(tmp_path, live))

    with ringing_phones():
        result = run_calltest(_config(tmp_path, live))
    assert result.returncode == 0, result.output
    rows = _rows(result.output)
    # acme: withheld caller, sales (DNIS 1...), everything else; globex: support.
    assert len(rows) == 4, result.output
    assert all(row.rstrip().endswith(" ok") for row in rows), result.output
    assert any("withheld-to-operator" in r and "PJSIP/acme-operator" in r for r in rows)
    assert any("sales" in r and "PJSIP/acme-agent" in r for r in rows)
    assert re.search(r"latency .*: p50 \d+ ms, p90 \d+ ms, p99 \d+ ms", result.output)
    assert "4 calls, 4 at their expected destination, 0 not" in result.output

    changed = tmp_path / "changed"
    shutil.copytree(live, changed)
    acme = changed / "acme" / "tenant.toml"
    text = acme.read_text(encoding="utf-8")
    old = 'name = "sales"\ndnis_prefix = "1"\ntargets = ["1001"]'
    assert old in text
    acme.write_text(text.replace(old, old.replace('["1001"]', '["operator"]')),
                    encoding="utf-8")

    with ringing_phones():
        result = run_calltest(_config(tmp_path, changed))
    assert result.returncode == 1, result.output
    bad = [row for row in _rows(result.output) if "MISMATCH" in row]
    assert len(bad) == 1, result.output
    # Expected the operator (the changed file), rang the agent (the applied one).
    assert "sales" in bad[0]
    assert re.search(r"PJSIP/acme-operator\s+PJSIP/acme-agent", bad[0]), bad[0]
    assert "4 calls, 3 at their expected destination, 1 not" in result.output
    deadline = time.monotonic() + 10.0  # the callee legs end just after the callers'
    while asterisk.channel_count() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert asterisk.channel_count() == 0
