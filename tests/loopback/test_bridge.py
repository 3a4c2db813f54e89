"""The whole daemon in-process with real VTS processes, driven by a scripted Asterisk.

A scripted FastAGI client speaks as Asterisk does (environment, then `200 result=1` for
each command); the bridge runs its real FastAGI server, intermediary, supervisor and
shipped VTS runtime. Covers reload (control socket and SIGHUP path) and the control API.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import stat
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ami_bridge import config as config_mod
from ami_bridge import control
from ami_bridge.daemon import Bridge

ROUTE_1001 = ['EXEC MSet "AB_KIND=extension,AB_TARGET=1001,AB_ACTION=route"']


_UNIQUEIDS = itertools.count(1)  # every scripted call is a channel of its own


HARNESS = Path(__file__).resolve().parents[2] / "harness"

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write(tmp_path: Path, port: int, *, acme_extra: str = "", late: float = 0.0,
          more: str = "") -> Path:
    # The fault VTS lives in the repository's harness/, which a confined VTS sees only
    # when the config mounts it (docs/confinement.md).
    behaviour = (f'command = ["{sys.executable}", "-m", "harness.fault_vts", '
                 f'"--vts", "acme", '
                 f'"--behaviour", "late", "--late-by", "{late}"]\n'
                 f'read_only_paths = ["{HARNESS}"]') if late else ""
    path = tmp_path / "bridge.toml"
    path.write_text(f"""
[bridge]
agi_listen = "127.0.0.1:{port}"
control_socket = "{tmp_path}/control.sock"
[vts.acme]
{behaviour}
[tenants.acme]
targets = ["1001", "1002"]
{acme_extra}
[tenants.acme.venues.acme-venue]
vts = "acme"
[[tenants.acme.rules]]
name = "r"
targets = ["1001"]
{more}
""")
    return path


async def agi_call(port: int, venue: str, *, hangup_after: float | None = None) -> list[str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    env = {"agi_network": "yes", "agi_network_script": "route", "agi_context": venue,
           "agi_extension": "100", "agi_callerid": "555",
           "agi_uniqueid": f"{venue}.{next(_UNIQUEIDS)}",
           "agi_channel": "PJSIP/t-1"}
    writer.write("".join(f"{k}: {v}\n" for k, v in env.items()).encode() + b"\n")
    commands = []
    if hangup_after is not None:
        await asyncio.sleep(hangup_after)
        writer.write(b"HANGUP\n")
    while line := await reader.readline():
        commands.append(line.decode().strip())
        writer.write(b"200 result=1\n")
    writer.close()
    return commands


async def with_bridge(path: Path, body: Callable[[Bridge], Awaitable[None]]) -> None:
    bridge = Bridge(config_mod.load(path))
    await bridge.start()
    try:
        for _ in range(200):  # wait for the VTS processes to connect
            assert bridge.intermediary is not None
            if all(bridge.intermediary.connected(n) for n in bridge.config.vts):
                break
            await asyncio.sleep(0.05)
        await body(bridge)
    finally:
        await bridge.stop()


def test_route_and_status_over_the_control_socket(tmp_path: Path) -> None:
    port = free_port()

    async def body(bridge: Bridge) -> None:
        assert await agi_call(port, "acme-venue") == ROUTE_1001
        assert await agi_call(port, "nowhere") == [
            'EXEC MSet "AB_CAUSE=unknown-venue,AB_ACTION=default"']
        answer = await asyncio.to_thread(control.request, bridge.config.control_socket, "status")
        status = answer["status"]
        assert status["venues"]["acme-venue"] == {"tenant": "acme", "vts": "acme",
                                                  "connected": True}
        assert status["counters"]["routed"] == 1
        assert status["vts"]["acme"]["starts"] == 1

    asyncio.run(with_bridge(write(tmp_path, port), body))


def test_reload_adds_a_venue_and_keeps_pending_calls(tmp_path: Path) -> None:
    port = free_port()
    path = write(tmp_path, port, late=0.6)

    async def body(bridge: Bridge) -> None:
        pending = asyncio.create_task(agi_call(port, "acme-venue"))
        await asyncio.sleep(0.2)  # the call waits for the late VTS...
        write(tmp_path, port, late=0.6, more="""
