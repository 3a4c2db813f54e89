"""The operator's lint allowances come from the bridge config only ([bridge] dialplan_allow):
`conf check --config` honours them, a tenant file cannot grant itself one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ami_bridge.config import ConfigError, load

TENANT = """
[tenants.acme]
targets = ["1001"]
[tenants.acme.venues.acme-venue]
vts = "acme"
"""


def _config(tmp_path: Path, bridge_extra: str = "", tenant_extra: str = "") -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(f"[bridge]\ncontrol_socket = \"{tmp_path}/ctl.sock\"\n{bridge_extra}\n"
                    f"[vts.acme]\n{TENANT}{tenant_extra}")
    return path


def _check(config: Path, dialplan: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ami_bridge", "conf", "check", "--config",
                           str(config), str(dialplan)], capture_output=True, text=True,
                          timeout=60)


def test_system_is_a_finding_until_the_operator_allows_it(tmp_path: Path) -> None:
    dialplan = tmp_path / "acme.conf"
    dialplan.write_text("[acme-internal]\nexten => 1001,1,System(/usr/local/bin/report)\n"
                        " same => n,Return()\n")
    refused = _check(_config(tmp_path), dialplan)
    assert refused.returncode == 1 and "S603" in refused.stdout
    allowed = _check(_config(tmp_path, 'dialplan_allow = ["S603 System"]'), dialplan)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr


def test_a_bad_allowance_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"bridge\.dialplan_allow.*'X999'"):
        load(_config(tmp_path, 'dialplan_allow = ["X999 System"]'))


def test_a_tenant_cannot_allow_itself_anything(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dialplan_allow"):
        load(_config(tmp_path, tenant_extra='dialplan_allow = ["S603 System"]\n'))
