"""Cluster apply with two real bridge processes on the real Asterisk 22 (issue 16).

Node A is the bridge the sandbox Asterisk asks; node B is a second bridge with its own
config dir, tenant files, FastAGI port and Asterisk conf dir (a copy of the live one,
its `AB_AGI_URL` naming B), reloading the same Asterisk. Carol's tenant file is added on
A and `ctl apply` run there: with B down, no node changes and the error names B; with
B's Asterisk reload refused, A (already committed, Asterisk reloaded) is rolled back and
B is named; with both up, carol lands on both (tenant file, fragments, venue map) and
her calls route.
"""

from __future__ import annotations

import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from ami_bridge import control
from harness.asterisk import DEFAULT_CONF_SRC, Asterisk
from harness.bridge import BridgeProcess
from harness.sipp import SippUas, run_uac
from tests.integration.conftest import AGI_PORT
from tests.integration.test_tenant_apply import CAROL, CAROL_PJSIP, show_dialplan

pytestmark = pytest.mark.asterisk
ROOT = Path(__file__).resolve().parents[2]
B_AGI_PORT = AGI_PORT + 20  # node B's FastAGI listener (nothing calls it here)
SECRET = "cluster-apply-integration-test-secret-0123456789"


@pytest.fixture(scope="module")
def asterisk() -> Iterator[Asterisk]:
    pjsip = (DEFAULT_CONF_SRC / "pjsip.conf").read_text() + CAROL_PJSIP
    with Asterisk(conf_src=DEFAULT_CONF_SRC, name="it-cluster-apply", agi_port=AGI_PORT,
                  extra_files={"pjsip.conf": pjsip}) as ast:
        yield ast


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_node(root: Path, name: str, *, agi_port: int, conf_dir: Path,
               ports: dict[str, int], carol: bool = False,
               reload_secret: str = "ami-bridge-reload-secret") -> Path:
    root.mkdir(exist_ok=True)
    if not (root / "tenants.d").exists():
        shutil.copytree(ROOT / "examples" / "tenants.d", root / "tenants.d")
    secret = root / "cluster.secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    other = "b" if name == "a" else "a"
    vts = "".join(f"[vts.{n}]\n" for n in ("acme", "globex", *(["carol"] if carol else [])))
    path = root / "bridge.toml"
    path.write_text(f"""
[bridge]
agi_listen = "127.0.0.1:{agi_port}"
control_socket = "{root}/control.sock"
tenants_dir = "tenants.d"
asterisk_conf_dir = "{conf_dir}"

[store]
path = "{root}/personal.sqlite3"

[ami]
username = "ami-bridge"
secret = "ami-bridge-secret"
reload_username = "ami-bridge-reload"
reload_secret = "{reload_secret}"

[cluster]
node = "{name}"
listen = "127.0.0.1:{ports[name]}"
secret_file = "cluster.secret"
[cluster.nodes]
{other} = "http://127.0.0.1:{ports[other]}"

{vts}
""")
    return path


def b_conf_dir(asterisk: Asterisk, root: Path) -> Path:
    """B's own Asterisk conf dir: the live one copied, AB_AGI_URL naming B's listener."""
    etc = root / "etc"
    shutil.copytree(asterisk.instance_dir / "etc", etc, symlinks=True)
    ext = etc / "extensions.conf"
    ext.write_text(re.sub(r"(?m)^(AB_AGI_URL=agi://127\.0\.0\.1:)\d+",
                          rf"\g<1>{B_AGI_PORT}", ext.read_text()))
    return etc


def fragments(etc: Path) -> dict[str, str]:
    return {str(p.relative_to(etc)): p.read_text() for p in (etc / "ami-bridge").rglob("*.conf")}


def ctl_apply(root: Path) -> dict[str, object]:
    return control.request(str(root / "control.sock"), "apply",
                           timeout=control.APPLY_CLIENT_TIMEOUT)


def venues(process: BridgeProcess) -> set[str]:
    return set(process.status()["venues"])


def two_nodes(asterisk: Asterisk, tmp_path: Path) -> tuple[Path, Path, Path, Path,
                                                           dict[str, int]]:
    ports = {"a": free_port(), "b": free_port()}
    a_etc = asterisk.instance_dir / "etc"
    (tmp_path / "b").mkdir()
    b_etc = b_conf_dir(asterisk, tmp_path / "b")
    a = write_node(tmp_path / "a", "a", agi_port=AGI_PORT, conf_dir=a_etc, ports=ports)
    b = write_node(tmp_path / "b", "b", agi_port=B_AGI_PORT, conf_dir=b_etc, ports=ports)
    return a, b, a_etc, b_etc, ports


