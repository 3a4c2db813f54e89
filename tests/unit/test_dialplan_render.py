"""`conf render`: deterministic fragments, in sync with what the repository ships."""

from __future__ import annotations

from pathlib import Path

import pytest

from ami_bridge import config as config_mod
from ami_bridge.cli import main
from ami_bridge.dialplan.render import render_tree, write_tree

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "bridge.toml"


def test_shipped_fragments_are_what_the_example_config_renders(
        capsys: pytest.CaptureFixture[str]) -> None:
    # asterisk-conf/ami-bridge/ is rendered, committed, and used by the tests and demo.
    assert main(["conf", "render", "--config", str(EXAMPLE), "--out",
                 str(ROOT / "asterisk-conf"), "--check"]) == 0, capsys.readouterr().out


def test_render_is_deterministic_and_rewrites_only_changes(tmp_path: Path) -> None:
    cfg = config_mod.load(EXAMPLE)
    first, second = render_tree(cfg), render_tree(config_mod.load(EXAMPLE))
    assert first == second
    assert sorted(first) == ["ami-bridge/extensions.conf", "ami-bridge/queues.conf",
                             "ami-bridge/tenants/acme.conf", "ami-bridge/tenants/globex.conf"]
    assert write_tree(first, tmp_path) == sorted(first)
    assert write_tree(first, tmp_path) == []
    assert not list(tmp_path.rglob(".*"))  # no temp files left behind


def test_venue_contract_and_tenant_resources() -> None:
    acme = render_tree(config_mod.load(EXAMPLE))["ami-bridge/tenants/acme.conf"]
    assert "[acme-venue]" in acme
    assert "AGI(${AB_AGI_URL}/route,${AB_LAST},${DIALSTATUS})" in acme
    assert '$["${AGISTATUS}" = "SUCCESS" & "${AB_ACTION}" = "route"]?:other' in acme
    assert "Gosub(acme-${AB_KIND},${AB_TARGET},1)" in acme
    assert "Set(CHANNEL(language)=en)" in acme
    assert "GROUP_COUNT(acme@ami-bridge-tenant)} > 50" in acme
    # caller-controlled digits reach the carrier only through FILTER
    assert "Dial(PJSIP/${FILTER(0-9+,${EXTEN})}@acme-carrier,${AB_DIAL_TIMEOUT})" in acme
    assert "globex" not in acme


def test_render_refuses_a_broken_config(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "bridge.toml"
    broken.write_text('[bridge]\ntenants_dir = "nowhere"\n')
    assert main(["conf", "render", "--config", str(broken), "--out", str(tmp_path)]) == 2
    assert "bridge.tenants_dir" in capsys.readouterr().err
    assert not (tmp_path / "ami-bridge").exists()
