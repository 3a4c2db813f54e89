"""The AMI client and call tracker against the sandbox Asterisk 22 and SIPp.

(a) login with asterisk-conf/manager.d/ami-bridge.conf, FullyBooted, Ping; a wrong
secret is a clear login error and backs off. (b) an Asterisk restart: the client is back
(on_connected again) within 5 s of Asterisk being up, with at most one attempt per
backoff step while it was down. (c) the session killed from Asterisk's side (`manager
kick session`): reconnect. (d) acme and globex calls in parallel: every tracked event of
an acme call is tagged acme and carries only acme channels, and vice versa. With no
bridge running the venues fall back to the operators; the tracker binds calls by their
venue context (`venues=`), as the bridge would from the route request.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

import pytest

from ami_bridge.ami.client import AmiClient
from ami_bridge.ami.protocol import Event
from ami_bridge.ami.tracker import CallEvent, CallTracker
from ami_bridge.backoff import Backoff
from harness.asterisk import Asterisk
from harness.sipp import SippUas, start_uac

pytestmark = pytest.mark.asterisk

USER, SECRET = "ami-bridge", "ami-bridge-secret"
CALLS = 5


class Probe:
    """Records what the client reports; `connected` counts on_connected calls."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.connected = 0
        self.connected_at: list[float] = []
        self.disconnects: list[str] = []
        self.on_event: Callable[[Event], None] = self.events.append

    async def on_connected(self) -> None:
        self.connected += 1
        self.connected_at.append(time.monotonic())

    def client(self, secret: str = SECRET, **kw: object) -> AmiClient:
        return AmiClient(host="127.0.0.1", port=5038, username=USER, secret=secret,
                         on_event=lambda e: self.on_event(e), on_connected=self.on_connected,
                         on_disconnected=self.disconnects.append,
                         backoff=Backoff(initial=0.25, maximum=2.0), **kw)  # type: ignore[arg-type]


async def until(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def running(client: AmiClient, body: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        task = asyncio.create_task(client.run())
        try:
            await body()
        finally:
            await client.close()
            await asyncio.wait_for(task, 10)

    asyncio.run(main())


def test_login_ping_and_wrong_secret(asterisk: Asterisk) -> None:
    probe = Probe()
    client = probe.client(ping_interval=0.2, ping_timeout=1.0)

    async def body() -> None:
        await client.wait_connected(10)
        assert probe.connected == 1
        pong = await client.send_action("Ping")
        assert pong.success and pong.get("Ping") == "Pong"
        denied = await client.send_action("Command", Command="core show uptime")
        assert not denied.success and denied.message == "Permission denied"
        await asyncio.sleep(1.0)  # several keep-alive pings answered: still the same session
        assert client.connected and probe.disconnects == [] and client.attempts == 1

    running(client, body)

    bad = Probe().client(secret="wrong")
    window = 5.0

    async def body_bad() -> None:
        await asyncio.sleep(window)
        assert not bad.connected

    running(bad, body_bad)
    assert bad.last_login_error is not None and "refused" in bad.last_login_error
    # Asterisk answers a bad Login after 1 s; delays are >= 0.125, 0.25, 0.5, 1, 1 s.
    assert 2 <= bad.attempts <= 4, bad.attempts


def test_restart_reconnects_and_resyncs(asterisk: Asterisk) -> None:
    probe = Probe()
    client = probe.client()

    async def body() -> None:
        await client.wait_connected(10)
        attempts_before = client.attempts
        down_at = time.monotonic()
        await asyncio.to_thread(asterisk.stop, keep_lock=True)
        await asyncio.sleep(3.0)
        attempts_down = client.attempts - attempts_before
        down_for = time.monotonic() - down_at
        await asyncio.to_thread(asterisk.start)
        back_at = time.monotonic()
        await until(lambda: probe.connected >= 2, 5.0)
        print(f"reconnected {probe.connected_at[-1] - back_at:.2f} s after Asterisk was "
              f"back; {attempts_down} attempts in {down_for:.1f} s down")
        # Lower bounds of the delays with maximum 2 s: 0.125, 0.25, 0.5, 1, 1, ...
        assert attempts_down <= 6, attempts_down
        assert any("closed" in r or "Shutdown" in r or "failed" in r for r in probe.disconnects)

    running(client, body)


def test_kicked_session_reconnects(asterisk: Asterisk) -> None:
    probe = Probe()
    client = probe.client()

    async def body() -> None:
        await client.wait_connected(10)
        out = await asyncio.to_thread(asterisk.rx, "manager show connected")
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(USER))
        # Columns: Username IP Start Elapsed FileDes HttpCnt ReadPerms WritePerms
        fd = re.split(r"\s+", line.strip())[4]
        kicked_at = time.monotonic()
        await asyncio.to_thread(asterisk.rx, f"manager kick session {fd}")
        await until(lambda: probe.connected >= 2, 5.0)
        print(f"kicked: back in {probe.connected_at[-1] - kicked_at:.2f} s "
              f"({probe.disconnects})")

    running(client, body)


def test_tenant_isolation_of_tracked_events(asterisk: Asterisk,
                                            uas: dict[str, SippUas]) -> None:
    probe = Probe()
    tracker = CallTracker(venues={"acme-venue": "acme", "globex-venue": "globex"})
    tracked: list[CallEvent] = []
    probe.on_event = lambda e: tracked.extend(tracker.handle(e))
    client = probe.client()

    async def body() -> None:
        await client.wait_connected(10)
        acme = start_uac(from_user="acme-trunk", dnis="100", calls=CALLS, rate=10, port=5090)
        globex = start_uac(from_user="globex-trunk", dnis="100", calls=CALLS, rate=10,
                           port=5091)
        for stats in await asyncio.gather(asyncio.to_thread(acme.wait),
                                          asyncio.to_thread(globex.wait)):
            assert (stats.successful, stats.failed) == (CALLS, 0)
        await until(lambda: not tracker.calls(), 5.0)

    running(client, body)
    for tenant, other in (("acme", "globex"), ("globex", "acme")):
        mine = [e for e in tracked if e.tenant == tenant]
        assert all(e.venue == f"{tenant}-venue" for e in mine)
        assert not [e for e in mine if other in e.channel or other in str(e.detail)]
        calls = {e.call for e in mine}
        assert len(calls) == CALLS
        for call in calls:
            kinds = [e.kind for e in mine if e.call == call]
            for kind in ("dial_begin", "dial_end", "answer", "bridge_enter", "hangup"):
                assert kind in kinds, (tenant, call, kinds)
            assert kinds[-1] == "call_end"
            statuses = [e.detail["status"] for e in mine
                        if e.call == call and e.kind == "dial_end"]
            assert statuses == ["ANSWER"]
