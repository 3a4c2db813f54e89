"""A hostile program started as a VTS is confined: checked against the real OS.

The program is started the way the supervisor starts a VTS (`confine.plan` for this host,
`confined_argv`, `vts_output.start_captured` with only its socket end passed) and tries
what a malicious tenant would: read the bridge's config and secrets and its environment,
reach a TCP port and Unix sockets of the host, signal the bridge, write where it may read,
use descriptors it should not have, forge lines of the bridge's log. It reports what it
saw over its socket end; the test also asks the kernel (SCM_CREDENTIALS, /proc) who it
really ran as. Needs root and bubblewrap: a machine without them FAILS these tests with
the reason (no silent skip), since an unconfined VTS is a security hole, not a detail.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

from ami_bridge.cli import LOG_FORMAT
from ami_bridge.supervision import confine
from ami_bridge.supervision.vts_output import start_captured
from ami_bridge.tenants.protocol import FD_ENV, FrameDecoder
from tests.loopback.conftest import never_connected

NAME_ENV = "AMI_BRIDGE_VTS_NAME"  # as the supervisor sets it
HOSTILE_UID = 391_234  # an explicit [vts.hostile] uid = ...
FORGED = ("\nINFO ami_bridge.daemon: reload ok\n"
          "\x1b[2K\rWARNING ami_bridge.control: apply ok\u2028ERROR ami_bridge: \u202egnirps\n")

HOSTILE = r'''
import json, os, socket, sys

args = json.loads(sys.argv[1])
sock = socket.socket(fileno=int(os.environ["AMI_BRIDGE_VTS_FD"]))
report = {}


def attempt(key, action):
    try:
        report[key] = ["done", action()]
    except Exception as exc:
        report[key] = ["refused", type(exc).__name__, str(exc)]


def read(path):
    with open(path, "rb") as f:
        return f.read().decode("latin-1")


def write(path):
    with open(path, "w") as f:
        f.write("planted")


def connect(family, address):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect(address)
    s.close()
    return "connected"


def environ_with_marker():
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if args["marker"].encode() in open(f"/proc/{pid}/environ", "rb").read():
                    found.append(pid)
            except OSError:
                pass
    return found


def open_fds():
    fds = []
    for name in os.listdir("/proc/self/fd"):
        try:  # the listing's own descriptor is closed by now: fstat fails
            os.fstat(int(name))
            fds.append(int(name))
        except OSError:
            pass
    return sorted(fds)


attempt("read_secret", lambda: read(args["secret"]))
attempt("read_config", lambda: read(args["config"]))
attempt("read_bridge_environ", lambda: read(f"/proc/{args['bridge_pid']}/environ"))
report["environ_with_marker"] = environ_with_marker()
report["own_environ"] = dict(os.environ)
attempt("tcp", lambda: connect(socket.AF_INET, ("127.0.0.1", args["tcp_port"])))
attempt("control_socket", lambda: connect(socket.AF_UNIX, args["control"]))
attempt("abstract_socket", lambda: connect(socket.AF_UNIX, "\0" + args["abstract"]))
attempt("signal_bridge", lambda: os.kill(args["bridge_pid"], 0))
attempt("write_exposed", lambda: write(args["exposed"] + "/planted"))
attempt("write_own_code", lambda: write(os.path.dirname(os.path.abspath(__file__)) + "/x"))
attempt("write_tmp", lambda: write("/tmp/scratch"))
attempt("import_worker", lambda: __import__("ami_bridge.tenants.worker").__name__)
report["fds"] = open_fds()
report["ids"] = [os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups()]
report["socket_fd"] = sock.fileno()

print("hello from the vts")
sys.stderr.write("an honest warning\n" + args["forged"])
sys.stderr.flush()
line = b""
while not line.endswith(b"\n"):
    chunk = sock.recv(4096)
    if not chunk:
        sys.exit(3)
    line += chunk
sock.sendall(line + json.dumps(report).encode() + b"\n")
sock.recv(1)  # stay alive until the bridge hangs up, so the test can look at /proc
'''





def _recv_with_creds(sock: socket.socket, lines: int) -> tuple[bytes, tuple[int, int, int]]:
    """Read `lines` lines; the sender's pid/uid/gid as the kernel vouches for them."""
    data, creds = b"", None
    ucred = struct.Struct("iII")
    while data.count(b"\n") < lines:
        chunk, ancdata, _, _ = sock.recvmsg(1 << 20, socket.CMSG_SPACE(ucred.size))
        assert chunk, f"the VTS hung up early; got {data!r}"
        data += chunk
        for level, kind, raw in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                creds = ucred.unpack(raw[:ucred.size])
    assert creds is not None
    return data, creds


