"""Tenant config as dialplan fragments, changed live on the real Asterisk 22 (issue 5).

A third tenant is added while SIPp calls flow into the other two: `ctl apply` renders
its fragment, lints everything, swaps fragment and venue map, reloads the dialplan over
AMI and checks with Asterisk's own ShowDialPlan. Broken tenant files and failed reloads
leave everything as it was.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ami_bridge import control
from ami_bridge.ami.client import AmiClient
from harness.asterisk import DEFAULT_CONF_SRC, Asterisk
from harness.sipp import SippUas, run_uac, start_uac
from tests.integration.conftest import AGI_PORT

pytestmark = pytest.mark.asterisk
ROOT = Path(__file__).resolve().parents[2]
CAROL_PJSIP = """

; tenant carol: the operator adds its trunk and phone; ami-bridge adds its dialplan
[carol-trunk](endpoint-common)
context = carol-venue
identify_by = username

[carol-agent](endpoint-common)
context = carol-internal
aors = carol-agent
[carol-agent]
type = aor
contact = sip:carol-agent@127.0.0.1:5075
"""
CAROL = """
timezone = "Europe/Paris"
language = "fr"
channel_limit = 10

[extensions]
3001 = "PJSIP/carol-agent"
operator = "PJSIP/carol-agent"

[venues.carol-venue]
vts = "carol"

[[rules]]
name = "all"
targets = ["3001"]
"""


@pytest.fixture(scope="module")
def asterisk() -> Iterator[Asterisk]:
    pjsip = (DEFAULT_CONF_SRC / "pjsip.conf").read_text() + CAROL_PJSIP
    with Asterisk(conf_src=DEFAULT_CONF_SRC, name="it-tenant-apply", agi_port=AGI_PORT,
                  extra_files={"pjsip.conf": pjsip}) as ast:
        yield ast


def write_bridge(tmp_path: Path, asterisk: Asterisk, *, carol: bool = False,
                 reload_secret: str = "ami-bridge-reload-secret") -> Path:
    tenants = tmp_path / "tenants.d"
    if not tenants.exists():
        shutil.copytree(ROOT / "examples" / "tenants.d", tenants)
    vts = "".join(f"[vts.{n}]\n" for n in ("acme", "globex", *(["carol"] if carol else [])))
    path = tmp_path / "bridge.toml"
    path.write_text(f"""
[bridge]
agi_listen = "127.0.0.1:{AGI_PORT}"
control_socket = "{tmp_path}/control.sock"
tenants_dir = "tenants.d"
asterisk_conf_dir = "{asterisk.instance_dir / 'etc'}"

[store]
path = "{tmp_path}/personal.sqlite3"

[ami]
username = "ami-bridge"
secret = "ami-bridge-secret"
reload_username = "ami-bridge-reload"
reload_secret = "{reload_secret}"