def add_carol(tmp_path: Path, asterisk: Asterisk, ports: dict[str, int], b_etc: Path,
              b_reload_secret: str = "ami-bridge-reload-secret") -> None:
    """The operator's edits: carol's tenant file on A only; her VTS on both nodes."""
    carol = tmp_path / "a" / "tenants.d" / "carol"
    carol.mkdir()
    (carol / "tenant.toml").write_text(CAROL)
    write_node(tmp_path / "a", "a", agi_port=AGI_PORT, conf_dir=asterisk.instance_dir / "etc",
               ports=ports, carol=True)
    write_node(tmp_path / "b", "b", agi_port=B_AGI_PORT, conf_dir=b_etc, ports=ports,
               carol=True, reload_secret=b_reload_secret)


def test_node_b_unreachable_changes_no_node_and_names_b(asterisk: Asterisk,
                                                         tmp_path: Path) -> None:
    a, _, a_etc, b_etc, ports = two_nodes(asterisk, tmp_path)
    with BridgeProcess(a, log_path=tmp_path / "a.log") as bridge_a:
        before = fragments(a_etc)
        add_carol(tmp_path, asterisk, ports, b_etc)
        answer = ctl_apply(tmp_path / "a")
        assert not answer["ok"]
        error = str(answer["error"])
        assert error.startswith("cluster apply refused at prepare; no node changed:\n"
                                f"  node b: unreachable: http://127.0.0.1:{ports['b']}"), error
        assert "node a:" not in error  # A itself was ready to go
        assert fragments(a_etc) == before
        assert "carol-venue" not in venues(bridge_a)
        assert bridge_a.status()["cluster"]["apply_held_by"] is None  # released
    assert not (tmp_path / "b" / "tenants.d" / "carol").exists()
    assert show_dialplan(["carol-venue"]) == {"carol-venue": False}


def test_a_commit_failing_on_b_rolls_a_back(asterisk: Asterisk, tmp_path: Path) -> None:
    a, b, a_etc, b_etc, ports = two_nodes(asterisk, tmp_path)
    b.write_text(b.read_text().replace('reload_secret = "ami-bridge-reload-secret"',
                                       'reload_secret = "wrong"'))
    with BridgeProcess(a, log_path=tmp_path / "a.log") as bridge_a, \
            BridgeProcess(b, log_path=tmp_path / "b.log") as bridge_b:
        before = {"a": fragments(a_etc), "b": fragments(b_etc)}
        add_carol(tmp_path, asterisk, ports, b_etc, b_reload_secret="wrong")
        answer = ctl_apply(tmp_path / "a")
        assert not answer["ok"]
        error = str(answer["error"])
        assert error.startswith("cluster apply failed at commit on node b: apply failed, "
                                "rolled back: AMI login as 'ami-bridge-reload' refused"), error
        assert "\n  node a: rolled back" in error
        assert {"a": fragments(a_etc), "b": fragments(b_etc)} == before
        assert "carol-venue" not in venues(bridge_a) | venues(bridge_b)
        assert not (tmp_path / "b" / "tenants.d" / "carol").exists()
    # A had committed and reloaded Asterisk with carol; its rollback reloaded it again.
    assert show_dialplan(["carol-venue", "acme-venue"]) == {"carol-venue": False,
                                                            "acme-venue": True}


def test_with_both_up_the_change_lands_on_both(asterisk: Asterisk, tmp_path: Path) -> None:
    a, b, a_etc, b_etc, ports = two_nodes(asterisk, tmp_path)
    with BridgeProcess(a, log_path=tmp_path / "a.log") as bridge_a, \
            BridgeProcess(b, log_path=tmp_path / "b.log") as bridge_b:
        add_carol(tmp_path, asterisk, ports, b_etc)
        answer = ctl_apply(tmp_path / "a")
        assert answer["ok"], answer
        changed = answer["changed"]
        assert isinstance(changed, list)
        assert {"a: ami-bridge/tenants/carol.conf", "b: ami-bridge/tenants/carol.conf"} \
            <= set(changed)
        assert (tmp_path / "b" / "tenants.d" / "carol" / "tenant.toml").read_text() == CAROL
        for etc in (a_etc, b_etc):
            assert "carol-venue" in fragments(etc)["ami-bridge/tenants/carol.conf"]
        assert "carol-venue" in venues(bridge_a) and "carol-venue" in venues(bridge_b)
        assert show_dialplan(["carol-venue"]) == {"carol-venue": True}
        with SippUas(5075, "carol-agent") as carol_uas:
            stats = run_uac(from_user="carol-trunk", dnis="100", calls=3, rate=3, port=5083)
            assert (stats.successful, stats.failed) == (3, 0), stats.failure_reasons
            assert carol_uas.stop().successful == 3
