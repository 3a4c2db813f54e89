"""VTS processes forked from the real fork server are confined: checked against the real OS.

The fork server is started the way the bridge starts it (`ForkServer(confined=True)`:
bubblewrap with the runtime's mounts and four capabilities), told to accept one extra
module, a hostile program written here (the bridge itself only ever names the shipped
runtime). Two children of it, siblings with their own uids, try what a malicious tenant
would: read the bridge's config and secrets, reach its FastAGI port, control socket and
an abstract socket, signal or ptrace the fork server and each other, list processes,
look into each other's /tmp and /dev/shm, use descriptors they should not have, find
secrets in their environment. They report over their socket; the kernel (SCM_CREDENTIALS,
/proc) says who they really ran as. The shipped runtime forked the same way says hello
as its derived uid, and an unconfined fork server (confine = "off") still starts, stops
and reports exit statuses. Needs root and bubblewrap, like test_confine (no silent skip).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import socket
import struct
from pathlib import Path
from typing import Any

import pytest

from ami_bridge.supervision import confine
from ami_bridge.supervision.forkclient import ForkedProcess, ForkServer, ForkServerError
from ami_bridge.tenants.protocol import FD_ENV, FrameDecoder
from tests.loopback.conftest import never_connected

NAME_ENV = "AMI_BRIDGE_VTS_NAME"
HOSTILE_MODULE = "fork_hostile_vts"
UIDS = {"hostile-a": 391_301, "hostile-b": 391_302}

HOSTILE = r'''
import ctypes, json, os, signal, socket, sys

def main(argv):
    sock = socket.socket(fileno=int(os.environ["AMI_BRIDGE_VTS_FD"]))
    line = b""
    while not line.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            return 3
        line += chunk
    args = json.loads(line)
    me = argv[1]
    report = {}

    def attempt(key, action):
        try:
            report[key] = ["done", action()]
        except Exception as exc:
            report[key] = ["refused", type(exc).__name__, str(exc)]

    def read(path):
        with open(path, "rb") as f:
            return f.read().decode("latin-1")

    def connect(family, address):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(3)
        s.connect(address)
        s.close()
        return "connected"

    def ptrace(pid):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.ptrace(16, pid, None, None) == -1:  # PTRACE_ATTACH
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        return "attached"

    def write(path):
        with open(path, "w") as f:
            f.write(me)

    attempt("read_secret", lambda: read(args["secret"]))
    attempt("read_config", lambda: read(args["config"]))
    attempt("tcp", lambda: connect(socket.AF_INET, ("127.0.0.1", args["tcp_port"])))
    attempt("control_socket", lambda: connect(socket.AF_UNIX, args["control"]))
    attempt("abstract_socket", lambda: connect(socket.AF_UNIX, "\0" + args["abstract"]))
    for who, pid in args["pids"].items():
        attempt(f"signal_{who}", lambda: os.kill(pid, signal.SIGKILL))
        attempt(f"ptrace_{who}", lambda: ptrace(pid))
    attempt("signal_all", lambda: os.kill(-1, signal.SIGKILL))
    attempt("write_tmp", lambda: write(f"/tmp/{me}"))
    attempt("write_shm", lambda: write(f"/dev/shm/{me}"))
    report["tmp"] = sorted(os.listdir("/tmp"))
    report["shm"] = sorted(os.listdir("/dev/shm"))
    report["processes"] = sorted(p for p in os.listdir("/proc") if p.isdigit())
    report["own_pid"] = os.getpid()
    report["ppid"] = os.getppid()
    report["fds"] = []
    for fd in os.listdir("/proc/self/fd"):
        try:  # the listing's own descriptor is closed by now: fstat fails
            os.fstat(int(fd))
            report["fds"].append(int(fd))
        except OSError:
            pass
    report["fds"].sort()
    report["environ"] = dict(os.environ)
    report["ids"] = [os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups()]
    report["hostname_set"] = None
    try:
        socket.sethostname("pwned")
        report["hostname_set"] = "done"
    except OSError as exc:
        report["hostname_set"] = type(exc).__name__
    print(f"hello from {me}")
    sys.stderr.write("INFO ami_bridge.daemon: reload ok\n")
    sys.stderr.flush()
    sock.sendall(json.dumps(report).encode() + b"\n")
    sock.recv(1)  # alive until the test hangs up
    return 0
'''





def _status(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def _recv_line_with_creds(sock: socket.socket) -> tuple[bytes, tuple[int, int, int]]:
    data, creds = b"", None
    ucred = struct.Struct("iII")
    while not data.endswith(b"\n"):
        chunk, ancdata, _, _ = sock.recvmsg(1 << 20, socket.CMSG_SPACE(ucred.size))
        assert chunk, f"the VTS hung up early; got {data!r}"
        data += chunk
        for level, kind, raw in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                creds = ucred.unpack(raw[:ucred.size])
    assert creds is not None
    return data, creds


async def _spawn(server: ForkServer, name: str, *, identity: confine.Identity | None,
                 module: str) -> tuple[ForkedProcess, asyncio.Task[None], socket.socket]:
    bridge_end, vts_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    bridge_end.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    try:
        proc, capture = await server.spawn(name, vts_fd=vts_end.fileno(), identity=identity,
                                           module=module)
    except BaseException:
        bridge_end.close()
        raise
    finally:
        vts_end.close()
    bridge_end.settimeout(60)  # a failure guard, not a speed claim
    return proc, capture, bridge_end


def test_forked_hostile_vts_reach_nothing(rt: confine.Runtime, tmp_path: Path,
                                          listeners: dict[str, Any],
                                          caplog: pytest.LogCaptureFixture,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger="ami_bridge.vts")
    marker = f"BRIDGE_MARKER_{secrets.token_hex(8)}"
    monkeypatch.setenv("AMI_SECRET_FOR_TEST", marker)
    tmp_path.chmod(0o755)
    code = tmp_path / "code"
    code.mkdir(mode=0o755)
    (code / f"{HOSTILE_MODULE}.py").write_text(HOSTILE)
    secret = code / "agi.secret"  # visible inside (the code dir is mounted), root's 0600
    secret.write_text(marker)
    secret.chmod(0o600)
    config = tmp_path / "bridge.toml"  # not mounted at all
    config.write_text(f'[ami]\nsecret = "{marker}"\n')
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    control.bind(str(tmp_path / "control.sock"))
    control.listen()
    control.setblocking(False)
    leaked = os.open(config, os.O_RDONLY)  # a bridge descriptor, inheritable on purpose
    os.set_inheritable(leaked, True)

    async def main() -> tuple[dict[str, Any], dict[str, tuple[int, int, int]],
                              dict[str, dict[str, str]], dict[str, int], int | None]:
        server = ForkServer(confined=True, modules=(HOSTILE_MODULE,),
                            python_paths=(str(code),))
        children: dict[str, Any] = {}
        try:
            for name, uid in UIDS.items():
                children[name] = await _spawn(
                    server, name, identity=confine.Identity(uid=uid, gid=uid, derived=False),
                    module=HOSTILE_MODULE)
            zygote = _zygote_pid(server)
            pids = {"a": children["hostile-a"][0].pid, "b": children["hostile-b"][0].pid}
            reports, creds, status = {}, {}, {}
            for name in UIDS:  # one after the other: b looks after a wrote its files
                proc, _, sock = children[name]
                sibling = "b" if name.endswith("a") else "a"
                args = {"secret": str(secret), "config": str(config),
                        "tcp_port": listeners["tcp"].getsockname()[1],
                        "control": str(tmp_path / "control.sock"),
                        "abstract": listeners["abstract_name"],
                        "pids": {"zygote": zygote, "sibling": pids[sibling]}}
                sock.sendall(json.dumps(args).encode() + b"\n")
                data, creds[name] = await asyncio.to_thread(_recv_line_with_creds, sock)
                reports[name] = json.loads(data)
                status[name] = _status(proc.pid)
            codes = {}
            for name, (proc, capture, sock) in children.items():
                sock.close()  # its recv(1) returns: it exits 0
                codes[name] = await asyncio.wait_for(proc.wait(), 60)
                await asyncio.wait_for(capture, 60)
            return reports, creds, status, codes, zygote
        finally:
            await server.stop()

    try:
        reports, creds, status, codes, zygote = asyncio.run(main())
    finally:
        os.close(leaked)

    assert zygote is not None
    assert codes == dict.fromkeys(UIDS, 0)
    for name, uid in UIDS.items():
        report = reports[name]
        # Its own uid and gid, no groups, no capabilities, no_new_privs: by its own
        # account and the kernel's.
        assert report["ids"] == [uid, uid, uid, uid, []]
        assert creds[name][1:] == (uid, uid)
        assert status[name]["Uid"].split() == [str(uid)] * 4
        assert status[name]["Groups"] == ""
        for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(status[name][caps], 16) == 0, (name, caps)
        assert status[name]["NoNewPrivs"] == "1"
        # PID 1 of a namespace of its own: no process of anyone else to see or touch.
        assert report["own_pid"] == 1 and report["ppid"] == 0
        assert report["processes"] == ["1"]
        for target in ("zygote", "sibling"):
            assert report[f"signal_{target}"][0] == "refused", (name, target)
            assert report[f"ptrace_{target}"][0] == "refused", (name, target)
        assert report["signal_all"][0] == "refused"
        # No secret, config, environment of the bridge's.
        # (the code dir lies under the host's /tmp here, which the child's own /tmp hides)
        assert report["read_secret"][0] == "refused"
        assert report["read_secret"][1] in ("PermissionError", "FileNotFoundError")
        assert report["read_config"][:2] == ["refused", "FileNotFoundError"]
        assert marker not in json.dumps(report["environ"])
        assert set(report["environ"]) <= {
            FD_ENV, NAME_ENV, "PATH", "HOME", "LANG", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE",
            "PYTHONUNBUFFERED", "PWD"}
        assert report["environ"][FD_ENV] == "3" and report["environ"][NAME_ENV] == name
        # No network of the host's.
        assert report["tcp"][0] == "refused"
        assert report["control_socket"][:2] == ["refused", "FileNotFoundError"]
        assert report["abstract_socket"][0] == "refused"
        # Its own /tmp and /dev/shm, not its sibling's; its own hostname namespace.
        assert report["write_tmp"] == ["done", None]
        assert report["write_shm"] == ["done", None]
        assert report["tmp"] == [name] and report["shm"] == [name]
        assert report["hostname_set"] == "PermissionError"
        # stdin, stdout, stderr and its socket; nothing of the bridge or the fork server.
        assert report["fds"] == [0, 1, 2, 3]
    assert never_connected(listeners["tcp"])
    assert never_connected(listeners["abstract"])
    assert never_connected(control)
    control.close()
    # Its output reaches the log only as its own labelled lines.
    said = [(r.name, r.getMessage()) for r in caplog.records if r.name.startswith("ami_bridge.vts")]
    for name in UIDS:
        assert (f"ami_bridge.vts.{name}", f"vts[{name}]> hello from {name}") in said
        assert (f"ami_bridge.vts.{name}",
                f"vts[{name}]> INFO ami_bridge.daemon: reload ok") in said
    assert not [r for r in caplog.records if r.name == "ami_bridge.daemon"]


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _zygote_pid(server: ForkServer) -> int:
    """The fork server process itself: bwrap -> bwrap's PID 1 -> the fork server."""
    assert server.pid is not None
    (init,) = _children(server.pid)
    (zygote,) = _children(init)
    return zygote


