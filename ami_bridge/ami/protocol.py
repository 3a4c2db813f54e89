"""Sans-I/O core of one AMI (Asterisk Manager Interface) session, seen from the client.

Contract. Bytes from Asterisk go in with `AmiConnection.receive_data` (b"" means EOF);
messages come out of `next_event` until it returns `NEED_DATA`: first one `Greeting`
(the line "Asterisk Call Manager/x.y.z"), then a `Response` or an `Event` per block, and
`ConnectionClosed` after a clean EOF. A block is "Key: Value" lines ended by an empty
line; CRLF and bare LF are both accepted. Blocks are framed on bytes and decoded only
when complete (UTF-8, undecodable bytes replaced by U+FFFD), so a character split across
TCP segments is never lost. Keys may repeat (ChanVariable, Output) and stay in order in
`fields`; values are kept verbatim (a literal backslash-n stays two characters). Every
buffer has a named bound; crossing it, garbage before the greeting, a line that is not
"Key: Value", or EOF inside a block raises `RemoteProtocolError` quoting the offending
bytes, and the connection stays failed. Follow events of list actions are plain `Event`s
carrying the ActionID; `ListCollector` gathers one list. `encode_action` is the single
door to the AMI wire: it rejects CR, LF and NUL in any value and keys outside a safe
alphabet. No I/O, no logging, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

# A real event is a few hundred bytes; the largest seen in practice are Command output
# and VarSet/UserEvent carrying big variables (a 1 MB event must pass, see the corpus).
# 4 MiB is four times that, and bounds memory per session.
MAX_BLOCK_BYTES = 4 * 1024 * 1024
# One line of a block may be the whole block (one huge value), so a line is bounded only
# by the block. The greeting line is about 30 bytes; 256 stops garbage early.
MAX_GREETING_BYTES = 256
GREETING_PREFIX = b"Asterisk Call Manager/"
# Asterisk reads each action line into a 1025-byte buffer (manager.c, `inbuf`) and drops
# longer lines, and takes at most 128 headers (AST_MAX_MANHEADERS): stay inside both.
MAX_ACTION_LINE_BYTES = 1024
MAX_ACTION_HEADERS = 128
# How many bytes of offending input an error message quotes.
QUOTE_BYTES = 120
# Decoding policy for complete blocks: caller names come from SIP peers and may be
# Latin-1; replacing keeps the block (and the session) alive and the text JSON-safe.
DECODE_ERRORS = "replace"

_BLOCK_END = re.compile(rb"\n\r?\n")
# Action and header names: what Asterisk's own actions use, nothing that could end a
# line or a header name.
_SAFE_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_SAFE_ACTION_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_FORBIDDEN_IN_VALUE = re.compile(r"[\r\n\x00]")
_SUCCESS = frozenset({"success", "goodbye", "follows"})


class RemoteProtocolError(Exception):
    """Asterisk (the remote peer) sent bytes that break the AMI protocol."""

    def __init__(self, message: str, offending: bytes = b"") -> None:
        quoted = offending[:QUOTE_BYTES]
        more = "..." if len(offending) > QUOTE_BYTES else ""
        super().__init__(f"{message}: {quoted!r}{more}" if offending else message)
        self.offending = offending


class LocalProtocolError(ValueError):
    """The bridge tried to send or do something the AMI protocol does not allow."""


Fields = tuple[tuple[str, str], ...]


class _Block:
    """Common accessors for a decoded block; `fields` keeps every pair in wire order.

    The first `get` builds a lower-cased key index of the block once (first occurrence
    wins); blocks nobody asks about never build one.
    """

    fields: Fields

    def index(self) -> dict[str, str]:
        """Lower-cased key -> first value; built on first use and kept with the block."""
        cached: dict[str, str] | None = self.__dict__.get("_index")
        if cached is None:
            cached = {k.lower(): v for k, v in reversed(self.fields)}
            self.__dict__["_index"] = cached  # frozen dataclass: not a field, not compared
        return cached

    def get(self, key: str, default: str | None = None) -> str | None:
        """First value of `key` (case-insensitive, as Asterisk itself matches headers)."""
        return self.index().get(key.lower(), default)

    def get_all(self, key: str) -> list[str]:
        """Every value of a repeated key, in order (ChanVariable, Output, ...)."""
        wanted = key.lower()
        return [v for k, v in self.fields if k.lower() == wanted]

    @property
    def headers(self) -> Mapping[str, str]:
        """Dict view: first value of each key, keys as sent. Use get_all for repeats."""
        view: dict[str, str] = {}
        for k, v in self.fields:
            view.setdefault(k, v)
        return MappingProxyType(view)


@dataclass(frozen=True)
class Greeting:
    version: str  # "x.y.z" from "Asterisk Call Manager/x.y.z"


@dataclass(frozen=True, kw_only=True)
class Response(_Block):
    """`Response: Success|Error|Goodbye|...` block; `fields` includes every line."""

    action_id: str | None
    success: bool
    message: str | None
    fields: Fields


@dataclass(frozen=True, kw_only=True)
class Event(_Block):
    """`Event: Name` block; follow events of a list action carry its ActionID."""

    name: str
    fields: Fields

    @property
    def action_id(self) -> str | None:
        return self.get("ActionID")


@dataclass(frozen=True)
class ConnectionClosed:
    """Asterisk closed the connection cleanly (EOF between blocks)."""


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()

Message = Greeting | Response | Event | ConnectionClosed


def make_response(fields: Fields) -> Response:
    status = fields[0][1] if fields else ""
    pairs = dict(reversed(fields))  # first occurrence wins
    return Response(
        fields=fields,
        action_id=pairs.get("ActionID"),
        success=status.strip().lower() in _SUCCESS,
        message=pairs.get("Message"),
    )


def make_event(fields: Fields) -> Event:
    return Event(fields=fields, name=fields[0][1] if fields else "")


class AmiConnection:
    """Framing and parsing state of one AMI session (client side)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._scan_from = 0  # where the next search for a block end starts
        self._greeted = False
        self._eof = False
        self._error: RemoteProtocolError | None = None

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the socket; b"" means the peer closed it."""
        if self._eof:
            raise LocalProtocolError("receive_data after EOF")
        if data:
            self._buf += data
        else:
            self._eof = True

    def next_event(self) -> Message | _NeedData:
        """The next complete message, or NEED_DATA; raises RemoteProtocolError."""
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except RemoteProtocolError as exc:
            self._error = exc
            raise

    def _next(self) -> Message | _NeedData:
        if not self._greeted:
            return self._greeting()
        while True:
            match = _BLOCK_END.search(self._buf, self._scan_from)
            if match is None:
                return self._incomplete()
            raw = bytes(self._buf[: match.start() + 1])
            del self._buf[: match.end()]
            self._scan_from = 0
            if len(raw) > MAX_BLOCK_BYTES:
                raise RemoteProtocolError(f"block over {MAX_BLOCK_BYTES} bytes", raw)
            if raw.strip(b"\r\n"):
                return self._parse_block(raw)
            # An empty line between blocks: tolerated, Asterisk never sends one.

    def _incomplete(self) -> ConnectionClosed | _NeedData:
        if len(self._buf) > MAX_BLOCK_BYTES:
            raise RemoteProtocolError(
                f"no end of block within {MAX_BLOCK_BYTES} bytes", bytes(self._buf)
            )
        # The terminator is 2-3 bytes; rescanning only the tail keeps byte-by-byte
        # feeding linear instead of quadratic.
        self._scan_from = max(0, len(self._buf) - 2)
        if not self._eof:
            return NEED_DATA
        if self._buf.strip(b"\r\n"):
            raise RemoteProtocolError("EOF in the middle of a block", bytes(self._buf))
        self._buf.clear()
        return ConnectionClosed()

    def _greeting(self) -> Greeting | ConnectionClosed | _NeedData:
        end = self._buf.find(b"\n")
        if end < 0:
            if len(self._buf) > MAX_GREETING_BYTES or (
                not GREETING_PREFIX.startswith(bytes(self._buf[: len(GREETING_PREFIX)]))
            ):
                raise RemoteProtocolError("expected the AMI greeting", bytes(self._buf))
            if self._eof:
                if self._buf:
                    raise RemoteProtocolError("EOF inside the AMI greeting", bytes(self._buf))
                return ConnectionClosed()
            return NEED_DATA
        line = bytes(self._buf[:end]).rstrip(b"\r")
        if end > MAX_GREETING_BYTES or not line.startswith(GREETING_PREFIX):
            raise RemoteProtocolError("expected the AMI greeting", bytes(self._buf[: end + 1]))
        del self._buf[: end + 1]
        self._greeted = True
        version = line[len(GREETING_PREFIX) :].decode("ascii", DECODE_ERRORS).strip()
        return Greeting(version=version)

    def _parse_block(self, raw: bytes) -> Response | Event:
        fields = self._parse_lines(raw.decode("utf-8", DECODE_ERRORS))
        first = fields[0][0].lower()
        if first == "event":
            return Event(fields=fields, name=fields[0][1])
        if first == "response":
            return make_response(fields)
        raise RemoteProtocolError("block starts with neither Response nor Event", raw)

    @staticmethod
    def _parse_lines(text: str) -> Fields:
        pairs: list[tuple[str, str]] = []
        for line in text.split("\n"):
            line = line.removesuffix("\r")
            if not line:
                continue
            key, sep, value = line.partition(":")
            if not sep or not key or key != key.strip():
                raise RemoteProtocolError("line is not 'Key: Value'", line.encode())
            # Asterisk writes "Key: Value"; strip exactly that one space, keep the rest.
            pairs.append((key, value.removeprefix(" ")))
        return tuple(pairs)


@dataclass
class ListCollector:
    """Gathers the answer to one list action (CoreShowChannels, QueueStatus, ...).

    Feed it the Response and Events carrying its ActionID; `feed` returns True when the
    list is complete: an error Response, a Response without `EventList: start`, or the
    event with `EventList: Complete` (e.g. CoreShowChannelsComplete, which is not
    included in `events`).
    """

    action_id: str
    response: Response | None = None
    events: list[Event] = field(default_factory=list)
    complete_event: Event | None = None
    done: bool = False

    def feed(self, message: Response | Event) -> bool:
        if isinstance(message, Response):
            self.response = message
            listing = (message.get("EventList") or "").lower() == "start"
            self.done = not (message.success and listing)
        elif (message.get("EventList") or "").lower() == "complete":
            self.complete_event = message
            self.done = True
        else:
            self.events.append(message)
        return self.done


def _check_value(what: str, value: str) -> None:
    if _FORBIDDEN_IN_VALUE.search(value):
        raise LocalProtocolError(f"{what}: CR, LF or NUL not allowed in {value!r}")


def encode_action(
    name: str,
    action_id: str,
    fields: Mapping[str, str] | Iterable[tuple[str, str]] = (),
) -> bytes:
    """The bytes of one action block; the only way anything reaches the AMI wire.

    `fields` may repeat a key (pass pairs) for actions such as Originate's Variable.
    Rejects keys outside [A-Za-z][A-Za-z0-9_-]*, CR/LF/NUL in any value, a caller-given
    Action or ActionID, and lines or header counts Asterisk would truncate.
    """
    if not _SAFE_KEY.fullmatch(name):
        raise LocalProtocolError(f"bad action name {name!r}")
    if not _SAFE_ACTION_ID.fullmatch(action_id):
        raise LocalProtocolError(f"bad ActionID {action_id!r}")
    pairs = list(fields.items()) if isinstance(fields, Mapping) else list(fields)
    if len(pairs) + 2 > MAX_ACTION_HEADERS:
        raise LocalProtocolError(f"{name}: more than {MAX_ACTION_HEADERS} headers")
    lines = [f"Action: {name}", f"ActionID: {action_id}"]
    for key, value in pairs:
        if not isinstance(key, str) or not _SAFE_KEY.fullmatch(key):
            raise LocalProtocolError(f"{name}: bad header name {key!r}")
        if key.lower() in ("action", "actionid"):
            raise LocalProtocolError(f"{name}: {key} is set by encode_action")
        if not isinstance(value, str):
            raise LocalProtocolError(f"{name}: {key} value must be str, got {value!r}")
        _check_value(f"{name}: {key}", value)
        lines.append(f"{key}: {value}")
    out = []
    for line in lines:
        data = line.encode("utf-8")
        if len(data) + 2 > MAX_ACTION_LINE_BYTES:
            raise LocalProtocolError(
                f"{name}: line over {MAX_ACTION_LINE_BYTES} bytes: {line[:60]!r}..."
            )
        out.append(data)
    return b"\r\n".join(out) + b"\r\n\r\n"
