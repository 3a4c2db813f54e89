"""Scale-out acceptance (issue 16): a dead bridge costs no call its routing.

Two sandbox Asterisks (slots 2 and 3) and two bridges (harness/cluster.py); each
Asterisk's venues ask their own bridge first and the other one next (`AB_AGI_URL`,
`AB_AGI_URL_2`: the venue failover, docs/scale-out.md). SIPp loads both Asterisks while
bridge A is SIGKILLed and restarted. What is counted comes from SIPp (failed calls), the
SIPp phones (where each call went: the operator is the venue's fallback) and Asterisk's
own dialplan trace (which bridge each route request asked, and when), never guessed.
The failover time is Asterisk 1's: from its AMI logoff of bridge A (the kill, as that
Asterisk saw it) to its first route request answered by bridge B.

The cluster shares one PostgreSQL store (and so the bus) and every bridge serves the
HTTP API, so the same boot also carries the shared-state acceptance: a personal rule
written through bridge A routes the next call bridge B routes (read at the desk phones,
SIPp UASes on Asterisk 2); a workstation on A (a WebSocket client) gets the pop of a
call B keeps pending and its choice routes it; PostgreSQL paused under load: routing
goes on, API writes are refused (503 naming the store), and once it is back writes work
and every call's route trace is in the store.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ami_bridge.api.client import ApiFailure, Client
from ami_bridge.personal.model import TraceRecord
from ami_bridge.personal.postgres import PostgresStore
from harness.cluster import Cluster, Node, Trace, system_name
from harness.procs import alive, owner_token, tagged, udp_bound
from harness.sipp import SippStats, SippUas, start_uac
from tests.integration.dying_agi import DyingAgiServer
from tests.integration.test_live_disposition import Workstation, pop_for

pytestmark = pytest.mark.asterisk

RATE = 10  # calls/s into each Asterisk
CALLS = 120  # 12 s of load on each
KILL_AFTER_S = 3.5
# The AMI user the bridges log in as (asterisk-conf/manager.d/ami-bridge.conf).
AMI_USER = "ami-bridge"
UAC_PORT = 5081
PERSONAL_UAC_PORT = 5082  # the callers of personal numbers, beside the trunk's load
DESKS = {"1011": 5075, "1012": 5076, "1013": 5077}  # acme's desk phones (pjsip.conf)
PASSWORD = "correct horse battery"
WAIT_S = 15.0  # the longest any polled condition below may take on a loaded box
# PostgreSQL paused under load: 10 calls/s into each Asterisk for 8 s, paused after 2 s.
OUTAGE_CALLS = 80
PAUSE_AFTER_S = 2.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster(tmp_path_factory.mktemp("scale-out"), trace=True, name="scale",
                 postgres=True, api=True) as started:
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


# -- shared state across the bridges (one PostgreSQL, the bus, an [api] on each) --------


def operator(node: Node) -> Client:
    assert node.api is not None and node.operator_token is not None
    return Client(node.api, node.operator_token)


def login(node: Node, user_id: str) -> str:
    assert node.api is not None
    answer = Client(node.api).call("POST", "/api/v1/login", {
        "tenant": "acme", "user": user_id, "password": PASSWORD})
    return str(answer["token"])


def set_rules(user: Client, rules: list[dict[str, Any]], *, seen_by: Node,
              **lists: list[str]) -> float:
    """Replace the user's rules (through the bridge `user` talks to) and wait until
    bridge `seen_by` has read them into its directory; seconds from the 200 to that."""
    current = user.call("GET", "/api/v1/me/rules")
    refreshed = synced(seen_by)["refreshed"]  # quiescent: every earlier write was waited for
    user.call("PUT", "/api/v1/me/rules", {"version": current["version"], "rules": rules,
                                          **lists})
    written = time.monotonic()
    until(lambda: synced(seen_by)["refreshed"] > refreshed,
          f"the rules in bridge {seen_by.index + 1}'s directory")
    return time.monotonic() - written


def until(check: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """Poll `check` (about every 20 ms) until it holds; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)


