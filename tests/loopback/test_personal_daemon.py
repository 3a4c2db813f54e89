"""The daemon killed with SIGKILL in the middle of a stream of rule writes: after a
restart every portion is an old or the new version, never a broken or half-written one,
and no write the API acknowledged is lost. On SQLite and on a real PostgreSQL.

The bridge runs as a real subprocess (`python -m ami_bridge run`) with its HTTP API;
writers PUT portions over HTTP as fast as they can, each body saying which version it
becomes (`vip` holds the version's digits), so the stored body can be checked against
the stored version. No Asterisk: route requests are not what is tested here.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ami_bridge.api.client import ApiFailure, Client
from harness.bridge import BridgeProcess
from harness.postgres import PostgresServer

USERS = ("u0", "u1", "u2")
KILLS = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(tmp_path: Path, store: str) -> tuple[Path, str, str]:
    port = free_port()
    token = secrets.token_urlsafe(32)
    token_file = tmp_path / "operator.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    path = tmp_path / "bridge.toml"
    path.write_text(f"""
[bridge]
agi_listen = "127.0.0.1:{free_port()}"
control_socket = "{tmp_path}/control.sock"

[api]
listen = "127.0.0.1:{port}"
operator_token_file = "{token_file}"

{store}

[vts.acme]

[tenants.acme]
timezone = "Europe/Berlin"

[tenants.acme.extensions]
1011 = "PJSIP/acme-desk1"
1012 = "PJSIP/acme-desk2"
1013 = "PJSIP/acme-desk3"
operator = "PJSIP/acme-operator"

[tenants.acme.personal]
context = "acme-personal"
vts = "acme"

[tenants.acme.personal.numbers]
2101 = "1011"
2102 = "1012"
2103 = "1013"
""")
    return path, f"http://127.0.0.1:{port}", token


def body(version: int) -> dict[str, object]:
    """The portion that becomes `version`: it says so in its VIP list and its rule."""
    return {"version": version - 1, "vip": [f"+49{version:06d}"],
            "rules": [{"name": f"v{version}", "action": "dnd"}]}


def consistent(portion: dict[str, object]) -> bool:
    version = int(portion["version"])  # type: ignore[call-overload]
    if version == 0:
        return portion["vip"] == [] and portion["rules"] == []
    rules = portion["rules"]
    return (portion["vip"] == [f"+49{version:06d}"] and isinstance(rules, list)
            and [r["name"] for r in rules] == [f"v{version}"])


@pytest.fixture(params=["sqlite", "postgresql"])
def store_section(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f'[store]\npath = "{tmp_path}/state/personal.sqlite3"'
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    dsn = server.create_database()
    yield f"[store]\nbackend = \"postgresql\"\ndsn = {json.dumps(dsn)}"


def test_sigkill_during_rule_writes_leaves_each_portion_whole(
        tmp_path: Path, store_section: str) -> None:
    config, base, token = write_config(tmp_path, store_section)
    operator = Client(base, token, timeout=5.0)
    acknowledged = dict.fromkeys(USERS, 0)  # the newest version the API said it stored
    rng = random.Random(7)
    with BridgeProcess(config, log_path=tmp_path / "bridge-0.log") as bridge:
        for number, user in zip(("2101", "2102", "2103"), USERS, strict=True):
            operator.call("POST", "/api/v1/tenants/acme/users",
                          {"user_id": user, "number": number})
    for kill in range(KILLS):
        bridge = BridgeProcess(config, log_path=tmp_path / f"bridge-{kill + 1}.log")
        bridge.start()
        try:
            # after a restart: every portion whole, no acknowledged write lost
            for user in USERS:
                portion = operator.call("GET", f"/api/v1/tenants/acme/users/{user}/rules")
                assert consistent(portion), portion
                assert portion["version"] >= acknowledged[user], (user, portion)
                acknowledged[user] = portion["version"]
            stop = threading.Event()

            def writer(user: str, stop: threading.Event = stop) -> None:
                client = Client(base, token, timeout=5.0)
                while not stop.is_set():
                    version = acknowledged[user] + 1
                    try:
                        client.call("PUT", f"/api/v1/tenants/acme/users/{user}/rules",
                                    body(version))
                    except (ApiFailure, OSError):
                        return  # the daemon is gone (or refused): stop writing
                    acknowledged[user] = version

            writers = [threading.Thread(target=writer, args=(u,)) for u in USERS]
            for thread in writers:
                thread.start()
            # let a random number of writes through, then kill in the middle of the stream
            target = sum(acknowledged.values()) + rng.randint(15, 60)
            while sum(acknowledged.values()) < target and all(t.is_alive() for t in writers):
                threading.Event().wait(0.01)
            assert bridge.pid is not None
            os.kill(bridge.pid, signal.SIGKILL)
            stop.set()
            for thread in writers:
                thread.join(10.0)
        finally:
            bridge.stop()
    with BridgeProcess(config, log_path=tmp_path / "bridge-last.log"):
        for user in USERS:
            portion = operator.call("GET", f"/api/v1/tenants/acme/users/{user}/rules")
            assert consistent(portion), portion
            assert portion["version"] >= acknowledged[user] > 0, (user, portion)
