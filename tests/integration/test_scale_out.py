"""Scale-out acceptance (issue 16): a dead bridge costs no call its routing.

Two sandbox Asterisks (slots 2 and 3) and two bridges (harness/cluster.py); each
Asterisk's venues ask their own bridge first and the other one next (`AB_AGI_URL`,
`AB_AGI_URL_2`: the venue failover, docs/scale-out.md). SIPp loads both Asterisks while
bridge A is SIGKILLed and restarted. What is counted comes from SIPp (failed calls), the
SIPp phones (where each call went: the operator is the venue's fallback) and Asterisk's
own dialplan trace (which bridge each route request asked, and when), never guessed.
The failover time is Asterisk 1's: from its AMI logoff of bridge A (the kill, as that
Asterisk saw it) to its first route request answered by bridge B.
"""

from __future__ import annotations

import os
import signal
import statistics
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from harness.cluster import Cluster, Node, Trace
from harness.procs import alive, owner_token, tagged, udp_bound
from harness.sipp import start_uac
from tests.integration.dying_agi import DyingAgiServer

pytestmark = pytest.mark.asterisk

RATE = 10  # calls/s into each Asterisk
CALLS = 120  # 12 s of load on each
KILL_AFTER_S = 3.5
# The AMI user the bridges log in as (asterisk-conf/manager.d/ami-bridge.conf).
AMI_USER = "ami-bridge"
UAC_PORT = 5081


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("scale-out"), trace=True, name="scale") as started:
        yield started


def first_asks(trace: Trace) -> dict[str, tuple[datetime, str]]:
    """Each call's first route request: call id -> (when, the URL asked)."""
    first: dict[str, tuple[datetime, str]] = {}
    for step in trace.route_requests():
        first.setdefault(step.call, (step.at, step.args.split("/route", 1)[0]))
    return first


def url_of(node: Node) -> str:
    """The node's bridge as its Asterisks' AB_AGI_URL* name it."""
    config = node.bridge.config
    return f"agi://{config.agi_host}:{config.agi_port}"


def routed_seconds(trace: Trace) -> dict[str, float]:
    """Per call, seconds from its first route request to the step after the last one
    (the route check): the routing delay the caller saw, failover included."""
    asks: dict[str, tuple[datetime, datetime | None]] = {}
    requests = {id(s) for s in trace.route_requests()}
    for step in trace.steps:
        if id(step) in requests:
            start = asks.get(step.call, (step.at, None))[0]
            asks[step.call] = (start, None)
        elif step.call in asks and asks[step.call][1] is None and step.app == "GotoIf":
            asks[step.call] = (asks[step.call][0], step.at)
    return {call: (end - start).total_seconds() for call, (start, end) in asks.items()
            if end is not None}


def test_a_killed_bridge_costs_no_call_its_routing(cluster: Cluster) -> None:
    one, two = cluster.nodes
    url_a, url_b = url_of(one), url_of(two)
    cluster.phones()
    uacs = [start_uac(from_user="acme-trunk", dnis="100", calls=CALLS, rate=RATE,
                      port=UAC_PORT, target=n.asterisk.sip, host=n.asterisk.host,
                      timeout_s=60) for n in cluster]
    time.sleep(KILL_AFTER_S)
    assert one.bridge.pid is not None
    os.kill(one.bridge.pid, signal.SIGKILL)
    assert one.bridge.stop() == -signal.SIGKILL  # reaps it and any VTS it left
    restarted_at = time.monotonic()
    one.bridge.start()
    restart_s = time.monotonic() - restarted_at
    stats = [u.wait() for u in uacs]
    arrived = cluster.stop_phones()

    # 0 failed calls, 0 calls taken by the venue fallback (the operator), on both.
    for node, got in zip(cluster, stats, strict=True):
        assert (got.successful, got.failed) == (CALLS, 0), (node.index, got.failure_reasons)
        assert arrived[(node.index, "acme-agent")] == CALLS, arrived
        assert arrived[(node.index, "acme-operator")] == 0, arrived
        fallback = [s for s in node.trace().steps
                    if s.app == "Gosub" and "operator" in s.args]
        assert fallback == [], fallback[:3]

    trace = one.trace()
    [killed] = trace.logoffs(AMI_USER)[-1:]  # the restarted A is still logged on
    asks = trace.route_requests()
    to_b = [s for s in asks if s.args.startswith(url_b + "/")]
    # B routed Asterisk 1's calls after the kill, and only then.
    assert to_b, "Asterisk 1 never asked bridge B"
    assert all(s.at >= killed for s in to_b), (killed, to_b[0])
    # ... and A took them back once restarted: the last calls asked A and A alone.
    firsts = first_asks(trace)
    last_call = max(firsts, key=lambda c: firsts[c][0])
    assert firsts[last_call][1] == url_a
    assert not any(s.call == last_call and s.args.startswith(url_b + "/") for s in asks)
    assert one.bridge.status()["counters"]["routed"] >= 1  # since its restart
    # Bridge B's requests: all of Asterisk 2's calls plus Asterisk 1's failovers.
    assert two.bridge.status()["counters"]["requests"] == CALLS + len(to_b)
    # Asterisk 2 never needed its second bridge.
    assert all(s.args.startswith(url_b + "/") for s in two.trace().route_requests())

    failover_s = (to_b[0].at - killed).total_seconds()
    delays = routed_seconds(trace)
    normal = statistics.median(delays.values())
    slow = sorted(((d, c) for c, d in delays.items() if d > max(0.05, 5 * normal)),
                  reverse=True)
    print(f"\nscale-out: failover {failover_s * 1000:.0f} ms (kill -> first call of "
          f"Asterisk 1 asked of bridge B); {len(to_b)} of Asterisk 1's calls routed by B; "
          f"route delay median {normal * 1000:.1f} ms, max {max(delays.values()) * 1000:.1f} "
          f"ms; {len(slow)} slower than 5x the median; bridge A restart {restart_s:.2f} s")


