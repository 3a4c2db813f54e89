"""Shared pieces of the integration tests: bridge configs, VTS records, UAS counts."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from harness.sipp import SippUas
from tests.integration.drivers import FASTAGI, Driver

AMI_SECTION = """
[ami]
host = "127.0.0.1"
port = 5038
username = "ami-bridge"
secret = "ami-bridge-secret"
"""


# The VTS processes run confined (docs/confinement.md): they see the fault VTS and the
# scripted VTS only because the config mounts these directories, and write their records
# into the test's directory only because it is mounted writable (and open to their uid).
HARNESS = Path(__file__).resolve().parents[2] / "harness"
INTEGRATION = Path(__file__).resolve().parent


def vts_mounts(tmp_path: Path) -> str:
    tmp_path.chmod(0o777)
    return (f'read_only_paths = ["{HARNESS}", "{INTEGRATION}"]\n'
            f'writable_paths = ["{tmp_path}"]')


def vts_command(name: str, record: Path, *extra: str) -> str:
    """A `[vts.NAME] command` running the fault VTS (harness.fault_vts), which records
    every message it receives to `record`; `extra`: its --behaviour options."""
    argv = [sys.executable, "-m", "harness.fault_vts", "--vts", name,
            "--record", str(record),
            *extra]
    return json.dumps(argv)


DEFAULT_ACME_RULES = """
[[tenants.acme.rules]]
name = "sales"
targets = ["1001"]
"""


def write_config(tmp_path: Path, *, acme_vts: str = "", acme_venue: str = "",
                 acme_rules: str = "", acme_extra: str = "", ami: bool = False,
                 driver: Driver = FASTAGI, acme_driver: Driver | None = None) -> Path:
    """The bridge config of the two test tenants; both venues ask over `driver`
    (tests/integration/drivers.py), whose needs (`[ami]`, its sections) it adds;
    `acme_driver`: acme's venue asks over this one instead (a driver's own tests)."""
    acme_driver = acme_driver or driver
    acme_record, globex_record = tmp_path / "acme.jsonl", tmp_path / "globex.jsonl"
    acme_rules = acme_rules or DEFAULT_ACME_RULES
    text = f"""
[bridge]
agi_listen = "127.0.0.1:4573"
router_timeout = 2.0
control_socket = "{tmp_path}/control.sock"
{AMI_SECTION if ami or driver.needs_ami or acme_driver.needs_ami else ""}
{driver.sections(tmp_path) if acme_driver == driver else
 driver.sections(tmp_path) + acme_driver.sections(tmp_path)}

[vts.acme]
command = {acme_vts or vts_command("acme", acme_record)}
grace_period = 1.0
{vts_mounts(tmp_path)}

[vts.globex]
command = {vts_command("globex", globex_record)}
{vts_mounts(tmp_path)}

[tenants.acme]
timezone = "Europe/Berlin"
targets = ["1001", "1002", "operator", "9", "91", "92", "93", "94", "95"]
queues = ["sales"]
{acme_extra}

[tenants.acme.venues.acme-venue]
vts = "acme"
{acme_driver.venue_line()}
{acme_venue}

{acme_rules}

[tenants.globex]
timezone = "America/New_York"
targets = ["2001", "operator"]

[tenants.globex.venues.globex-venue]
vts = "globex"
{driver.venue_line()}

[[tenants.globex.rules]]
name = "support"
targets = ["2001"]
"""
    path = tmp_path / "bridge.toml"
    path.write_text(text)
    return path


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def of_type(messages: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in messages if m["type"] == kind]



def arrived(uas: dict[str, SippUas]) -> dict[str, int]:
    return {name: u.stop().successful for name, u in uas.items()}
