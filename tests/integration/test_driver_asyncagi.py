"""The AsyncAGI driver on the real Asterisk 22 with SIPp (issue 15).

acme's venue is rendered with `driver = "asyncagi"` into this module's Asterisk (globex
stays on FastAGI): calls are routed over the bridge's one AMI session; with no bridge
at all they leave the venue by its fallback once the venue's wait bound runs out (a
personal number's too: its home phone rings); the
AMI session is kicked while SIPp load flows and every call still leaves the venue
(routed, or by the fallback), no SIPp call fails, and the driver reconnects and routes
again; hostile caller names (quotes, 10 KB) are answered safely.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ami_bridge import config as config_mod
from ami_bridge.dialplan.render import ASYNC_AGI_GRACE_S, render_tree
from harness.asterisk import DEFAULT_CONF_SRC, Asterisk
from harness.bridge import BridgeProcess
from harness.sipp import SippUas, run_uac, start_uac
from tests.integration.conftest import AGI_PORT
from tests.integration.drivers import ASYNCAGI
from tests.integration.helpers import arrived, of_type, records, write_config
from tests.integration.test_ami_bridge import kick_ami_session, resyncs, wait_for

pytestmark = pytest.mark.asterisk
ROOT = Path(__file__).resolve().parents[2]
ASYNC = 'driver = "asyncagi"'
# The INVITE's, ACK's and BYE's From of tests/sipp/uac.xml: a display name goes before.
FROM = "From: <sip:[$from_user]@"


def rendered_with_asyncagi(tmp: Path) -> tuple[dict[str, str], float]:
    """The example tenants with acme's venue and personal venue on AsyncAGI, rendered;
    and the venue's wait bound."""
    shutil.copytree(ROOT / "examples", tmp / "examples")
    tenant = tmp / "examples/tenants.d/acme/tenant.toml"
    tenant.write_text(tenant.read_text()
                      .replace("[venues.acme-venue]\n", f"[venues.acme-venue]\n{ASYNC}\n")
                      .replace("[personal]\n", f"[personal]\n{ASYNC}\n"))
    config = config_mod.load(tmp / "examples/bridge.toml")
    bound = math.ceil(config.venues["acme-venue"].router_timeout) + ASYNC_AGI_GRACE_S
    return render_tree(config), bound


@pytest.fixture(scope="module")
def bound(tmp_path_factory: pytest.TempPathFactory) -> float:
    return rendered_with_asyncagi(tmp_path_factory.mktemp("bound"))[1]


@pytest.fixture(scope="module")
def asterisk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Asterisk]:
    files, _ = rendered_with_asyncagi(tmp_path_factory.mktemp("render"))
    assert "AGI(agi:async," in files["ami-bridge/tenants/acme.conf"]
    with Asterisk(conf_src=DEFAULT_CONF_SRC, name="it-driver-asyncagi", agi_port=AGI_PORT,
                  extra_files=files) as ast:
        yield ast


def bridge_config(tmp_path: Path) -> Path:
    return write_config(tmp_path, acme_driver=ASYNCAGI)


def test_routed_over_the_ami_session(asterisk: Asterisk, uas: dict[str, SippUas],
                                     run_bridge: Any, tmp_path: Path) -> None:
    bridge: BridgeProcess = run_bridge(bridge_config(tmp_path))
    acme = start_uac(from_user="acme-trunk", dnis="100", calls=20, rate=10, port=5081)
    globex = start_uac(from_user="globex-trunk", dnis="100", calls=5, rate=5, port=5082)
    for stats, n in ((acme.wait(), 20), (globex.wait(), 5)):
        assert (stats.successful, stats.failed) == (n, 0), stats.failure_reasons
    got = arrived(uas)
    assert (got["acme-agent"], got["globex-agent"], got["acme-operator"]) == (20, 5, 0)
    acme_requests = of_type(records(tmp_path / "acme.jsonl"), "route_request")
    assert len(acme_requests) == 20
    assert {r["venue"] for r in acme_requests} == {"acme-venue"}
    assert all(r["call"]["ani"] for r in acme_requests)
    assert bridge.status()["ami"]["connected"]


