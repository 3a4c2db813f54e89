"""A tenant's VTS program, hostile, started by the real daemon (security issue, property
3): everything it tries against the bridge fails, and it learns nothing of the bridge's
config, secrets or environment. Its findings come back through its own output, which
the bridge captures under the VTS's own label (a forged bridge line arrives escaped)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import sys
from pathlib import Path

import pytest

from ami_bridge import config as config_mod
from ami_bridge.daemon import Bridge

HOSTILE = r'''
import json, os, socket, sys
cfg, secret_file, control, port, bridge_pid = sys.argv[1:6]
tried = {}
def attempt(name, fn):
    try:
        tried[name] = "ok: " + str(fn())[:60]
    except Exception as exc:
        tried[name] = "refused: " + type(exc).__name__
attempt("read config", lambda: open(cfg).read())
attempt("read secret", lambda: open(secret_file).read())
attempt("bridge environ", lambda: open(f"/proc/{bridge_pid}/environ", "rb").read())
def control_socket():
    s = socket.socket(socket.AF_UNIX); s.settimeout(2); s.connect(control); return "connected"
attempt("control socket", control_socket)
def fastagi():
    s = socket.create_connection(("127.0.0.1", int(port)), timeout=2); return "connected"
attempt("fastagi port", fastagi)
attempt("signal bridge", lambda: os.kill(int(bridge_pid), 0))
tried["uid"] = os.getuid()
tried["fds"] = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
tried["env secret"] = [k for k in os.environ if "SECRET" in k or "AMI" in k and "VTS" not in k]
print("HOSTILE " + json.dumps(tried), flush=True)
print("\n2026-11-29 INFO ami_bridge.daemon: reload ok", flush=True)
import time; time.sleep(60)
'''


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_a_hostile_vts_reaches_nothing_of_the_bridge(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    code = tmp_path / "code"
    code.mkdir(mode=0o755)
    tmp_path.chmod(0o755)  # the VTS may read its script, never the config beside it
    (code / "hostile.py").write_text(HOSTILE)
    secret = tmp_path / "agi.secret"
    secret.write_text(secrets.token_urlsafe(24))
    secret.chmod(0o600)
    port, path = _port(), tmp_path / "bridge.toml"
    control = tmp_path / "control.sock"
    path.write_text(f"""
[bridge]
agi_listen = "127.0.0.1:{port}"
control_socket = "{control}"
agi_secret_file = "{secret}"
[vts.evil]
command = ["{sys.executable}", "{code / 'hostile.py'}", "{path}", "{secret}", "{control}",
           "{port}", "{os.getpid()}"]
read_only_paths = ["{code}"]
[tenants.evil]
targets = ["1001"]
[tenants.evil.venues.evil-venue]
vts = "evil"
""")
    path.chmod(0o600)

    async def main() -> dict[str, object]:
        bridge = Bridge(config_mod.load(path))
        await bridge.start()
        try:
            for _ in range(200):
                found = [r.getMessage() for r in caplog.records if "HOSTILE " in r.getMessage()]
                if found:
                    await asyncio.sleep(0.2)  # the forged line that follows
                    report: dict[str, object] = json.loads(found[0].split("HOSTILE ", 1)[1])
                    return report
                await asyncio.sleep(0.05)
            raise AssertionError("the hostile VTS never reported")
        finally:
            await bridge.stop()

    with caplog.at_level(logging.INFO):
        report = asyncio.run(main())
    for attack in ("read config", "read secret", "bridge environ", "control socket",
                   "fastagi port", "signal bridge"):
        assert str(report[attack]).startswith("refused"), (attack, report[attack])
    assert report["uid"] != 0 and report["uid"] != os.getuid()
    assert report["env secret"] == []
    assert len(report["fds"]) <= 5  # type: ignore[arg-type]  # 0, 1, 2, its socket, listdir's
    # Its output is labelled as the VTS's, and a line posing as the bridge is not one.
    forged = [r for r in caplog.records if "reload ok" in r.getMessage()]
    assert forged and all(r.name == "ami_bridge.vts.evil" for r in forged)
    assert not any(r.name == "ami_bridge.daemon" and "reload ok" in r.getMessage()
                   for r in caplog.records)
