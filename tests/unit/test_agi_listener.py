"""The FastAGI listener's policy: allow-list, per-peer cap, deadlines, and its config keys.

Pure: `now` is a number. The same properties over real TCP are in
tests/loopback/test_agi_server.py.
"""

from __future__ import annotations

import ast
import ipaddress
from pathlib import Path
from typing import Any

import pytest

from ami_bridge.agi.limits import (
    ENVIRONMENT_TIMEOUT,
    MAX_SESSIONS_PER_PEER,
    REPLY_TIMEOUT,
    SESSION_TIMEOUT,
    Deadline,
    ListenerPolicy,
    PeerSessions,
    SessionDeadlines,
    is_loopback,
)
from ami_bridge.config import ConfigError, parse

ROOT = Path(__file__).resolve().parents[2]
PATH = Path("bridge.toml")


# -- who may connect ------------------------------------------------------------------
@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("0.0.0.0", False), ("::", False), ("10.0.0.1", False),
    ("agi.example.net", False), ("::ffff:127.0.0.1", True),
])
def test_loopback_listen_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_loopback_listener_admits_loopback_peers_only() -> None:
    policy = ListenerPolicy()
    assert policy.allows("127.0.0.1") and policy.allows("::1")
    assert policy.allows("::ffff:127.0.0.1")  # a dual-stack socket's view of IPv4
    assert not policy.allows("10.0.0.5")
    assert not policy.allows("not-an-address")


def test_a_remote_listener_admits_only_the_listed_peers() -> None:
    policy = ListenerPolicy(allowed_peers=(ipaddress.ip_network("10.0.0.5"),
                                           ipaddress.ip_network("fd00::/64")),
                            loopback_allowed=False)
    assert policy.allows("10.0.0.5") and policy.allows("::ffff:10.0.0.5")
    assert policy.allows("fd00::17")
    assert not policy.allows("10.0.0.6")
    assert not policy.allows("127.0.0.1")  # off loopback, loopback must be listed too
    assert not policy.allows("fd01::1")


# -- how many at once -----------------------------------------------------------------
def test_sessions_are_capped_per_peer_and_freed_on_close() -> None:
    sessions = PeerSessions(cap=2)
    assert sessions.open("127.0.0.1") and sessions.open("127.0.0.1")
    assert not sessions.open("127.0.0.1")
    assert sessions.count("127.0.0.1") == 2  # the refused one is not counted
    assert sessions.open("10.0.0.5")  # another peer has its own count
    sessions.close("127.0.0.1")
    assert sessions.open("127.0.0.1")
    for _ in range(3):
        sessions.close("10.0.0.5")  # closing more than opened never goes negative
    assert sessions.count("10.0.0.5") == 0


def test_a_dual_stack_peer_is_counted_under_its_ipv4_address() -> None:
    policy = ListenerPolicy(allowed_peers=(ipaddress.ip_network("10.0.0.0/8"),))
    assert policy.admit("::ffff:10.0.0.5") == policy.admit("10.0.0.5") == "10.0.0.5"
    assert policy.admit("::ffff:127.0.0.1") == "127.0.0.1"
    assert policy.admit("192.0.2.1") is None


# -- for how long ---------------------------------------------------------------------
POLICY = ListenerPolicy(environment_timeout=10.0, reply_timeout=30.0, session_timeout=120.0)


def test_the_environment_deadline_then_the_overall_one() -> None:
    deadlines = SessionDeadlines(POLICY, now=1000.0)
    assert deadlines.due() == 1010.0
    assert deadlines.expired(1009.9) is None
    assert deadlines.expired(1010.0) is Deadline.ENVIRONMENT
    deadlines.environment_received()
    assert deadlines.due() == 1120.0
    assert deadlines.expired(1119.0) is None
    assert deadlines.expired(1120.0) is Deadline.SESSION


def test_each_command_has_its_own_reply_deadline() -> None:
    deadlines = SessionDeadlines(POLICY, now=0.0)
    deadlines.environment_received()
    deadlines.command_sent(now=5.0)
    assert deadlines.due() == 35.0
    assert deadlines.expired(35.0) is Deadline.REPLY
    deadlines.reply_received()
    deadlines.command_sent(now=60.0)  # a treatment, then the answer
    assert deadlines.expired(89.0) is None
    deadlines.reply_received()
    deadlines.command_sent(now=100.0)
    # The overall deadline still holds while a reply is due.
    assert deadlines.due() == 120.0
    assert deadlines.expired(120.0) is Deadline.SESSION
    assert deadlines.limit(Deadline.SESSION) == 120.0