def test_a_bridge_dying_mid_request_sends_the_call_to_the_next_bridge(
        cluster: Cluster, tmp_path: Path) -> None:
    """A bridge that dies after Asterisk sent the AGI environment: AGI() ends with
    AGISTATUS=SUCCESS and no AB_ACTION, and the venue asks the next bridge."""
    one, two = cluster.nodes
    before = two.bridge.status()["counters"]["requests"]
    own = one.asterisk.rx("dialplan show globals")
    with DyingAgiServer() as dying:
        one.asterisk.rx(f"dialplan set global AB_AGI_URL {dying.url}")
        try:
            cluster.phones()
            got = start_uac(from_user="acme-trunk", dnis="100", calls=5, rate=5,
                            port=UAC_PORT, target=one.asterisk.sip, host=one.asterisk.host,
                            timeout_s=30).wait()
            arrived = cluster.stop_phones()
        finally:
            original = own.split("AB_AGI_URL=", 1)[1].split("\n", 1)[0].strip()
            one.asterisk.rx(f"dialplan set global AB_AGI_URL {original}")
        assert dying.environments == 5  # each call's environment reached it, then it died
    assert (got.successful, got.failed) == (5, 0), got.failure_reasons
    assert arrived[(0, "acme-agent")] == 5 and arrived[(0, "acme-operator")] == 0, arrived
    assert two.bridge.status()["counters"]["requests"] == before + 5


def test_the_cluster_stops_without_a_trace(tmp_path: Path) -> None:
    """A cluster with its shared PostgreSQL: both bridges use it, and stopping the
    cluster leaves none of its processes (Asterisks, bridges, their VTS, PostgreSQL
    and its children) and no bound SIP port behind."""
    # Slots 4 and 5: the module's cluster still holds slots 2 and 3 (and their locks).
    with Cluster(tmp_path, postgres=True, name="cleanup", first_slot=4) as cluster:
        hosts = [n.asterisk.host for n in cluster]
        leaders = [pid for n in cluster for pid in (n.asterisk.pid, n.bridge.pid)]
        for node in cluster:
            assert node.bridge.config.store.backend == "postgresql"
            leaders += [pid for name in node.bridge.config.vts
                        for pid in node.bridge.vts_pids(name)]
        assert cluster.postgres is not None and cluster.postgres.process is not None
        leaders.append(cluster.postgres.process.pid)
        # Each leader's process group (Asterisk's threads aside: its children too).
        sessions = {os.getsid(pid) for pid in leaders if pid is not None}
        ours = [pid for pid in tagged(owner_token()) if os.getsid(pid) in sessions]
        assert ours
    left = [pid for pid in ours if alive(pid)]
    assert left == []
    assert not any(udp_bound(5060, host) for host in hosts)
