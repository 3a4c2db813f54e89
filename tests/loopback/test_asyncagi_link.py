"""The AsyncAGI driver inside the real AMI link and client, against a scripted AMI peer
on loopback: a route request arrives as AsyncAGIStart and is answered with AGI actions
(MSet, then BREAK) on the same session; a channel found waiting in a venue after a
(re)connect is broken; and an AGI action whose session drops before its response is
never sent again, not even when the reconnect finds the channel still waiting."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ami_bridge import config as config_mod
from ami_bridge.ami.client import AmiClient
from ami_bridge.ami.protocol import Response
from ami_bridge.ami_link import AmiLink
from ami_bridge.backoff import Backoff
from ami_bridge.config import AmiConfig
from ami_bridge.intermediary import Intermediary
from tests.unit.test_intermediary import RAW, FakeClock

GREETING = b"Asterisk Call Manager/11.0.0\r\n"
CHANNEL = "PJSIP/acme-trunk-00000001"
ORPHAN = "PJSIP/acme-trunk-00000000"


def env(channel: str) -> str:
    lines = {"agi_request": "async", "agi_channel": channel, "agi_uniqueid": "1.7",
             "agi_callerid": "+4930123", "agi_calleridname": 'A "quoted" name',
             "agi_context": "acme-venue", "agi_extension": "100", "agi_arg_1": "",
             "agi_arg_2": ""}
    return quote("".join(f"{k}: {v}\n" for k, v in lines.items()) + "\n", safe="")


class AsyncAsterisk:
    """Answers Login, the resync's list actions (CoreShowChannels lists `waiting`) and AGI
    (queued: Response, then AsyncAGIExec, and AsyncAGIEnd after a BREAK). After the
    first resync it starts AsyncAGI on CHANNEL. With `drop_on_agi`, the first AGI
    action of the first session closes the connection before any response."""

    def __init__(self, *, waiting: list[str], drop_on_agi: bool = False,
                 waiting_later: list[str] | None = None) -> None:
        self.sessions: list[list[dict[str, str]]] = []
        self.waiting = waiting
        self.waiting_later = waiting if waiting_later is None else waiting_later
        self.drop_on_agi = drop_on_agi
        self.writers: list[asyncio.StreamWriter] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            await self._serve(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        actions: list[dict[str, str]] = []
        self.sessions.append(actions)
        first = len(self.sessions) == 1
        writer.write(GREETING)
        while True:
            try:
                block = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            act = dict(line.split(": ", 1) for line in block.decode().split("\r\n") if line)
            actions.append(act)
            aid, name = act["ActionID"], act["Action"]
            ok = f"Response: Success\r\nActionID: {aid}\r\n"
            if name == "Login":
                writer.write(f"{ok}Message: Authentication accepted\r\n\r\n"
                             "Event: FullyBooted\r\nStatus: Fully Booted\r\n\r\n".encode())
            elif name in ("CoreShowChannels", "DeviceStateList", "QueueStatus"):
                waiting = self.waiting if first else self.waiting_later
                listed = waiting if name == "CoreShowChannels" else []
                writer.write(f"{ok}EventList: start\r\n\r\n".encode())
                for channel in listed:
                    writer.write(f"Event: CoreShowChannel\r\nActionID: {aid}\r\n"
                                 f"Channel: {channel}\r\nUniqueid: {channel[-1]}.1\r\n"
                                 "Context: acme-venue\r\nApplication: AGI\r\n"
                                 "ApplicationData: agi:async,,\r\n\r\n".encode())
                writer.write(f"Event: ListComplete\r\nActionID: {aid}\r\n"
                             "EventList: Complete\r\n\r\n".encode())
                if name == "QueueStatus" and first:
                    writer.write(f"Event: AsyncAGIStart\r\nChannel: {CHANNEL}\r\n"
                                 f"Context: acme-venue\r\nUniqueid: 1.7\r\n"
                                 f"Env: {env(CHANNEL)}\r\n\r\n".encode())
            elif name == "AGI":
                if self.drop_on_agi and first:
                    writer.close()
                    return
                channel, command = act["Channel"], act["Command"]
                writer.write(f"{ok}Message: Added AGI command to queue\r\n\r\n"
                             f"Event: AsyncAGIExec\r\nChannel: {channel}\r\n"
                             f"CommandId: {act['CommandID']}\r\n"
                             "Result: 200%20result%3D0%0A\r\n\r\n".encode())
                if command == "ASYNCAGI BREAK":
                    writer.write(f"Event: AsyncAGIEnd\r\nChannel: {channel}\r\n\r\n".encode())
            elif name == "Ping":
                writer.write(f"{ok}Ping: Pong\r\n\r\n".encode())

    def agi(self) -> list[tuple[int, str, str]]:
        return [(n, a["Channel"], a["Command"]) for n, s in enumerate(self.sessions)
                for a in s if a["Action"] == "AGI"]


def make_link(port: int) -> tuple[AmiLink, Intermediary]:
    raw: dict[str, Any] = copy.deepcopy(RAW)
    raw["tenants"]["acme"]["venues"]["acme-venue"]["driver"] = "asyncagi"
    raw["ami"] = {"host": "127.0.0.1", "port": port, "username": "u", "secret": "s"}
    cfg = config_mod.parse(raw, path=Path("test.toml"))
    core = Intermediary(config=cfg, clock=FakeClock())
    link = AmiLink(settings=AmiConfig(host="127.0.0.1", port=port, username="u", secret="s"),
                   config=cfg, intermediary=core)
    link.client.backoff = Backoff(initial=0.05, maximum=0.2)
    link.client.read_pause = 0.0
    return link, core


async def until(check: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


def run(peer: AsyncAsterisk, body: Any) -> None:
    async def main() -> None:
        server = await asyncio.start_server(peer.serve, "127.0.0.1", 0)
        link, core = make_link(server.sockets[0].getsockname()[1])
        link.start()
        try:
            await body(link, core)
        finally:
            await link.stop()
            server.close()
            for writer in peer.writers:
                writer.close()
            await server.wait_closed()

    asyncio.run(main())


def test_a_route_request_over_ami_and_an_orphan_broken_at_the_resync() -> None:
    peer = AsyncAsterisk(waiting=[ORPHAN])

    async def body(link: AmiLink, core: Intermediary) -> None:
        await until(lambda: len(peer.agi()) == 3)
        await until(lambda: not link.asyncagi.sessions)  # every AsyncAGIEnd read
        assert core.counters.requests == 1  # the orphan was never a route request

    run(peer, body)
    assert peer.agi() == [
        (0, ORPHAN, "ASYNCAGI BREAK"),
        # no VTS is connected: the venue's default, as the FastAGI side would answer
        (0, CHANNEL, 'EXEC MSet "AB_CAUSE=no-vts,AB_ACTION=default"'),
        (0, CHANNEL, "ASYNCAGI BREAK"),
    ]
    assert all(a["CommandID"] for s in peer.sessions for a in s if a["Action"] == "AGI")


def test_an_agi_action_cut_by_a_drop_is_never_resent() -> None:
    # The reconnect finds the channel still waiting in AsyncAGI (its commands died
    # with the session as far as the bridge can tell): it is not touched again.
    peer = AsyncAsterisk(waiting=[], drop_on_agi=True, waiting_later=[CHANNEL])

    async def body(link: AmiLink, core: Intermediary) -> None:
        await until(lambda: link.resyncs >= 2)
        # A Ping's answer comes after anything written before it has been read.
        assert (await link.client.send_action("Ping")).success
        assert CHANNEL in link.asyncagi.sessions  # held until its AsyncAGIEnd

    run(peer, body)
    sent = peer.agi()
    assert [(n, c) for n, _, c in sent] == [
        (0, 'EXEC MSet "AB_CAUSE=no-vts,AB_ACTION=default"')], sent


def test_send_nowait_reports_a_drop_and_writes_nothing_without_a_session() -> None:
    peer = AsyncAsterisk(waiting=[], drop_on_agi=True)
    answers: list[Response | None] = []

    async def main() -> None:
        server = await asyncio.start_server(peer.serve, "127.0.0.1", 0)
        client = AmiClient(host="127.0.0.1", port=server.sockets[0].getsockname()[1],
                           username="u", secret="s", on_event=lambda e: None,
                           backoff=Backoff(initial=0.05, maximum=0.2))
        assert not client.send_nowait("AGI", [("Channel", CHANNEL), ("Command", "ANSWER")])
        task = asyncio.create_task(client.run())
        await client.wait_connected(5)
        assert client.send_nowait("AGI", [("Channel", CHANNEL), ("Command", "ANSWER"),
                                          ("CommandID", "c1")], on_response=answers.append)
        await until(lambda: answers == [None])
        await client.wait_connected(5)
        await client.close()
        await task
        server.close()
        await server.wait_closed()

    asyncio.run(main())
    assert len(peer.agi()) == 1 and answers == [None]
