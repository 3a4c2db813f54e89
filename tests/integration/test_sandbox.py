"""Acceptance tests of the sandbox and of the venue dialplan contract.

Against a real Asterisk 22 (asterisk-conf/) and SIPp: the venues load; with no bridge
listening every call falls back to the tenant's operator (AGISTATUS != SUCCESS); a
minimal FastAGI peer that sets AB_ACTION/AB_TARGET and closes routes or rejects calls
as the dialplan promises; stopping leaves no Asterisk behind.
"""

from __future__ import annotations

import socket
import socketserver
import subprocess
import threading
from collections.abc import Iterator

import pytest

from harness.asterisk import Asterisk
from harness.sipp import SippUas, run_uac, start_uac

pytestmark = pytest.mark.asterisk

CALLS = 5


def test_venues_loaded(asterisk: Asterisk) -> None:
    for tenant in ("acme", "globex"):
        out = asterisk.rx(f"dialplan show {tenant}-venue")
        assert f"[ Context '{tenant}-venue' created by 'pbx_config' ]" in out
        assert "AGI(${AB_AGI_URL}/route,${AB_LAST},${DIALSTATUS})" in out
    assert f"agi://127.0.0.1:{asterisk.agi_port}" in asterisk.rx("dialplan show globals")


def test_bridge_down_falls_back_to_operator(asterisk: Asterisk, uas: dict[str, SippUas]) -> None:
    with socket.socket() as probe:
        listening = probe.connect_ex(("127.0.0.1", asterisk.agi_port)) == 0
    assert not listening, f"something listens on the AGI port {asterisk.agi_port}"
    # Both trunks call at once from 127.0.0.1: identify_by=username must tell them apart.
    acme = start_uac(from_user="acme-trunk", dnis="100", calls=CALLS, rate=10, port=5090)
    globex = start_uac(from_user="globex-trunk", dnis="100", calls=CALLS, rate=10, port=5091)
    for stats in (acme.wait(), globex.wait()):
        assert (stats.successful, stats.failed) == (CALLS, 0), stats.failure_reasons
    received = {name: phone.stop().successful for name, phone in uas.items()}
    assert received == {
        "acme-agent": 0,
        "globex-agent": 0,
        "acme-operator": CALLS,
        "globex-operator": CALLS,
    }
    assert "FastAGI failed" in asterisk.messages_log()


class _FakeBridge(socketserver.ThreadingTCPServer):
    """The smallest FastAGI peer: read the AGI environment, SET VARIABLE, close."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, variables: dict[str, str]) -> None:
        self.variables = variables
        super().__init__(("127.0.0.1", port), _FakeBridgeSession)


class _FakeBridgeSession(socketserver.StreamRequestHandler):
    server: _FakeBridge

    def handle(self) -> None:
        while self.rfile.readline().strip():  # agi_* environment, ends with a blank line
            pass
        for name, value in self.server.variables.items():
            self.wfile.write(f"SET VARIABLE {name} {value}\n".encode())
            assert self.rfile.readline().startswith(b"200 result=1")


@pytest.fixture
def bridge(asterisk: Asterisk) -> Iterator[dict[str, str]]:
    variables: dict[str, str] = {}
    server = _FakeBridge(asterisk.agi_port, variables)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield variables
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_route_reaches_agent(
    asterisk: Asterisk, uas: dict[str, SippUas], bridge: dict[str, str]
) -> None:
    bridge.update(AB_ACTION="route", AB_KIND="extension", AB_TARGET="1001")
    stats = run_uac(from_user="acme-trunk", dnis="100", calls=CALLS, rate=10)
    assert (stats.successful, stats.failed) == (CALLS, 0), stats.failure_reasons
    assert uas["acme-agent"].stop().successful == CALLS
    assert uas["acme-operator"].stop().successful == 0


def test_unknown_target_goes_to_operator(
    asterisk: Asterisk, uas: dict[str, SippUas], bridge: dict[str, str]
) -> None:
    # Another tenant's extension is not in acme-internal: DIALPLAN_EXISTS sends it to the
        # operator.
    bridge.update(AB_ACTION="route", AB_KIND="extension", AB_TARGET="2001")
    stats = run_uac(from_user="acme-trunk", dnis="100", calls=2, rate=10)
    assert stats.successful == 2, stats.failure_reasons
    assert uas["acme-operator"].stop().successful == 2
    assert uas["globex-agent"].stop().successful == 0


def test_reject_is_busy(
    asterisk: Asterisk, uas: dict[str, SippUas], bridge: dict[str, str]
) -> None:
    bridge.update(AB_ACTION="reject", AB_TARGET="")
    stats = run_uac(from_user="globex-trunk", dnis="100", calls=2, rate=10,
                    scenario="uac_reject.xml")
    assert (stats.successful, stats.failed) == (2, 0), stats.failure_reasons
    # No AB_CAUSE: the venue's Busy(), which the caller sees as 486 Busy Here.
    assert (stats.received("486"), stats.received("503")) == (2, 0), stats.counts
    assert sum(phone.stop().successful for phone in uas.values()) == 0


def test_stop_leaves_nothing(asterisk: Asterisk) -> None:
    # Last in the module: it stops the module's Asterisk (the fixture's stop is a no-op).
    assert asterisk.channel_count() == 0
    asterisk.stop()
    assert not asterisk.running
    pgrep = subprocess.run(
        ["pgrep", "-f", asterisk.conf_inside], capture_output=True, text=True, check=False
    )
    assert pgrep.stdout == "", f"asterisk left running: {pgrep.stdout}"
