"""The supervisor over the fork server, and the bridge's child watching, with real processes.

A VTS forked from an (unconfined) fork server is restarted after it is killed, as an
exec'd one is; a fork server that cannot start leaves the supervisor starting the VTS by
exec, with an ERROR line saying so; stopping the supervisor ends the fork server too. On
the stock asyncio loop (ami_bridge.eventloop) a child process costs the bridge no thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path

import pytest

from ami_bridge import eventloop
from ami_bridge.config import VtsConfig
from ami_bridge.supervision.forkclient import ForkedProcess, ForkServer
from ami_bridge.supervision.supervisor import OnConnect, Supervisor

SPEC = VtsConfig(name="acme", command=(), grace_period=2.0, tenants=("acme",))
WAIT = 60.0  # a failure guard, not a speed claim


def _collector() -> tuple[asyncio.Queue[socket.socket], OnConnect]:
    sockets: asyncio.Queue[socket.socket] = asyncio.Queue()

    def on_connect(name: str, sock: socket.socket) -> None:
        assert name == "acme"
        sockets.put_nowait(sock)

    return sockets, on_connect


async def _hello(sockets: asyncio.Queue[socket.socket]) -> bytes:
    sock = await asyncio.wait_for(sockets.get(), WAIT)
    sock.settimeout(WAIT)
    try:
        return await asyncio.to_thread(sock.recv, 65536)
    finally:
        sock.close()


def test_a_forked_vts_is_restarted_after_a_kill_and_stops_with_the_server() -> None:
    async def main() -> tuple[list[bytes], list[int], int, int | None]:
        sockets, on_connect = _collector()
        forkserver = ForkServer(confined=False)
        supervisor = Supervisor(on_connect=on_connect, forkserver=forkserver)
        await supervisor.reconcile({"acme": SPEC})
        hellos = [await _hello(sockets)]
        process = supervisor.processes["acme"]
        assert isinstance(process._proc, ForkedProcess)  # forked, not exec'd
        first = process.pid
        assert first is not None
        zygote = forkserver.pid
        os.kill(first, signal.SIGKILL)
        hellos.append(await _hello(sockets))
        second = process.pid
        assert second is not None
        starts = process.starts
        await supervisor.stop()
        return hellos, [first, second], starts, zygote

    hellos, pids, starts, zygote = asyncio.run(main())
    assert all(b'"type":"hello"' in h.replace(b" ", b"") for h in hellos)
    assert pids[0] != pids[1] and starts == 2
    assert zygote is not None
    for pid in (*pids, zygote):  # gone (a zombie of someone else's at most)
        assert not Path(f"/proc/{pid}").exists() or _state(pid) == "Z"


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_a_fork_server_that_cannot_start_means_exec(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    async def main() -> tuple[bytes, object]:
        sockets, on_connect = _collector()
        # A module the fork server cannot import: it exits before its Ready.
        forkserver = ForkServer(confined=False, modules=("no_such_module_for_the_test",))
        supervisor = Supervisor(on_connect=on_connect, forkserver=forkserver)
        await supervisor.reconcile({"acme": SPEC})
        hello = await _hello(sockets)
        kind = supervisor.processes["acme"]._proc
        await supervisor.stop()
        return hello, kind

    hello, kind = asyncio.run(main())
    assert b"hello" in hello
    assert isinstance(kind, asyncio.subprocess.Process)  # exec'd
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("the fork server did not start" in e and "by exec instead" in e for e in errors)


def test_the_stock_loop_watches_children_without_a_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMI_BRIDGE_LOOP", "asyncio")
    assert eventloop.pidfds_work()

    async def main() -> tuple[int, list[str], int]:
        before = threading.active_count()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; sys.stdin.read()", stdin=asyncio.subprocess.PIPE)
        # Other tests of the session may have left threads of their own running: count
        # this child's, and name the one asyncio's ThreadedChildWatcher would start.
        added = threading.active_count() - before
        waiters = [t.name for t in threading.enumerate() if t.name.startswith("waitpid-")]
        assert proc.stdin is not None
        proc.stdin.close()
        return added, waiters, await asyncio.wait_for(proc.wait(), WAIT)

    added, waiters, code = eventloop.run(main())
    assert (added, waiters, code) == (0, [], 0)