[tenants.acme.venues.acme-overflow]
vts = "acme"
""")
        answer = await asyncio.to_thread(control.request, bridge.config.control_socket, "reload")
        assert answer["ok"] is True, answer
        assert "acme-overflow" in bridge.config.venues
        # ...and is routed exactly once after the reload.
        assert await pending == ROUTE_1001
        assert bridge.intermediary is not None
        assert bridge.intermediary.counters.routed == 1
        assert await agi_call(port, "acme-overflow") == ROUTE_1001

    asyncio.run(with_bridge(path, body))


def test_broken_reload_keeps_the_running_config(tmp_path: Path) -> None:
    port = free_port()
    path = write(tmp_path, port)

    async def body(bridge: Bridge) -> None:
        path.write_text(path.read_text().replace('targets = ["1001"]', 'targets = ["1003"]'))
        answer: dict[str, Any] = await asyncio.to_thread(
            control.request, bridge.config.control_socket, "reload")
        assert answer["ok"] is False
        assert str(path) in answer["error"] and "tenants.acme.rules" in answer["error"]
        assert "'1003'" in answer["error"]
        assert await agi_call(port, "acme-venue") == ROUTE_1001

    asyncio.run(with_bridge(path, body))


def test_caller_hangup_while_pending_is_an_abandon(tmp_path: Path) -> None:
    port = free_port()

    async def body(bridge: Bridge) -> None:
        commands = await agi_call(port, "acme-venue", hangup_after=0.1)
        assert commands == []  # nothing is sent to a dead channel; the session is closed
        assert bridge.intermediary is not None
        assert bridge.intermediary.counters.abandoned == 1
        assert bridge.intermediary.pending_count() == 0

    asyncio.run(with_bridge(write(tmp_path, port, late=0.5), body))


def test_ctl_command_line(tmp_path: Path, capsys: Any) -> None:
    from ami_bridge.cli import main

    port = free_port()
    path = write(tmp_path, port)

    async def body(bridge: Bridge) -> None:
        def ctl(action: str) -> int:
            return main(["ctl", action, "--config", str(path)])

        assert await asyncio.to_thread(ctl, "status") == 0
        assert '"acme-venue"' in capsys.readouterr().out
        assert await asyncio.to_thread(ctl, "reload") == 0
        assert capsys.readouterr().out == "reloaded\n"
        assert await asyncio.to_thread(ctl, "apply") == 1  # no [ami] reload login here
        assert "apply needs [ami]" in capsys.readouterr().err

    asyncio.run(with_bridge(path, body))
    assert main(["ctl", "status", "--config", str(path)]) == 1  # the bridge is gone
    assert "cannot reach the bridge's control socket" in capsys.readouterr().err


def test_crashing_vts_is_restarted_with_backoff_then_reported_flapping(
        tmp_path: Path, caplog: Any) -> None:
    import logging

    port = free_port()
    path = tmp_path / "bridge.toml"
    path.write_text(f"""