def synced(node: Node) -> dict[str, int]:
    """The node's directory sync counters (ami_bridge.cluster.share.DirectorySync)."""
    personal = node.bridge.status()["personal"]
    return dict(personal["directory_sync"]) | {"users": int(personal["users"])}


def settled(node: Node, users: int) -> int:
    """Wait until `node` holds `users` users and has nothing left to read; its count of
    users refreshed from the bus so far."""
    until(lambda: (lambda s: s["users"] == users and s["waiting"] == 0)(synced(node)),
          f"bridge {node.index + 1}'s directory settled at {users} users")
    return synced(node)["refreshed"]


Desks = Callable[..., dict[str, SippUas]]


@pytest.fixture
def desks() -> Iterator[Desks]:
    """`desks(node, "1011", ...)`: acme's desk phones on `node`'s Asterisk (SIPp UASes
    answering every call); any a failed test left running are stopped after it."""
    started: list[SippUas] = []

    def start(node: Node, *extensions: str) -> dict[str, SippUas]:
        phones = {}
        for extension in extensions:
            phone = SippUas(DESKS[extension], f"scale-desk{extension}",
                            host=node.asterisk.host)
            started.append(phone)
            phone.start()
            phones[extension] = phone
        return phones
    yield start
    for phone in started:
        phone.__exit__(None, None, None)  # a no-op for those the test stopped


def personal_call(node: Node, number: str = "2101") -> Any:
    """One call from acme's caller to a personal number on `node`'s Asterisk (started)."""
    return start_uac(from_user="acme-caller", dnis=number, calls=1, rate=1, hold_ms=500,
                     port=PERSONAL_UAC_PORT, target=node.asterisk.sip,
                     host=node.asterisk.host, timeout_s=60)


def rang(phones: dict[str, SippUas]) -> dict[str, int]:
    """Stop the desk phones; the INVITEs each one received."""
    return {extension: phone.stop().received("INVITE") for extension, phone in phones.items()}


def asked_by(node: Node, call: str) -> str:
    """Which bridge URL Asterisk's last route request of `call` asked."""
    [*_, last] = [s for s in node.trace().route_requests() if s.call == call]
    return last.args.split("/route", 1)[0]


def last_call(node: Node) -> str:
    return node.trace().route_requests()[-1].call


@pytest.fixture(scope="module")
def alice(cluster: Cluster) -> Client:
    """acme's alice (personal number 2101, desk 1011), created through bridge A's API as
    the operator; her own session on A. Both directories hold her on return."""
    one, two = cluster.nodes
    operator(one).call("POST", "/api/v1/tenants/acme/users", {
        "user_id": "alice", "number": "2101", "display_name": "Alice", "password": PASSWORD,
        "bindings": ["1011"]})
    settled(two, 1)
    assert one.api is not None
    return Client(one.api, login(one, "alice"))


def test_a_rule_written_through_bridge_a_routes_the_next_call_bridge_b_routes(
        cluster: Cluster, alice: Client, desks: Desks) -> None:
    _, two = cluster.nodes
    set_rules(alice, [], seen_by=two)
    # Before: no rule, the call rings her own desk (B routes it: Asterisk 2's first URL).
    phones = desks(two, "1011", "1012")
    before = personal_call(two).wait()
    assert (before.successful, before.failed) == (1, 0), before.failure_reasons
    assert rang(phones) == {"1011": 1, "1012": 0}

    phones = desks(two, "1011", "1012")
    seen_s = set_rules(alice, [{"name": "fwd", "action": "forward",
                                "target": "extension:1012"}], seen_by=two)
    got = personal_call(two).wait()
    assert (got.successful, got.failed) == (1, 0), got.failure_reasons
    assert rang(phones) == {"1011": 0, "1012": 1}  # the rule written on A moved it
    assert asked_by(two, last_call(two)) == url_of(two)  # and B routed it
    print(f"\nscale-out: a rule written on A (200) -> in B's directory within "
          f"{seen_s * 1000:.0f} ms (polled over B's control socket; p99 is bench's)")