def test_the_shipped_runtime_forks_confined_as_a_derived_uid(
        rt: confine.Runtime, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    sandbox = confine.plan("required", {"acme": confine.VtsConfinement()},
                           facts=confine.host_facts(), rt=rt)["acme"]
    assert sandbox is not None
    uid = confine.derived_uid("acme")

    async def main() -> tuple[dict[str, Any], tuple[int, int, int], int, int]:
        server = ForkServer(confined=True)
        try:
            proc, capture, sock = await _spawn(server, "acme", identity=sandbox.identity,
                                               module="ami_bridge.tenants.worker")
            with sock:
                data, creds = await asyncio.to_thread(_recv_line_with_creds, sock)
                pid = proc.pid
            # The bridge hanging up is the VTS's orderly end (docs/vts-protocol.md).
            code = await asyncio.wait_for(proc.wait(), 60)
            await asyncio.wait_for(capture, 60)
        finally:
            await server.stop()
        decoder = FrameDecoder()
        decoder.receive_data(data)
        hello = decoder.next_message()
        assert hello is not None
        return hello, creds, code, pid

    hello, creds, code, pid = asyncio.run(main())
    assert hello["type"] == "hello" and hello["vts"] == "acme"
    assert creds == (pid, uid, uid)  # the pid the bridge was told is the kernel's
    assert code == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_an_unconfined_fork_server_starts_signals_and_reports(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    async def main() -> tuple[list[int], int, int]:
        server = ForkServer(confined=False)
        try:
            with pytest.raises(ForkServerError, match="uid and gid"):
                await _spawn(server, "x", identity=confine.Identity(5000, 5000, False),
                             module="ami_bridge.tenants.worker")
            with pytest.raises(ForkServerError, match="not one this fork server loaded"):
                await _spawn(server, "x", identity=None, module="os")
            procs = [await _spawn(server, name, identity=None,
                                  module="ami_bridge.tenants.worker") for name in ("a", "b")]
            (a, _, sock_a), (b, _, sock_b) = procs
            for sock in (sock_a, sock_b):  # the hello: its loop and signal handlers are up
                assert await asyncio.to_thread(sock.recv, 65536)
            uids = [_status(p.pid)["Uid"].split()[0] for p, _, _ in procs]
            assert uids == [str(os.getuid())] * 2
            a.send_signal(signal.SIGTERM)  # the runtime's orderly stop
            b.kill()
            codes = [await asyncio.wait_for(a.wait(), 60), await asyncio.wait_for(b.wait(), 60)]
            with pytest.raises(ProcessLookupError):
                a.kill()  # gone: its pidfd is closed, no recycled pid is hit
            sock_a.close()
            sock_b.close()
            zygote = server.pid
            assert zygote is not None
        finally:
            await server.stop()
        return codes, zygote, len(procs)

    codes, zygote, _ = asyncio.run(main())
    assert codes == [0, -signal.SIGKILL]
    assert not Path(f"/proc/{zygote}").exists() or "Z" in _status(zygote)["State"]
