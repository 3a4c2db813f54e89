"""AmiClient against a scripted AMI peer on loopback (the Backoff itself: test_backoff.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from ami_bridge.ami.client import AmiClient, AmiDisconnected
from ami_bridge.ami.protocol import Event
from ami_bridge.backoff import Backoff

GREETING = b"Asterisk Call Manager/11.0.0\r\n"


class FakeAsterisk:
    """Answers Login (secret "s3cret"), Ping (unless `mute_ping`), CoreShowChannels;
    drops the connection when it reads a Redirect. Records every action per session."""

    def __init__(self) -> None:
        self.sessions: list[list[dict[str, str]]] = []
        self.mute_ping = False
        self.writers: list[asyncio.StreamWriter] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        actions: list[dict[str, str]] = []
        self.sessions.append(actions)
        self.writers.append(writer)
        writer.write(GREETING)
        while True:
            try:
                block = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            act = dict(line.split(": ", 1) for line in block.decode().split("\r\n") if line)
            actions.append(act)
            aid, name = act["ActionID"], act["Action"]
            if name == "Login":
                ok = act.get("Secret") == "s3cret"
                writer.write(f"Response: {'Success' if ok else 'Error'}\r\nActionID: {aid}\r\n"
                             f"Message: Authentication {'accepted' if ok else 'failed'}\r\n\r\n"
                             .encode())
                if not ok:
                    writer.close()
                    return
                writer.write(b"Event: FullyBooted\r\nStatus: Fully Booted\r\n\r\n"
                             b"Event: Newchannel\r\nUniqueid: 1.1\r\n\r\n")
            elif name == "Ping" and not self.mute_ping:
                writer.write(f"Response: Success\r\nActionID: {aid}\r\nPing: Pong\r\n\r\n"
                             .encode())
            elif name == "CoreShowChannels":
                writer.write(f"Response: Success\r\nActionID: {aid}\r\nEventList: start\r\n\r\n"
                             f"Event: CoreShowChannel\r\nActionID: {aid}\r\nUniqueid: 1.1\r\n\r\n"
                             f"Event: CoreShowChannelsComplete\r\nActionID: {aid}\r\n"
                             f"EventList: Complete\r\nListItems: 1\r\n\r\n".encode())
            elif name == "Redirect":
                writer.close()
                return


async def stop(server: asyncio.Server, fake: FakeAsterisk) -> None:
    server.close()
    for writer in fake.writers:
        writer.close()
    await server.wait_closed()
    await asyncio.sleep(0.01)  # let the handlers see EOF and close their transports


async def start(fake: FakeAsterisk) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(fake.serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def make(port: int, log: list[str], secret: str = "s3cret", **kw: float) -> AmiClient:
    async def resync() -> None:
        response, listed = await client.send_list_action("CoreShowChannels")
        log.append(f"resync {response.success} {[e.get('Uniqueid') for e in listed]}")

    def on_event(event: Event) -> None:
        log.append(f"event {event.name}")

    client = AmiClient(host="127.0.0.1", port=port, username="ami-bridge", secret=secret,
                       on_event=on_event, on_connected=resync,
                       on_disconnected=lambda reason: log.append(f"down {reason}"),
                       backoff=Backoff(initial=0.05, maximum=0.2), **kw)  # type: ignore[arg-type]
    return client


def test_login_resync_before_events_and_masked_wire_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="ami_bridge.ami.client")

    async def main() -> tuple[list[str], AmiClient]:
        fake = FakeAsterisk()
        server, port = await start(fake)
        log: list[str] = []
        client = make(port, log)
        task = asyncio.create_task(client.run())
        await client.wait_connected(5)
        pong = await client.send_action("Ping")
        assert pong.success and pong.action_id
        await client.close()
        await task
        await stop(server, fake)
        return log, client

    log, client = asyncio.run(main())
    # The owner's resync runs before any event is delivered.
    assert log[:3] == ["resync True ['1.1']", "event FullyBooted", "event Newchannel"]
    # Counted: FullyBooted, Newchannel and the two events of the CoreShowChannels list;
    # the bytes are everything the fake wrote, greeting and responses included.
    assert client.events_received == 4
    assert client.bytes_received > len(GREETING) + 4 * len("Event: \r\n\r\n")
    wire = caplog.text
    assert ">> " in wire and "<< " in wire and "s3cret" not in wire and "********" in wire


def test_redirect_is_not_resent_after_a_drop() -> None:
    async def main() -> FakeAsterisk:
        fake = FakeAsterisk()
        server, port = await start(fake)
        client = make(port, [])
        task = asyncio.create_task(client.run())
        with pytest.raises(AmiDisconnected, match="not resent"):
            await client.send_action("Redirect", Channel="PJSIP/a-1", Context="c",
                                     Exten="1", Priority="1")
        await client.wait_connected(5)  # it did reconnect
        await client.close()
        await task
        await stop(server, fake)
        return fake

    fake = asyncio.run(main())
    redirects = [a for s in fake.sessions for a in s if a["Action"] == "Redirect"]
    assert len(redirects) == 1


def test_unanswered_ping_drops_and_reconnects() -> None:
    async def main() -> tuple[list[str], int]:
        fake = FakeAsterisk()
        fake.mute_ping = True
        server, port = await start(fake)
        log: list[str] = []
        client = make(port, log, ping_interval=0.05, ping_timeout=0.1)
        task = asyncio.create_task(client.run())
        while not any(line.startswith("down") for line in log):
            await asyncio.sleep(0.01)
        fake.mute_ping = False
        while client.attempts < 2 or not client.connected:
            await asyncio.sleep(0.01)
        await client.close()
        await task
        await stop(server, fake)
        return log, client.attempts

    log, attempts = asyncio.run(main())
    assert "down no Ping answer within 0.1 s" in log
    assert attempts >= 2


def test_wrong_secret_backs_off() -> None:
    async def main() -> AmiClient:
        fake = FakeAsterisk()
        server, port = await start(fake)
        client = make(port, [], secret="nope")
        task = asyncio.create_task(client.run())
        await asyncio.sleep(0.6)
        await client.close()
        await task
        await stop(server, fake)
        return client

    client = asyncio.run(main())
    assert client.last_login_error is not None and "refused" in client.last_login_error
    # Delays are at least 0.025, 0.05, 0.1, 0.1, ... s: at most 7 attempts in 0.6 s.
    assert 2 <= client.attempts <= 7


def test_events_held_past_the_bound_during_the_resync_drop_the_session() -> None:
    # FullyBooted and Newchannel arrive while the owner resyncs: both are held; a hold of
    # one event overflows, and the session is dropped to resync again.
    async def main() -> list[str]:
        fake = FakeAsterisk()
        server, port = await start(fake)
        log: list[str] = []
        client = make(port, log, queue_size=1)
        task = asyncio.create_task(client.run())
        while not any(line.startswith("down") for line in log):
            await asyncio.sleep(0.01)
        await client.close()
        await task
        await stop(server, fake)
        return log

    log = asyncio.run(main())
    assert "down event queue overflow" in log
    assert not any(line.startswith("resync") for line in log)  # it never finished


def test_a_broken_block_ends_the_session_naming_the_protocol_error() -> None:
    async def main() -> tuple[list[str], int]:
        fake = FakeAsterisk()
        server, port = await start(fake)
        log: list[str] = []
        client = make(port, log)
        task = asyncio.create_task(client.run())
        await client.wait_connected(5)
        fake.writers[0].write(b"Event: Hangup\r\nno colon on this line\r\n\r\n")
        while not any(line.startswith("down") for line in log):
            await asyncio.sleep(0.01)
        while client.attempts < 2 or not client.connected:  # and it comes back
            await asyncio.sleep(0.01)
        await client.close()
        await task
        await stop(server, fake)
        return log, client.attempts

    log, attempts = asyncio.run(main())
    down = [line for line in log if line.startswith("down")]
    assert down[0].startswith("down protocol error: line is not 'Key: Value'"), down
    assert "event Hangup" not in log and attempts >= 2
