"""ARI events as the ARI driver needs them: pure parsing, no I/O.

Contract. `parse(text)` turns one ARI WebSocket message (a JSON object) into one of
the frozen events below, or None for anything the driver does not act on (other event
types, a message that is not what ARI sends). `StasisStart.env` is the same mapping a
FastAGI session gives the routing core (`agi_context`, `agi_extension`,
`agi_callerid`, `agi_calleridname`, `agi_uniqueid`, `agi_channel`, `agi_language`,
`agi_priority`, and the Stasis arguments as `agi_arg_1`... in the order of the
dialplan contract's ROUTE_ARGS), so `Intermediary.route_request` and everything after
it cannot tell the drivers apart. Values are taken as ARI sends them, JSON-decoded:
a caller name with a newline or a quote is just a string here (nothing in the driver
writes caller data back to Asterisk; the routing core cuts each field short). A
channel's DNID is not in ARI's channel model, so `agi_dnid` is absent ("unknown").
No asyncio, socket or logging here (tests/unit/test_core_purity.py keeps it so).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

# A hostile caller name can make a StasisStart large (a SIP From display name is not
# bounded by Asterisk below its own 64 KB message buffers); 1 MiB bounds one message
# with room to spare and is what the driver gives aiohttp as max_msg_size.
MAX_MESSAGE_BYTES = 1 << 20
# ARI channel ids are Asterisk unique ids (`1795965255.3`) unless an originator chose
# one; the driver puts them in URL paths, so anything odd is refused here.
MAX_ID_CHARS = 128
# Stasis() arguments the driver reads: the route arguments; more are ignored.
MAX_ARGS = 8

_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
DTMF_DIGITS = frozenset("0123456789*#ABCD")

# Why a channel stopped waiting: it left the application or is hanging up.
GONE_EVENTS = frozenset({"StasisEnd", "ChannelHangupRequest", "ChannelDestroyed"})


@dataclass(frozen=True)
class StasisStart:
    channel_id: str
    env: Mapping[str, str]


@dataclass(frozen=True)
class ChannelGone:
    channel_id: str
    why: str  # the ARI event type (GONE_EVENTS)


@dataclass(frozen=True)
class Dtmf:
    channel_id: str
    digit: str


@dataclass(frozen=True)
class PlaybackFinished:
    playback_id: str


AriEvent = StasisStart | ChannelGone | Dtmf | PlaybackFinished


def is_safe_id(value: object) -> bool:
    """An ARI id the driver may put in a URL path."""
    return (isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS
            and all(ch in _ID_CHARS for ch in value))


def decode(text: str | bytes) -> dict[str, Any] | None:
    """One WebSocket message -> its JSON object, or None if it is not one."""
    try:
        message = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return None
    return message if isinstance(message, dict) else None


def parse(text: str | bytes) -> AriEvent | None:
    """One WebSocket message -> the event the driver acts on, or None."""
    message = decode(text)
    return None if message is None else parse_message(message)


def parse_message(message: Mapping[str, Any]) -> AriEvent | None:
    """A decoded message (`decode`) -> the event the driver acts on, or None."""
    kind = message.get("type")
    if kind == "PlaybackFinished":
        playback = message.get("playback")
        pid = playback.get("id") if isinstance(playback, dict) else None
        return PlaybackFinished(pid) if isinstance(pid, str) and is_safe_id(pid) else None
    channel = message.get("channel")
    if not isinstance(channel, dict) or not is_safe_id(channel.get("id")):
        return None
    cid: str = channel["id"]
    if kind == "StasisStart":
        return StasisStart(cid, environment(channel, message.get("args")))
    if kind in GONE_EVENTS:
        return ChannelGone(cid, kind)
    if kind == "ChannelDtmfReceived":
        digit = message.get("digit")
        return Dtmf(cid, digit) if isinstance(digit, str) and digit in DTMF_DIGITS else None
    return None


def environment(channel: Mapping[str, Any], args: object) -> Mapping[str, str]:
    """The AGI-style environment of a channel entering the application."""
    caller = _table(channel.get("caller"))
    dialplan = _table(channel.get("dialplan"))
    env = {
        "agi_channel": _text(channel.get("name")),
        "agi_uniqueid": _text(channel.get("id")),
        "agi_language": _text(channel.get("language")),
        "agi_callerid": _text(caller.get("number")),
        "agi_calleridname": _text(caller.get("name")),
        "agi_context": _text(dialplan.get("context")),
        "agi_extension": _text(dialplan.get("exten")),
        "agi_priority": _text(dialplan.get("priority")),
    }
    if isinstance(args, list):
        for index, value in enumerate(args[:MAX_ARGS], start=1):
            env[f"agi_arg_{index}"] = _text(value)
    return MappingProxyType(env)


def _table(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str:
    """A JSON scalar as the string AGI would give; anything else is empty."""
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, str | int):
        return str(value)
    return ""
