"""The personal router on the real Asterisk 22 with SIPp: users' own rules, changed over
the HTTP API, decide the next call with no Asterisk reload.

Caller (SIPp UAC, endpoint acme-caller or acme-vip) -> acme-personal (rendered from
examples/tenants.d/acme) -> FastAGI -> intermediary (+ the user's portion) -> acme's VTS
(evaluates it) -> Dial of the user's desk phones (SIPp UASes on 5075-5077, extensions
1011-1013), a colleague's, or the mailbox. Where a call went is read at the UASes (and,
for the mailbox, from Asterisk's own channel list), never from the bridge's log.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ami_bridge.api.client import Client
from harness.asterisk import Asterisk
from harness.bridge import BridgeProcess
from harness.sipp import SippStats, SippUas, start_uac

pytestmark = pytest.mark.asterisk
ROOT = Path(__file__).resolve().parents[2]
TENANTS = ROOT / "examples" / "tenants.d"
DESKS = {"1011": 5075, "1012": 5076, "1013": 5077}  # acme's desk phones (pjsip.conf)
PASSWORD = "correct horse battery"
RING_TIME = 20  # examples/tenants.d/acme: [personal] ring_time


def write_config(tmp_path: Path, api_port: int) -> Path:
    token = tmp_path / "operator.token"
    token.write_text(secrets.token_urlsafe(32) + "\n")
    token.chmod(0o600)
    path = tmp_path / "bridge.toml"
    path.write_text(f"""
[bridge]
agi_listen = "127.0.0.1:4573"
control_socket = "{tmp_path}/control.sock"
tenants_dir = "{TENANTS}"

[api]
listen = "127.0.0.1:{api_port}"
operator_token_file = "{token}"

[store]
path = "{tmp_path}/state/personal.sqlite3"

