"""The ARI driver on the real Asterisk 22 (issue 15): acme's venue rendered with
`driver = "ari"` into the sandbox Asterisk's config directory and `dialplan reload`ed;
SIPp calls are routed through Stasis(ami-bridge) and the bridge's one ARI WebSocket;
without the bridge Stasis() fails at once into the venue's fallback; the WebSocket
killed under load (its TCP connection destroyed on Asterisk's side with `ss -K`, as a
network fault would) loses no call, and the driver reconnects; a hostile caller name is
answered safely; an ARI-only bridge sends its calls' events from ARI. The routing-core
scenarios that go through the driver (a treatment collecting DTMF through ARI among
them) run over this driver in test_routing_core.py."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ami_bridge import config as config_mod
from ami_bridge.dialplan.render import render_tenant
from harness.asterisk import Asterisk
from harness.bridge import BridgeProcess
from harness.sipp import SippUas, run_uac, start_uac
from tests.integration.drivers import ARI
from tests.integration.helpers import arrived, of_type, records, write_config

pytestmark = pytest.mark.asterisk
ARI_PORT = 8089  # asterisk-conf/http.conf
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "bridge.toml"


def ari_config(tmp_path: Path, **kwargs: Any) -> Path:
    """The integration tests' bridge config with the venues on the ARI driver and its
    `[ari]` section (tests/integration/drivers.py); only acme's venue is rendered for
    Stasis on the sandbox (`ari_asterisk`), globex's still asks over FastAGI."""
    return write_config(tmp_path, driver=ARI, **kwargs)


@pytest.fixture(scope="module")
def ari_asterisk(asterisk: Asterisk) -> Iterator[Asterisk]:
    """The module's Asterisk with acme's venue rendered for the ARI driver: the shipped
    fragment's tenant (examples/), its venue switched to `driver = "ari"`."""
    example = config_mod.load(EXAMPLE)
    venues = [replace(v, driver="ari") if v.context == "acme-venue" else v
              for v in example.venues.values() if v.tenant == "acme"]
    fragment = asterisk.instance_dir / "etc" / "ami-bridge" / "tenants" / "acme.conf"
    fragment.write_text(render_tenant(example.tenants["acme"], venues))
    asterisk.rx("dialplan reload")
    shown = asterisk.rx("dialplan show acme-venue")
    assert "Stasis(ami-bridge,${AB_LAST},${DIALSTATUS})" in shown, shown
    yield asterisk


def ari_status(bridge: BridgeProcess) -> dict[str, Any]:
    ari: dict[str, Any] = bridge.status()["ari"]
    return ari


def wait_ari(bridge: BridgeProcess, connects: int = 1) -> None:
    bridge.wait_status(lambda s: bool(s.get("ari", {}).get("connected"))
                       and s["ari"]["connects"] >= connects, what="ARI WebSocket connected")


def call_events(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in of_type(messages, "event") if m["event"] == "call"]


