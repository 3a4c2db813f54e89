"""The FastAGI listener attacked over real TCP: a local process playing a hostile Asterisk.

First against `serve()` with a recording handler (nothing reaches it that should not),
then against the whole daemon with a real VTS process (a real route still gets through).
Properties: an ambiguous environment gets the default route and never reaches the
handler (so no VTS); a peer off the allow-list, or over its session cap, is closed
before any environment is read; idle sessions are closed by their deadlines; each of
these logs one rate-limited line.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from ami_bridge import config as config_mod
from ami_bridge.agi import wire
from ami_bridge.agi.limits import ListenerPolicy
from ami_bridge.agi.protocol import MAX_LINE_BYTES, Environment
from ami_bridge.agi.server import AgiConnection, serve
from ami_bridge.agi.variables import AB_ACTION, AB_KIND, AB_TARGET
from ami_bridge.daemon import Bridge

DEFAULT = 'EXEC MSet "AB_CAUSE=refused-environment,AB_ACTION=default"'
ROUTE_1001 = 'EXEC MSet "AB_KIND=extension,AB_TARGET=1001,AB_ACTION=route"'
SERVER_LOG = "ami_bridge.agi.server"
_UNIQUEIDS = itertools.count(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def env(context: str = "acme-venue", **extra: str) -> bytes:
    variables = {"agi_network": "yes", "agi_network_script": "route", "agi_context": context,
                 "agi_extension": "100", "agi_callerid": "555",
                 "agi_uniqueid": f"t.{next(_UNIQUEIDS)}", "agi_channel": "PJSIP/t-1", **extra}
    return "".join(f"{k}: {v}\n" for k, v in variables.items()).encode() + b"\n"


async def agi_call(port: int, data: bytes, *, answer: bool = True,
                   source: str | None = None) -> list[str]:
    """Send `data` in one write, then answer each command as Asterisk does (or never);
    the commands received until the bridge closes the connection."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, local_addr=(source, 0) if source else None)
    writer.write(data)
    commands = []
    with contextlib.suppress(ConnectionResetError):
        while line := await asyncio.wait_for(reader.readline(), 10):
            commands.append(line.decode().strip())
            if answer:
                writer.write(b"200 result=1\n")
    writer.close()
    return commands


async def is_closed(reader: asyncio.StreamReader) -> bool:
    """True once the bridge closed the connection without sending anything."""
    try:
        return await asyncio.wait_for(reader.read(), 10) == b""
    except ConnectionResetError:
        return True


def lines(caplog: pytest.LogCaptureFixture, fragment: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == SERVER_LOG and fragment in r.getMessage()]


class Handler:
    """Stands in for the intermediary adapter: every path to a VTS goes through it."""

    def __init__(self) -> None:
        self.envs: list[Environment] = []
        self.gone: list[AgiConnection] = []

    def on_environment(self, conn: AgiConnection, env: Environment) -> None:
        self.envs.append(env)
        if env.get("agi_context") != "hold":  # "hold": the call waits for its VTS
            conn.finish([wire.set_variables([(AB_KIND, "extension"), (AB_TARGET, "1001"),
                                             (AB_ACTION, "route")])])

    def on_gone(self, conn: AgiConnection) -> None:
        self.gone.append(conn)


async def with_server(body: Callable[[int, Handler], Awaitable[None]], *,
                      policy: ListenerPolicy | None = None, host: str = "127.0.0.1") -> None:
    handler, port = Handler(), free_port()
    server = await serve(handler, host=host, port=port, policy=policy)
    try:
        await body(port, handler)
    finally:
        server.close()
        await server.wait_closed()