def test_the_limits_module_does_no_io() -> None:
    tree = ast.parse((ROOT / "agi/limits.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    assert not imported & {"time", "asyncio", "socket", "logging"}


# -- the config keys --------------------------------------------------------------------
def bridge(**keys: Any) -> dict[str, Any]:
    return {"bridge": keys}


def error(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse(raw, path=PATH)
    return str(info.value)


def test_defaults_are_the_named_limits() -> None:
    policy = parse({}, path=PATH).agi_policy
    assert policy == ListenerPolicy(environment_timeout=ENVIRONMENT_TIMEOUT,
                                    reply_timeout=REPLY_TIMEOUT, session_timeout=SESSION_TIMEOUT,
                                    max_sessions_per_peer=MAX_SESSIONS_PER_PEER,
                                    allowed_peers=(), loopback_allowed=True)


def test_limits_are_settable() -> None:
    policy = parse(bridge(agi_environment_timeout=2, agi_reply_timeout=5.5,
                          agi_session_timeout=60, agi_max_sessions_per_peer=50),
                   path=PATH).agi_policy
    assert (policy.environment_timeout, policy.reply_timeout, policy.session_timeout,
            policy.max_sessions_per_peer) == (2.0, 5.5, 60.0, 50)


@pytest.mark.parametrize("listen", ["0.0.0.0:4573", "[::]:4573", "10.0.0.1:4573",
                                    "agi.example.net:4573"])
def test_a_listen_address_off_loopback_needs_an_explicit_setting(listen: str) -> None:
    message = error(bridge(agi_listen=listen))
    assert message.startswith(f"{PATH}: bridge.agi_listen: {listen!r} is not a loopback")
    assert "agi_allow_remote = true" in message
    message = error(bridge(agi_listen=listen, agi_allow_remote=True))
    assert message.startswith(f"{PATH}: bridge.agi_allowed_peers: must list")
    assert listen in message


def test_a_remote_listener_with_its_peers() -> None:
    policy = parse(bridge(agi_listen="0.0.0.0:4573", agi_allow_remote=True,
                          agi_allowed_peers=["10.0.0.5", "10.1.0.0/16", "fd00::5"]),
                   path=PATH).agi_policy
    assert not policy.loopback_allowed
    assert policy.allows("10.0.0.5") and policy.allows("10.1.2.3") and policy.allows("fd00::5")
    assert not policy.allows("127.0.0.1") and not policy.allows("10.0.0.6")


@pytest.mark.parametrize(("keys", "where", "value"), [
    ({"agi_allow_remote": "yes"}, "bridge.agi_allow_remote", "'yes'"),
    ({"agi_allowed_peers": "10.0.0.5"}, "bridge.agi_allowed_peers", "'10.0.0.5'"),
    ({"agi_allowed_peers": ["asterisk.local"]}, "bridge.agi_allowed_peers", "'asterisk.local'"),
    ({"agi_allowed_peers": ["10.0.0.5/24"]}, "bridge.agi_allowed_peers", "'10.0.0.5/24'"),
    ({"agi_max_sessions_per_peer": 0}, "bridge.agi_max_sessions_per_peer", "0"),
    ({"agi_reply_timeout": -1}, "bridge.agi_reply_timeout", "-1"),
    ({"agi_environment_timeout": True}, "bridge.agi_environment_timeout", "True"),
    ({"agi_sesion_timeout": 60}, "bridge.agi_sesion_timeout", "unknown key"),
])
def test_bad_values_name_the_file_key_and_value(keys: dict[str, Any], where: str,
                                                value: str) -> None:
    message = error(bridge(**keys))
    assert message.startswith(f"{PATH}: {where}: ")
    assert value in message


def test_a_session_must_outlive_the_longest_router_timeout() -> None:
    raw = {"bridge": {"agi_session_timeout": 30}, "vts": {"acme": {}},
           "tenants": {"acme": {"venues": {"acme-venue": {"vts": "acme",
                                                          "router_timeout": 45}}}}}
    message = error(raw)
    assert message.startswith(f"{PATH}: bridge.agi_session_timeout: 30 s must exceed")
    assert "45 s, venue acme-venue" in message
