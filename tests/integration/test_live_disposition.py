"""Live call disposition on the real Asterisk 22 with SIPp: a call to a user whose rule
says "ask" pops up on the workstations of the user's pickup group (WebSocket sessions on
the bridge's API, `/api/v1/ws`), the first valid choice routes it, every other session is
told, and nobody else ever hears of it.

The workstations here are WebSocket clients speaking the documented protocol (what the
web page and `ami-bridge calls watch` speak); where the call went is read at the SIPp
UASes (acme's desk phones 1011-1013).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest

from ami_bridge.api.client import Client
from harness.asterisk import Asterisk
from harness.sipp import start_uac
from tests.integration.test_personal_router import PASSWORD, Personal, call, desk
from tests.integration.test_personal_router import personal as personal

pytestmark = pytest.mark.asterisk
WAIT_S = 15.0


class Workstation:
    """One logged-in workstation session: a WebSocket client on its own event loop,
    recording every frame the bridge sends."""

    def __init__(self, base: str, token: str) -> None:
        self.frames: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._session: aiohttp.ClientSession | None = None
        self._run(self._connect(base.replace("http://", "ws://") + "/api/v1/ws", token))
        self.wait(lambda f: f["type"] == "hello", "hello")

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _connect(self, url: str, token: str) -> None:
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(url)
        await self._ws.send_str(json.dumps({"type": "auth", "token": token}))
        self._loop.create_task(self._read())

    async def _read(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                self.frames.append(json.loads(message.data))

    def send(self, frame: dict[str, Any]) -> None:
        assert self._ws is not None
        self._run(self._ws.send_str(json.dumps(frame)))

    def wait(self, match: Callable[[dict[str, Any]], bool], what: str,
             timeout: float = WAIT_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for frame in list(self.frames):
                if match(frame):
                    return frame
            time.sleep(0.05)
        raise AssertionError(f"no {what} frame within {timeout} s; got {self.frames}")

    def kinds(self) -> list[str]:
        return [f["type"] for f in self.frames]

    def close(self) -> None:
        async def shut() -> None:
            if self._ws is not None:
                await self._ws.close()
            if self._session is not None:
                await self._session.close()
        self._run(shut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


@pytest.fixture
def stations() -> Iterator[list[Workstation]]:
    opened: list[Workstation] = []
    yield opened
    for station in opened:
        station.close()


def login(personal: Personal, tenant: str, user: str) -> str:
    answer = Client(personal.base).call("POST", "/api/v1/login", {
        "tenant": tenant, "user": user, "password": PASSWORD})
    return str(answer["token"])


def open_station(personal: Personal, stations: list[Workstation], tenant: str,
                 user: str) -> Workstation:
    station = Workstation(personal.base, login(personal, tenant, user))
    stations.append(station)
    return station


def pop_for(number: str) -> Callable[[dict[str, Any]], bool]:
    return lambda f: f["type"] == "pop" and f["call"]["number"] == number


def test_the_group_sees_the_pop_the_first_take_wins_and_nobody_else_hears_of_it(
        personal: Personal, stations: list[Workstation]) -> None:
    alice = personal.create("alice", "2101", ["1011"])
    personal.create("bob", "2102", ["1012"])
    personal.create("carol", "2103", ["1013"])
    personal.operator.call("POST", "/api/v1/tenants/globex/users", {
        "user_id": "gina", "number": "2201", "password": PASSWORD})
    personal.set_rules(alice, [{"name": "pop", "action": "ask", "timeout": 20,
                                "group": "sales"}])
    a, b = open_station(personal, stations, "acme", "alice"), \
        open_station(personal, stations, "acme", "bob")
    c = open_station(personal, stations, "acme", "carol")  # acme, not in the group
    g = open_station(personal, stations, "globex", "gina")  # another tenant
    alices_phone, bobs_phone = desk("1011"), desk("1012")
    uac = start_uac(from_user="acme-caller", dnis="2101", calls=1, rate=1, hold_ms=500,
                    port=5081, timeout_s=60)
    pop_a, pop_b = a.wait(pop_for("2101"), "pop"), b.wait(pop_for("2101"), "pop")
    assert pop_a["call"]["call_id"] == pop_b["call"]["call_id"]
    assert pop_a["call"]["ani"] == "+4930222" and pop_a["call"]["user_id"] == "alice"
    call_id = pop_b["call"]["call_id"]
    b.send({"type": "choose", "call": call_id, "choice": "take"})
    b.wait(lambda f: f["type"] == "accepted" and f["call"] == call_id, "accepted")
    gone = a.wait(lambda f: f["type"] == "gone" and f["call"] == call_id, "gone")
    assert (gone["reason"], gone["by"]) == ("taken", "bob")
    a.send({"type": "choose", "call": call_id, "choice": "take"})
    a.wait(lambda f: f["type"] == "refused" and f["call"] == call_id, "refused")
    stats = uac.wait()
    assert (stats.successful, stats.failed) == (1, 0), stats.failure_reasons
    # bob took it: bob's own phone rang, not alice's
    assert (alices_phone.stop().successful, bobs_phone.stop().successful) == (0, 1)
    time.sleep(0.5)  # anything still on its way to the others would have arrived
    assert set(c.kinds()) <= {"hello", "pong"} and set(g.kinds()) <= {"hello", "pong"}
    assert personal.bridge.status()["counters"]["asked"] == 1


def test_no_choice_in_time_lets_the_stored_rules_route(
        personal: Personal, stations: list[Workstation]) -> None:
    alice = personal.create("alice", "2101", ["1011"])
    personal.set_rules(alice, [{"name": "pop", "action": "ask", "timeout": 5},
                               {"name": "fwd", "action": "forward", "target": "extension:1013"}])
    a = open_station(personal, stations, "acme", "alice")
    own, colleague = desk("1011"), desk("1013")
    started = time.monotonic()
    stats, _ = call("acme-caller", "2101")
    assert (stats.successful, stats.failed) == (1, 0), stats.failure_reasons
    assert time.monotonic() - started >= 5.0
    assert (own.stop().successful, colleague.stop().successful) == (0, 1)
    call_id = a.wait(pop_for("2101"), "pop")["call"]["call_id"]
    gone = a.wait(lambda f: f["type"] == "gone" and f["call"] == call_id, "gone")
    assert gone["reason"] == "timeout"


def test_the_caller_hanging_up_while_asked_ends_the_pop_and_routes_nothing(
        personal: Personal, stations: list[Workstation], asterisk: Asterisk) -> None:
    alice = personal.create("alice", "2101", ["1011"])
    personal.set_rules(alice, [{"name": "pop", "action": "ask", "timeout": 30}])
    a = open_station(personal, stations, "acme", "alice")
    own = desk("1011")
    uac = start_uac(from_user="acme-caller", dnis="2101", calls=1, rate=1, hold_ms=2000,
                    port=5081, timeout_s=60, scenario="uac_cancel.xml")
    call_id = a.wait(pop_for("2101"), "pop")["call"]["call_id"]
    stats = uac.wait()
    assert (stats.successful, stats.failed) == (1, 0), stats.failure_reasons
    gone = a.wait(lambda f: f["type"] == "gone" and f["call"] == call_id, "gone")
    assert gone["reason"] == "abandoned"
    a.send({"type": "choose", "call": call_id, "choice": "take"})
    a.wait(lambda f: f["type"] == "refused" and f["call"] == call_id, "refused")
    assert own.stop().received("INVITE") == 0
    assert asterisk.channel_count() == 0
