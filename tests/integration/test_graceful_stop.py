"""Graceful stop on the real Asterisk 22 with SIPp (issue 13, "Graceful stop").

SIGTERM reaches the bridge in the middle of a 50 calls/s SIPp run while about 25 calls
wait for a VTS that answers 0.5 s late (router timeout 2 s). Every call must end at a
destination: those pending at the SIGTERM at the VTS's route (acme's agent, 1001), those
placed after it at the venue's AGISTATUS fallback (acme's operator), as the listener is
closed first. The bridge exits 0, removes its control socket, and its log shows the stop
as a stop: no lost AMI session, no VTS failure, no default route.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from harness.asterisk import Asterisk
from harness.sipp import SippUas, start_uac
from tests.integration.helpers import arrived, of_type, records, vts_command, write_config

pytestmark = pytest.mark.asterisk

RATE = 50  # calls/s, the figure; far below the sandbox's knee (DESIGN.md 6)
CALLS = 300  # 6 s of calls: SIGTERM lands within the first second or two
LATE_BY = 0.5  # s: the VTS's answer delay, so calls are pending at the SIGTERM


def test_sigterm_during_a_sipp_run_loses_no_call(
    asterisk: Asterisk, uas: dict[str, SippUas], run_bridge: Any, tmp_path: Path
) -> None:
    record = tmp_path / "acme.jsonl"
    config = write_config(
        tmp_path, ami=True,
        acme_vts=vts_command("acme", record, "--behaviour", "late", "--late-by", str(LATE_BY)),
        acme_venue="router_timeout = 2.0")
    bridge = run_bridge(config)
    socket_path = Path(bridge.config.control_socket)
    assert socket_path.is_socket()
    uac = start_uac(from_user="acme-trunk", dnis="100", calls=CALLS, rate=RATE, hold_ms=200,
                    timeout_s=60)
    # Wait until calls are waiting for the late VTS, then stop the bridge under load.
    # (50 calls/s x 0.5 s: about 25 in the steady state)
    status = bridge.wait_status(lambda s: s["pending"].get("acme", 0) >= 15,
                                what="calls pending for acme", timeout_s=10)
    pending_at_stop = status["pending"]["acme"]
    logged_before_stop = len(bridge.log())
    stop_started = time.monotonic()
    code = bridge.stop(grace_s=30)
    stop_took = time.monotonic() - stop_started
    stats = uac.wait()

    assert code == 0, bridge.log()[-3000:]
    assert not socket_path.exists()
    assert (stats.successful, stats.failed) == (CALLS, 0), stats.failure_reasons
    got = arrived(uas)
    routed, fallback = got["acme-agent"], got["acme-operator"]
    assert routed + fallback == CALLS, got
    assert routed >= pending_at_stop and fallback > 0, got  # both paths were taken
    # Routed calls are exactly those the VTS answered; none was default-routed.
    messages = records(record)
    assert len(of_type(messages, "route_request")) == routed
    assert [e for e in of_type(messages, "event") if e["event"] == "default_routed"] == []
    # The drain waited for the late answers, not for the router timeout.
    assert stop_took < 2.0 + 5.0, stop_took

    stop_log = bridge.log()[logged_before_stop:]
    assert "AMI session lost" not in stop_log
    assert not re.search(r"VTS \w+ disconnected; default-routing", stop_log), stop_log
    assert not re.search(r"\b(ERROR|CRITICAL)\b", stop_log), stop_log
    assert "AMI session closed (the bridge is stopping)" in stop_log
    assert "ami-bridge stopped" in stop_log