def application(bridge: BridgeProcess) -> dict[str, Any]:
    """GET /ari/applications/ami-bridge with the bridge's ARI user."""
    ari = bridge.config.ari
    assert ari is not None
    request = urllib.request.Request(f"{ari.url}/ari/applications/{ari.app}")
    token = base64.b64encode(f"{ari.username}:{ari.password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=5) as response:
        body: dict[str, Any] = json.load(response)
    return body


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, clock ticks


def test_calls_are_routed_through_stasis(ari_asterisk: Asterisk, uas: dict[str, SippUas],
                                         run_bridge: Any, tmp_path: Path) -> None:
    bridge = run_bridge(ari_config(tmp_path))
    wait_ari(bridge)
    before, requests = cpu_s(bridge.pid), ari_status(bridge)["requests"]
    stats = run_uac(from_user="acme-trunk", dnis="100", calls=40, rate=10)
    assert (stats.successful, stats.failed) == (40, 0), stats.failure_reasons
    assert arrived(uas) == {"acme-agent": 40, "globex-agent": 0, "acme-operator": 0,
                            "globex-operator": 0}
    ari = ari_status(bridge)
    assert ari["calls"] == 40
    # Three variables (AB_KIND, AB_TARGET, AB_ACTION) and one continue per routed call;
    # no [ami], so ARI is the call-event source: two subscriptions (the caller, the
    # dialled leg; docs/drivers.md "Call events").
    assert ari["requests"] - requests == 6 * 40
    print(f"\nARI driver: {(cpu_s(bridge.pid) - before) / 40 * 1000:.2f} ms bridge CPU "
          f"per routed call, {(ari['requests'] - requests) / 40:g} HTTP requests per call")
    routes = of_type(records(tmp_path / "acme.jsonl"), "route_request")
    assert len(routes) == 40 and routes[0]["venue"] == "acme-venue"


def test_without_the_bridge_stasis_fails_at_once_into_the_fallback(
        ari_asterisk: Asterisk, uas: dict[str, SippUas]) -> None:
    stats = run_uac(from_user="acme-trunk", dnis="100", calls=3, rate=3)
    assert (stats.successful, stats.failed) == (3, 0), stats.failure_reasons
    assert stats.response_time_s < 0.5  # no waiting: STASISSTATUS=FAILED at once
    assert arrived(uas)["acme-operator"] == 3
    assert "Stasis app 'ami-bridge' doesn't exist" in ari_asterisk.messages_log()


def test_websocket_killed_under_load_loses_no_call_and_reconnects(
        ari_asterisk: Asterisk, uas: dict[str, SippUas], run_bridge: Any,
        tmp_path: Path) -> None:
    bridge = run_bridge(ari_config(tmp_path))
    wait_ari(bridge)
    calls = 150
    uac = start_uac(from_user="acme-trunk", dnis="100", calls=calls, rate=15, timeout_s=60)
    time.sleep(3.0)
    killed = []
    for _ in range(2):  # twice, the second while the driver may be reconnecting
        out = subprocess.run(["ss", "-K", "state", "established", f"( sport = :{ARI_PORT} )"],
                             capture_output=True, text=True, check=False)
        killed.append(out.stdout.count(f":{ARI_PORT}"))
        time.sleep(2.0)
    stats = uac.wait()
    assert killed[0] >= 1, killed  # the WebSocket (and any keep-alive REST connection)
    assert (stats.successful, stats.failed) == (calls, 0), stats.failure_reasons
    got = arrived(uas)
    # Every call left its venue: routed, or by the venue's fallback while ARI was down.
    assert got["acme-agent"] + got["acme-operator"] == calls, got
    wait_ari(bridge, connects=2)
    ari = ari_status(bridge)
    assert ari["pending"] == 0
    print(f"\nWebSocket killed {killed}: {got['acme-agent']} routed, {got['acme-operator']} "
          f"by fallback; ARI status {ari}")
    assert "ARI WebSocket closed" in bridge.log()
    assert ari_asterisk.channel_count() == 0


def test_a_hostile_caller_name_is_answered_safely(
        ari_asterisk: Asterisk, uas: dict[str, SippUas], run_bridge: Any,
        tmp_path: Path) -> None:
    bridge = run_bridge(ari_config(tmp_path))
    wait_ari(bridge)
    # SIP carries no raw newline in a display name; quotes, separators, AGI-looking text
    # and a 3 KB name do reach ARI (10 KB and newlines: tests/unit/test_ari.py).
    name = '\\"Eve\\" ,;|\'AGI: EXEC System x ' + "N" * 3000
    stats = run_uac(from_user="acme-trunk", dnis="100", calls=2, rate=2,
                    substitutions={"From: <sip:": f'From: "{name}" <sip:'})
    assert (stats.successful, stats.failed) == (2, 0), stats.failure_reasons
    assert arrived(uas)["acme-agent"] == 2
    routes = of_type(records(tmp_path / "acme.jsonl"), "route_request")
    assert len(routes) == 2 and all("Eve" in r["call"]["ani_name"] for r in routes), routes
    assert "Traceback" not in bridge.log()


def test_an_ari_only_bridge_sends_call_events_from_ari(
        ari_asterisk: Asterisk, uas: dict[str, SippUas], run_bridge: Any,
        tmp_path: Path) -> None:
    """No [ami]: the ARI driver subscribes to each routed channel before it leaves
    Stasis and normalises its events (ami_bridge/drivers/ari_calls.py) into the AMI
    tracker's call events, for acme's VTS only (the AMI twin: test_ami_bridge.py)."""
    bridge = run_bridge(ari_config(tmp_path))
    wait_ari(bridge)
    acme = start_uac(from_user="acme-trunk", dnis="100", calls=3, rate=3, port=5081)
    globex = start_uac(from_user="globex-trunk", dnis="100", calls=2, rate=2, port=5082)
    for calls, stats in ((3, acme.wait()), (2, globex.wait())):
        assert (stats.successful, stats.failed) == (calls, 0), stats.failure_reasons
    assert arrived(uas)["acme-agent"] == 3
    routed = {m["call"]["uniqueid"]
              for m in of_type(records(tmp_path / "acme.jsonl"), "route_request")}
    assert len(routed) == 3

    def ended() -> bool:
        events = call_events(records(tmp_path / "acme.jsonl"))
        return {e["uniqueid"] for e in events if e["kind"] == "call_end"} == routed

    deadline = time.monotonic() + 10.0
    while not ended() and time.monotonic() < deadline:
        time.sleep(0.1)  # the last hang-ups' events follow SIPp's end by milliseconds
    events = call_events(records(tmp_path / "acme.jsonl"))
    print("\n" + "\n".join(f"{e['uniqueid']} {e['leg']} {e['kind']} {e['detail']}"
                           for e in events))
    assert {e["uniqueid"] for e in events} == routed
    for call in routed:
        story = [e for e in events if e["uniqueid"] == call]
        kinds = [e["kind"] for e in story]
        for kind in ("dial_begin", "dial_end", "answer", "hangup", "call_end"):
            assert kind in kinds, (call, kinds)
        assert "ANSWER" in [e["detail"].get("status") for e in story
                            if e["kind"] == "dial_end"], story
        assert kinds[-1] == "call_end" and story[-1]["detail"] == {"reason": "hangup"}
        assert all(e["venue"] == "acme-venue" for e in story)
    assert not [e for e in events if "globex" in e["channel"] or "globex" in str(e["detail"])]
    assert call_events(records(tmp_path / "globex.jsonl")) == []
    ari = ari_status(bridge)
    assert (ari["call_events"], ari["tracked_calls"]) == (True, 0), ari
    # Asterisk forgets the subscriptions of destroyed channels itself: nothing left.
    assert application(bridge)["channel_ids"] == []
    assert "Traceback" not in bridge.log()