# -- 1. an ambiguous environment: default route, no handler, one line ----------------
VALID = env()
HOSTILE = {
    "repeated key": VALID[:-1] + b"agi_context: globex-venue\n\n",
    "reply smuggled after the blank line": VALID + b"200 result=1\n",
    "second environment after the blank line": VALID + env("globex-venue"),
    "line without agi_ key": b"context: acme-venue\n" + VALID,
    "NUL in a value": VALID.replace(b"555", b"5\x0055"),
    "over-long line": VALID[:-1] + b"agi_arg_1: " + b"9" * MAX_LINE_BYTES + b"\n\n",
    "not UTF-8 in the venue": VALID.replace(b"acme-venue", b"acme-\xe9venue"),
    "an HTTP request": b"GET /route HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_ambiguous_environment_gets_the_default_route_and_reaches_nobody(
        case: str, caplog: pytest.LogCaptureFixture) -> None:
    async def body(port: int, handler: Handler) -> None:
        assert await agi_call(port, HOSTILE[case]) == [DEFAULT]
        assert handler.envs == []  # so no route request, no VTS
        assert await agi_call(port, VALID) == [ROUTE_1001]  # the server goes on
        assert [e.get("agi_context") for e in handler.envs] == ["acme-venue"]

    with caplog.at_level(logging.WARNING):
        asyncio.run(with_server(body))
    assert len(lines(caplog, "environment refused")) == 1
    assert len([r for r in caplog.records if r.name == SERVER_LOG]) == 1


def test_a_flood_of_refused_environments_logs_one_line(caplog: pytest.LogCaptureFixture) -> None:
    async def body(port: int, handler: Handler) -> None:
        answers = await asyncio.gather(*(agi_call(port, HOSTILE["repeated key"])
                                         for _ in range(20)))
        assert answers == [[DEFAULT]] * 20
        assert handler.envs == []

    with caplog.at_level(logging.WARNING):
        asyncio.run(with_server(body))
    assert len(lines(caplog, "environment refused")) == 1


# -- 2. the session cap per peer ----------------------------------------------------------
def test_over_the_cap_a_connection_is_closed_at_once(caplog: pytest.LogCaptureFixture) -> None:
    # The environment deadline is far off: what closes the extra connections is the cap.
    policy = ListenerPolicy(max_sessions_per_peer=3, environment_timeout=60.0)

    async def body(port: int, handler: Handler) -> None:
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(VALID)  # never read: closed before the environment
            assert await is_closed(reader)
            writer.close()
        assert handler.envs == []
        idle.pop()[1].close()  # one slot free again
        for _ in range(100):
            commands = await agi_call(port, VALID)
            if commands:
                break
            await asyncio.sleep(0.02)  # until the server has seen that close
        assert commands == [ROUTE_1001]
        for _, writer in idle:
            writer.close()

    with caplog.at_level(logging.WARNING):
        asyncio.run(with_server(body, policy=policy))
    over = lines(caplog, "sessions open")
    assert len(over) == 1 and "127.0.0.1 already has 3 sessions open" in over[0]


# -- 3. deadlines ---------------------------------------------------------------------------
def test_idle_sessions_are_closed_by_their_deadlines(caplog: pytest.LogCaptureFixture) -> None:
    policy = ListenerPolicy(environment_timeout=0.3, reply_timeout=0.3, session_timeout=0.6)

    async def body(port: int, handler: Handler) -> None:
        silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]
        half = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
        for _, writer in half:
            writer.write(VALID[:40])  # an environment that never ends
        # The bridge answers; this peer never replies to the command.
        mute_reader, mute_writer = await asyncio.open_connection("127.0.0.1", port)
        mute_writer.write(VALID)
        assert await asyncio.wait_for(mute_reader.readline(), 10) == ROUTE_1001.encode() + b"\n"
        # A call waiting for its VTS longer than a session may last.
        held_reader, held_writer = await asyncio.open_connection("127.0.0.1", port)
        held_writer.write(env("hold"))
        for reader, _ in [*silent, *half, (mute_reader, None), (held_reader, None)]:
            assert await is_closed(reader)
        # The mute and the held session went before their end: the handler hears of both
        # (the held call is abandoned, so its VTS is told); the others it never saw.
        assert len(handler.gone) == 2
        for _, writer in [*silent, *half, (None, mute_writer), (None, held_writer)]:
            writer.close()

    with caplog.at_level(logging.WARNING):
        asyncio.run(with_server(body, policy=policy))
    assert len(lines(caplog, "sent no complete environment after 0.3 s")) == 1  # 25 sessions
    assert len(lines(caplog, "did not answer a command after 0.3 s")) == 1
    assert len(lines(caplog, "was still open after 0.6 s")) == 1


