"""The ARI driver against a scripted ARI server (aiohttp: REST + WebSocket), with the whole
daemon and a real VTS process: a StasisStart is routed like a FastAGI session (the
contract's variables, AB_ACTION last, then continue; four requests per routed call), a
hostile caller name changes nothing, a hang-up while pending is an abandon, a treatment
plays and collects DTMF over ARI, and a dropped WebSocket reconnects and continues the
channels it finds waiting unseen into their fallback (nothing written)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from ami_bridge.daemon import Bridge
from tests.loopback.test_agi_server import free_port, with_bridge

PASSWORD = "ari-loopback-secret"
ROUTED_1001 = [("POST", "variable", {"variable": "AB_KIND", "value": "extension"}),
               ("POST", "variable", {"variable": "AB_TARGET", "value": "1001"}),
               ("POST", "variable", {"variable": "AB_ACTION", "value": "route"}),
               ("POST", "continue", {})]


@dataclass
class ScriptedAri:
    """Asterisk's ARI as far as the driver uses it; records every REST request."""

    channels: list[str] = field(default_factory=list)  # GET /applications' channel_ids
    requests: list[tuple[str, str, str, dict[str, str]]] = field(default_factory=list)
    sockets: list[web.WebSocketResponse] = field(default_factory=list)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    auth_ok: bool = True

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/ari/events", self.events)
        app.router.add_get("/ari/applications/{app}", self.application)
        app.router.add_route("*", "/ari/{kind}/{id}/{what:.*}", self.rest)
        app.router.add_route("*", "/ari/{kind}/{id}", self.rest)
        return app

    def _check(self, request: web.Request) -> None:
        expected = "Basic " + base64.b64encode(f"ami-bridge:{PASSWORD}".encode()).decode()
        self.auth_ok = self.auth_ok and request.headers.get("Authorization") == expected

    async def events(self, request: web.Request) -> web.WebSocketResponse:
        self._check(request)
        assert request.query["app"] == "ami-bridge"
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        self.connected.set()
        async for _ in ws:
            pass
        return ws

    async def application(self, request: web.Request) -> web.Response:
        self._check(request)
        return web.json_response({"name": request.match_info["app"],
                                  "channel_ids": list(self.channels)})

    async def rest(self, request: web.Request) -> web.Response:
        self._check(request)
        what = request.match_info.get("what", "") or request.method.lower()
        self.requests.append((request.method, request.match_info["id"], what,
                              dict(request.query)))
        return web.Response(status=204)

    async def send(self, event: dict[str, Any]) -> None:
        await self.sockets[-1].send_str(json.dumps(event))

    def of(self, channel: str) -> list[tuple[str, str, dict[str, str]]]:
        return [(m, what, q) for m, cid, what, q in self.requests if cid == channel]


def stasis_start(channel: str, *, context: str = "acme-venue", name: str = "Alice",
                 number: str = "555", args: tuple[str, ...] = ("", "")) -> dict[str, Any]:
    return {"type": "StasisStart", "application": "ami-bridge", "args": list(args),
            "channel": {"id": channel, "name": f"PJSIP/t-{channel}", "state": "Ring",
                        "caller": {"name": name, "number": number}, "language": "en",
                        "dialplan": {"context": context, "exten": "100", "priority": 5}}}


def channel_event(kind: str, channel: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "application": "ami-bridge", "channel": {"id": channel}, **extra}


def write_config(tmp_path: Path, ari_port: int) -> Path:
    secret = tmp_path / "ari.secret"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    path = tmp_path / "bridge.toml"
    path.write_text(f"""
[bridge]
agi_listen = "127.0.0.1:{free_port()}"
control_socket = "{tmp_path}/control.sock"
[ari]
url = "http://127.0.0.1:{ari_port}"
username = "ami-bridge"
password_file = "{secret}"
[vts.acme]
[tenants.acme]
targets = ["1001", "1002"]
[tenants.acme.venues.acme-venue]
vts = "acme"
driver = "ari"
router_timeout = 3.0
[[tenants.acme.rules]]
name = "menu"
ani = "777"
action = "treatment"
prompt = "welcome"
collect_digits = 2
timeout_ms = 2000
[[tenants.acme.rules]]
name = "pressed"
digits = "42"
targets = ["1002"]
[[tenants.acme.rules]]
name = "r"
targets = ["1001"]
""")
    return path