def test_a_workstation_on_bridge_a_chooses_for_a_call_bridge_b_keeps(
        cluster: Cluster, alice: Client, desks: Desks) -> None:
    one, two = cluster.nodes
    set_rules(alice, [{"name": "pop", "action": "ask", "timeout": 20}], seen_by=two,
              saved=["extension:1013"])
    asked = [n.bridge.status()["counters"]["asked"] for n in cluster]
    assert one.api is not None
    station = Workstation(one.api, login(one, "alice"))
    try:
        phones = desks(two, "1011", "1013")
        uac = personal_call(two)
        pop = station.wait(pop_for("2101"), "pop from bridge B")
        call_id = pop["call"]["call_id"]
        assert pop["call"]["saved"] == ["extension:1013"], pop
        station.send({"type": "choose", "call": call_id, "choice": "forward",
                      "target": "extension:1013"})
        accepted = station.wait(lambda f: f["type"] in ("accepted", "refused")
                                and f.get("call") == call_id, "the answer to the choice")
        assert accepted["type"] == "accepted", accepted
        gone = station.wait(lambda f: f["type"] == "gone" and f["call"] == call_id, "gone")
        assert (gone["reason"], gone["by"]) == ("taken", "alice")
        assert station.frames.index(gone) > station.frames.index(accepted)
        stats = uac.wait()
    finally:
        station.close()
    assert (stats.successful, stats.failed) == (1, 0), stats.failure_reasons
    assert rang(phones) == {"1011": 0, "1013": 1}  # the choice made on A, not her phone
    # B kept the call pending (and asked); A only relayed the pop and the choice.
    assert [n.bridge.status()["counters"]["asked"] for n in cluster] == \
        [asked[0], asked[1] + 1]
    assert asked_by(two, last_call(two)) == url_of(two)


def stored_traces(dsn: str) -> list[TraceRecord]:
    """Every acme route trace in the shared store, through the store's own API."""
    async def read() -> list[TraceRecord]:
        store = PostgresStore(dsn)
        await store.open()
        try:
            return await store.traces("acme", limit=1_000_000)
        finally:
            await store.close()
    return asyncio.run(read())


def routed_calls(node: Node) -> set[tuple[int, str]]:
    """The calls Asterisk asked a bridge to route: (node index, its trace's call id; each
    Asterisk counts its own from C-00000001)."""
    return {(node.index, s.call) for s in node.trace().route_requests()}


