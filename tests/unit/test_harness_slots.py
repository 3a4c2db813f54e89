"""The sandbox harness's Asterisk slots and cluster wiring, without starting anything.

Slot 1 is what every single-Asterisk test has always had (127.0.0.1, the one lock);
slot N binds 127.0.0.N and queues on its own lock; the venue failover URLs land in
`[globals]` right after AB_AGI_URL; the cluster's Asterisk trace parser reads what
Asterisk 22 writes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.asterisk import DEFAULT_CONF_SRC, Asterisk, SandboxError, lock_path, slot_host
from harness.cluster import bridge_config, failover_order, read_trace, system_name
from harness.procs import udp_bound


def config_of(tmp_path: Path, **kwargs: object) -> Path:
    asterisk = Asterisk(conf_src=DEFAULT_CONF_SRC, root=tmp_path, agi_port=4590,
                        **kwargs)  # type: ignore[arg-type]
    asterisk._write_config()  # what start() writes, without booting
    return asterisk.instance_dir / "etc"


def test_slot_one_is_the_single_asterisk_of_every_existing_test(tmp_path: Path) -> None:
    etc = config_of(tmp_path)
    assert (etc / "pjsip.conf").read_text() == (DEFAULT_CONF_SRC / "pjsip.conf").read_text()
    assert "AB_AGI_URL=agi://127.0.0.1:4590\n" in (etc / "extensions.conf").read_text()
    assert "\nAB_AGI_URL_2=" not in (etc / "extensions.conf").read_text()
    assert lock_path(tmp_path).name == ".asterisk.lock"


def test_another_slot_binds_its_own_address_and_lock(tmp_path: Path) -> None:
    etc = config_of(tmp_path, slot=3, name="three", agi_secret="s3cret",
                    agi_failover=["agi://127.0.0.1:4591/s3cret", "agi://127.0.0.1:4592/s3cret"])
    pjsip = (etc / "pjsip.conf").read_text()
    assert "bind = 127.0.0.3:5060" in pjsip and "127.0.0.1" not in pjsip
    assert "bindaddr = 127.0.0.3" in (etc / "manager.conf").read_text()
    assert "bindaddr = 127.0.0.3" in (etc / "http.conf").read_text()
    assert ("AB_AGI_URL=agi://127.0.0.1:4590/s3cret\n"
            "AB_AGI_URL_2=agi://127.0.0.1:4591/s3cret\n"
            "AB_AGI_URL_3=agi://127.0.0.1:4592/s3cret\n") in (etc / "extensions.conf").read_text()
    assert lock_path(tmp_path, 3) != lock_path(tmp_path)
    assert slot_host(3) == "127.0.0.3"
    with pytest.raises(SandboxError, match="slot 0"):
        slot_host(0)


def test_a_systemname_is_written_only_when_given_and_must_be_plain(tmp_path: Path) -> None:
    assert "systemname" not in (config_of(tmp_path) / "asterisk.conf").read_text()
    etc = config_of(tmp_path, slot=3, name="three", systemname=system_name("scale", 1))
    assert "\nsystemname = scale-2\n" in (etc / "asterisk.conf").read_text()
    with pytest.raises(SandboxError, match="systemname"):
        Asterisk(conf_src=DEFAULT_CONF_SRC, root=tmp_path, systemname="a b")


def test_a_cluster_bridge_gets_its_own_api_and_operator_token(tmp_path: Path) -> None:
    from ami_bridge.config import load as load_config

    (tmp_path / "etc").mkdir()
    path = bridge_config(tmp_path / "b", tmp_path / "etc", port=4582, host="127.0.0.2",
                         store_dsn="host=/tmp dbname=x", api_port=8182)
    config = load_config(path)
    assert config.api is not None and config.api.port == 8182
    assert config.api.operator_token is not None
    token = tmp_path / "b" / "operator.token"
    assert token.stat().st_mode & 0o777 == 0o600 and len(token.read_text().strip()) > 30
    assert config.store.backend == "postgresql"
    plain = bridge_config(tmp_path / "c", tmp_path / "etc", port=4583, host="127.0.0.3",
                          store_dsn=None)
    assert load_config(plain).api is None


def test_udp_bound_reads_the_address_as_proc_writes_it() -> None:
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.2", 0))
        port = sock.getsockname()[1]
        assert udp_bound(port, "127.0.0.2")
        assert not udp_bound(port, "127.0.0.1")


def test_each_asterisk_asks_its_own_bridge_first_then_round_the_ring() -> None:
    assert failover_order(0, [2, 3]) == ["agi://127.0.0.1:4582", "agi://127.0.0.1:4583"]
    assert failover_order(1, [2, 3]) == ["agi://127.0.0.1:4583", "agi://127.0.0.1:4582"]


# Lines of an Asterisk 22 `full` log (harness.cluster.TRACE_LOGGER) from a kill run.
TRACE = (Path(__file__).resolve().parents[1] / "data" / "asterisk-trace.log").read_text()


def test_the_trace_gives_route_requests_and_ami_logoffs() -> None:
    trace = read_trace(TRACE)
    asked = trace.route_requests()
    assert [(s.call, s.args.split("/route")[0]) for s in asked] == [
        ("C-00000042", "agi://127.0.0.1:4582"), ("C-00000042", "agi://127.0.0.1:4583")]
    [off] = trace.logoffs("ami-bridge")
    assert (asked[1].at - off).total_seconds() == pytest.approx(0.057)