def test_no_bridge_falls_back_once_the_wait_bound_runs_out(
        asterisk: Asterisk, uas: dict[str, SippUas], bound: float) -> None:
    # Measured: without a manager session Asterisk waits in AGI(agi:async) for ever;
    # the venue's TIMEOUT(absolute) and `T` extension take the call to the operator.
    started = time.monotonic()
    stats = run_uac(from_user="acme-trunk", dnis="100", calls=2, rate=10)
    took = time.monotonic() - started
    assert (stats.successful, stats.failed) == (2, 0), stats.failure_reasons
    assert arrived(uas)["acme-operator"] == 2
    print(f"no bridge: both calls reached the operator in {took:.1f} s (bound {bound} s)")
    assert took >= bound
    assert asterisk.channel_count() == 0


def test_no_bridge_a_personal_number_rings_its_home_phone_after_the_bound(
        asterisk: Asterisk, bound: float) -> None:
    # The personal venue's `T` goes back to the asked number's own fallback: 2101's
    # home extension 1011 (PJSIP/acme-desk1, a UAS on 5075).
    with SippUas(5075, "acme-desk1") as desk:
        started = time.monotonic()
        stats = run_uac(from_user="acme-vip", dnis="2101", calls=1, rate=1)
        took = time.monotonic() - started
        answered = desk.stop().successful
    assert (stats.successful, stats.failed) == (1, 0), stats.failure_reasons
    assert answered == 1 and took >= bound


def test_ami_session_kicked_under_load_every_call_leaves_the_venue(
        asterisk: Asterisk, uas: dict[str, SippUas], run_bridge: Any, tmp_path: Path) -> None:
    bridge: BridgeProcess = run_bridge(bridge_config(tmp_path))
    calls = 100
    load = start_uac(from_user="acme-trunk", dnis="100", calls=calls, rate=10, hold_ms=500,
                     port=5081)
    time.sleep(3)
    kick_ami_session(asterisk)
    back = wait_for(lambda: resyncs(bridge) >= 2, 10.0, "AMI reconnect")
    stats = load.wait()
    assert (stats.successful, stats.failed) == (calls, 0), stats.failure_reasons
    assert "AMI session lost" in bridge.log()
    # And it routes again, over the new session.
    asked = len(of_type(records(tmp_path / "acme.jsonl"), "route_request"))
    after = run_uac(from_user="acme-trunk", dnis="100", calls=5, rate=5)
    assert (after.successful, after.failed) == (5, 0), after.failure_reasons
    assert len(of_type(records(tmp_path / "acme.jsonl"), "route_request")) == asked + 5
    got = arrived(uas)
    # Every call left the venue: routed to the agent, or by the venue's fallback.
    assert got["acme-agent"] + got["acme-operator"] == calls + 5, got
    print(f"kicked: back in {back:.2f} s; {got['acme-agent']} routed, "
          f"{got['acme-operator']} by the fallback, {calls + 5 - asked - 5} never asked")
    assert got["acme-agent"] >= calls // 2
    wait_for(lambda: asterisk.channel_count() == 0, 10.0, "no channel left")


def test_hostile_caller_names_are_answered_safely(
        asterisk: Asterisk, uas: dict[str, SippUas], run_bridge: Any, tmp_path: Path) -> None:
    run_bridge(bridge_config(tmp_path))
    quoted = r'"Mal\"lory\" ,AB_ACTION=route|x\\" '
    stats = run_uac(from_user="acme-trunk", dnis="100", calls=1, rate=1,
                    substitutions={FROM: f"From: {quoted}<sip:[$from_user]@"})
    assert (stats.successful, stats.failed) == (1, 0), stats.failure_reasons
    huge = "E" * 10_000
    stats = run_uac(from_user="acme-trunk", dnis="100", calls=1, rate=1,
                    substitutions={FROM: f'From: "{huge}" <sip:[$from_user]@'})
    assert (stats.successful, stats.failed) == (1, 0), stats.failure_reasons
    got = arrived(uas)
    assert got["acme-agent"] + got["acme-operator"] == 2, got
    names = [r["call"].get("ani_name", "") for r in
             of_type(records(tmp_path / "acme.jsonl"), "route_request")]
    print(f"hostile names: routed {got}; the VTS saw {[n[:40] for n in names]}")
    assert any('Mal\\"lory' in n for n in names), names  # as PJSIP keeps it
    assert all(len(n) <= 80 for n in names)
