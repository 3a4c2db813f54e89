"""Following test calls through AMI events: where each one rang, and how fast.

Contract. A `Follower` is fed AMI events as (name, headers, now) and knows nothing of
sockets or clocks (the glue passes the arrival time). A test call is recognised by its
first channel (Uniqueid = Linkedid) whose CallerIDName is one of the run's markers; from
then on every DialBegin of that call (same Linkedid, on the caller's or the callee's
side) is the call ringing somewhere: the first one whose destination is not a Local/
channel gives the device (DestChannel without its "-0000002a" sequence suffix), which is
also how queue members show. A call that ends (Hangup of its first channel) without a
dial was refused: Asterisk's hang-up cause 17 is a rejection as busy, 34 as congestion.
Latency is from the call's first channel to its first dial (or to its end, refused).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace

from ami_bridge.calltest.cases import REJECT

# Asterisk hang-up causes (causes.h) that the rendered venue's Busy() / Congestion() set.
CAUSE_BUSY = "17"
CAUSE_CONGESTION = "34"
_REJECT_CAUSES = {CAUSE_BUSY: "busy", CAUSE_CONGESTION: "congestion"}
# "PJSIP/acme-agent-0000002a": a channel is its device plus a hex sequence number.
_CHANNEL_SUFFIX_RE = re.compile(r"-[0-9a-f]{8}$")
LOCAL_PREFIX = "Local/"


def device_of_channel(channel: str) -> str:
    return _CHANNEL_SUFFIX_RE.sub("", channel)


@dataclass(frozen=True)
class Observation:
    """What AMI showed of one test call (times in the follower's clock, seconds)."""

    marker: str
    entered_at: float
    device: str = ""  # where it first rang; "" : no dial seen
    dialled_at: float | None = None
    ended_at: float | None = None
    cause: str = ""  # Asterisk's hang-up cause of the caller's channel

    @property
    def actual(self) -> str:
        """The destination as the cases spell it: a device, "reject:busy", or a note."""
        if self.device:
            return self.device
        if self.ended_at is None:
            return "(no dial seen)"
        reject = _REJECT_CAUSES.get(self.cause)
        return REJECT + reject if reject else f"(ended, cause {self.cause or '?'}, no dial)"

    @property
    def latency(self) -> float | None:
        end = self.dialled_at if self.device else (
            self.ended_at if self.cause in _REJECT_CAUSES else None)
        return None if end is None else end - self.entered_at


class Follower:
    def __init__(self, markers: Collection[str]) -> None:
        self._markers = frozenset(markers)
        self._by_linkedid: dict[str, str] = {}  # linkedid -> marker
        self._calls: dict[str, Observation] = {}  # marker -> what we saw

    def feed(self, name: str, headers: Mapping[str, str], now: float) -> None:
        if name == "Newchannel":
            self._newchannel(headers, now)
        elif name == "DialBegin":
            self._dial(headers, now)
        elif name == "Hangup":
            self._hangup(headers, now)

    def observation(self, marker: str) -> Observation | None:
        return self._calls.get(marker)

    def ended(self) -> set[str]:
        """Markers of the calls seen entering and since ended."""
        return {m for m, seen in self._calls.items() if seen.ended_at is not None}

    def seen(self) -> set[str]:
        return set(self._calls)

    def _newchannel(self, headers: Mapping[str, str], now: float) -> None:
        marker = headers.get("CallerIDName", "")
        uniqueid = headers.get("Uniqueid", "")
        if marker not in self._markers or marker in self._calls or not uniqueid \
                or headers.get("Linkedid", uniqueid) != uniqueid:
            return
        self._by_linkedid[uniqueid] = marker
        self._calls[marker] = Observation(marker=marker, entered_at=now)

    def _dial(self, headers: Mapping[str, str], now: float) -> None:
        marker = self._by_linkedid.get(headers.get("Linkedid", "")) \
            or self._by_linkedid.get(headers.get("DestLinkedid", ""))
        dest = headers.get("DestChannel", "")
        if marker is None or not dest or dest.startswith(LOCAL_PREFIX):
            return
        seen = self._calls[marker]
        if not seen.device:
            self._calls[marker] = replace(seen, device=device_of_channel(dest),
                                           dialled_at=now)

    def _hangup(self, headers: Mapping[str, str], now: float) -> None:
        uniqueid = headers.get("Uniqueid", "")
        marker = self._by_linkedid.get(uniqueid)
        if marker is None or headers.get("Linkedid", uniqueid) != uniqueid:
            return  # not a test call's first channel
        seen = self._calls[marker]
        if seen.ended_at is None:
            self._calls[marker] = replace(seen, ended_at=now, cause=headers.get("Cause", ""))


def percentile(values: Collection[float], fraction: float) -> float:
    """Nearest-rank percentile (fraction in (0, 1]) of a non-empty collection."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    # round(): 0.9 * 10 is 9.000000000000002 in floating point, whose ceiling is 10.
    rank = math.ceil(round(fraction * len(ordered), 9))
    return ordered[min(max(rank, 1), len(ordered)) - 1]
