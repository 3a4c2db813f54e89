"""The operator's guide (asterisk-conf/README.md), executed against the sandbox Asterisk.

The "existing deployment" is the sandbox's own configuration with everything of
ami-bridge taken out (the rendered fragments, the manager users, every include line and
AB_AGI_URL), booted with `autoload=no` and only the modules of the kit's
modules-required.txt plus a SIP base, so the list is proven sufficient. The commands
are read from the guide itself: every fenced ``sh`` block preceded by
``<!-- guide-test -->``, in order, run by bash with ``/etc/asterisk`` and
``/etc/ami-bridge`` replaced by this Asterisk's and a temporary directory, ``asterisk``
a shell function running ``asterisk -rx`` in the sandbox and ``ami-bridge`` the one of
this interpreter. Then the bridge starts on the config `conf init` wrote (its state
paths moved into the test's directory) and SIPp calls into acme's venue must reach the
agent the tenant's rules name, not the venue's fallback: a guide without the include
line, AB_AGI_URL, a reload or the manager users fails here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ami_bridge import kit
from harness.asterisk import ASTERISK_BIN, DEFAULT_CONF_SRC, Asterisk
from harness.sipp import SippUas, run_uac
from tests.integration.conftest import AGI_PORT

pytestmark = pytest.mark.asterisk
ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "asterisk-conf" / "README.md"
MARKER = "<!-- guide-test -->"
_BLOCK_RE = re.compile(r"^" + re.escape(MARKER) + r"\n```sh\n(.*?)^```$", re.M | re.S)
# What the sandbox boots besides modules-required.txt: its SIP trunks and phones (a
# deployment's own SIP set-up, which the guide tells the operator to keep).
SIP_BASE = (
    "res_pjproject.so", "res_sorcery_config.so", "res_sorcery_memory.so",
    "res_sorcery_astdb.so", "res_pjsip_sdp_rtp.so", "res_pjsip_endpoint_identifier_user.so",
    "res_pjsip_caller_id.so", "res_rtp_asterisk.so", "res_timing_timerfd.so",
    "codec_ulaw.so", "format_wav.so", "format_pcm.so",
)
AB_AGI_URL_LINE = "AB_AGI_URL=agi://127.0.0.1:4573\n"


def guide_blocks(text: str) -> list[str]:
    """The guide's marked ``sh`` blocks, in order."""
    return [m.group(1) for m in _BLOCK_RE.finditer(text)]


def without(text: str, line: str, where: str) -> str:
    """`text` minus its one line `line` (a sandbox file that changed fails loudly)."""
    count = text.count(line)
    assert count == 1, f"{where}: expected the line {line!r} once, found it {count} times"
    return text.replace(line, "")


def required_modules() -> list[str]:
    text = kit.shipped()["asterisk/modules-required.txt"]
    return [line.split()[0] for line in text.splitlines()
            if line.strip() and not line.startswith("#")]


def existing_deployment(base: Path) -> None:
    """The sandbox's configuration without ami-bridge, into `base` (AB_AGI_URL stays
    for the boot only: the harness rewrites its port; the fixture removes it after)."""
    shutil.copytree(DEFAULT_CONF_SRC, base)
    shutil.rmtree(base / "ami-bridge")
    shutil.rmtree(base / "manager.d")
    for name, line in [("extensions.conf", '#include "ami-bridge/extensions.conf"\n'),
                       ("queues.conf", '#include "ami-bridge/queues.conf"\n'),
                       ("voicemail.conf", '#include "ami-bridge/voicemail.conf"\n'),
                       ("manager.conf", '#include "manager.d/*.conf"\n')]:
        path = base / name
        path.write_text(without(path.read_text(), line, str(path)))
    modules = ["[modules]", "autoload=no",
               *(f"load => {m}" for m in (*SIP_BASE, *required_modules()))]
    (base / "modules.conf").write_text("\n".join(modules) + "\n")