[vts.acme]
[vts.globex]
""")
    return path


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Personal:
    """The running bridge, its API as the operator, and helpers for the tests."""

    def __init__(self, bridge: BridgeProcess, base: str, operator_token: str) -> None:
        self.bridge = bridge
        self.base = base
        self.operator = Client(base, operator_token)

    def create(self, user_id: str, number: str, bindings: list[str]) -> Client:
        self.operator.call("POST", "/api/v1/tenants/acme/users", {
            "user_id": user_id, "number": number, "display_name": user_id.title(),
            "password": PASSWORD, "bindings": bindings})
        answer = Client(self.base).call("POST", "/api/v1/login", {
            "tenant": "acme", "user": user_id, "password": PASSWORD})
        return Client(self.base, answer["token"])

    @staticmethod
    def set_rules(user: Client, rules: list[dict[str, Any]], **lists: list[str]) -> int:
        current = user.call("GET", "/api/v1/me/rules")
        body = {"version": current["version"], "rules": rules, **lists}
        return int(user.call("PUT", "/api/v1/me/rules", body)["version"])


@pytest.fixture
def personal(asterisk: Asterisk, tmp_path: Path) -> Iterator[Personal]:
    port = free_port()
    config = write_config(tmp_path, port)
    with BridgeProcess(config, log_path=tmp_path / "bridge.log") as bridge:
        token = (tmp_path / "operator.token").read_text().strip()
        yield Personal(bridge, f"http://127.0.0.1:{port}", token)


def desk(extension: str, scenario: str = "uas.xml") -> SippUas:
    phone = SippUas(DESKS[extension], f"desk{extension}-{scenario.split('.')[0]}",
                    scenario=scenario)
    phone.start()
    return phone


def call(from_user: str, number: str, *, hold_ms: int = 500, timeout_s: float = 60.0,
         watch: Asterisk | None = None) -> tuple[SippStats, set[str]]:
    """One call; with `watch`, the dialplan applications its channel ran while it lasted
    (sampled from Asterisk's channel list)."""
    uac = start_uac(from_user=from_user, dnis=number, calls=1, rate=1, hold_ms=hold_ms,
                    port=5081, timeout_s=timeout_s)
    seen: set[str] = set()
    done = threading.Event()

    def sample() -> None:
        while watch is not None and not done.is_set():
            for line in watch.rx("core show channels concise").splitlines():
                fields = line.split("!")
                if len(fields) > 5 and fields[1].startswith("acme-"):
                    seen.add(fields[5])
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        return uac.wait(), seen
    finally:
        done.set()
        sampler.join(5.0)


def last_reload(asterisk: Asterisk) -> int:
    """When Asterisk last reloaded, in seconds after its start (uptime minus the time
    since the last reload, read together): changes with any reload of the config."""
    out = asterisk.rx("core show uptime seconds")
    up, since = (re.search(rf"{what}: (\d+)", out) for what in ("System uptime", "Last reload"))
    assert up is not None and since is not None, out
    return int(up.group(1)) - int(since.group(1))


def my_calls(user: Client) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5.0
    while True:  # the bridge writes the trace in batches (within 0.2 s)
        calls = user.call("GET", "/api/v1/me/calls")["calls"]
        if calls or time.monotonic() > deadline:
            return list(calls)
        time.sleep(0.1)


def test_forward_on_no_answer_then_dnd_with_a_vip_take_effect_without_a_reload(
        asterisk: Asterisk, personal: Personal, tmp_path: Path) -> None:
    reloaded = last_reload(asterisk)
    alice = personal.create("alice", "2101", ["1011"])
    personal.create("bob", "2102", ["1012"])
    personal.set_rules(alice, [{"name": "fna", "action": "forward", "on": "no_answer",
                                "after": 5, "target": "extension:1012"}])
    mine, colleague = desk("1011", "uas_noanswer.xml"), desk("1012")
    started = time.monotonic()
    stats, _ = call("acme-caller", "2101")
    elapsed = time.monotonic() - started
    assert (stats.successful, stats.failed) == (1, 0), stats.failure_reasons
    assert mine.stop().successful == 1  # rang, unanswered, cancelled
    assert colleague.stop().successful == 1  # answered the forwarded call
    assert 5.0 <= elapsed < 5.0 + 10.0  # the no-answer time the rule says, not the default

    # The trace says why: the user's rule, and the no-answer that moved the call.
    decisions = sorted(my_calls(alice), key=lambda d: d["request"])
    assert [d["outcome"] for d in decisions] == ["route phones:1011", "route extension:1012"]
    assert decisions[1]["previous"] == "phones:1011 NOANSWER"
    assert "fna" in decisions[1]["rule"]
    out = subprocess.run(
        [sys.executable, "-m", "ami_bridge", "trace", decisions[0]["uniqueid"], "--api",
         personal.base, "--operator-token-file", str(tmp_path / "operator.token"),
         "--tenant", "acme"], capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    assert "fna" in out.stdout and "NOANSWER" in out.stdout, out.stdout

    # Second change: do not disturb, except for a VIP. Rings for the VIP, mailbox for
    # the other caller. Still no reload.
    personal.set_rules(alice, [{"name": "dnd", "action": "dnd"}], vip=["+4930111"])
    mine = desk("1011")
    stats, _ = call("acme-vip", "2101")
    assert (stats.successful, stats.failed) == (1, 0), stats.failure_reasons
    stats, apps = call("acme-caller", "2101", hold_ms=3000, watch=asterisk)
    assert (stats.successful, stats.failed) == (1, 0), stats.failure_reasons
    assert "VoiceMail" in apps, apps
    assert mine.stop().successful == 1  # the VIP's call only
    assert last_reload(asterisk) == reloaded


def test_hot_desking_moves_the_next_call_to_the_new_phone(
        personal: Personal) -> None:
    alice = personal.create("alice", "2101", ["1011"])
    alice.call("PUT", "/api/v1/me/bindings", {"extensions": ["1013"]})
    old, new = desk("1011"), desk("1013")
    stats, _ = call("acme-caller", "2101")
    assert (stats.successful, stats.failed) == (1, 0), stats.failure_reasons
    assert (old.stop().successful, new.stop().successful) == (0, 1)
    assert old.stop().received("INVITE") == 0  # the old phone did not even ring


def test_follow_me_goes_on_after_a_busy_step(personal: Personal) -> None:
    alice = personal.create("alice", "2101", ["1011"])
    personal.set_rules(alice, [{"name": "follow", "action": "follow_me", "steps": [
        {"target": "extension:1012", "ring": 10}, {"target": "extension:1013", "ring": 10}]}])
    busy, second = desk("1012", "uas_busy.xml"), desk("1013")
    stats, _ = call("acme-caller", "2101")
    assert (stats.successful, stats.failed) == (1, 0), stats.failure_reasons
    assert busy.stop().successful == 1  # answered 486
    assert second.stop().successful == 1


def test_with_the_bridge_stopped_the_users_phone_rings_then_voicemail(
        asterisk: Asterisk, personal: Personal) -> None:
    personal.create("alice", "2101", ["1011"])
    assert personal.bridge.stop() == 0
    mine = desk("1011", "uas_noanswer.xml")
    stats, apps = call("acme-caller", "2101", hold_ms=3000, timeout_s=RING_TIME + 30,
                       watch=asterisk)
    assert (stats.successful, stats.failed) == (1, 0), stats.failure_reasons
    assert mine.stop().successful == 1  # the home phone rang, unanswered
    assert "VoiceMail" in apps, apps
    assert asterisk.channel_count() == 0


def test_the_daemon_reports_the_store_and_the_api(personal: Personal) -> None:
    personal.create("alice", "2101", ["1011"])
    status = personal.bridge.status()
    assert status["personal"]["users"] == 1 and status["personal"]["api"] is True
    assert os.path.exists(personal.bridge.config_path.parent / "state" / "personal.sqlite3")
