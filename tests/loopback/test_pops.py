"""The live call pop hub over a real aiohttp server on a loopback port, with real
aiohttp WebSocket clients.

Tokens map to users through a fake `authenticate` (acme: ann, bob, ada; globex: cid and
another "ann"); the API's real sessions are the subject of the last tests. The clock is
the test's, so expiry is moved by hand. `Decider` stands in for the intermediary's
`client_choice`: the first choice takes the call and (optionally from inside the call,
as the intermediary does) says `gone(taken)`; later ones are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from ami_bridge.api import make_app, serve
from ami_bridge.personal.directory import Directory
from ami_bridge.personal.pops import (
    CLOSE_UNAUTHORIZED,
    MAX_FRAME,
    UNKNOWN_CALL,
    Pop,
    PopHub,
    directory_saved,
    session_authenticator,
)
from ami_bridge.personal.settings import ApiConfig
from ami_bridge.personal.sqlite import SqliteStore
from ami_bridge.tenants import personal
from tests.unit.test_api import FAST_HASHER, OPERATOR_TOKEN, PASSWORDS, USERS, tenants

NOW = 1_800_000_000.0
TOKENS = {"tok-ann": ("acme", "ann"), "tok-bob": ("acme", "bob"), "tok-ada": ("acme", "ada"),
          "tok-cid": ("globex", "cid"), "tok-gann": ("globex", "ann")}
SAVED = {("acme", "bob"): ("extension:1003", "external:+4930999"),
         ("acme", "ann"): ("extension:1002",)}
RECEIVE = 5.0  # seconds a frame that must come may take on a busy 2-core box


@dataclass
class Clock:
    now: float = NOW

    def __call__(self) -> float:
        return self.now


@dataclass
class Decider:
    hub: PopHub
    gone_inside: bool = True
    calls: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    taken: dict[str, str] = field(default_factory=dict)

    def __call__(self, call_id: str, tenant: str, user_id: str, choice: str,
                 target: str) -> str | None:
        self.calls.append((call_id, tenant, user_id, choice, target))
        if call_id in self.taken:
            return f"the call was taken by {self.taken[call_id]}"
        self.taken[call_id] = user_id
        if self.gone_inside:
            self.hub.gone(call_id, "taken", by=user_id)
        return None


async def authenticate(token: str) -> tuple[str, str] | None:
    if token.startswith("tok-u"):  # the fan-out's hundred users
        return "acme", token[4:]
    return TOKENS.get(token)


def saved(tenant: str, user_id: str) -> tuple[str, ...]:
    return SAVED.get((tenant, user_id), ())


def make_pop(call_id: str = "c1", *, asked: tuple[str, ...] = ("ann",), tenant: str = "acme",
             expires_at: float = NOW + 15, lookup: dict[str, str] | None = None,
             group: str = "") -> Pop:
    return Pop(call_id=call_id, tenant=tenant, user_id=asked[0], number="2001",
               ani="+4930123", ani_name="Jane Doe", asked=asked,
               lookup=lookup if lookup is not None else {"customer": "ACME Corp"},
               expires_at=expires_at, group=group)


@dataclass
class Net:
    hub: PopHub
    clock: Clock
    url: str
    http: aiohttp.ClientSession
    decider: Decider

    async def raw(self) -> aiohttp.ClientWebSocketResponse:
        return await self.http.ws_connect(self.url)

    async def connect(self, token: str) -> aiohttp.ClientWebSocketResponse:
        ws = await self.raw()
        await ws.send_json({"type": "auth", "token": token})
        tenant, user = await authenticate(token) or ("", "")
        assert await recv(ws) == {"type": "hello", "tenant": tenant, "user": user}
        return ws


@contextlib.asynccontextmanager
async def net(**hub_options: Any) -> AsyncIterator[Net]:
    clock = Clock()
    hub = PopHub(clock=clock, authenticate=authenticate, saved=saved, **hub_options)
    decider = Decider(hub)
    hub.decide = decider
    app = web.Application()
    app.router.add_get("/api/v1/ws", hub.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as http:
            yield Net(hub, clock, f"http://127.0.0.1:{port}/api/v1/ws", http, decider)
    finally:
        await runner.cleanup()


def run(scenario: Any, **hub_options: Any) -> None:
    async def main() -> None:
        async with net(**hub_options) as n:
            await scenario(n)
    asyncio.run(main())


async def recv(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    message = await ws.receive(timeout=RECEIVE)
    assert message.type == WSMsgType.TEXT, (message.type, message.data)
    frame: dict[str, Any] = json.loads(message.data)
    return frame


async def quiet(*sockets: aiohttp.ClientWebSocketResponse) -> None:
    """Nothing was sent to these sockets since their last read: a ping's answer is the
    very next frame (a socket's frames arrive in the order the hub queued them)."""
    for ws in sockets:
        await ws.send_json({"type": "ping"})
        assert await recv(ws) == {"type": "pong"}


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    message = await ws.receive(timeout=RECEIVE)
    assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED), (message.type, message.data)
    return ws.close_code


