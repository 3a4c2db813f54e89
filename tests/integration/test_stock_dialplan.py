"""The bridge dropped into an existing dialplan: the stock Debian extensions.conf (issue 13).

The sandbox Asterisk runs the unchanged stock file (tests/fixtures/debian/) with only
the guide's lines appended (`[globals] AB_AGI_URL` and `#include
"ami-bridge/extensions.conf"`); the bridge runs with the operator's config for it
(tests/fixtures/debian/bridge.toml: its `[operator]` contexts) and the two example
tenants. Calls into their venues route; then a third tenant, initech, with its own
trunk and agent, is added to the config and `ctl apply` lints the whole tree, stock
contexts included, writes initech's fragment and reloads: calls into initech's venue
reach initech's agent (counted at its SIPp UAS), the stock contexts are still there.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.asterisk import DEFAULT_CONF_SRC, Asterisk
from harness.sipp import SippUas, run_uac
from tests.integration.conftest import AGI_PORT
from tests.integration.test_tenant_apply import ctl, show_dialplan

pytestmark = pytest.mark.asterisk
ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "debian"
# asterisk-conf/README.md, step 3: all the operator adds to its extensions.conf.
GUIDE_LINES = ('\n[globals]\nAB_AGI_URL=agi://127.0.0.1:4573        ; where the venues find '
               'the bridge\n#include "ami-bridge/extensions.conf"\n')
INITECH_UAS_PORT = 5078  # 5071-5077: asterisk-conf/pjsip.conf's phones
INITECH_PJSIP = f"""

; tenant initech: the operator adds its trunk and agent; ami-bridge adds its dialplan
[initech-trunk](endpoint-common)
context = initech-venue
identify_by = username

[initech-agent](endpoint-common)
context = initech-internal
aors = initech-agent
[initech-agent]
type = aor
contact = sip:initech-agent@127.0.0.1:{INITECH_UAS_PORT}
"""
# The shape of examples/tenants.d/globex, reduced to one venue and one agent.
INITECH = """
timezone = "America/Chicago"
language = "en"
channel_limit = 10

[extensions]
4001 = "PJSIP/initech-agent"
operator = "PJSIP/initech-agent"

[venues.initech-venue]
vts = "initech"

[[rules]]
name = "all"
targets = ["4001"]
"""


@pytest.fixture(scope="module")
def asterisk() -> Iterator[Asterisk]:
    stock = (FIXTURE / "extensions.conf").read_text(encoding="utf-8")
    pjsip = (DEFAULT_CONF_SRC / "pjsip.conf").read_text(encoding="utf-8") + INITECH_PJSIP
    with Asterisk(conf_src=DEFAULT_CONF_SRC, name="it-stock-dialplan", agi_port=AGI_PORT,
                  extra_files={"extensions.conf": stock + GUIDE_LINES,
                               "pjsip.conf": pjsip}) as ast:
        yield ast


def operator_config(tmp_path: Path, asterisk: Asterisk, *, initech: bool) -> Path:
    """The fixture's bridge config, with this run's paths and `ctl apply`'s login."""
    tenants = tmp_path / "tenants.d"
    if not tenants.exists():
        shutil.copytree(ROOT / "examples" / "tenants.d", tenants)
    text = (FIXTURE / "bridge.toml").read_text(encoding="utf-8")
    for old, new in (
            ('tenants_dir = "../../../examples/tenants.d"', 'tenants_dir = "tenants.d"'),
            ('control_socket = "/run/ami-bridge/control.sock"',
             f'control_socket = "{tmp_path}/control.sock"\n'
             f'asterisk_conf_dir = "{asterisk.instance_dir / "etc"}"'),
            ('path = "/var/lib/ami-bridge/personal.sqlite3"',
             f'path = "{tmp_path}/personal.sqlite3"'),
            ('secret = "ami-bridge-secret"',
             'secret = "ami-bridge-secret"\nreload_username = "ami-bridge-reload"\n'
             'reload_secret = "ami-bridge-reload-secret"')):
        assert old in text, old
        text = text.replace(old, new, 1)
    if initech:
        (tenants / "initech").mkdir(exist_ok=True)
        (tenants / "initech" / "tenant.toml").write_text(INITECH, encoding="utf-8")
        text += "[vts.initech]\n"
    path = tmp_path / "bridge.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def initech_uas() -> Iterator[SippUas]:
    with SippUas(INITECH_UAS_PORT, "initech-agent") as uas:
        yield uas


def test_a_third_tenant_is_applied_on_the_stock_dialplan(
    asterisk: Asterisk, uas: dict[str, SippUas], initech_uas: SippUas, run_bridge: Any,
    tmp_path: Path
) -> None:
    stock = ["default", "demo", "public", "dundi-e164-lookup"]
    assert show_dialplan([*stock, "acme-venue", "initech-venue"]) == {
        **dict.fromkeys(stock, True), "acme-venue": True, "initech-venue": False}
    assert "AB_AGI_URL=agi://127.0.0.1:4573" in asterisk.rx("dialplan show globals")
    run_bridge(operator_config(tmp_path, asterisk, initech=False))
    acme = run_uac(from_user="acme-trunk", dnis="100", calls=3, rate=3, port=5081)
    assert (acme.successful, acme.failed) == (3, 0), acme.failure_reasons

    operator_config(tmp_path, asterisk, initech=True)
    answer = ctl(tmp_path, "apply")
    assert answer["ok"], answer  # the linter accepted the stock contexts as the operator's
    assert "ami-bridge/tenants/initech.conf" in answer["changed"]
    initech = run_uac(from_user="initech-trunk", dnis="100", calls=5, rate=5, port=5083)
    assert (initech.successful, initech.failed) == (5, 0), initech.failure_reasons
    assert initech_uas.stop().successful == 5
    got = {name: u.stop().successful for name, u in uas.items()}
    assert got == {"acme-agent": 3, "globex-agent": 0, "acme-operator": 0,
                   "globex-operator": 0}
    assert show_dialplan([*stock, "initech-venue"]) == dict.fromkeys(
        [*stock, "initech-venue"], True)
    assert "extension not found" not in asterisk.log_path.read_text(errors="replace").lower()


def test_apply_refuses_a_tenant_that_reaches_an_operator_context(
    asterisk: Asterisk, run_bridge: Any, tmp_path: Path
) -> None:
    run_bridge(operator_config(tmp_path, asterisk, initech=False))
    before = (asterisk.instance_dir / "etc" / "ami-bridge" / "extensions.conf").read_text()
    operator_config(tmp_path, asterisk, initech=True)
    tenant = tmp_path / "tenants.d" / "initech" / "tenant.toml"
    tenant.write_text(INITECH.replace('4001 = "PJSIP/initech-agent"',
                                      '4001 = "Local/s@demo"'), encoding="utf-8")
    answer = ctl(tmp_path, "apply")
    assert not answer["ok"]
    assert "'Local/s@demo' reaches context 'demo', which is no tenant's (the operator's)" in \
        answer["error"], answer["error"]
    assert (asterisk.instance_dir / "etc" / "ami-bridge" / "extensions.conf").read_text() \
        == before
