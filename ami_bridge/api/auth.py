"""Who is asking: passwords, session tokens, the operator token, the login throttle.

Passwords are kept as argon2id hashes (argon2-cffi's `PasswordHasher`: memory-hard, and
its verify compares in constant time). A session token is 32 random bytes
(`secrets.token_urlsafe`) given to the client once; the store keeps only its SHA-256, so
a copy of the store logs nobody in. The operator's token is compared with
`hmac.compare_digest`. `LoginThrottle` counts failed logins per key (a tenant's user, a
source address) in a sliding window and says how long a key must wait; it is pure and
takes `now`, like `ami_bridge.ratelimit`, whose admission counter it does not reuse
because a login must be refused *before* it is tried and told when to come back.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass

TOKEN_BYTES = 32  # 256 bits: RFC 6750 leaves the size to us; 128 bits is the usual floor
# Five wrong passwords a minute per user and per address: a person mistyping is never
# held up, a guesser gets 7,200 tries a day per user, far below any 10-character
# password's space.
LOGIN_FAILURES = 5
LOGIN_WINDOW = 60.0
# Keys remembered at once; an address flood must not grow the table without end.
MAX_THROTTLE_KEYS = 4096


@dataclass(frozen=True)
class Principal:
    """The caller of one request: a tenant's user (maybe its admin) or the operator."""

    tenant: str = ""
    user_id: str = ""
    admin: bool = False
    operator: bool = False
    token_hash: str = ""


OPERATOR = Principal(operator=True)


def new_token() -> tuple[str, str]:
    """A fresh session token and the hash the store keeps of it."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def is_operator(token: str, operator_token: str | None) -> bool:
    if not operator_token:
        return False
    return hmac.compare_digest(token.encode("utf-8", "surrogateescape"),
                               operator_token.encode("utf-8"))


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 256:
        return None
    return token


class LoginThrottle:
    """At most `failures` failed logins per key within `window` seconds."""

    def __init__(self, *, failures: int = LOGIN_FAILURES, window: float = LOGIN_WINDOW,
                 max_keys: int = MAX_THROTTLE_KEYS) -> None:
        self.failures = failures
        self.window = window
        self._max_keys = max_keys
        self._seen: dict[Hashable, deque[float]] = {}

    def retry_after(self, now: float, key: Hashable) -> float:
        """0 when the key may try now, else the seconds until it may."""
        times = self._prune(now, key)
        if times is None or len(times) < self.failures:
            return 0.0
        return max(times[0] + self.window - now, 0.0)

    def failed(self, now: float, key: Hashable) -> None:
        times = self._prune(now, key)
        if times is None:
            self._make_room(now)
            times = self._seen[key] = deque()
        times.append(now)

    def succeeded(self, key: Hashable) -> None:
        self._seen.pop(key, None)

    def _prune(self, now: float, key: Hashable) -> deque[float] | None:
        times = self._seen.get(key)
        if times is None:
            return None
        while times and (now - times[0] >= self.window or times[0] > now):
            times.popleft()  # a clock that went backwards forgets rather than locks out
        return times

    def _make_room(self, now: float) -> None:
        if len(self._seen) < self._max_keys:
            return
        for key in [k for k, t in self._seen.items() if not t or now - t[-1] >= self.window]:
            del self._seen[key]
        while len(self._seen) >= self._max_keys:
            del self._seen[next(iter(self._seen))]  # insertion order: the oldest

    def __len__(self) -> int:
        return len(self._seen)