def pop_call(pop: Pop, saved_targets: tuple[str, ...]) -> dict[str, Any]:
    return {"call_id": pop.call_id, "user_id": pop.user_id, "number": pop.number,
            "ani": pop.ani, "ani_name": pop.ani_name, "lookup": dict(pop.lookup),
            "expires_at": pop.expires_at, "group": pop.group,
            "choices": ["take", "voicemail", "forward", "reject"],
            "saved": list(saved_targets)}


# -- authentication ----------------------------------------------------------------------

def test_a_socket_without_a_valid_token_first_is_closed_4401() -> None:
    async def scenario(n: Net) -> None:
        n.hub.offer(make_pop(asked=("ann", "bob")))
        for first in [{"type": "auth", "token": "tok-nobody"},  # unknown token
                      {"type": "ping"},  # anything else first
                      {"type": "choose", "call": "c1", "choice": "take"},
                      {"type": "auth", "token": ""}, {"type": "auth"},
                      {"type": "auth", "token": "tok-ann", "user": "bob"}]:
            ws = await n.raw()
            await ws.send_json(first)
            assert await closed_with(ws) == CLOSE_UNAUTHORIZED, first
        ws = await n.raw()
        await ws.send_bytes(b'{"type": "auth", "token": "tok-ann"}')
        assert await closed_with(ws) == CLOSE_UNAUTHORIZED
        ws = await n.raw()
        await ws.send_str("tok-ann")
        assert await closed_with(ws) == CLOSE_UNAUTHORIZED
        ws = await n.raw()  # says nothing: closed after auth_timeout
        assert await closed_with(ws) == CLOSE_UNAUTHORIZED
        assert n.decider.calls == []
        assert n.hub.status()["clients"] == 0
    run(scenario, auth_timeout=0.3)