def _status(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def _files(tmp_path: Path) -> dict[str, Path]:
    """The bridge's side of the host: config dir, an exposed dir, the control socket."""
    etc = tmp_path / "etc"
    etc.mkdir()
    config = etc / "bridge.toml"
    config.write_text('[ami]\nsecret = "s3cret"\n')
    config.chmod(0o644)
    exposed = tmp_path / "exposed"  # a directory the operator did bind into the sandbox
    exposed.mkdir(mode=0o755)
    exposed.chmod(0o755)
    secret = exposed / "ami.secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    code = tmp_path / "vts"
    code.mkdir()
    code.chmod(0o755)
    script = code / "hostile.py"
    script.write_text(HOSTILE)
    script.chmod(0o644)
    run = tmp_path / "run"
    run.mkdir()
    return {"config": config, "secret": secret, "exposed": exposed, "code": code,
            "script": script, "control": run / "control.sock"}


def test_a_hostile_vts_is_confined(rt: confine.Runtime, tmp_path: Path,
                                   listeners: dict[str, Any], caplog: pytest.LogCaptureFixture,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger="ami_bridge.vts")
    marker = f"BRIDGE_MARKER_{secrets.token_hex(8)}"
    monkeypatch.setenv("AMI_SECRET_FOR_TEST", marker)
    files = _files(tmp_path)
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    control.bind(str(files["control"]))
    control.listen()
    control.setblocking(False)
    # Descriptors the bridge holds that are not the VTS's business, inheritable on purpose.
    leaked = [os.open(files["config"], os.O_RDONLY), *os.pipe()]
    for fd in leaked:
        os.set_inheritable(fd, True)

    settings = confine.VtsConfinement(
        identity=confine.IdentityRequest(uid=HOSTILE_UID),
        read_only_paths=(str(files["code"]), str(files["exposed"])))
    sandboxes = confine.plan("required", {"hostile": settings}, facts=confine.host_facts(),
                             rt=rt)
    sandbox = sandboxes["hostile"]
    assert sandbox is not None
    args = {"secret": str(files["secret"]), "config": str(files["config"]),
            "bridge_pid": os.getpid(), "marker": marker, "tcp_port":
            listeners["tcp"].getsockname()[1], "control": str(files["control"]),
            "abstract": listeners["abstract_name"], "exposed": str(files["exposed"]),
            "forged": FORGED}
    command = [sys.executable, str(files["script"]), json.dumps(args)]

    async def main() -> tuple[dict[str, Any], bytes, tuple[int, int, int], dict[str, str], int]:
        bridge_end, vts_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        bridge_end.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        env = {FD_ENV: str(vts_end.fileno()), NAME_ENV: "hostile"}
        try:
            proc, capture = await start_captured(
                confine.confined_argv(command, sandbox=sandbox, env=env), name="hostile",
                pass_fd=vts_end.fileno(), env={"AMI_SECRET_FOR_TEST": marker})
        finally:
            vts_end.close()
        with bridge_end:
            bridge_end.sendall(b"ping \x00\xff\n")
            bridge_end.settimeout(60)  # a failure guard, not a speed claim
            data, creds = await asyncio.to_thread(_recv_with_creds, bridge_end, 2)
            status = _status(creds[0])  # the VTS seen from the host, while it is alive
        code = await asyncio.wait_for(proc.wait(), 60)
        await asyncio.wait_for(capture, 60)
        echo, _, rest = data.partition(b"\n")
        return json.loads(rest), echo, creds, status, code

    try:
        report, echo, creds, status, code = asyncio.run(main())
    finally:
        for fd in leaked:
            os.close(fd)

    # It talks over its socket end, and only there.
    assert echo == b"ping \x00\xff"
    assert code == 0
    assert report["import_worker"] == ["done", "ami_bridge"]
    # Its own uid and gid, no groups, no capabilities: by its own account and the kernel's.
    assert report["ids"] == [HOSTILE_UID, HOSTILE_UID, HOSTILE_UID, HOSTILE_UID, []]
    assert creds[1:] == (HOSTILE_UID, HOSTILE_UID)
    assert status["Uid"].split() == [str(HOSTILE_UID)] * 4
    assert status["Gid"].split() == [str(HOSTILE_UID)] * 4
    assert status["Groups"] == ""
    assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == 0
    assert int(status["CapBnd"], 16) == 0
    assert status["NoNewPrivs"] == "1"
    # No secret, config or bridge environment: denied by uid where a path is visible,
    # invisible where it is not bound.
    assert report["read_secret"][:2] == ["refused", "PermissionError"]
    assert report["read_config"][:2] == ["refused", "FileNotFoundError"]
    assert report["read_bridge_environ"][0] == "refused"
    assert report["environ_with_marker"] == []
    assert marker not in json.dumps(report["own_environ"])
    assert set(report["own_environ"]) <= {
        FD_ENV, NAME_ENV, "PATH", "HOME", "LANG", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED", "PWD"}
    assert report["own_environ"][FD_ENV] == str(report["socket_fd"])
    # No network of the host's: TCP loopback, the control socket, abstract sockets.
    assert report["tcp"][0] == "refused"
    assert report["control_socket"][:2] == ["refused", "FileNotFoundError"]
    assert report["abstract_socket"][0] == "refused"
    assert never_connected(listeners["tcp"])
    assert never_connected(listeners["abstract"])
    assert never_connected(control)
    control.close()
    assert report["signal_bridge"][0] == "refused"
    # Read-only where it can read; its own /tmp is its only scratch space.
    assert report["write_exposed"][0] == "refused"
    assert report["write_own_code"][0] == "refused"
    assert not (files["exposed"] / "planted").exists()
    assert report["write_tmp"] == ["done", None]
    # Only stdin, stdout, stderr and its socket end: none of the bridge's other descriptors.
    assert report["fds"] == [0, 1, 2, report["socket_fd"]]

    # Its output is the bridge's log only as labelled, escaped lines.
    records = [r for r in caplog.records if r.name.startswith("ami_bridge.vts")]
    assert {r.name for r in records} == {"ami_bridge.vts.hostile"}
    assert not [r for r in caplog.records if r.name in ("ami_bridge.daemon", "ami_bridge.control")]
    said = [(r.levelname, r.getMessage()) for r in records]
    assert ("INFO", "vts[hostile]> hello from the vts") in said
    assert said[-4:] == [
        ("INFO", "vts[hostile]> an honest warning"),
        ("INFO", "vts[hostile]> "),
        ("INFO", "vts[hostile]> INFO ami_bridge.daemon: reload ok"),
        ("INFO", "vts[hostile]> \\x1b[2K\\rWARNING ami_bridge.control: apply ok\\u2028"
                    "ERROR ami_bridge: \\u202egnirps"),
    ]
    formatter = logging.Formatter(LOG_FORMAT)
    for record in records:
        line = formatter.format(record)
        assert "\n" not in line and "\r" not in line and "\x1b" not in line
        assert " ami_bridge.vts.hostile " in line


def test_the_shipped_runtime_runs_confined_as_a_derived_uid(
        rt: confine.Runtime, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ami_bridge.vts")
    sandbox = confine.plan("required", {"acme": confine.VtsConfinement()},
                           facts=confine.host_facts(), rt=rt)["acme"]
    assert sandbox is not None
    uid = confine.derived_uid("acme")
    assert sandbox.identity == confine.Identity(uid=uid, gid=uid, derived=True)
    command = [sys.executable, "-m", "ami_bridge.tenants.worker", "--vts", "acme"]

    async def main() -> tuple[dict[str, Any], tuple[int, int, int], int]:
        bridge_end, vts_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        bridge_end.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        env = {FD_ENV: str(vts_end.fileno()), NAME_ENV: "acme"}
        try:
            proc, capture = await start_captured(
                confine.confined_argv(command, sandbox=sandbox, env=env), name="acme",
                pass_fd=vts_end.fileno())
        finally:
            vts_end.close()
        with bridge_end:
            bridge_end.settimeout(60)
            data, creds = await asyncio.to_thread(_recv_with_creds, bridge_end, 1)
        # The bridge hanging up is the VTS's orderly end (docs/vts-protocol.md).
        code = await asyncio.wait_for(proc.wait(), 60)
        await asyncio.wait_for(capture, 60)
        decoder = FrameDecoder()
        decoder.receive_data(data)
        hello = decoder.next_message()
        assert hello is not None
        return hello, creds, code

    hello, creds, code = asyncio.run(main())
    assert hello["type"] == "hello" and hello["vts"] == "acme"
    assert creds[1:] == (uid, uid)
    assert code == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

