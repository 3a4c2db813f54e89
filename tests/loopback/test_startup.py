"""A starting or reloading bridge never holds a call (issue 16, the scale-out kill test).

The confinement plan (`daemon.sandboxes_for`) runs a probe start of a confined
interpreter, a subprocess run to its end. Run on the event loop after the FastAGI listener
had opened, it held every call that arrived meanwhile until it was done (up to 750 ms on a
restarting bridge, whose calls the venue would otherwise have sent to the next bridge at
once). Here the plan is replaced by one that, while it "probes", makes a blocking FastAGI
call from the thread it runs in and checks that the loop still turns. On the loop it
could do neither (the thread is the loop's): the checks end at their safety bound as
"held". The bound only keeps a broken build from hanging; nothing asserts a duration.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from ami_bridge import config as config_mod
from ami_bridge import daemon
from ami_bridge.daemon import Bridge
from ami_bridge.supervision.confine import Sandbox
from tests.loopback.test_bridge import ROUTE_1001, free_port, write

SAFETY_S = 10.0  # a held call or a blocked loop shows as "held" after this, not a hang


def blocking_call(port: int) -> str:
    """One route request as Asterisk makes it, from a plain thread: "refused", "held"
    (no answer within SAFETY_S), else the command the bridge answered with."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=SAFETY_S)
    except ConnectionRefusedError:
        return "refused"
    with sock:
        sock.sendall(b"agi_network: yes\nagi_network_script: route\nagi_context: acme-venue\n"
                     b"agi_extension: 100\nagi_callerid: 555\nagi_uniqueid: start.1\n"
                     b"agi_channel: PJSIP/t-1\n\n")
        try:
            answer = sock.makefile("rb").readline().decode().strip()
        except TimeoutError:
            return "held"
        sock.sendall(b"200 result=1\n")
        return answer


class Probe:
    """Stands for `daemon.sandboxes_for`: what a call and the loop saw while it ran."""

    def __init__(self, loop: asyncio.AbstractEventLoop, port: int) -> None:
        self.loop, self.port = loop, port
        self.calls: list[str] = []
        self.loop_turned: list[bool] = []

    def __call__(self, config: config_mod.BridgeConfig) -> dict[str, Sandbox | None]:
        self.calls.append(blocking_call(self.port))
        turned = asyncio.run_coroutine_threadsafe(asyncio.sleep(0), self.loop)
        try:
            turned.result(timeout=SAFETY_S)
            self.loop_turned.append(True)
        except TimeoutError:
            turned.cancel()
            self.loop_turned.append(False)
        return dict.fromkeys(config.vts)  # unconfined: what it returns is not the point


def test_a_call_during_the_start_plan_is_refused_not_held(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()

    async def scenario() -> None:
        probe = Probe(asyncio.get_running_loop(), port)
        monkeypatch.setattr(daemon, "sandboxes_for", probe)
        bridge = Bridge(config_mod.load(write(tmp_path, port)))
        await bridge.start()
        await bridge.stop()
        # The listener is not open yet (the venue asks its next bridge, or takes its
        # fallback, at once), and the loop went on serving (personal API, bus) meanwhile.
        assert probe.calls == ["refused"]
        assert probe.loop_turned == [True]

    asyncio.run(scenario())


def test_a_call_during_a_reload_plan_is_answered_not_held(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()

    async def scenario() -> None:
        bridge = Bridge(config_mod.load(write(tmp_path, port)))
        await bridge.start()
        try:
            for _ in range(200):  # the VTS connects: the call gets the VTS's own answer
                assert bridge.intermediary is not None
                if bridge.intermediary.connected("acme"):
                    break
                await asyncio.sleep(0.05)
            probe = Probe(asyncio.get_running_loop(), port)
            monkeypatch.setattr(daemon, "sandboxes_for", probe)
            assert await bridge.reload() is None
        finally:
            await bridge.stop()
        assert probe.calls == ROUTE_1001
        assert probe.loop_turned == [True]

    asyncio.run(scenario())


def test_a_refused_plan_stops_the_start_before_anything_listens(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In its thread the plan's refusal (a VTS this host cannot confine) still stops the
    start, now before the listener opens."""
    port = free_port()

    def cannot(config: Any) -> dict[str, Sandbox | None]:
        raise config_mod.ConfigError("[bridge]: cannot confine VTS acme: test")

    monkeypatch.setattr(daemon, "sandboxes_for", cannot)
    bridge = Bridge(config_mod.load(write(tmp_path, port)))
    with pytest.raises(config_mod.ConfigError, match="cannot confine VTS acme"):
        asyncio.run(bridge.start())
    assert blocking_call(port) == "refused"