@pytest.fixture(scope="module")
def asterisk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Asterisk]:
    base = tmp_path_factory.mktemp("guide") / "asterisk"
    existing_deployment(base)
    with Asterisk(conf_src=base, name="it-guide", agi_port=AGI_PORT) as ast:
        ext = ast.instance_dir / "etc" / "extensions.conf"
        ext.write_text(without(ext.read_text(), AB_AGI_URL_LINE, str(ext)))
        ast.rx("dialplan reload")  # clearglobalvars = yes: AB_AGI_URL is gone
        assert "AB_AGI_URL" not in ast.rx("dialplan show globals")
        assert "no existence of 'acme-venue'" in ast.rx("dialplan show acme-venue")
        yield ast


def run_guide(asterisk: Asterisk, bridge_dir: Path) -> subprocess.CompletedProcess[str]:
    etc = asterisk.instance_dir / "etc"
    blocks = guide_blocks(GUIDE.read_text(encoding="utf-8"))
    script = "\n".join(blocks)
    script = script.replace("/etc/asterisk", str(etc))
    script = script.replace("/etc/ami-bridge", str(bridge_dir))
    # Nothing of the host's /etc may be touched.
    assert "/etc/" not in script.replace(str(etc), "").replace(str(bridge_dir), ""), script
    # asterisk -rx exits 0 on an unknown command: the helper fails on its answer.
    prelude = f"""set -euo pipefail
export PATH={Path(sys.executable).parent}:$PATH
asterisk() {{
    local out
    out=$(chroot {asterisk.root} {ASTERISK_BIN} -C {asterisk.conf_inside} "$@" 2>&1) || {{
        echo "$out"; return 1; }}
    echo "$out"
    case "$out" in *"No such command"*|*"Unable to connect"*|*"' failed."*) return 1;; esac
}}
set -x
"""
    return subprocess.run(["bash", "-c", prelude + script], capture_output=True, text=True,
                          timeout=120, check=False, cwd=bridge_dir.parent)


def test_the_guide_has_its_steps() -> None:
    blocks = guide_blocks(GUIDE.read_text(encoding="utf-8"))
    text = "\n".join(blocks)
    assert len(blocks) == 4
    for step in ("conf init", "extensions-include.conf", "conf render", "conf check",
                 "manager reload", "dialplan reload", "module reload app_queue.so",
                 "module reload res_pjsip.so"):
        assert step in text, step


def test_following_the_guide_routes_calls(
    asterisk: Asterisk, uas: dict[str, SippUas], run_bridge: Any, tmp_path: Path
) -> None:
    bridge_dir = tmp_path / "etc-ami-bridge"
    done = run_guide(asterisk, bridge_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"wrote {bridge_dir / 'bridge.toml'}" in done.stdout
    config = bridge_dir / "bridge.toml"
    text = config.read_text()
    for old, new in [("/run/ami-bridge/control.sock", str(tmp_path / "control.sock")),
                     ("/var/lib/ami-bridge/personal.sqlite3",
                      str(tmp_path / "personal.sqlite3"))]:
        assert old in text
        text = text.replace(old, new)
    config.write_text(text)
    # Ready means the VTS processes are connected and the AMI session (the copied
    # manager user, after `manager reload`) logged in and resynced.
    run_bridge(config)
    stats = run_uac(from_user="acme-trunk", dnis="100", calls=5, rate=5)
    assert (stats.successful, stats.failed) == (5, 0), stats.failure_reasons
    got = {name: u.stop().successful for name, u in uas.items()}
    # acme's rule "sales" routes 1xx to 1001 (acme-agent); without AB_AGI_URL or the
    # bridge the venue's fallback would ring acme-operator.
    assert (got["acme-agent"], got["acme-operator"]) == (5, 0), got
    # `queue show acme-sales` found the queue even without the app_queue reload (22.10
    # reads a named queue's config on demand); the list shows only what is loaded.
    assert "acme-sales" in asterisk.rx("queue show")
    assert "2101" in asterisk.rx("voicemail show users for acme")
