"""Protocol 2.2 end to end: the real daemon, its shipped VTS runtime and its store. A
tenant's round-robin goes on where it was when its VTS is killed and restarted (the
bridge's memory), and when the bridge itself is restarted on the same store (SQLite
here; PostgreSQL takes the same path through `Store`, tests/unit/test_store.py)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from ami_bridge import config as config_mod
from ami_bridge.daemon import Bridge
from tests.loopback.test_bridge import agi_call, free_port


def write(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(f"""
[bridge]
agi_listen = "127.0.0.1:{port}"
control_socket = "{tmp_path}/control.sock"
[api]
listen = "127.0.0.1:{free_port()}"
[store]
path = "{tmp_path}/state/personal.sqlite3"
[vts.acme]
[tenants.acme]
targets = ["1001", "1002", "1003"]
[tenants.acme.venues.acme-venue]
vts = "acme"
[[tenants.acme.rules]]
name = "rr"
targets = ["1001", "1002", "1003"]
strategy = "round_robin"
""")
    return path


async def routed_to(port: int) -> str:
    commands = await agi_call(port, "acme-venue")
    return commands[0].split("AB_TARGET=")[1].split(",")[0]


async def until(condition: object, what: str) -> None:
    for _ in range(200):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within 10 s: {what}")


def test_the_round_robin_survives_its_vts_and_its_bridge(tmp_path: Path) -> None:
    port = free_port()
    path = write(tmp_path, port)

    async def first() -> list[str]:
        bridge = Bridge(config_mod.load(path))
        await bridge.start()
        try:
            inter = bridge.intermediary
            assert inter is not None
            await until(lambda: inter.connected("acme"), "the VTS connects")
            got = [await routed_to(port), await routed_to(port)]
            await until(lambda: inter.states.get("acme") == {"round_robin": {"rr": 2}},
                        "the VTS's state reaches the bridge")
            process = bridge.processes["acme"]
            assert process.pid is not None
            os.kill(process.pid, signal.SIGKILL)
            await until(lambda: process.starts == 2 and inter.connected("acme"),
                        "the VTS is restarted and connects")
            got += [await routed_to(port), await routed_to(port)]
            await until(lambda: inter.states.get("acme") == {"round_robin": {"rr": 1}},
                        "the restarted VTS's state reaches the bridge")
        finally:
            await bridge.stop()  # saves what is not saved yet
        return got

    async def second() -> list[str]:
        bridge = Bridge(config_mod.load(path))
        await bridge.start()
        try:
            inter = bridge.intermediary
            assert inter is not None
            assert inter.states.get("acme") == {"round_robin": {"rr": 1}}  # from the store
            await until(lambda: inter.connected("acme"), "the VTS connects")
            return [await routed_to(port), await routed_to(port)]
        finally:
            await bridge.stop()

    assert asyncio.run(first()) == ["1001", "1002", "1003", "1001"]
    assert asyncio.run(second()) == ["1002", "1003"]
