"""Metrics, alarms and logs on the real Asterisk 22 with SIPp (issue 13: Metrics, Alarms,
Logs).

The bridge runs with `[metrics]`, the AMI session, the route-request secret, JSON logs at
DEBUG. Scrapes during and after a SIPp run into both example venues must agree with
SIPp's and the UASes' own counts; the log holds one call line per call and neither the
AGI secret nor the AMI secret. A venue whose AGI URL is wrong (calls to 777 in
globex-venue take `AB_AGI_URL=agi://127.0.0.1:1`, set by a dialplan extension added at
run time, so the rest of the venue is untouched) raises `no_requests` within the
window; a silent VTS raises `default_ratio`; both clear once the window passes.
"""

from __future__ import annotations

import json
import secrets
import socket
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.asterisk import DEFAULT_CONF_SRC, Asterisk
from harness.sipp import SippUas, start_uac
from tests.integration.conftest import AGI_PORT, _sandbox_problem
from tests.integration.helpers import AMI_SECTION, arrived, vts_command, write_config

pytestmark = pytest.mark.asterisk
SECRET = secrets.token_urlsafe(24)
AMI_SECRET = AMI_SECTION.split('secret = "')[1].split('"')[0]
ACME_CALLS, GLOBEX_CALLS = 20, 12
RUN = [sys.executable, "-m", "ami_bridge", "run", "--log-format", "json"]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def asterisk() -> Iterator[Asterisk]:
    problem = _sandbox_problem()
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    with Asterisk(conf_src=DEFAULT_CONF_SRC, name="it-metrics", agi_port=AGI_PORT,
                  agi_secret=SECRET) as ast:
        yield ast


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def config(tmp_path: Path, port: int, metrics: str = "", **options: Any) -> Path:
    secret_file = tmp_path / "agi.secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    path = write_config(tmp_path, ami=True, **options)
    path.write_text(path.read_text().replace(
        "[bridge]\n", f'[bridge]\nagi_secret_file = "{secret_file}"\n', 1)
        + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n{metrics}\n')
    return path


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def per_tenant(samples: Samples, name: str, tenant: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and dict(ls).get("tenant")
               == tenant and all(dict(ls).get(k) == x for k, x in labels.items()))


def wait_until(check: Callable[[], bool], what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g} s")
        time.sleep(0.2)


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


ACME = {"tenant": "acme", "venue": "acme-venue"}
GLOBEX = {"tenant": "globex", "venue": "globex-venue"}


def test_scrapes_match_sipp_and_the_uases_and_the_logs_hold_no_secret(
        asterisk: Asterisk, uas: dict[str, SippUas], run_bridge: Any, tmp_path: Path) -> None:
    port = free_port()
    bridge = run_bridge(config(tmp_path, port), argv=RUN, log_level="debug")
    acme = start_uac(from_user="acme-trunk", dnis="100", calls=ACME_CALLS, rate=10)
    globex = start_uac(from_user="globex-trunk", dnis="200", calls=GLOBEX_CALLS, rate=6,
                       port=5081)
    during: list[Samples] = []

    def mid_run() -> bool:
        during.append(scrape(port))
        return 0 < value(during[-1], "ami_bridge_route_requests_total", **ACME) < ACME_CALLS

    wait_until(mid_run, "a scrape while calls flow", 20)
    acme_stats, globex_stats = acme.wait(), globex.wait()
    assert (acme_stats.successful, acme_stats.failed) == (ACME_CALLS, 0)
    assert (globex_stats.successful, globex_stats.failed) == (GLOBEX_CALLS, 0)
    # Newchannel reaches the bridge over AMI, batched: let the last ones arrive.
    wait_until(lambda: value(scrape(port), "ami_bridge_venue_calls_entered_total", **GLOBEX)
               == GLOBEX_CALLS and value(scrape(port), "ami_bridge_venue_calls_entered_total",
                                         **ACME) == ACME_CALLS, "every Newchannel", 10)
    after = scrape(port)
    got = arrived(uas)
    assert (got["acme-agent"], got["globex-agent"]) == (ACME_CALLS, GLOBEX_CALLS)
    assert got["acme-operator"] == got["globex-operator"] == 0
    for labels, calls in ((ACME, ACME_CALLS), (GLOBEX, GLOBEX_CALLS)):
        assert value(after, "ami_bridge_route_requests_total", **labels) == calls
        assert value(after, "ami_bridge_dispositions_total", kind="route", **labels) == calls
        assert value(after, "ami_bridge_dispositions_total", kind="default", **labels) == 0
        assert value(after, "ami_bridge_routing_latency_seconds_count", **labels) == calls
        assert value(after, "ami_bridge_pending_calls", **labels) == 0
        for alarm in ("default_ratio", "no_requests"):
            assert value(after, "ami_bridge_alarm", alarm=alarm, **labels) == 0
        tenant = labels["tenant"]
        assert per_tenant(after, "ami_bridge_route_requests_total", tenant) == calls
        assert per_tenant(after, "ami_bridge_dispositions_total", tenant, kind="route") == calls
        # counters only grow: every scrape taken during the run is at most the final one
        assert all(value(s, "ami_bridge_route_requests_total", **labels) <= calls
                   for s in during)
    assert value(after, "ami_bridge_ami_connected") == 1
    # At least the Newchannel of every call came over the session, and its bytes.
    assert value(after, "ami_bridge_ami_events_received_total") >= ACME_CALLS + GLOBEX_CALLS
    assert value(after, "ami_bridge_ami_bytes_received_total") > 0
    assert value(after, "ami_bridge_vts_connected", vts="acme") == 1
    log = bridge.log()
    lines = json_lines(log)
    routed = [line for line in lines if line.get("event") == "call"]
    assert sorted((c["venue"], c["disposition"]) for c in routed) == sorted(
        [("acme-venue", "route")] * ACME_CALLS + [("globex-venue", "route")] * GLOBEX_CALLS)
    assert {c["rule"] for c in routed} == {"sales", "support"}
    assert all(c["level"] == "INFO" and c["latency_ms"] > 0 for c in routed)
    assert any(line["level"] == "DEBUG" for line in lines)  # the wire lines were logged
    assert SECRET not in log and AMI_SECRET not in log
    assert bridge.stop() == 0
    stopped = bridge.log()
    assert "AMI session closed (the bridge is stopping)" in stopped
    assert "AMI session lost" not in stopped


def test_a_wrong_agi_url_and_a_silent_vts_raise_their_alarms_then_clear(
        asterisk: Asterisk, uas: dict[str, SippUas], run_bridge: Any, tmp_path: Path) -> None:
    port = free_port()
    path = config(tmp_path, port, "alarm_window = 6\nalarm_min_calls = 3",
                  acme_vts=vts_command("acme", tmp_path / "acme.jsonl", "--behaviour",
                                       "silent"),
                  acme_venue='router_timeout = 0.3\ndefault_targets = ["operator"]')
    bridge = run_bridge(path, argv=RUN)
    asterisk.rx("dialplan add extension 777,1,Set(AB_AGI_URL=agi://127.0.0.1:1) into "
                "globex-venue")
    asterisk.rx("dialplan add extension 777,2,Goto(globex-venue,7770,1) into globex-venue")
    try:
        globex = start_uac(from_user="globex-trunk", dnis="777", calls=5, rate=5, port=5081)
        acme = start_uac(from_user="acme-trunk", dnis="100", calls=4, rate=4)
        assert (globex.wait().successful, acme.wait().successful) == (5, 4)
        got = arrived(uas)
        assert (got["globex-operator"], got["acme-operator"]) == (5, 4)  # their fallbacks
        started = time.monotonic()
        wait_until(lambda: value(scrape(port), "ami_bridge_alarm", alarm="no_requests",
                                 **GLOBEX) == 1, "no_requests for globex-venue", 6)
        wait_until(lambda: value(scrape(port), "ami_bridge_alarm", alarm="default_ratio",
                                 **ACME) == 1, "default_ratio for acme-venue", 6)
        assert time.monotonic() - started < 6  # within the window
        now = scrape(port)
        assert value(now, "ami_bridge_alarm", alarm="no_requests", **ACME) == 0
        assert value(now, "ami_bridge_alarm", alarm="default_ratio", **GLOBEX) == 0
        assert value(now, "ami_bridge_route_requests_total", **GLOBEX) == 0
        assert value(now, "ami_bridge_venue_calls_entered_total", **GLOBEX) == 5
        assert value(now, "ami_bridge_default_routes_total", reason="timeout", **ACME) == 4
        # no calls any more: both clear once the window has passed
        wait_until(lambda: all(value(scrape(port), "ami_bridge_alarm", alarm=a, **v) == 0
                               for a, v in (("no_requests", GLOBEX),
                                            ("default_ratio", ACME))), "alarms cleared", 10)
    finally:
        asterisk.rx("dialplan remove extension 777@globex-venue")
    alarms = [line for line in json_lines(bridge.log()) if line.get("event") == "alarm"]
    assert [(a["alarm"], a["venue"], a["raised"], a["level"]) for a in alarms
            if a["venue"] == "globex-venue"] == [("no_requests", "globex-venue", True,
                                                  "WARNING"),
                                                 ("no_requests", "globex-venue", False, "INFO")]
    assert [(a["alarm"], a["raised"]) for a in alarms if a["venue"] == "acme-venue"] == [
        ("default_ratio", True), ("default_ratio", False)]
    assert "AGI URL" in next(a["message"] for a in alarms if a["raised"]
                             and a["alarm"] == "no_requests")
