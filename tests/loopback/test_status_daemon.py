"""`ami-bridge status` and the graceful stop against the whole daemon in-process.

The bridge runs its real FastAGI server, supervisor and VTS processes (the loopback
world of test_bridge.py); a scripted Asterisk places calls. Checks that the status
document carries what an operator needs (version, tenants, VTS uptime and restarts,
recent warnings), that the command prints it and exits by it, and that a stop answers
a pending call, refuses new sessions, and removes the control socket.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from ami_bridge import config as config_mod
from ami_bridge import status as status_mod
from ami_bridge.cli import main
from ami_bridge.daemon import Bridge
from tests.loopback.test_bridge import ROUTE_1001, agi_call, free_port, write
from tests.unit.test_lifecycle import Recorder


async def started(path: Path, **kwargs: Any) -> Bridge:
    bridge = Bridge(config_mod.load(path), **kwargs)
    await bridge.start()
    assert bridge.intermediary is not None
    for _ in range(200):  # wait for the VTS processes to connect
        if all(bridge.intermediary.connected(n) for n in bridge.config.vts):
            break
        await asyncio.sleep(0.05)
    return bridge


def test_status_document_and_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    path = write(tmp_path, port)
    recent = status_mod.RecentLog()
    logging.getLogger().addHandler(recent)

    async def scenario() -> None:
        bridge = await started(path, recent=recent)
        try:
            assert await agi_call(port, "nowhere") != []  # logs a warning (unknown venue)

            def status(*args: str) -> int:
                return main(["status", "--config", str(path), *args])

            assert await asyncio.to_thread(status, "--json") == 0
            document = json.loads(capsys.readouterr().out)
            assert document["version"] == status_mod.version() != "unknown"
            assert document["pid"] == os.getpid()
            assert document["tenants"] == {"acme": {"venues": ["acme-venue"],
                                                    "vts": ["acme"]}}
            vts = document["vts"]["acme"]
            assert vts["connected"] and vts["restarts"] == 0 and vts["pid"] > 0
            assert vts["uptime_s"] >= 0 and vts["starts"] == 1  # `ctl status` keys kept
            assert any("unknown venue 'nowhere'" in r["message"] and r["level"] == "WARNING"
                       for r in document["recent"])
            assert await asyncio.to_thread(status) == 0
            table = capsys.readouterr().out
            assert table.startswith(f"ami-bridge {status_mod.version()}, pid {os.getpid()}")
            assert "AMI      not configured" in table
            assert "tenants  acme" in table
            assert any(line.split()[:1] == ["acme"] and "yes" in line
                       for line in table.splitlines())
            assert "unknown venue 'nowhere'" in table
        finally:
            await bridge.stop()

    try:
        asyncio.run(scenario())
    finally:
        logging.getLogger().removeHandler(recent)
    assert main(["status", "--config", str(path)]) == status_mod.EXIT_UNREACHABLE
    assert "cannot reach the bridge's control socket" in capsys.readouterr().err


def test_stop_answers_the_pending_call_refuses_new_ones_and_removes_the_socket(
        tmp_path: Path) -> None:
    port = free_port()
    path = write(tmp_path, port, late=0.8)  # the VTS answers after 0.8 s (router: 2 s)
    notifier = Recorder()

    async def scenario() -> None:
        bridge = await started(path, notifier=notifier)
        socket_path = Path(bridge.config.control_socket)
        assert socket_path.is_socket()
        pending = asyncio.create_task(agi_call(port, "acme-venue"))
        await asyncio.sleep(0.3)
        assert bridge.intermediary is not None and bridge.intermediary.pending_count() == 1
        stop = asyncio.create_task(bridge.stop())
        await asyncio.sleep(0.1)
        with pytest.raises(OSError):  # the listener is closed: Asterisk's fallback
            await agi_call(port, "acme-venue")
        assert await pending == ROUTE_1001  # the VTS's own answer, not a default
        await stop
        assert not socket_path.exists()
        assert bridge.intermediary.counters.routed == 1
        assert bridge.intermediary.counters.defaulted == {}

    asyncio.run(scenario())
    assert notifier.sent[0]["STOPPING"] == "1"


def test_reload_is_reported_to_systemd(tmp_path: Path) -> None:
    port = free_port()
    notifier = Recorder()

    async def scenario() -> None:
        bridge = await started(write(tmp_path, port), notifier=notifier)
        try:
            assert await bridge.reload() is None
        finally:
            await bridge.stop()

    asyncio.run(scenario())
    assert [sorted(n) for n in notifier.sent[:2]] == [
        ["MONOTONIC_USEC", "RELOADING", "STATUS"], ["READY", "STATUS"]]


def test_render_reads_an_older_document_and_names_what_is_degraded() -> None:
    document = {"vts": {"acme": {"pid": None, "connected": False, "flapping": True}},
                "ami": {"connected": False}}
    text = status_mod.render(document)
    assert "NOT CONNECTED" in text and "YES" in text
    assert status_mod.degraded(document) == [
        "AMI session not connected", "VTS acme not connected", "VTS acme flapping"]


def test_the_daemon_process_speaks_sd_notify_and_stops_cleanly(tmp_path: Path) -> None:
    """`ami-bridge run` as systemd starts it: READY=1 once the VTS is connected, RELOADING
    and READY around SIGHUP, STOPPING=1 on SIGTERM, exit 0, no control socket left."""
    import signal
    import socket
    import subprocess
    import sys

    path = write(tmp_path, free_port())
    notify_path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(str(notify_path))
        manager.settimeout(20.0)

        def next_fields() -> dict[str, str]:
            data = manager.recv(4096).decode()
            return dict(line.split("=", 1) for line in data.splitlines())

        proc = subprocess.Popen(
            [sys.executable, "-m", "ami_bridge", "run", "--config", str(path)],
            env={**os.environ, "NOTIFY_SOCKET": str(notify_path)},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            ready = next_fields()
            assert ready == {"READY": "1", "STATUS": "routing; 1 VTS connected"}
            assert json.loads(status_doc(path))["vts"]["acme"]["connected"] is True
            proc.send_signal(signal.SIGHUP)
            assert next_fields()["RELOADING"] == "1"
            assert next_fields()["READY"] == "1"
            proc.send_signal(signal.SIGTERM)
            assert next_fields()["STOPPING"] == "1"
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, err.decode()
    assert not (tmp_path / "control.sock").exists()
    assert b"ami-bridge stopped" in err
    warnings = [line for line in err.decode().splitlines()
                if (" WARNING " in line or " ERROR " in line) and "agi_secret_file" not in line]
    assert warnings == []  # the stop is not logged as a failure


def status_doc(path: Path) -> str:
    from ami_bridge import control

    return json.dumps(control.request(str(config_mod.load(path).control_socket),
                                      "status")["status"])
