"""Signed node-to-node requests: who may ask a node to rewrite its dialplan.

A request between the nodes of a cluster carries two headers: the sender's wall-clock
time (`TIME_HEADER`, whole seconds) and `SIGNATURE_HEADER`, the hex HMAC-SHA256, keyed
with the secret every node shares (`[cluster] secret_file`), of the time, the method,
the path and the body. `verify` refuses, with a reason for the log and the answer, a
request without them, with a signature that does not match (compared in constant time),
with a time further than `MAX_SKEW_SECONDS` from the receiver's, or one it has already
accepted (a replay: `ReplayGuard` remembers the signatures it accepted for as long as
their time is acceptable, so a captured request cannot be sent again). Pure: the clock is
passed in; no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict

TIME_HEADER = "X-Ami-Bridge-Time"
SIGNATURE_HEADER = "X-Ami-Bridge-Signature"
# How far a request's time may be from the receiver's clock. Nodes keep time by NTP
# (milliseconds apart); the margin covers a slow hop and the whole-second resolution.
MAX_SKEW_SECONDS = 30.0
# Signatures remembered against replays. An apply sends 4 requests per node; 10,000 in
# one 60 s window is far beyond any real use; past it the oldest are forgotten first,
# and a forgotten one is still refused once its time is out of the window.
MAX_REMEMBERED = 10_000


def sign(secret: str, *, timestamp: int, method: str, path: str, body: bytes) -> str:
    message = f"{timestamp}\n{method.upper()}\n{path}\n".encode("ascii") + body
    return hmac.new(secret.encode("ascii"), message, hashlib.sha256).hexdigest()


def headers(secret: str, *, now: float, method: str, path: str, body: bytes) -> dict[str, str]:
    """The headers that make a request acceptable to the other nodes."""
    timestamp = int(now)
    return {TIME_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(secret, timestamp=timestamp, method=method, path=path,
                                   body=body)}


class ReplayGuard:
    """The signatures accepted within the skew window (per receiving node)."""

    def __init__(self, *, window: float = 2 * MAX_SKEW_SECONDS,
                 capacity: int = MAX_REMEMBERED) -> None:
        self._window = window
        self._capacity = capacity
        self._seen: OrderedDict[str, float] = OrderedDict()  # signature -> accepted at

    def seen(self, signature: str, now: float) -> bool:
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if now - at <= self._window and len(self._seen) < self._capacity:
                break
            del self._seen[oldest]
        return signature in self._seen

    def remember(self, signature: str, now: float) -> None:
        self._seen[signature] = now


def verify(secret: str, *, method: str, path: str, body: bytes, timestamp: str | None,
           signature: str | None, now: float, guard: ReplayGuard) -> str | None:
    """None: accepted (and remembered); otherwise why the request is refused."""
    if not timestamp or not signature:
        return f"unsigned request: {TIME_HEADER} and {SIGNATURE_HEADER} are required"
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return f"{TIME_HEADER} must be whole seconds since the epoch"
    late = now - int(timestamp)
    if abs(late) > MAX_SKEW_SECONDS:
        return (f"request time {timestamp} is {abs(late):.0f} s "
                f"{'behind' if late > 0 else 'ahead of'} this node's clock (at most "
                f"{MAX_SKEW_SECONDS:g} s: a replay, or clocks out of step)")
    expected = sign(secret, timestamp=int(timestamp), method=method, path=path, body=body)
    if not hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii", "replace")):
        return "signature does not match (is [cluster] secret_file the same on every node?)"
    if guard.seen(signature, now):
        return "replayed request: this signature was already accepted"
    guard.remember(signature, now)
    return None