def test_postgresql_paused_under_load_routing_goes_on_writes_refused_nothing_lost(
        cluster: Cluster, alice: Client, desks: Desks) -> None:
    one, two = cluster.nodes
    assert cluster.postgres is not None and cluster.store_dsn is not None
    set_rules(alice, [{"name": "fwd", "action": "forward", "target": "extension:1013"}],
              seen_by=two)
    until(lambda: all(n.bridge.status()["personal"]["traces_queued"] == 0 for n in cluster),
          "earlier traces written")
    stored_before = {r.uniqueid for r in stored_traces(cluster.store_dsn)}
    calls_before = [routed_calls(n) for n in cluster]
    operator_before = [len([s for s in n.trace().steps
                            if s.app == "Gosub" and "operator" in s.args]) for n in cluster]

    cluster.phones()
    phones = desks(two, "1011", "1013")
    uacs = [start_uac(from_user="acme-trunk", dnis="100", calls=OUTAGE_CALLS, rate=RATE,
                      port=UAC_PORT, target=n.asterisk.sip, host=n.asterisk.host,
                      timeout_s=60) for n in cluster]
    time.sleep(PAUSE_AFTER_S)  # the load's own pace: the outage starts mid-load
    paused_at = time.time()
    cluster.postgres.pause()
    try:
        # A personal call routed by B from its directory (the cache), the store down.
        personal: SippStats = personal_call(two).wait()
        with pytest.raises(ApiFailure) as refused:
            operator(one).call("POST", "/api/v1/tenants/acme/users", {
                "user_id": "dave", "number": "2103", "password": PASSWORD})
    finally:
        cluster.postgres.resume()
    resumed_at = time.time()
    stats = [u.wait() for u in uacs]
    arrived = cluster.stop_phones()
    desk_calls = rang(phones)

    assert refused.value.status == 503, refused.value
    assert refused.value.field == "store" and "personal store" in refused.value.reason, \
        refused.value.reason
    # Routing went on: 0 failed calls, none at the operator (SIPp and Asterisk's trace).
    for node, got in zip(cluster, stats, strict=True):
        assert (got.successful, got.failed) == (OUTAGE_CALLS, 0), \
            (node.index, got.failure_reasons)
        assert arrived[(node.index, "acme-agent")] == OUTAGE_CALLS, arrived
        assert arrived[(node.index, "acme-operator")] == 0, arrived
        fallback = [s for s in node.trace().steps if s.app == "Gosub" and "operator" in s.args]
        assert len(fallback) == operator_before[node.index], fallback[-3:]
    assert (personal.successful, personal.failed) == (1, 0), personal.failure_reasons
    assert desk_calls == {"1011": 0, "1013": 1}  # alice's rule, from B's cache

    # Writes work again once the bus and the pool are back (the store's own pacing).
    def write() -> bool:
        try:
            operator(one).call("POST", "/api/v1/tenants/acme/users", {
                "user_id": "dave", "number": "2103", "password": PASSWORD})
        except ApiFailure as exc:
            assert exc.status == 503, exc
            return False
        return True
    until(write, "an API write after PostgreSQL resumed", timeout=30.0)
    settled(two, 2)  # dave reached B over the bus

    # Nothing lost: every call routed meanwhile has its trace in the store, including
    # those routed while PostgreSQL was down.
    until(lambda: all(n.bridge.status()["personal"]["traces_queued"] == 0 for n in cluster),
          "the queued traces written", timeout=30.0)
    assert [n.bridge.status()["personal"]["traces_dropped"] for n in cluster] == [0, 0]
    routed: set[tuple[int, str]] = set().union(
        *(routed_calls(n) - before for n, before in zip(cluster, calls_before, strict=True)))
    assert len(routed) == 2 * OUTAGE_CALLS + 1
    stored = [r for r in stored_traces(cluster.store_dsn) if r.uniqueid not in stored_before]
    # Each Asterisk's uniqueids carry its systemname (two Asterisks started in one second
    # otherwise hand out the same ids: docs/scale-out.md); one decision per call here.
    for node in cluster:
        prefix = f"{system_name(cluster.name, node.index)}-"
        mine = {r.uniqueid for r in stored if r.uniqueid.startswith(prefix)}
        assert len(mine) == len([c for c in routed if c[0] == node.index]), (node.index,
                                                                          len(mine))
    assert len({r.uniqueid for r in stored}) == len(stored) == len(routed)
    during = {r.uniqueid for r in stored if paused_at <= r.at <= resumed_at}
    assert len(during) >= RATE, (len(during), paused_at, resumed_at)
    # ... and the API of the other bridge finds one of them by its uniqueid.
    uniqueid = min(during)
    answer = operator(two).call("GET", f"/api/v1/calls/{uniqueid}", query={"tenant": "acme"})
    [decision] = answer["decisions"]
    assert decision["uniqueid"] == uniqueid and decision["outcome"].startswith("route"), answer
    print(f"\nscale-out: PostgreSQL down {resumed_at - paused_at:.1f} s under load; "
          f"{len(during)} calls routed meanwhile, all {len(routed)} traces in the store")


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