# -- 4. the peer allow-list ----------------------------------------------------------------
def test_a_peer_off_the_allow_list_is_closed_before_its_environment(
        caplog: pytest.LogCaptureFixture) -> None:
    policy = ListenerPolicy(allowed_peers=(ipaddress.ip_network("127.0.0.2"),),
                            loopback_allowed=False)

    async def body(port: int, handler: Handler) -> None:
        for _ in range(3):
            assert await agi_call(port, VALID, source="127.0.0.1") == []
        assert handler.envs == []
        assert await agi_call(port, VALID, source="127.0.0.2") == [ROUTE_1001]

    with caplog.at_level(logging.WARNING):
        # Off loopback (0.0.0.0): loopback peers are admitted only when listed.
        asyncio.run(with_server(body, policy=policy, host="0.0.0.0"))
    refused = lines(caplog, "not an allowed peer")
    assert len(refused) == 1 and "127.0.0.1:" in refused[0]


# -- the whole daemon, with a real VTS -------------------------------------------------------
def write_config(tmp_path: Path, port: int, bridge: str = "",
                 listen: str = "127.0.0.1") -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(f"""
[bridge]
agi_listen = "{listen}:{port}"
control_socket = "{tmp_path}/control.sock"
{bridge}
[vts.acme]
[tenants.acme]
targets = ["1001"]
[tenants.acme.venues.acme-venue]
vts = "acme"
[[tenants.acme.rules]]
name = "r"
targets = ["1001"]
""")
    return path


async def with_bridge(path: Path, body: Callable[[Bridge], Awaitable[None]]) -> None:
    bridge = Bridge(config_mod.load(path))
    await bridge.start()
    try:
        for _ in range(200):  # wait for the VTS process to connect
            assert bridge.intermediary is not None
            if bridge.intermediary.connected("acme"):
                break
            await asyncio.sleep(0.05)
        await body(bridge)
    finally:
        await bridge.stop()


def requests(bridge: Bridge) -> int:
    assert bridge.intermediary is not None
    return bridge.intermediary.counters.requests


def test_idle_sessions_hold_up_no_route_and_leave_by_the_deadline(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    path = write_config(tmp_path, port, "agi_environment_timeout = 1.0\n"
                                        "agi_reply_timeout = 1.0\nagi_session_timeout = 3.0")

    async def body(bridge: Bridge) -> None:
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(200)]
        assert await agi_call(port, VALID) == [ROUTE_1001]  # while those wait
        assert requests(bridge) == 1
        for reader, _ in idle:
            assert await is_closed(reader)
        for _, writer in idle:
            writer.close()
        assert await agi_call(port, env()) == [ROUTE_1001]

    with caplog.at_level(logging.WARNING):
        asyncio.run(with_bridge(path, body))
    assert len(lines(caplog, "sent no complete environment after 1 s")) == 1


def test_hostile_environment_never_reaches_the_vts(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()

    async def body(bridge: Bridge) -> None:
        assert await agi_call(port, HOSTILE["repeated key"]) == [DEFAULT]
        assert await agi_call(port, HOSTILE["reply smuggled after the blank line"]) == [DEFAULT]
        assert requests(bridge) == 0  # the intermediary never saw them: no VTS did
        assert await agi_call(port, env()) == [ROUTE_1001]
        assert requests(bridge) == 1

    with caplog.at_level(logging.WARNING):
        asyncio.run(with_bridge(write_config(tmp_path, port), body))
    assert len(lines(caplog, "environment refused")) == 1  # two sessions, rate-limited


def test_remote_listener_admits_only_the_configured_peers(tmp_path: Path) -> None:
    port = free_port()
    path = write_config(tmp_path, port, 'agi_allow_remote = true\n'
                                        'agi_allowed_peers = ["127.0.0.2"]', listen="0.0.0.0")

    async def body(bridge: Bridge) -> None:
        assert await agi_call(port, env(), source="127.0.0.1") == []
        assert requests(bridge) == 0
        assert await agi_call(port, env(), source="127.0.0.2") == [ROUTE_1001]

    asyncio.run(with_bridge(path, body))


def test_remote_listen_address_without_peers_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, free_port(), listen="0.0.0.0")
    with pytest.raises(config_mod.ConfigError) as info:
        config_mod.load(path)
    assert str(info.value).startswith(f"{path}: bridge.agi_listen: '0.0.0.0:")
