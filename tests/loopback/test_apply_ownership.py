"""`ctl apply` and `ctl reload` on a running bridge refuse a tenant file naming what it
does not own: the answer names the file, the key, the value and the owner, and neither
the running venue map nor the rendered fragments change."""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path
from typing import Any

from ami_bridge import config as config_mod
from ami_bridge import control
from ami_bridge.daemon import Bridge

ROOT = Path(__file__).resolve().parents[2]


def setup(tmp_path: Path) -> tuple[Path, Path]:
    """The example tenants on a bridge without AMI; Asterisk's config dir rendered."""
    etc = tmp_path / "etc"
    shutil.copytree(ROOT / "asterisk-conf", etc)
    shutil.copytree(ROOT / "examples" / "tenants.d", tmp_path / "tenants.d")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bridge = tmp_path / "bridge.toml"
    bridge.write_text(f'[bridge]\nagi_listen = "127.0.0.1:{port}"\ntenants_dir = "tenants.d"\n'
                      f'asterisk_conf_dir = "{etc}"\n'
                      f'control_socket = "{tmp_path}/control.sock"\n[vts.acme]\n[vts.globex]\n'
                      '[store]\npath = "personal.sqlite3"\n')
    return bridge, etc


async def ctl(bridge: Bridge, command: str) -> dict[str, Any]:
    answer: dict[str, Any] = await asyncio.to_thread(control.request,
                                                     bridge.config.control_socket, command)
    return answer


def test_apply_and_reload_refuse_a_tenant_file_naming_another_tenants_names(
        tmp_path: Path) -> None:
    path, etc = setup(tmp_path)
    acme = tmp_path / "tenants.d" / "acme" / "tenant.toml"
    good = acme.read_text(encoding="utf-8")
    fragments = {p: p.read_text() for p in (etc / "ami-bridge").rglob("*.conf")}

    async def main() -> None:
        bridge = Bridge(config_mod.load(path))
        await bridge.start()
        try:
            attacks = [
                ('members = ["PJSIP/acme-agent"]', 'members = ["Local/1001@globex-internal"]',
                 "queues.sales.members: 'Local/1001@globex-internal'", "tenant globex's"),
                ("@acme-carrier", "@globex-carrier",
                 "outbound: 'PJSIP/{number}@globex-carrier'", "tenant globex's"),
                ("[venues.acme-venue]", "[venues.default]",
                 "venues.default: venue 'default'", "no tenant's"),
            ]
            for old, new, key_value, owner in attacks:
                acme.write_text(good.replace(old, new, 1), encoding="utf-8")
                for command in ("apply", "reload"):
                    answer = await ctl(bridge, command)
                    assert answer["ok"] is False, (command, answer)
                    assert f"{acme}: {key_value}" in answer["error"], answer["error"]
                    assert owner in answer["error"]
                    assert sorted(bridge.config.venues) == ["acme-personal", "acme-venue",
                                                           "globex-personal", "globex-venue"]
            assert (await ctl(bridge, "apply"))["error"].endswith("nothing changed")
            # The fixed file passes the loader: apply gets as far as needing Asterisk.
            acme.write_text(good, encoding="utf-8")
            answer = await ctl(bridge, "apply")
            assert answer["ok"] is False and "needs [ami]" in answer["error"]
        finally:
            await bridge.stop()

    asyncio.run(main())
    assert {p: p.read_text() for p in (etc / "ami-bridge").rglob("*.conf")} == fragments
