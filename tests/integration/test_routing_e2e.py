"""Walking skeleton on the real Asterisk 22 with SIPp: calls routed end to end.

SIPp UAC -> Asterisk venue -> FastAGI -> intermediary -> tenant VTS process -> Dial.
Where each call went is read at the SIPp UASes (one per destination endpoint), never
from the bridge's log.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.asterisk import Asterisk
from harness.bridge import BridgeProcess
from harness.demo import demo_config
from harness.sipp import SippUas, start_uac

pytestmark = pytest.mark.asterisk
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bridge(asterisk: Asterisk, tmp_path: Path) -> Iterator[BridgeProcess]:
    # examples/bridge.toml with its state (control socket, store) in this test's directory
    config = demo_config(tmp_path, asterisk.instance_dir / "etc")
    with BridgeProcess(config, log_path=tmp_path / "bridge.log") as process:
        yield process


def counts(uas: dict[str, SippUas]) -> dict[str, int]:
    return {name: u.stop().successful for name, u in uas.items()}


def test_each_tenant_routes_its_own_calls(
    asterisk: Asterisk, bridge: BridgeProcess, uas: dict[str, SippUas]
) -> None:
    acme = start_uac(from_user="acme-trunk", dnis="100", calls=20, rate=10, port=5081)
    globex = start_uac(from_user="globex-trunk", dnis="100", calls=20, rate=10, port=5082)
    acme_stats, globex_stats = acme.wait(), globex.wait()
    assert (acme_stats.successful, acme_stats.failed) == (20, 0), acme_stats.failure_reasons
    assert (globex_stats.successful, globex_stats.failed) == (20, 0), globex_stats.failure_reasons
    assert counts(uas) == {"acme-agent": 20, "globex-agent": 20,
                           "acme-operator": 0, "globex-operator": 0}
    assert asterisk.channel_count() == 0


def test_killing_one_vts_does_not_fail_the_other_tenant(
    asterisk: Asterisk, bridge: BridgeProcess, uas: dict[str, SippUas]
) -> None:
    [acme_vts] = bridge.vts_pids("acme")
    acme = start_uac(from_user="acme-trunk", dnis="100", calls=60, rate=10, port=5081)
    globex = start_uac(from_user="globex-trunk", dnis="100", calls=60, rate=10, port=5082)
    time.sleep(2.0)
    os.kill(acme_vts, signal.SIGKILL)
    acme_stats, globex_stats = acme.wait(), globex.wait()
    # The other tenant does not notice.
    assert (globex_stats.successful, globex_stats.failed) == (60, 0), globex_stats.raw
    # The killed tenant's calls still leave the venue: routed, or default-routed while
    # its VTS was down. None fails.
    assert (acme_stats.successful, acme_stats.failed) == (60, 0), acme_stats.failure_reasons
    got = counts(uas)
    assert got["globex-agent"] == 60 and got["globex-operator"] == 0
    assert got["acme-agent"] + got["acme-operator"] == 60
    assert got["acme-agent"] >= 15  # routed before the kill and again after the restart
    # The VTS was restarted by the supervisor and routes again.
    [restarted] = bridge.vts_pids("acme")
    assert restarted != acme_vts
    bridge.wait_status(lambda s: s["vts"]["acme"]["starts"] == 2
                       and s["vts"]["acme"]["connected"], what="acme's VTS reconnected")
    assert f"VTS acme (pid {acme_vts}) exited with signal 9" in bridge.log()
    assert asterisk.channel_count() == 0


def test_every_number_asterisk_delivers_into_a_venue_reaches_routing(
        asterisk: Asterisk, bridge: BridgeProcess) -> None:
    """A call in a venue always leaves it: an E.164 number, one digit, a star code
    (`#` escaped in the SIP URI), a SIP user name and `s` each reach the bridge (its
    request counter moves) and leave by acme's rules (no rule matches: the venue's default
    target, the operator) instead of Asterisk's "extension not found"."""
    for number in ("+4930123", "5", "*21%23", "alice", "s"):
        before = bridge.status()["counters"]["requests"]
        with SippUas(5073, "acme-operator") as operator:
            stats = start_uac(from_user="acme-trunk", dnis=number, calls=1, rate=1,
                              hold_ms=100, port=5081, timeout_s=30).wait()
            assert (stats.successful, stats.failed) == (1, 0), (number, stats.failure_reasons)
            assert operator.stop().successful == 1, number
        time.sleep(0.5)  # the hang-up run (`h`) must not ask the bridge again
        assert bridge.status()["counters"]["requests"] == before + 1, number
    assert "extension not found" not in asterisk.messages_log().lower()
