"""Reload reconciles the VTS processes, with real child processes and no Asterisk.

Through the daemon (`Bridge.reload`, the path of SIGHUP and `ctl reload`) with the
shipped VTS runtime: a reload that changes nothing leaves every pid alone; one that
changes a VTS's command restarts that VTS only, and the new process routes calls; a
removed section stops its process, a new one starts. Through the `Supervisor` alone
with small scripts: stopping is SIGTERM, then SIGKILL after the spec's grace period.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ami_bridge import config as config_mod
from ami_bridge.config import VtsConfig
from ami_bridge.daemon import Bridge
from ami_bridge.supervision.reconcile import Plan
from ami_bridge.supervision.supervisor import Supervisor

WORKER = [sys.executable, "-m", "ami_bridge.tenants.worker"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write(path: Path, port: int, vts: str) -> None:
    path.write_text(f"""
[bridge]
agi_listen = "127.0.0.1:{port}"
control_socket = "{path.parent}/control.sock"
{vts}
[tenants.acme]
targets = ["1001"]
[tenants.acme.venues.acme-venue]
vts = "acme"
[[tenants.acme.rules]]
name = "r"
targets = ["1001"]
""")


def lobby(vts: str) -> str:
    """A second acme venue for `vts`: a [vts.X] no venue maps to is refused."""
    return f'[tenants.acme.venues.acme-lobby]\nvts = "{vts}"\n'


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def route(port: int) -> list[str]:
    """One scripted FastAGI call into acme-venue; the AGI commands the bridge sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    env = {"agi_network_script": "route", "agi_context": "acme-venue", "agi_extension": "1",
           "agi_uniqueid": f"u.{os.urandom(4).hex()}", "agi_channel": "PJSIP/t-1"}
    writer.write("".join(f"{k}: {v}\n" for k, v in env.items()).encode() + b"\n")
    commands = []
    while line := await reader.readline():
        commands.append(line.decode().strip())
        writer.write(b"200 result=1\n")
    writer.close()
    return commands


async def until(condition: Callable[[], object], what: str) -> None:
    for _ in range(200):  # 10 s at most: the shipped runtime starts in well under that
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_reload_restarts_a_changed_vts_and_leaves_an_unchanged_one_alone(
        tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "bridge.toml"
    write(path, port, "[vts.acme]\n[vts.spare]\n" + lobby("spare"))

    async def main() -> None:
        bridge = Bridge(config_mod.load(path))
        await bridge.start()
        try:
            assert bridge.intermediary is not None
            intermediary = bridge.intermediary
            await until(lambda: intermediary.connected("acme"), "acme to connect")
            await until(lambda: all(p.pid for p in bridge.processes.values()), "spare")
            pids = {name: p.pid for name, p in bridge.processes.items()}

            assert await bridge.reload() is None  # the same file again
            assert {name: p.pid for name, p in bridge.processes.items()} == pids
            assert bridge.processes["acme"].starts == 1

            # The same program, but a different command line: a new spec.
            write(path, port, f"[vts.acme]\ncommand = {[*WORKER, '--vts', 'acme']!r}\n"
                  "[vts.spare]\n".replace("'", '"') + lobby("spare"))
            assert await bridge.reload() is None
            acme = bridge.processes["acme"]
            await until(lambda: acme.pid is not None, "acme to start again")
            assert acme.pid != pids["acme"]
            assert not alive(pids["acme"])  # stopped and reaped before the new one started
            assert bridge.processes["spare"].pid == pids["spare"]
            await until(lambda: intermediary.connected("acme"), "acme to reconnect")
            assert await route(port) == [
                'EXEC MSet "AB_KIND=extension,AB_TARGET=1001,AB_ACTION=route"']

            # Removed: stopped. Added: started.
            write(path, port, f"[vts.acme]\ncommand = {[*WORKER, '--vts', 'acme']!r}\n"
                  "[vts.extra]\n".replace("'", '"') + lobby("extra"))
            assert await bridge.reload() is None
            assert sorted(bridge.processes) == ["acme", "extra"]
            assert not alive(pids["spare"])
            assert bridge.processes["acme"].pid == acme.pid
            await until(lambda: bridge.processes["extra"].pid is not None, "extra to start")
        finally:
            await bridge.stop()

    asyncio.run(main())


IGNORES_SIGTERM = """
import pathlib, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pathlib.Path(sys.argv[1]).write_text("ready")
time.sleep(60)
"""


def test_stop_is_sigterm_then_sigkill_after_the_grace_period(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    script = tmp_path / "stubborn.py"
    script.write_text(IGNORES_SIGTERM)
    ready = tmp_path / "ready"
    sockets: list[socket.socket] = []

    def spec(name: str, command: list[str], grace: float) -> VtsConfig:
        return VtsConfig(name=name, command=tuple(command), grace_period=grace, tenants=())

    async def main() -> None:
        supervisor = Supervisor(on_connect=lambda name, sock: sockets.append(sock))
        stubborn = spec("stubborn", [sys.executable, str(script), str(ready)], 0.3)
        polite = spec("polite", ["/bin/sleep", "60"], 5.0)
        plan = await supervisor.reconcile({"stubborn": stubborn, "polite": polite})
        assert plan == Plan(start=("polite", "stubborn"))
        # Until the script has set SIG_IGN, a SIGTERM would still end it.
        await until(lambda: ready.exists() and supervisor.processes["polite"].pid,
                    "both to start")
        pids = {name: p.pid for name, p in supervisor.processes.items()}
        try:
            assert await supervisor.reconcile({"polite": polite}) == Plan(
                stop=("stubborn",), keep=("polite",))
            assert supervisor.processes["polite"].pid == pids["polite"]
        finally:
            await supervisor.stop()
        assert supervisor.processes == {}
        assert not any(alive(pid) for pid in pids.values() if pid is not None)

    with caplog.at_level(logging.INFO, logger="ami_bridge.supervision.supervisor"):
        asyncio.run(main())
    for sock in sockets:
        sock.close()
    assert "VTS stubborn: no longer configured; stopping it" in caplog.text
    assert "VTS stubborn did not stop in 0.3 s; SIGKILL" in caplog.text
    assert "VTS polite did not stop" not in caplog.text  # /bin/sleep obeys SIGTERM
