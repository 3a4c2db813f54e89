"""What the FastAGI listener accepts: from whom, how many at once, and for how long.

`ListenerPolicy` is the typed shape of those settings (loaded from `[bridge]` in the
bridge config, defaults below). The pure pieces the asyncio server applies:
`ListenerPolicy.admit(address)` (the peer allow-list, decided before any byte of the
environment is read), `PeerSessions` (concurrent sessions per peer address, over the cap
a connection is closed at once) and `SessionDeadlines` (the environment, per-reply and
overall deadlines of one session, with `now` passed in so they are tested without
sleeping). This module does no I/O and reads no clock.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Asterisk writes the whole environment right after connecting (res_agi's setup_env,
# one burst); a peer that has not finished it in this time is not Asterisk or is stuck.
ENVIRONMENT_TIMEOUT = 10.0
# Asterisk answers MSet, ANSWER and the music-on-hold commands at once; Playback and
# GET DATA answer when the prompt (and the digit timeout) ends. Tenant prompts are
# short announcements; 30 s is several of them and still reclaims a peer that never
# answers well before it can hold many descriptors.
REPLY_TIMEOUT = 30.0
# A route request lasts the venue's router_timeout (2 s by default) plus the answer; a
# treatment counts against router_timeout. Two minutes is far above any real session.
SESSION_TIMEOUT = 120.0
# Real Asterisk opens one session per call waiting in a venue: measured knee 300 calls/s
# (DESIGN.md 6) x router_timeout 2 s = 600 at the worst moment. 1000 leaves margin and
# stays under a typical descriptor limit (`ulimit -n` 1024 is raised at start, see
# ami_bridge.agi.server.ensure_descriptors).
MAX_SESSIONS_PER_PEER = 1000


def is_loopback(host: str) -> bool:
    """Whether a listen address (or peer address) is on the loopback interface only.
    A host name other than `localhost` is not: what it resolves to can change."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return _address(host).is_loopback
    except ValueError:
        return False


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IP address, with IPv4-mapped IPv6 (`::ffff:10.0.0.5`, seen on a dual-stack
    listener) taken as the IPv4 address it maps, and any IPv6 zone dropped."""
    address = ipaddress.ip_address(text.partition("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class ListenerPolicy:
    environment_timeout: float = ENVIRONMENT_TIMEOUT
    reply_timeout: float = REPLY_TIMEOUT
    session_timeout: float = SESSION_TIMEOUT
    max_sessions_per_peer: int = MAX_SESSIONS_PER_PEER
    # Peers that may open a session besides loopback ones (addresses or networks).
    allowed_peers: tuple[IpNetwork, ...] = ()
    # Loopback peers are always allowed when the listener is on loopback; a listener on
    # another address admits them only through `allowed_peers`.
    loopback_allowed: bool = True

    def admit(self, peer: str) -> str | None:
        """The address a connection from `peer` counts its sessions under (IPv4-mapped
        IPv6 as IPv4), or None when that peer may not send an environment."""
        try:
            address = _address(peer)
        except ValueError:
            return None  # not an IP peer (a Unix socket never reaches here)
        if self.loopback_allowed and address.is_loopback:
            return str(address)
        for network in self.allowed_peers:
            if network.version == address.version and address in network:
                return str(address)
        return None

    def allows(self, peer: str) -> bool:
        return self.admit(peer) is not None


class PeerSessions:
    """Open sessions per peer address, capped. Entries are dropped at zero, so the table
    holds at most the number of open connections."""

    def __init__(self, cap: int) -> None:
        if cap < 1:
            raise ValueError(f"session cap must be >= 1, got {cap}")
        self.cap = cap
        self._open: dict[str, int] = {}

    def open(self, peer: str) -> bool:
        """Count a new session from `peer`; False (and not counted) when over the cap."""
        count = self._open.get(peer, 0)
        if count >= self.cap:
            return False
        self._open[peer] = count + 1
        return True

    def close(self, peer: str) -> None:
        count = self._open.get(peer, 0)
        if count <= 1:
            self._open.pop(peer, None)
        else:
            self._open[peer] = count - 1

    def count(self, peer: str) -> int:
        return self._open.get(peer, 0)

    def total(self) -> int:
        """Open sessions from every peer (a stopping bridge waits for them to end)."""
        return sum(self._open.values())


class Deadline(enum.Enum):
    ENVIRONMENT = "environment"
    REPLY = "reply"
    SESSION = "session"

    # Members are singletons compared by identity: hash them so too. Enum's own __hash__
    # is Python code hashing the name, run for each of the ~5 dict operations per session.
    __hash__ = object.__hash__


class SessionDeadlines:
    """The deadlines of one session. The glue arms one timer at `due()` and, when it
    fires, asks `expired(now)`; every change that moves `due()` re-arms it."""

    def __init__(self, policy: ListenerPolicy, now: float) -> None:
        self._policy = policy
        self._ends: dict[Deadline, float] = {
            Deadline.SESSION: now + policy.session_timeout,
            Deadline.ENVIRONMENT: now + policy.environment_timeout,
        }

    def environment_received(self) -> None:
        self._ends.pop(Deadline.ENVIRONMENT, None)

    def command_sent(self, now: float) -> None:
        self._ends[Deadline.REPLY] = now + self._policy.reply_timeout

    def reply_received(self) -> None:
        self._ends.pop(Deadline.REPLY, None)

    def due(self) -> float:
        """When the earliest deadline passes."""
        return min(self._ends.values())

    def expired(self, now: float) -> Deadline | None:
        """The deadline that has passed at `now` (the earliest), or None."""
        deadline = min(self._ends, key=self._ends.__getitem__)
        return deadline if now >= self._ends[deadline] else None

    def limit(self, deadline: Deadline) -> float:
        """The configured length of a deadline, in seconds (for log lines)."""
        return {Deadline.ENVIRONMENT: self._policy.environment_timeout,
                Deadline.REPLY: self._policy.reply_timeout,
                Deadline.SESSION: self._policy.session_timeout}[deadline]