def test_the_api_sessions_work_and_a_logged_out_token_does_not(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SqliteStore(tmp_path / "personal.sqlite3")
        await store.open()
        directory = Directory()
        hub = PopHub(authenticate=session_authenticator(store),
                     saved=directory_saved(directory))
        app = make_app(store=store, directory=directory, tenants=tenants,
                       config=ApiConfig(host="127.0.0.1", port=0,
                                        operator_token=OPERATOR_TOKEN),
                       parse_portion=personal.parse_portion, hasher=FAST_HASHER, pops=hub)
        runner = await serve(app, ApiConfig(host="127.0.0.1", port=0))
        base = f"http://127.0.0.1:{runner.addresses[0][1]}/api/v1"
        try:
            async with aiohttp.ClientSession() as http:
                operator = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
                for tenant, user, number, admin in USERS:
                    async with http.post(f"{base}/tenants/{tenant}/users", headers=operator,
                                         json={"user_id": user, "number": number,
                                               "admin": admin,
                                               "password": PASSWORDS[user]}) as answer:
                        assert answer.status == 201
                async with http.post(f"{base}/login", json={
                        "tenant": "acme", "user": "bob",
                        "password": PASSWORDS["bob"]}) as answer:
                    token = (await answer.json())["token"]
                bearer = {"Authorization": f"Bearer {token}"}
                async with http.put(f"{base}/me/rules", headers=bearer, json={
                        "version": 0, "saved": ["extension:1003"]}) as answer:
                    assert answer.status == 200, await answer.text()
                ws = await http.ws_connect(f"{base}/ws")
                await ws.send_json({"type": "auth", "token": token})
                assert await recv(ws) == {"type": "hello", "tenant": "acme", "user": "bob"}
                hub.offer(make_pop(asked=("bob",), expires_at=time.time() + 60))
                frame = await recv(ws)
                assert frame["call"]["saved"] == ["extension:1003"]  # from the directory
                logged_out = ws  # closed by the logout of its session
                for bad in (OPERATOR_TOKEN, token + "x"):
                    ws = await http.ws_connect(f"{base}/ws")
                    await ws.send_json({"type": "auth", "token": bad})
                    assert await closed_with(ws) == CLOSE_UNAUTHORIZED
                async with http.post(f"{base}/login", json={
                        "tenant": "acme", "user": "bob",
                        "password": PASSWORDS["bob"]}) as answer:
                    other_session = (await answer.json())["token"]
                kept = await http.ws_connect(f"{base}/ws")  # open until the server stops
                await kept.send_json({"type": "auth", "token": other_session})
                assert (await recv(kept))["type"] == "hello"
                async with http.post(f"{base}/logout", headers=bearer) as answer:
                    assert answer.status == 204
                gone = await logged_out.receive(timeout=RECEIVE)
                while gone.type == WSMsgType.TEXT:  # frames already on their way
                    gone = await logged_out.receive(timeout=RECEIVE)
                assert gone.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
                ws = await http.ws_connect(f"{base}/ws")
                await ws.send_json({"type": "auth", "token": token})
                assert await closed_with(ws) == CLOSE_UNAUTHORIZED
                async with http.get(f"{base}/ws") as answer:  # not an upgrade
                    assert answer.status == 400
                    assert (await answer.json())["error"]["field"] == "path"
                # Stopping the server closes the open sockets: going away, come back.
                assert (await recv(kept))["type"] == "pop"  # the call still waiting
                closing = asyncio.create_task(kept.receive(timeout=RECEIVE))
                await runner.cleanup()
                message = await closing
                assert (message.type, message.data) == (WSMsgType.CLOSE,
                                                        aiohttp.WSCloseCode.GOING_AWAY)
        finally:
            await runner.cleanup()
            await store.close()
    asyncio.run(scenario())


def test_without_a_hub_the_path_answers_404(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SqliteStore(tmp_path / "personal.sqlite3")
        await store.open()
        app = make_app(store=store, directory=Directory(), tenants=tenants,
                       config=ApiConfig(host="127.0.0.1", port=0), hasher=FAST_HASHER)
        runner = await serve(app, ApiConfig(host="127.0.0.1", port=0))
        try:
            async with aiohttp.ClientSession() as http:
                url = f"http://127.0.0.1:{runner.addresses[0][1]}/api/v1/ws"
                with pytest.raises(aiohttp.WSServerHandshakeError) as failed:
                    await http.ws_connect(url)
                assert failed.value.status == 404
        finally:
            await runner.cleanup()
            await store.close()
    asyncio.run(scenario())


# -- who gets a pop ------------------------------------------------------------------------

def test_a_pop_reaches_exactly_the_asked_users_of_its_tenant() -> None:
    async def scenario(n: Net) -> None:
        ann = await n.connect("tok-ann")
        bob = await n.connect("tok-bob")
        ada = await n.connect("tok-ada")
        cid = await n.connect("tok-cid")
        globex_ann = await n.connect("tok-gann")  # the same user id, another tenant
        pop = make_pop("c1", asked=("ann",))
        n.hub.offer(pop)
        assert await recv(ann) == {"type": "pop", "call": pop_call(pop, SAVED["acme", "ann"])}
        await quiet(ann, bob, ada, cid, globex_ann)
        group = make_pop("c2", asked=("bob", "ada"), group="sales")
        n.hub.offer(group)
        assert await recv(bob) == {"type": "pop", "call": pop_call(group, SAVED["acme", "bob"])}
        assert await recv(ada) == {"type": "pop", "call": pop_call(group, ())}
        await quiet(ann, bob, ada, cid, globex_ann)
        theirs = make_pop("g1", asked=("ann", "cid"), tenant="globex")
        n.hub.offer(theirs)
        assert (await recv(globex_ann))["call"]["call_id"] == "g1"
        assert (await recv(cid))["call"]["call_id"] == "g1"
        await quiet(ann, bob, ada, cid, globex_ann)
        assert n.hub.waiting("acme", "ann") == [pop]
        assert n.hub.waiting("globex", "ann") == [theirs]
        assert n.hub.status() == {"clients": 5, "pops": 3, "dropped": 0}
    run(scenario)


def test_a_group_gets_the_pop_and_the_first_choice_wins() -> None:
    async def scenario(n: Net) -> None:
        bob1 = await n.connect("tok-bob")
        bob2 = await n.connect("tok-bob")
        ada = await n.connect("tok-ada")
        ann = await n.connect("tok-ann")
        n.hub.offer(make_pop("c1", asked=("bob", "ada"), group="sales"))
        for ws in (bob1, bob2, ada):
            assert (await recv(ws))["call"]["call_id"] == "c1"
        # Three choices sent together: one reaches decide and wins, the others are
        # refused by the hub, whichever order the server reads them in.
        await asyncio.gather(
            bob1.send_json({"type": "choose", "call": "c1", "choice": "take"}),
            bob2.send_json({"type": "choose", "call": "c1", "choice": "forward",
                            "target": "extension:1003"}),
            ada.send_json({"type": "choose", "call": "c1", "choice": "voicemail"}))
        frames = {name: [await recv(ws), await recv(ws)]
                  for name, ws in (("bob1", bob1), ("bob2", bob2), ("ada", ada))}
        assert len(n.decider.calls) == 1
        winner = n.decider.calls[0][2]
        gone = {"type": "gone", "call": "c1", "reason": "taken", "by": winner}
        accepted = [name for name, got in frames.items()
                    if got == [{"type": "accepted", "call": "c1"}, gone]]
        assert len(accepted) == 1 and accepted[0].startswith(winner)
        for name, got in frames.items():
            if name != accepted[0]:
                assert gone in got and {"type": "refused", "call": "c1",
                                        "reason": f"the call was taken by {winner}"} in got
        await quiet(bob1, bob2, ada, ann)
        # Later: refused with the reason, decide never asked again.
        await ada.send_json({"type": "choose", "call": "c1", "choice": "reject"})
        assert await recv(ada) == {"type": "refused", "call": "c1",
                                   "reason": f"the call was taken by {winner}"}
        assert len(n.decider.calls) == 1
        assert n.hub.status()["pops"] == 0
    run(scenario)


def test_a_decide_that_says_gone_later_still_lets_one_choice_through() -> None:
    async def scenario(n: Net) -> None:
        n.decider.gone_inside = False
        bob = await n.connect("tok-bob")
        ada = await n.connect("tok-ada")
        n.hub.offer(make_pop("c1", asked=("bob", "ada")))
        await recv(bob)
        await recv(ada)
        await bob.send_json({"type": "choose", "call": "c1", "choice": "forward",
                             "target": "external:+4930999"})
        assert await recv(bob) == {"type": "accepted", "call": "c1"}
        await ada.send_json({"type": "choose", "call": "c1", "choice": "take"})
        assert await recv(ada) == {"type": "refused", "call": "c1",
                                   "reason": "the call was taken by bob"}
        assert n.decider.calls == [("c1", "acme", "bob", "forward", "external:+4930999")]
        assert n.hub.waiting("acme", "ada") == []  # taken: not offered on reconnect
        n.hub.gone("c1", "taken", by="bob")
        for ws in (bob, ada):
            assert await recv(ws) == {"type": "gone", "call": "c1", "reason": "taken",
                                      "by": "bob"}
        n.hub.gone("c1", "taken", by="bob")  # twice: nothing more is sent
        await quiet(bob, ada)
    run(scenario)


def test_a_refused_decision_leaves_the_call_to_the_others() -> None:
    async def scenario(n: Net) -> None:
        answers = iter(["your phones are all busy", None])
        n.hub.decide = lambda *args: next(answers)
        bob = await n.connect("tok-bob")
        ada = await n.connect("tok-ada")
        n.hub.offer(make_pop("c1", asked=("bob", "ada")))
        await recv(bob)
        await recv(ada)
        await bob.send_json({"type": "choose", "call": "c1", "choice": "take"})
        assert await recv(bob) == {"type": "refused", "call": "c1",
                                   "reason": "your phones are all busy"}
        await ada.send_json({"type": "choose", "call": "c1", "choice": "take"})
        assert await recv(ada) == {"type": "accepted", "call": "c1"}

        def broken(*args: str) -> str | None:
            raise RuntimeError("intermediary on fire")
        n.hub.decide = broken
        n.hub.offer(make_pop("c2", asked=("bob",)))
        await recv(bob)
        await bob.send_json({"type": "choose", "call": "c2", "choice": "take"})
        assert await recv(bob) == {"type": "refused", "call": "c2", "reason": "internal error"}
        await quiet(bob, ada)
    run(scenario)


def test_a_choice_for_an_unknown_or_foreign_call_is_refused_alike() -> None:
    async def scenario(n: Net) -> None:
        ann = await n.connect("tok-ann")
        bob = await n.connect("tok-bob")
        cid = await n.connect("tok-cid")
        globex_ann = await n.connect("tok-gann")
        n.hub.offer(make_pop("c1", asked=("ann",)))
        await recv(ann)
        for ws, call in [(bob, "c1"), (cid, "c1"), (globex_ann, "c1"), (ann, "nope"),
                         (ann, "C1")]:
            await ws.send_json({"type": "choose", "call": call, "choice": "take"})
            assert await recv(ws) == {"type": "refused", "call": call, "reason": UNKNOWN_CALL}
        # A forward only to one of the chooser's own saved targets.
        await ann.send_json({"type": "choose", "call": "c1", "choice": "forward",
                             "target": "extension:1003"})  # bob's, not ann's
        assert await recv(ann) == {"type": "refused", "call": "c1", "reason":
                                   "extension:1003 is not one of your saved targets"}
        assert n.decider.calls == []
        # Gone: still unknown to those never offered it; a reason to the one that was.
        n.hub.gone("c1", "abandoned")
        assert await recv(ann) == {"type": "gone", "call": "c1", "reason": "abandoned",
                                   "by": ""}
        for ws in (bob, cid):
            await ws.send_json({"type": "choose", "call": "c1", "choice": "take"})
            assert await recv(ws) == {"type": "refused", "call": "c1", "reason": UNKNOWN_CALL}
        await ann.send_json({"type": "choose", "call": "c1", "choice": "take"})
        assert await recv(ann) == {"type": "refused", "call": "c1",
                                   "reason": "the caller hung up"}
        assert n.decider.calls == []
    run(scenario)


def test_timeout_abandoned_and_expiry_reach_every_socket_that_got_the_pop() -> None:
    async def scenario(n: Net) -> None:
        bob1 = await n.connect("tok-bob")
        bob2 = await n.connect("tok-bob")
        ada = await n.connect("tok-ada")
        ann = await n.connect("tok-ann")
        n.hub.offer(make_pop("c1", asked=("bob", "ada")))
        n.hub.offer(make_pop("c2", asked=("bob", "ada")))
        n.hub.offer(make_pop("c3", asked=("bob", "ada"), expires_at=NOW + 5))
        for ws in (bob1, bob2, ada):
            assert [(await recv(ws))["call"]["call_id"] for _ in range(3)] == ["c1", "c2", "c3"]
        n.hub.gone("c1", "timeout")
        n.hub.gone("c2", "abandoned")
        for ws in (bob1, bob2, ada):
            assert await recv(ws) == {"type": "gone", "call": "c1", "reason": "timeout",
                                      "by": ""}
            assert await recv(ws) == {"type": "gone", "call": "c2", "reason": "abandoned",
                                      "by": ""}
        n.clock.now = NOW + 5  # c3's expires_at: gone at the hub's next step
        await ada.send_json({"type": "choose", "call": "c3", "choice": "take"})
        assert await recv(ada) == {"type": "gone", "call": "c3", "reason": "timeout",
                                   "by": ""}
        assert await recv(ada) == {"type": "refused", "call": "c3", "reason":
                                   "the call is no longer waiting (timed out)"}
        for ws in (bob1, bob2):
            assert await recv(ws) == {"type": "gone", "call": "c3", "reason": "timeout",
                                      "by": ""}
        n.hub.gone("c3", "timeout")  # the intermediary's, later: nothing more
        n.hub.offer(make_pop("c4", asked=("bob",), expires_at=NOW + 5))  # born expired
        await quiet(bob1, bob2, ada, ann)
        assert n.decider.calls == [] and n.hub.status()["pops"] == 0
        with pytest.raises(ValueError, match="reason must be one of"):
            n.hub.gone("c4", "lost")
    run(scenario)


def test_a_reconnecting_client_gets_the_pops_still_waiting_for_it() -> None:
    async def scenario(n: Net) -> None:
        bob = await n.connect("tok-bob")
        n.hub.offer(make_pop("c1", asked=("bob", "ada")))
        first = await recv(bob)
        await bob.close()
        n.hub.offer(make_pop("c2", asked=("bob",), expires_at=NOW + 3))  # nobody online
        n.hub.offer(make_pop("c3", asked=("ann",)))  # someone else's
        n.hub.offer(make_pop("c4", asked=("bob",)))
        n.hub.gone("c4", "abandoned")  # gone before he comes back
        n.hub.offer(make_pop("c5", asked=("bob",), tenant="globex"))  # another tenant's bob
        bob = await n.connect("tok-bob")
        assert await recv(bob) == first
        assert (await recv(bob))["call"]["call_id"] == "c2"
        await quiet(bob)
        await bob.send_json({"type": "choose", "call": "c2", "choice": "take"})
        assert await recv(bob) == {"type": "accepted", "call": "c2"}
        assert await recv(bob) == {"type": "gone", "call": "c2", "reason": "taken",
                                   "by": "bob"}
        await bob.close()
        n.clock.now = NOW + 3  # c2 is gone anyway; c1 still waits
        bob = await n.connect("tok-bob")
        assert await recv(bob) == first
        await quiet(bob)
    run(scenario)


def test_a_logged_out_session_takes_its_sockets_only() -> None:
    from ami_bridge.api.auth import token_hash

    async def scenario(n: Net) -> None:
        first, second = await n.connect("tok-ann"), await n.connect("tok-bob")
        assert n.hub.end_session(token_hash("tok-ann")) == 1
        assert await closed_with(first) is not None
        n.hub.offer(make_pop("c1", asked=("ann", "bob")))
        assert (await recv(second))["call"]["call_id"] == "c1"
        assert n.hub.end_session(token_hash("nobody")) == 0
    run(scenario)


def test_ending_a_users_sessions_closes_that_users_sockets_only() -> None:
    async def scenario(n: Net) -> None:
        ann, bob = await n.connect("tok-ann"), await n.connect("tok-bob")
        assert n.hub.end_user("acme", "ann") == 1
        assert await closed_with(ann) is not None
        n.hub.offer(make_pop("c1", asked=("ann", "bob")))
        assert (await recv(bob))["call"]["call_id"] == "c1"
        assert n.hub.status()["dropped"] == 0  # not counted as a slow client
    run(scenario)


# -- robustness --------------------------------------------------------------------------------

def test_malformed_frames_get_an_error_and_the_socket_stays_usable() -> None:
    async def scenario(n: Net) -> None:
        ann = await n.connect("tok-ann")
        bob = await n.connect("tok-bob")
        n.hub.offer(make_pop("c1", asked=("ann",)))
        await recv(ann)
        bad = ["not json", "[]", "null", '"x"', '{"type": 1}', '{"type": "dance"}',
               '{"type": "ping", "extra": 1}',
               '{"type": "auth", "token": "tok-bob"}',  # once only
               '{"type": "choose", "call": "c1", "choice": "dance"}',
               '{"type": "choose", "call": "c1"}',
               '{"type": "choose", "choice": "take"}',
               '{"type": "choose", "call": 7, "choice": "take"}',
               '{"type": "choose", "call": "c1\\nc2", "choice": "take"}',
               '{"type": "choose", "call": "c1", "choice": "take", "target": "x"}',
               '{"type": "choose", "call": "c1", "choice": "forward"}',
               '{"type": "choose", "call": "c1", "choice": "forward", "target": "a\\u0000"}',
               '{"type": "choose", "call": "' + "c" * 200 + '", "choice": "take"}']
        for text in bad:
            await ann.send_str(text)
            frame = await recv(ann)
            assert frame["type"] == "error" and frame["reason"], (text, frame)
        await ann.send_bytes(b'{"type": "ping"}')
        assert await recv(ann) == {"type": "error", "reason": "text frames only"}
        assert n.decider.calls == []
        await quiet(ann, bob)
        await ann.send_json({"type": "choose", "call": "c1", "choice": "take"})
        assert await recv(ann) == {"type": "accepted", "call": "c1"}
        assert (await recv(ann))["type"] == "gone"
        # Larger than the cap: aiohttp closes that socket (1009); the others go on.
        await ann.send_str(json.dumps({"type": "ping", "pad": "x" * MAX_FRAME}))
        assert await closed_with(ann) == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
        await quiet(bob)
    run(scenario)


def test_a_client_that_never_reads_is_dropped_and_blocks_nobody() -> None:
    async def scenario(n: Net) -> None:
        bob = await n.connect("tok-bob")  # reads
        # ada stops reading after hello; a small receive buffer makes her stall sooner.
        small = aiohttp.TCPConnector(socket_factory=small_receive_buffer)
        async with aiohttp.ClientSession(connector=small) as http:
            ada = await http.ws_connect(n.url)
            await ada.send_json({"type": "auth", "token": "tok-ada"})
            assert (await recv(ada))["type"] == "hello"
            await never_read(n, bob, ada)

    async def never_read(n: Net, bob: aiohttp.ClientWebSocketResponse,
                         ada: aiohttp.ClientWebSocketResponse) -> None:
        lookup = {f"field{i}": "v" * 60 for i in range(8)}  # a pop of about 1 KiB
        offered = 0
        burst = 4
        while n.hub.dropped == 0:
            assert offered < 20_000, "the silent socket was never dropped"
            for _ in range(burst):  # fewer than the cap at once: bob keeps up
                offered += 1
                n.hub.offer(make_pop(f"c{offered}", asked=("bob", "ada"), lookup=lookup))
            for i in range(offered - burst + 1, offered + 1):  # bob has them all, in order
                assert (await recv(bob))["call"]["call_id"] == f"c{i}"
        assert n.hub.status()["clients"] == 1
        queued = [s.queue.qsize() for s in n.hub._sockets.values()]
        assert queued == [0]  # bob's; ada's queue (at most 8) went with her socket
        n.hub.offer(make_pop("last", asked=("bob", "ada")))
        assert (await recv(bob))["call"]["call_id"] == "last"
        # ada's connection was aborted: her client reads what was in flight, then the end.
        while (message := await ada.receive(timeout=RECEIVE)).type == WSMsgType.TEXT:
            pass
        assert message.type in (WSMsgType.CLOSED, WSMsgType.ERROR, WSMsgType.CLOSE)
        print(f"\nsilent socket dropped after {offered} pops of ~1 KiB (queue cap 8)")
    run(scenario, max_queued=8)


def small_receive_buffer(addr_info: Any) -> socket.socket:
    family, kind, proto, _, _ = addr_info
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


def test_a_user_has_at_most_sixteen_sockets_the_oldest_goes() -> None:
    async def scenario(n: Net) -> None:
        sockets = [await n.connect("tok-bob") for _ in range(17)]
        message = await sockets[0].receive(timeout=RECEIVE)  # aborted: no close frame
        assert message.type in (WSMsgType.CLOSED, WSMsgType.ERROR), message
        assert n.hub.status()["clients"] == 16 and n.hub.dropped == 1
        await quiet(*sockets[1:])
    run(scenario)


def test_fan_out_to_100_sockets_measured_not_asserted() -> None:
    async def scenario(n: Net) -> None:
        users = tuple(f"u{i:03}" for i in range(100))
        sockets = await asyncio.gather(*(n.connect(f"tok-{u}") for u in users))
        times = []
        for round_ in range(20):
            start = time.perf_counter()
            n.hub.offer(make_pop(f"f{round_}", asked=users))
            frames = await asyncio.gather(*(recv(ws) for ws in sockets))
            times.append(time.perf_counter() - start)
            assert {f["call"]["call_id"] for f in frames} == {f"f{round_}"}
        print(f"\npop fan-out to 100 sockets (offer -> all 100 clients have it, clients "
              f"in the same process): median {statistics.median(times) * 1000:.1f} ms, "
              f"max {max(times) * 1000:.1f} ms over {len(times)} pops")
    run(scenario)