async def until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def run(tmp_path: Path, body: Callable[[Bridge, ScriptedAri], Awaitable[None]],
        ari: ScriptedAri | None = None) -> ScriptedAri:
    async def main() -> ScriptedAri:
        server = ari or ScriptedAri()
        runner = web.AppRunner(server.app())
        await runner.setup()
        port = free_port()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        try:
            async def inner(bridge: Bridge) -> None:
                await asyncio.wait_for(server.connected.wait(), 5)
                await body(bridge, server)
            await with_bridge(write_config(tmp_path, port), inner)
        finally:
            await runner.cleanup()
        return server
    return asyncio.run(main())


def test_a_stasis_start_is_routed_like_a_fastagi_session(tmp_path: Path) -> None:
    hostile = "Eve\"\n" + "'\\,|;\r\nAGI: x " * 800  # newlines, quotes, > 10 KB

    async def body(bridge: Bridge, ari: ScriptedAri) -> None:
        await ari.send(stasis_start("c.1"))
        await ari.send(stasis_start("c.2", name=hostile, number="555\n1001"))
        await until(lambda: len(ari.of("c.1")) == 4 and len(ari.of("c.2")) == 4,
                    "both calls continued")
        assert ari.of("c.1") == ROUTED_1001
        assert ari.of("c.2") == ROUTED_1001  # the caller's name changed nothing
        assert bridge.intermediary is not None
        assert bridge.intermediary.counters.requests == 2
        assert bridge.ari is not None
        # One GET /applications per connection, then four requests per routed call and,
        # no [ami] here, the subscription that keeps its call events coming.
        assert bridge.ari.status()["requests"] == 1 + 2 * 5
        # A call to something that is no venue leaves by the dialplan's default.
        await ari.send(stasis_start("c.3", context="globex-venue"))
        await until(lambda: len(ari.of("c.3")) == 3, "the unknown venue's default")
        assert ari.of("c.3") == [
            ("POST", "variable", {"variable": "AB_CAUSE", "value": "unknown-venue"}),
            ("POST", "variable", {"variable": "AB_ACTION", "value": "default"}),
            ("POST", "continue", {})]

    ari = run(tmp_path, body)
    assert ari.auth_ok
    assert not any("Eve" in str(q) for *_, q in ari.requests)


def test_without_ami_the_routed_call_is_subscribed_and_its_events_reach_the_vts(
        tmp_path: Path) -> None:
    async def body(bridge: Bridge, ari: ScriptedAri) -> None:
        assert bridge.intermediary is not None and bridge.ari is not None
        await ari.send(stasis_start("c.5"))
        await until(lambda: len(ari.of("c.5")) == 4, "the call continued")
        subscribe = ("POST", "ami-bridge", "subscription", {"eventSource": "channel:c.5"})
        # Subscribed before the continue: once out of Stasis only that keeps its events.
        assert ari.requests.index(subscribe) < ari.requests.index(
            ("POST", "c.5", "continue", {}))
        caller = {"id": "c.5", "name": "PJSIP/t-c.5"}
        peer = {"id": "c.6", "name": "PJSIP/acme-agent-1"}
        for event in ({"type": "Dial", "dialstatus": "", "dialstring": "acme-agent",
                       "caller": caller, "peer": peer},
                      {"type": "Dial", "dialstatus": "ANSWER", "caller": caller, "peer": peer},
                      {"type": "ChannelStateChange", "channel": {**caller, "state": "Up"}},
                      {"type": "ChannelDestroyed", "cause": 16, "channel": peer},
                      {"type": "ChannelDestroyed", "cause": 16, "channel": caller}):
            await ari.send(event)
        await until(lambda: bridge.intermediary is not None
                    and bridge.intermediary.counters.call_events == 6, "the call's events")
        assert ("POST", "ami-bridge", "subscription", {"eventSource": "channel:c.6"}) \
            in ari.requests  # the dialled leg, for its own answer and hang-up
        assert bridge.ari.status()["tracked_calls"] == 0

    run(tmp_path, body)


def test_a_hang_up_while_pending_is_an_abandon(tmp_path: Path) -> None:
    async def body(bridge: Bridge, ari: ScriptedAri) -> None:
        assert bridge.intermediary is not None
        # Both in one go: the VTS's answer cannot arrive in between.
        await ari.send(stasis_start("c.9"))
        await ari.send(channel_event("ChannelHangupRequest", "c.9"))
        await until(lambda: bridge.intermediary is not None
                    and bridge.intermediary.counters.abandoned == 1, "the abandon")
        await asyncio.sleep(0.3)  # the VTS's late answer is not acted on
        assert ari.of("c.9") == []

    run(tmp_path, body)


