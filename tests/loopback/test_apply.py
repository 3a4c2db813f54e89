"""`apply_config` with scripted Asterisk callbacks: order of steps and rollback."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from ami_bridge import config as config_mod
from ami_bridge.apply import apply_config

ROOT = Path(__file__).resolve().parents[2]


def setup(tmp_path: Path, *, carol_dial: str = "PJSIP/carol-agent") -> tuple[
        config_mod.BridgeConfig, config_mod.BridgeConfig, Path]:
    etc = tmp_path / "etc"
    shutil.copytree(ROOT / "asterisk-conf", etc)
    shutil.copytree(ROOT / "examples" / "tenants.d", tmp_path / "tenants.d")
    bridge = tmp_path / "bridge.toml"
    text = f'[bridge]\ntenants_dir = "tenants.d"\nasterisk_conf_dir = "{etc}"\n' \
        "[vts.acme]\n[vts.globex]\n"
    bridge.write_text(text)
    current = config_mod.load(bridge)
    (tmp_path / "tenants.d" / "carol").mkdir()
    (tmp_path / "tenants.d" / "carol" / "tenant.toml").write_text(
        f'[extensions]\n3001 = "{carol_dial}"\noperator = "{carol_dial}"\n'
        '[venues.carol-venue]\nvts = "carol"\n')
    bridge.write_text(text + "[vts.carol]\n")  # with its tenant: an idle VTS is refused
    return current, config_mod.load(bridge), etc


def test_apply_swaps_bridge_then_reloads_then_verifies(tmp_path: Path) -> None:
    current, new, etc = setup(tmp_path)
    steps: list[str] = []

    async def swap(cfg: config_mod.BridgeConfig) -> None:
        steps.append(f"swap {len(cfg.tenants)}")

    async def reload() -> None:
        steps.append("reload")

    async def missing(contexts: list[str]) -> list[str]:
        steps.append(f"verify {','.join(contexts)}")
        return []

    result = asyncio.run(apply_config(current=current, new=new, swap_bridge=swap,
                                      reload_asterisk=reload, missing_contexts=missing))
    assert result.ok, result.message
    assert steps == ["swap 3", "reload", "verify acme-personal,acme-venue,carol-venue,"
                     "globex-personal,globex-venue"]
    assert set(result.changed) == {"ami-bridge/extensions.conf", "ami-bridge/tenants/carol.conf"}
    assert '#include "ami-bridge/tenants/carol.conf"' in (
        etc / "ami-bridge" / "extensions.conf").read_text()


def test_verification_failure_restores_fragments_and_reloads_again(tmp_path: Path) -> None:
    current, new, etc = setup(tmp_path)
    before = {p: p.read_text() for p in (etc / "ami-bridge").rglob("*.conf")}
    steps: list[str] = []

    async def swap(cfg: config_mod.BridgeConfig) -> None:
        steps.append(f"swap {len(cfg.tenants)}")

    async def reload() -> None:
        steps.append("reload")

    async def missing(contexts: list[str]) -> list[str]:
        return ["carol-venue"]

    result = asyncio.run(apply_config(current=current, new=new, swap_bridge=swap,
                                      reload_asterisk=reload, missing_contexts=missing))
    assert not result.ok
    assert "rolled back" in result.message and "carol-venue" in result.message
    assert steps == ["swap 3", "reload", "swap 2", "reload"]
    assert {p: p.read_text() for p in (etc / "ami-bridge").rglob("*.conf")} == before
    assert not (etc / "ami-bridge" / "tenants" / "carol.conf").exists()


def test_lint_findings_stop_before_anything_changes(tmp_path: Path) -> None:
    current, new, etc = setup(tmp_path)
    # A hand-written fragment that crosses into another tenant: the new tree is refused.
    (etc / "tenants" / "carol.conf").write_text("[carol-internal]\n"
                                                "include => acme-internal\n")
    before = {p: p.read_text() for p in (etc / "ami-bridge").rglob("*.conf")}

    async def never(*args: object) -> list[str]:
        raise AssertionError("must not be called")

    result = asyncio.run(apply_config(current=current, new=new, swap_bridge=never,
                                      reload_asterisk=never, missing_contexts=never))
    assert not result.ok
    assert "conf check refused" in result.message
    assert f"{etc / 'tenants' / 'carol.conf'}:2:" in result.message
    assert {p: p.read_text() for p in (etc / "ami-bridge").rglob("*.conf")} == before