[bridge]
agi_listen = "127.0.0.1:{port}"
control_socket = "{tmp_path}/control.sock"
[vts.broken]
command = ["/bin/false"]
[tenants.acme]
targets = ["1001"]
[tenants.acme.venues.acme-venue]
vts = "broken"
""")

    async def main() -> None:
        bridge = Bridge(config_mod.load(path))
        await bridge.start()
        try:
            process = bridge.processes["broken"]
            for _ in range(100):  # backoff 0.1, 0.2, 0.4, 0.8, 1.6 s: 6 starts in ~3.1 s
                if process.flapping:
                    break
                await asyncio.sleep(0.1)
            assert process.flapping
            assert process.starts == 6
            # its venue still answers at once, with the default route
            assert await agi_call(port, "acme-venue") == [
                'EXEC MSet "AB_CAUSE=no-vts,AB_ACTION=default"']
            status = await asyncio.to_thread(control.request, str(tmp_path / "control.sock"),
                                             "status")
            assert status["status"]["vts"]["broken"]["flapping"] is True
        finally:
            await bridge.stop()

    with caplog.at_level(logging.WARNING):
        asyncio.run(main())
    assert "VTS broken is flapping (6 quick exits); next start in 30.0 s" in caplog.text
    delays = [r.getMessage() for r in caplog.records if "restart in" in r.getMessage()]
    assert [d.split("restart in ")[1].split(" s")[0] for d in delays] == [
        "0.10", "0.20", "0.40", "0.80", "1.60"]


HUNG_VTS = """
import os, socket, time
sock = socket.socket(fileno=int(os.environ["AMI_BRIDGE_VTS_FD"]))
sock.sendall(b'{"type":"hello","v":2}\\n')
time.sleep(3600)  # connected, then never reads nor answers again
"""


def test_hung_vts_does_not_hold_up_another_tenant(tmp_path: Path) -> None:
    port = free_port()
    script = tmp_path / "hung_vts.py"
    script.write_text(HUNG_VTS)
    tmp_path.chmod(0o755)  # the confined VTS runs as its own uid and reads its script here
    path = tmp_path / "bridge.toml"
    path.write_text(f"""
[bridge]
agi_listen = "127.0.0.1:{port}"
control_socket = "{tmp_path}/control.sock"
[vts.hung]
command = ["{sys.executable}", "{script}"]
read_only_paths = ["{tmp_path}"]
grace_period = 0.5
[vts.globex]
[tenants.acme]
targets = ["1001"]
[tenants.acme.venues.acme-venue]
vts = "hung"
router_timeout = 1.0
[tenants.globex]
targets = ["2001"]
[tenants.globex.venues.globex-venue]
vts = "globex"
[[tenants.globex.rules]]
name = "r"
targets = ["2001"]
""")

    async def body(bridge: Bridge) -> None:
        acme = [asyncio.create_task(agi_call(port, "acme-venue")) for _ in range(20)]
        await asyncio.sleep(0.05)
        globex = await asyncio.gather(*(agi_call(port, "globex-venue") for _ in range(20)))
        assert all(c == ['EXEC MSet "AB_KIND=extension,AB_TARGET=2001,AB_ACTION=route"']
                   for c in globex)
        # globex was answered while every acme call still waited for its hung VTS
        assert not any(task.done() for task in acme)
        for commands in await asyncio.gather(*acme):  # then acme's leave by the default
            assert commands == ['EXEC MSet "AB_CAUSE=timeout,AB_ACTION=default"']

    asyncio.run(with_bridge(path, body))


def test_control_socket_is_born_owner_only_in_an_owner_only_directory(tmp_path: Path) -> None:
    path = tmp_path / "run" / "ami-bridge" / "control.sock"

    async def handler(request: dict[str, object]) -> dict[str, object]:
        return {"ok": True}

    async def main() -> None:
        before = os.umask(0o022)
        try:
            server = await control.serve(str(path), handler)
            try:
                assert stat.S_IMODE(path.stat().st_mode) == 0o600
                assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
                assert os.umask(0o022) == 0o022  # restored
                answer = await asyncio.to_thread(control.request, str(path), "status")
                assert answer == {"ok": True}
            finally:
                server.close()
        finally:
            os.umask(before)

    asyncio.run(main())


def test_the_agent_table_for_the_bus_is_empty_while_the_ami_session_is_down(
        tmp_path: Path) -> None:
    """What the tracker holds while AMI is down is stale: the bus gets none of it (the
    other bridges forget this one's reports after their TTL instead)."""
    from types import SimpleNamespace

    from ami_bridge.tenants import messages as m

    bridge = Bridge(config_mod.load(write(tmp_path, free_port())))
    idle = m.AgentState(tenant="acme", device="PJSIP/acme-agent", available=True,
                        state="NOT_INUSE", paused=False)
    link = SimpleNamespace(client=SimpleNamespace(connected=False),
                           agent_snapshot=lambda tenant: [idle] if tenant == "acme" else [])
    bridge.ami = link  # type: ignore[assignment]
    assert bridge._local_agents() == []
    link.client.connected = True
    assert bridge._local_agents() == [idle]