def test_a_treatment_plays_and_collects_digits_over_ari(tmp_path: Path) -> None:
    async def body(bridge: Bridge, ari: ScriptedAri) -> None:
        await ari.send(stasis_start("c.5", number="777"))
        await until(lambda: any(w.startswith("play/") for _, w, _ in ari.of("c.5")),
                    "the prompt")
        calls = ari.of("c.5")
        assert calls[0] == ("POST", "answer", {})
        method, what, query = calls[1]
        assert (method, query) == ("POST", {"media": "sound:welcome"})
        playback = what.split("/", 1)[1]
        await ari.send(channel_event("ChannelDtmfReceived", "c.5", digit="4"))
        # The first digit stops the prompt, as GET DATA does.
        await until(lambda: ("DELETE", playback, "delete", {}) in ari.requests, "stop")
        await ari.send({"type": "PlaybackFinished", "playback": {"id": playback}})
        await ari.send(channel_event("ChannelDtmfReceived", "c.5", digit="2"))
        await until(lambda: ari.of("c.5")[-1:] == [("POST", "continue", {})], "the route")
        assert ari.of("c.5")[-4:] == [
            ("POST", "variable", {"variable": "AB_KIND", "value": "extension"}),
            ("POST", "variable", {"variable": "AB_TARGET", "value": "1002"}),
            ("POST", "variable", {"variable": "AB_ACTION", "value": "route"}),
            ("POST", "continue", {})]

    run(tmp_path, body)


def test_a_dropped_websocket_reconnects_and_sweeps_the_channels_left_waiting(
        tmp_path: Path) -> None:
    async def body(bridge: Bridge, ari: ScriptedAri) -> None:
        assert bridge.ari is not None and bridge.intermediary is not None
        # A call pending when the socket drops, and one nobody here saw start.
        await ari.send(stasis_start("c.7"))
        await ari.send(channel_event("ChannelHangupRequest", "c.7"))
        await until(lambda: bridge.intermediary is not None
                    and bridge.intermediary.counters.abandoned == 1, "abandon")
        # A call kept pending by its treatment (the prompt never ends), hung up while
        # the socket is down: the reconnection finds it gone.
        await ari.send(stasis_start("c.p", number="777"))
        await until(lambda: any(w.startswith("play/") for _, w, _ in ari.of("c.p")),
                    "the prompt")
        ari.connected.clear()
        ari.channels = ["left.1"]
        await ari.sockets[-1].close()
        await asyncio.wait_for(ari.connected.wait(), 10)  # the backoff's first step
        await until(lambda: bridge.ari is not None and bridge.ari.connected, "reconnected")
        await until(lambda: ari.of("left.1") == [("POST", "continue", {})], "the sweep",
                    timeout=8)
        assert bridge.ari.status()["connects"] == 2
        assert bridge.ari.status()["swept"] == 1
        assert bridge.ari.status()["abandoned_unseen"] == 1
        assert bridge.intermediary.counters.abandoned == 2
        assert ("POST", "continue", {}) not in ari.of("c.p")
        # Routing goes on over the new connection.
        await ari.send(stasis_start("c.8"))
        await until(lambda: ari.of("c.8") == ROUTED_1001, "routed after the reconnect")

    run(tmp_path, body)


def test_the_router_timeout_stops_a_running_prompt_before_the_default_route(
        tmp_path: Path) -> None:
    async def body(bridge: Bridge, ari: ScriptedAri) -> None:
        await ari.send(stasis_start("c.t", number="777"))  # the prompt never ends
        await until(lambda: ari.of("c.t")[-1:] == [("POST", "continue", {})],
                    "the default route after the 3 s router timeout", timeout=8)
        playback = next(w for _, w, _ in ari.of("c.t") if w.startswith("play/"))[5:]
        stop = ari.requests.index(("DELETE", playback, "delete", {}))
        first_write = next(i for i, r in enumerate(ari.requests)
                           if r[1] == "c.t" and r[2] == "variable")
        assert stop < first_write  # the prompt stops before the call leaves
        assert ari.of("c.t")[-2] == ("POST", "variable",
                                     {"variable": "AB_ACTION", "value": "default"})

    run(tmp_path, body)
