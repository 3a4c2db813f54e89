"""Two bridges' personal services on one real PostgreSQL: the bus between them.

Each bridge is a `PersonalService` (store, directory, API on a loopback port, pops, bus)
built from its own config file, both on one database; the clients are real aiohttp
clients. What is measured (the propagation of a rule write) is printed, never asserted.
The outage test has a server of its own, stopped and started again under the bridges.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ami_bridge import config as config_mod
from ami_bridge.personal import pops as pops_mod
from ami_bridge.personal.model import TraceRecord
from ami_bridge.personal.pops import Pop
from ami_bridge.personal.service import PersonalService
from harness.postgres import PostgresServer
from tests.loopback.test_personal_daemon import write_config

pytestmark = pytest.mark.postgres
WAIT = 10.0  # seconds a thing that must happen may take on a busy 2-core box
RULE_WRITES = 100  # rule writes timed from bridge A to bridge B


async def until(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll a condition (a state to reach, not a time to measure)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.005)


@dataclass
class Node:
    service: PersonalService
    url: str
    token: str
    http: aiohttp.ClientSession

    async def call(self, method: str, path: str, *, token: str | None = None,
                   json_body: Any = None) -> tuple[int, Any]:
        async with self.http.request(
                method, self.url + path, json=json_body,
                headers={"Authorization": f"Bearer {token or self.token}"}) as resp:
            text = await resp.text()
            return resp.status, json.loads(text) if text else None


@contextlib.asynccontextmanager
async def bridges(tmp_path: Path, dsn: str) -> AsyncIterator[tuple[Node, Node]]:
    store = f"[store]\nbackend = \"postgresql\"\ndsn = {json.dumps(dsn)}"
    nodes: list[Node] = []
    async with aiohttp.ClientSession() as http:
        try:
            for name in ("a", "b"):
                (tmp_path / name).mkdir()
                path, url, token = write_config(tmp_path / name, store)
                config = config_mod.load(path)
                service = PersonalService(config, lambda c=config: c.tenants)  # type: ignore[misc]
                await service.start()
                nodes.append(Node(service, url, token, http))
            a, b = nodes
            assert a.service.bus is not None and b.service.bus is not None
            await until(lambda: bool(a.service.bus and a.service.bus.listening
                                     and b.service.bus and b.service.bus.listening),
                        "both buses listening")
            yield a, b
        finally:
            for node in nodes:
                await node.service.stop()


def create_user(user: str, number: str) -> dict[str, Any]:
    return {"user_id": user, "number": number, "display_name": user.title(),
            "password": f"{user}-password-123"}


def test_a_write_through_bridge_a_reaches_bridge_bs_directory(
        postgres_server: PostgresServer, tmp_path: Path) -> None:
    dsn = postgres_server.create_database()

    async def main() -> None:
        async with bridges(tmp_path, dsn) as (a, b):
            users = "/api/v1/tenants/acme/users"
            status, body = await a.call("POST", users, json_body=create_user("ann", "2101"))
            assert status == 201, body
            await until(lambda: b.service.directory.by_number("acme", "2101") is not None,
                        "ann in B's directory")
            # A binding moved on A: B routes ann's number to the new phone.
            status, _ = await a.call("PUT", f"{users}/ann/bindings",
                                     json_body={"extensions": ["1012"]})
            assert status == 200
            await until(lambda: b.service.directory.user("acme", "ann").bindings  # type: ignore[union-attr]
                        == ("1012",), "ann's new binding on B")
            # Rule writes: each one in B's directory, timed from A's answer.
            seen: dict[int, float] = {}
            assert b.service.sync is not None

            def applied(tenant: str, user_id: str) -> None:
                found = b.service.directory.by_number("acme", "2101")
                if found is not None:
                    seen.setdefault(found[1].version, time.perf_counter())

            b.service.sync.applied = applied
            lags = []
            for version in range(1, RULE_WRITES + 1):
                status, body = await a.call(
                    "PUT", f"{users}/ann/rules",
                    json_body={"version": version - 1, "vip": [f"+49{version:06d}"]})
                assert status == 200, body
                answered = time.perf_counter()
                await until(lambda v=version: v in seen, f"version {version} on B")  # type: ignore[misc]
                lags.append(max(0.0, seen[version] - answered) * 1000)
                found = b.service.directory.by_number("acme", "2101")
                assert found is not None and found[1].body["vip"] == [f"+49{version:06d}"]
            lags.sort()
            print(f"\nrule write on A -> B's directory, {RULE_WRITES} writes: "
                  f"p50 {statistics.median(lags):.2f} ms, "
                  f"p99 {lags[int(0.99 * (len(lags) - 1))]:.2f} ms, max {lags[-1]:.2f} ms")
            # A user deleted on A is gone from B; A never took its own messages back.
            status, _ = await a.call("DELETE", f"{users}/ann")
            assert status == 204
            await until(lambda: b.service.directory.user("acme", "ann") is None,
                        "ann gone from B")
            assert a.service.sync is not None and a.service.sync.refreshed == 0

    asyncio.run(main())


async def login(node: Node, user: str) -> str:
    status, body = await node.call("POST", "/api/v1/login", json_body={
        "tenant": "acme", "user": user, "password": f"{user}-password-123"})
    assert status == 200, body
    token: str = body["token"]
    return token


async def workstation(node: Node, token: str) -> aiohttp.ClientWebSocketResponse:
    ws = await node.http.ws_connect(node.url.replace("http", "ws") + "/api/v1/ws")
    await ws.send_json({"type": "auth", "token": token})
    assert (await ws.receive_json(timeout=WAIT))["type"] == "hello"
    return ws


def make_pop(call_id: str, asked: tuple[str, ...], *, tenant: str = "acme") -> Pop:
    return Pop(call_id=call_id, tenant=tenant, user_id=asked[0], number="2101",
               ani="+4930123", ani_name="Jane", asked=asked, lookup={},
               expires_at=time.time() + 30)


def test_a_workstation_on_bridge_a_takes_a_call_bridge_b_keeps(
        postgres_server: PostgresServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    dsn = postgres_server.create_database()
    monkeypatch.setattr(pops_mod, "REMOTE_ANSWER_TIMEOUT", 0.5)

    async def main() -> None:
        async with bridges(tmp_path, dsn) as (a, b):
            users = "/api/v1/tenants/acme/users"
            for user, number in (("ann", "2101"), ("bob", "2102"), ("cy", "2103")):
                status, _ = await a.call("POST", users, json_body=create_user(user, number))
                assert status == 201
            ann = await workstation(a, await login(a, "ann"))
            bob = await workstation(a, await login(b, "bob"))  # a session from B works on A
            cy = await workstation(a, await login(a, "cy"))
            decided: list[tuple[str, str, str]] = []

            def decide(call_id: str, tenant: str, user_id: str, choice: str,
                       target: str) -> str | None:
                decided.append((call_id, user_id, choice))
                if len(decided) > 1:
                    return "the call was taken by " + decided[0][1]
                b.service.pops.gone(call_id, "taken", by=user_id)  # as the intermediary
                return None

            b.service.pops.decide = decide
            b.service.pops.offer(make_pop("call-1", ("ann", "bob")))
            for ws in (ann, bob):
                frame = await ws.receive_json(timeout=WAIT)
                assert frame["type"] == "pop" and frame["call"]["call_id"] == "call-1"
            chose = time.perf_counter()
            await ann.send_json({"type": "choose", "call": "call-1", "choice": "take"})
            assert await ann.receive_json(timeout=WAIT) == {"type": "accepted",
                                                            "call": "call-1"}
            print(f"\nchoice on A for B's call -> accepted: "
                  f"{(time.perf_counter() - chose) * 1000:.1f} ms")
            gone = await ann.receive_json(timeout=WAIT)
            assert gone["type"] == "gone" and gone["by"] == "ann"
            assert (await bob.receive_json(timeout=WAIT))["type"] == "gone"
            assert decided == [("call-1", "ann", "take")]
            # cy was not asked: no pop reached her socket; a choice of hers is refused
            # in the words of a call that does not exist.
            await cy.send_json({"type": "choose", "call": "call-1", "choice": "take"})
            refused = await cy.receive_json(timeout=WAIT)
            assert refused == {"type": "refused", "call": "call-1",
                               "reason": pops_mod.UNKNOWN_CALL}
            # B's bus goes away: a choice for B's call is refused after the timeout.
            b.service.pops.offer(make_pop("call-2", ("ann",)))
            assert (await ann.receive_json(timeout=WAIT))["type"] == "pop"
            assert b.service.bus is not None
            await b.service.bus.stop()
            await ann.send_json({"type": "choose", "call": "call-2", "choice": "reject"})
            refused = await ann.receive_json(timeout=WAIT)
            assert refused == {"type": "refused", "call": "call-2",
                               "reason": pops_mod.REMOTE_NO_ANSWER}
            assert len(decided) == 1
            for ws in (ann, bob, cy):
                await ws.close()

    asyncio.run(main())


def test_logout_on_one_bridge_closes_the_sessions_sockets_on_the_other(
        postgres_server: PostgresServer, tmp_path: Path) -> None:
    dsn = postgres_server.create_database()

    async def main() -> None:
        async with bridges(tmp_path, dsn) as (a, b):
            status, _ = await a.call("POST", "/api/v1/tenants/acme/users",
                                     json_body=create_user("ann", "2101"))
            assert status == 201
            token = await login(a, "ann")
            ws = await workstation(a, token)
            status, _ = await b.call("POST", "/api/v1/logout", token=token)
            assert status == 204
            message = await ws.receive(timeout=WAIT)
            assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                    aiohttp.WSMsgType.ERROR)

    asyncio.run(main())


def trace(n: int) -> TraceRecord:
    return TraceRecord(tenant="acme", uniqueid=f"u{n}", at=1_800_000_000.0 + n,
                       venue="acme-personal", user_id="ann", request=1, previous="",
                       outcome="route", rule="", why="")


def test_postgresql_down_and_up_refuses_writes_keeps_traces_and_resyncs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ami_bridge.personal import postgres

    monkeypatch.setattr(postgres, "CHECKOUT_TIMEOUT_S", 0.5)  # the 503 sooner (3 s shipped)
    with PostgresServer() as server:
        dsn = server.create_database()

        async def main() -> None:
            async with bridges(tmp_path, dsn) as (a, b):
                users = "/api/v1/tenants/acme/users"
                status, _ = await a.call("POST", users, json_body=create_user("ann", "2101"))
                assert status == 201
                await until(lambda: b.service.directory.user("acme", "ann") is not None,
                            "ann on B")
                assert a.service.bus is not None and b.service.sync is not None
                reloads = b.service.sync.reloads
                for n in range(50):
                    a.service.record(trace(n))
                await asyncio.to_thread(server.pause)
                # Routing reads go on from the directory (no store involved).
                assert b.service.directory.by_number("acme", "2101") is not None
                for n in range(50, 150):
                    a.service.record(trace(n))
                refused = time.perf_counter()
                status, body = await a.call("POST", users,
                                            json_body=create_user("bob", "2102"))
                print(f"\na write while PostgreSQL is down: {status} after "
                      f"{time.perf_counter() - refused:.1f} s")
                assert status == 503, body
                assert body["error"]["field"] == "store"
                assert "personal store" in body["error"]["reason"]
                await until(lambda: not (a.service.bus and a.service.bus.listening),
                            "A's bus sees the outage")
                await asyncio.to_thread(server.resume)
                back = time.perf_counter()
                await until(lambda: a.service.written_traces == 150,
                            "the 150 decisions written after the outage")
                assert a.service.dropped_traces == 0
                await until(lambda: b.service.sync is not None
                            and b.service.sync.reloads > reloads, "B resynced")
                await until(lambda: all(n.service.bus is not None
                                        and n.service.bus.reconnects >= 1
                                        and n.service.bus.listening for n in (a, b)),
                            "both buses listening again")
                print(f"PostgreSQL back -> traces written, buses listening, B resynced: "
                      f"{time.perf_counter() - back:.2f} s")
                status, _ = await a.call("POST", users, json_body=create_user("bob", "2102"))
                assert status == 201
                await until(lambda: b.service.directory.user("acme", "bob") is not None,
                            "bob on B after the outage")
                stored = await a.service.store.traces("acme", limit=1000)
                assert sorted(r.uniqueid for r in stored) == sorted(f"u{n}"
                                                                    for n in range(150))

        asyncio.run(main())


def test_agent_states_cross_the_bus_and_the_known_state_wins(
        postgres_server: PostgresServer) -> None:
    from ami_bridge.cluster.bus import Bus
    from ami_bridge.cluster.share import AgentShare
    from ami_bridge.intermediary import Intermediary
    from ami_bridge.tenants import messages as m
    from tests.unit.test_intermediary import RAW, FakeClock, Link

    dsn = postgres_server.create_database()
    config = config_mod.parse(RAW, path=Path("test.toml"))

    def agent(node: str, st: str) -> m.AgentState:
        return m.AgentState(tenant="acme", device="PJSIP/desk", available=st == "NOT_INUSE",
                            state=st, paused=False, idle_since=None)

    async def main() -> None:
        buses = [Bus(dsn), Bus(dsn)]
        shares: list[AgentShare] = []
        inters, links = [], []
        # Node a's Asterisk has the device registered; node b's does not know it.
        tables = {0: [agent("a", "NOT_INUSE")], 1: [agent("b", "UNAVAILABLE")]}
        for i, bus in enumerate(buses):
            inter = Intermediary(config=config, clock=FakeClock(),
                                 agent_snapshot=lambda t, i=i: tables[i],  # type: ignore[misc]
                                 on_agent_state=lambda s, i=i: shares[i].publish(s))  # type: ignore[misc]
            shares.append(AgentShare(bus, inter, lambda i=i: tables[i]))  # type: ignore[misc]
            inters.append(inter)
            await bus.start()
        try:
            await until(lambda: all(b.listening for b in buses), "both buses listening")
            # Whichever bridge listened first, each gets the other's table.
            link = Link()
            inters[1].attach_vts("acme", link)
            links.append(link)
            await until(lambda: agent("a", "NOT_INUSE") in link.of_type(m.AgentState),
                        "a's table at b's VTS")
            await until(lambda: inters[0].expire_agents() == 0 and any(
                s.tenant == "acme" for s in inters[0].fanout.agents.snapshot("acme", [])),
                "b's table at a")
            link.sent.clear()
            # Node b's AMI says UNAVAILABLE again: a's known state still stands.
            inters[1].forward_agent_state(agent("b", "UNAVAILABLE"))
            assert link.of_type(m.AgentState) == []
            fresh = Link()  # and a VTS connecting now gets a's known state
            inters[1].attach_vts("acme", fresh)
            assert fresh.of_type(m.AgentState) == [agent("a", "NOT_INUSE")]
            inters[1].attach_vts("acme", link)
            # Node a's agent takes a call: b's VTS hears it over the bus.
            inters[0].forward_agent_state(agent("a", "INUSE"))
            await until(lambda: link.of_type(m.AgentState)[-1] == agent("a", "INUSE"),
                        "a's INUSE at b's VTS")
        finally:
            for bus in buses:
                await bus.stop()

    asyncio.run(main())