{vts}
""")
    return path


def add_carol(tmp_path: Path, text: str = CAROL) -> Path:
    carol = tmp_path / "tenants.d" / "carol"
    carol.mkdir(exist_ok=True)
    (carol / "tenant.toml").write_text(text)
    return carol / "tenant.toml"


def ctl(tmp_path: Path, command: str) -> dict[str, Any]:
    return control.request(str(tmp_path / "control.sock"), command)


def show_dialplan(contexts: list[str]) -> dict[str, bool]:
    """Ask Asterisk itself, over AMI, whether each context exists."""
    async def ask() -> dict[str, bool]:
        client = AmiClient(host="127.0.0.1", port=5038, username="ami-bridge",
                           secret="ami-bridge-secret", on_event=lambda e: None)
        task = asyncio.create_task(client.run())
        try:
            await client.wait_connected(10)
            found = {}
            for context in contexts:
                response, events = await client.send_list_action("ShowDialPlan",
                                                                  Context=context)
                found[context] = response.success and bool(events)
            return found
        finally:
            await client.close()
            task.cancel()
    return asyncio.run(ask())


@pytest.fixture
def carol_uas() -> Iterator[SippUas]:
    with SippUas(5075, "carol-agent") as uas:
        yield uas


def test_third_tenant_added_while_calls_flow(
    asterisk: Asterisk, uas: dict[str, SippUas], carol_uas: SippUas, run_bridge: Any,
    tmp_path: Path
) -> None:
    run_bridge(write_bridge(tmp_path, asterisk))
    assert show_dialplan(["acme-venue", "globex-venue", "carol-venue"]) == {
        "acme-venue": True, "globex-venue": True, "carol-venue": False}
    acme = start_uac(from_user="acme-trunk", dnis="100", calls=100, rate=10, port=5081)
    globex = start_uac(from_user="globex-trunk", dnis="100", calls=100, rate=10, port=5082)
    time.sleep(3)
    add_carol(tmp_path)
    write_bridge(tmp_path, asterisk, carol=True)
    answer = ctl(tmp_path, "apply")
    assert answer["ok"], answer
    assert "ami-bridge/tenants/carol.conf" in answer["changed"]
    carol = run_uac(from_user="carol-trunk", dnis="100", calls=5, rate=5, port=5083)
    assert (carol.successful, carol.failed) == (5, 0), carol.failure_reasons
    for stats in (acme.wait(), globex.wait()):  # the others never noticed
        assert (stats.successful, stats.failed) == (100, 0), stats.failure_reasons
    assert carol_uas.stop().successful == 5
    got = {name: u.stop().successful for name, u in uas.items()}
    assert (got["acme-agent"], got["globex-agent"]) == (100, 100)
    # Asterisk's own dialplan now has every venue of every tenant; carol's is French.
    assert show_dialplan(["acme-venue", "globex-venue", "carol-venue"]) == {
        "acme-venue": True, "globex-venue": True, "carol-venue": True}
    assert "CHANNEL(language)=fr" in asterisk.rx("dialplan show carol-venue")


def test_broken_tenant_file_changes_nothing(
    asterisk: Asterisk, uas: dict[str, SippUas], run_bridge: Any, tmp_path: Path
) -> None:
    run_bridge(write_bridge(tmp_path, asterisk))
    before = (asterisk.instance_dir / "etc" / "ami-bridge" / "extensions.conf").read_text()
    carol_file = add_carol(tmp_path, CAROL.replace('vts = "carol"', 'vts = "carol"\n'
                                                   'router_timeout = -1'))
    write_bridge(tmp_path, asterisk, carol=True)
    answer = ctl(tmp_path, "apply")
    assert not answer["ok"]
    assert str(carol_file) in answer["error"]
    assert "venues.carol-venue.router_timeout" in answer["error"]
    assert (asterisk.instance_dir / "etc" / "ami-bridge" / "extensions.conf").read_text() \
        == before
    status = ctl(tmp_path, "status")["status"]
    assert "carol-venue" not in status["venues"]
    stats = run_uac(from_user="acme-trunk", dnis="100", calls=3, rate=3)
    assert (stats.successful, stats.failed) == (3, 0)


def test_failed_reload_rolls_back(
    asterisk: Asterisk, uas: dict[str, SippUas], run_bridge: Any, tmp_path: Path
) -> None:
    run_bridge(write_bridge(tmp_path, asterisk, reload_secret="wrong"))
    etc = asterisk.instance_dir / "etc"
    before = {p: p.read_text() for p in (etc / "ami-bridge").rglob("*.conf")}
    add_carol(tmp_path)
    write_bridge(tmp_path, asterisk, carol=True, reload_secret="wrong")
    answer = ctl(tmp_path, "apply")
    assert not answer["ok"]
    assert answer["error"].startswith("apply failed, rolled back: AMI login as "
                                      "'ami-bridge-reload' refused"), answer["error"]
    assert {p: p.read_text() for p in (etc / "ami-bridge").rglob("*.conf")} == before
    assert "carol-venue" not in ctl(tmp_path, "status")["status"]["venues"]
    stats = run_uac(from_user="globex-trunk", dnis="100", calls=3, rate=3)
    assert (stats.successful, stats.failed) == (3, 0)


def test_conf_check_cli_on_the_live_tree(asterisk: Asterisk, tmp_path: Path) -> None:
    import subprocess

    etc = asterisk.instance_dir / "etc"
    # The live tree holds carol too once the first test of this module added her.
    ok = subprocess.run([sys.executable, "-m", "ami_bridge", "conf", "check", "--tenant",
                         "acme", "--tenant", "globex", "--tenant", "carol",
                         "--asterisk-conf", str(etc)],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = tmp_path / "bad.conf"
    bad.write_text("[acme-evil]\nexten => _X.,1,Dial(PJSIP/${EXTEN})\n"
                   " same => n,Goto(globex-internal,2001,1)\ninclude => globex-internal\n")
    out = subprocess.run([sys.executable, "-m", "ami_bridge", "conf", "check", "--tenant",
                          "acme", "--tenant", "globex", str(bad)],
                         capture_output=True, text=True)
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert any(line.startswith(f"{bad}:2:") for line in lines), lines
    assert any(line.startswith(f"{bad}:3:") for line in lines), lines
    assert any(line.startswith(f"{bad}:4:") for line in lines), lines
