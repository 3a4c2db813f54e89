"""The test suite's hostile-input families, counted by running them.

Contract. :data:`FAMILIES` names each family of bad input the product must refuse (what a
hostile Asterisk peer, VTS, tenant admin or caller can send) and the test modules that
throw it at the product. :func:`run_families` runs those modules once with pytest (from
the repository, this interpreter, JUnit XML into a temporary file) and returns per
family how many cases were tried and their outcomes (passed, failed, skipped), so the
figures in docs/reliability.md come from a run, never from a hand count. A case is one
collected test item (a parametrized case counts once; a Hypothesis test counts once,
whatever the number of examples it drew).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from harness.asterisk import REPO_ROOT

# family -> (who attacks, test modules)
FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "AGI session from a hostile peer (environment, framing, limits, deadlines)":
        ("a local process posing as Asterisk",
         ("tests/unit/test_agi_protocol.py", "tests/unit/test_agi_listener.py",
          "tests/loopback/test_agi_server.py")),
    "AGI shared secret": ("a local process without the secret",
                          ("tests/loopback/test_agi_secret.py",)),
    "Values put on the AGI wire (quoting, whitelist)": ("a VTS or a caller's data",
                                                        ("tests/unit/test_agi_wire.py",)),
    "AMI framing (recorded corpus, split at every byte)": ("Asterisk's AMI stream",
                                                           ("tests/unit/test_ami_protocol.py",)),
    "VTS frames and messages": ("a VTS", ("tests/unit/test_vts_protocol.py",)),
    "Dispositions the intermediary refuses (handles, targets, late answers)":
        ("a VTS", ("tests/unit/test_intermediary.py",)),
    "Hostile VTS started by the real daemon": ("a VTS program",
                                               ("tests/loopback/test_hostile_vts.py",)),
    "VTS confinement (bwrap + setpriv)": ("a VTS program",
                                          ("tests/unit/test_confine.py",
                                           "tests/loopback/test_confine.py")),
    "VTS output into the bridge's log": ("a VTS's stdout/stderr",
                                         ("tests/unit/test_vts_output.py",)),
    "Dialplan escapes out of a tenant": ("a tenant's dialplan fragment",
                                         ("tests/unit/test_dialplan_escapes.py",)),
    "Ownership of endpoints, queues, contexts": ("a tenant admin's file",
                                                 ("tests/unit/test_ownership.py",)),
    "Log floods a peer can cause": ("any peer", ("tests/unit/test_ratelimit.py",)),
}
PYTEST_TIMEOUT_S = 900.0


def _module_of(classname: str) -> str:
    """`tests.unit.test_x[.TestClass]` -> `tests/unit/test_x.py`."""
    parts = classname.split(".")
    while parts and not parts[-1].startswith("test_"):
        parts.pop()
    return "/".join(parts) + ".py"


def outcomes(junit_xml: str) -> dict[str, dict[str, int]]:
    """Per test module: tried, passed, failed (failures and errors), skipped."""
    out: dict[str, dict[str, int]] = {}
    for case in ET.fromstring(junit_xml).iter("testcase"):
        counts = out.setdefault(_module_of(case.get("classname", "")),
                                {"tried": 0, "passed": 0, "failed": 0, "skipped": 0})
        counts["tried"] += 1
        if case.find("failure") is not None or case.find("error") is not None:
            counts["failed"] += 1
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return out


def run_families() -> list[dict[str, Any]]:
    modules = sorted({m for _, mods in FAMILIES.values() for m in mods})
    with tempfile.TemporaryDirectory() as tmp:
        xml_path = Path(tmp) / "families.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        f"--junitxml={xml_path}", *modules], cwd=REPO_ROOT,
                       capture_output=True, text=True, timeout=PYTEST_TIMEOUT_S, check=False)
        per_module = outcomes(xml_path.read_text()) if xml_path.exists() else {}
    rows = []
    for family, (attacker, mods) in FAMILIES.items():
        total = {"tried": 0, "passed": 0, "failed": 0, "skipped": 0}
        for mod in mods:
            for key, value in per_module.get(mod, {}).items():
                total[key] += value
        rows.append({"family": family, "from": attacker, "modules": list(mods), **total})
    return rows
