"""Sans-I/O core of one FastAGI session, seen from the server (the bridge) side.

Bytes from Asterisk go in with `receive_data` (b"" means EOF); events come out of
`next_event` until it returns `NEED_DATA`. Commands go out as bytes built by
`ami_bridge.agi.wire` and are announced with `command_sent`, so the core knows a reply is due.

The session has three phases, all in this module:
  HEADER  - Asterisk sends `agi_key: value` lines ended by a blank line -> `Environment`,
            or `EnvironmentRefused` when the block is ambiguous in any way (below)
  READY   - between commands; `HANGUP` from Asterisk -> `Hangup` (the channel is gone)
  AWAITING_REPLY - one command outstanding; `200 result=...` (or 5xx, including the
            multi-line `520-` usage block, read to its end) -> `Reply`
EOF at any point -> `Closed`. Every buffer has a named bound; crossing it, EOF inside a
header or a malformed reply raises `RemoteProtocolError` quoting the offending bytes.

The environment is framed on bytes (up to its blank line), decoded with an explicit
policy, and parsed by one function (`parse_environment`), whole: it is taken only when
it can be read one way. A repeated key, a line that is not `agi_key: value`, CR or NUL
inside a line, a line over `MAX_LINE_BYTES`, more than `MAX_HEADER_LINES` lines, bytes
that are not UTF-8 outside the free-text caller name, an empty environment, or bytes
after the blank line other than Asterisk's own `HANGUP` (anything else would be read as
the reply to a command the bridge has not sent yet) -> `EnvironmentRefused`; the phase
is then READY with the rest of the input dropped, so the caller can still answer
Asterisk with the default disposition.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

# Asterisk's AGI environment is about 25 short lines; caller-id names and agi_arg_N
# values are the only long ones. 16 KiB is eight times a generous real header.
MAX_HEADER_BYTES = 16 * 1024
# res_agi reads command lines into AGI_BUF_LEN (2048); its reply lines are shorter,
# except the 520 usage text, which is a handful of lines. Bound one line and one reply.
MAX_LINE_BYTES = 4096
MAX_REPLY_BYTES = 16 * 1024
MAX_HEADER_LINES = 256
# Environment values that are free text from the caller's side (a SIP display name may
# be in any charset): undecodable bytes there are replaced, not refused; the value is
# shown to a VTS, never routed on. Everywhere else undecodable bytes refuse the block.
FREE_TEXT_KEYS = frozenset({b"agi_calleridname"})
# What Asterisk itself may send after the environment before the bridge's first command:
# res_agi writes `HANGUP` when the channel hangs up while the AGI runs.
_HANGUP_LINE = b"HANGUP\n"


class RemoteProtocolError(Exception):
    """Asterisk (the remote peer) sent bytes that break the AGI protocol."""


class LocalProtocolError(Exception):
    """The bridge tried something the AGI protocol does not allow in this state."""


class Phase(enum.Enum):
    HEADER = "header"
    READY = "ready"
    AWAITING_REPLY = "awaiting-reply"
    CLOSED = "closed"


@dataclass(frozen=True)
class Environment:
    """The `agi_*` variables Asterisk sent when the session opened."""

    variables: dict[str, str] = field(hash=False)

    def get(self, key: str, default: str = "") -> str:
        return self.variables.get(key, default)


@dataclass(frozen=True)
class EnvironmentRefused:
    """The environment could be read more than one way; `reason` says how, quoting the
    bytes. No variable of it may be used: the session is READY for the default answer."""

    reason: str


@dataclass(frozen=True)
class Reply:
    """Asterisk's answer to one command: `code result=N (data) key=value ...`."""

    code: int
    result: str
    data: str
    raw: str


@dataclass(frozen=True)
class Hangup:
    """Asterisk announced that the channel hung up (`HANGUP` line)."""


@dataclass(frozen=True)
class Closed:
    """Asterisk closed the connection."""


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()

Event = Environment | EnvironmentRefused | Reply | Hangup | Closed

_REPLY_RE = re.compile(r"^(\d{3})(?: result=(\S*))?(?: \((.*)\))?(.*)$")
# One environment line exactly as res_agi writes it (`agi_%s: %s`): lower-case key,
# one colon and one space, then the value (CR and NUL are refused before this runs).
# Used on the whole decoded block at once (one C-level scan instead of ~25 Python
# iterations: the benchmark profile had a per-line loop as the largest single cost of
# a route).
_ENV_LINE = r"(agi_[a-z0-9_]{1,64}): (.*)"
_ENV_LINES_RE = re.compile(rf"^{_ENV_LINE}$", re.MULTILINE)
_ENV_ONE_LINE_RE = re.compile(_ENV_LINE)  # fullmatch: only to name a refused line


def _quote(raw: bytes | str) -> str:
    return repr(raw[:60]) + ("..." if len(raw) > 60 else "")


def parse_environment(block: bytes) -> Environment | EnvironmentRefused:
    """The one parser of an AGI environment: `block` is every byte before the blank
    line (lines joined by LF, each may end in CR). Taken whole or refused whole."""
    if not block:
        return EnvironmentRefused("empty environment (a blank line first)")
    if b"\r" in block:
        block = (block + b"\n").replace(b"\r\n", b"\n")[:-1]
        if b"\r" in block:
            line = next(raw for raw in block.split(b"\n") if b"\r" in raw)
            return EnvironmentRefused(f"CR inside environment line {_quote(line)}")
    if b"\x00" in block:
        line = next(raw for raw in block.split(b"\n") if b"\x00" in raw)
        return EnvironmentRefused(f"NUL byte in environment line {_quote(line)}")
    n_lines = block.count(b"\n") + 1
    if n_lines > MAX_HEADER_LINES:
        return EnvironmentRefused(f"environment of {n_lines} lines exceeds {MAX_HEADER_LINES}")
    # A line can only pass MAX_LINE_BYTES when the whole block does.
    if len(block) > MAX_LINE_BYTES:
        longest = max(block.split(b"\n"), key=len)
        if len(longest) > MAX_LINE_BYTES:
            return EnvironmentRefused(
                f"environment line longer than {MAX_LINE_BYTES} bytes: {_quote(longest)}")
    text = _decode(block)
    if isinstance(text, EnvironmentRefused):
        return text
    pairs = _ENV_LINES_RE.findall(text)
    if len(pairs) != n_lines:
        bad = next(line for line in text.split("\n") if not _ENV_ONE_LINE_RE.fullmatch(line))
        return EnvironmentRefused(f"environment line is not `agi_key: value`: {_quote(bad)}")
    variables = dict(pairs)
    if len(variables) != n_lines:
        keys = [key for key, _ in pairs]
        repeated = next(key for i, key in enumerate(keys) if key in keys[:i])
        return EnvironmentRefused(f"environment key {repeated!r} is repeated")
    return Environment(variables)


def parse_reply(line: str) -> Reply | None:
    """The one parser of a one-line AGI reply (`200 result=1 (data)`), also for the
    Result of AsyncAGI's AsyncAGIExec event; None when the line is not a reply."""
    match = _REPLY_RE.match(line)
    if match is None:
        return None
    code, result, data, _rest = match.groups()
    return Reply(code=int(code), result=result or "", data=data or "", raw=line)


def _decode(block: bytes) -> str | EnvironmentRefused:
    """UTF-8, strictly, except in the free-text keys. LF is ASCII and never part of a
    multi-byte sequence, so decoding the block at once equals decoding line by line."""
    try:
        return block.decode("utf-8")
    except UnicodeDecodeError:
        pass
    lines = []
    for raw in block.split(b"\n"):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            key = raw.partition(b":")[0]
            if key not in FREE_TEXT_KEYS:
                return EnvironmentRefused(f"environment line is not UTF-8: {_quote(raw)}")
            lines.append(raw.decode("utf-8", errors="replace"))
    return "\n".join(lines)


def _blank_line(buffer: bytearray, pos: int) -> tuple[int, int] | None:
    """Where the blank line that ends the environment starts and ends: an empty line at
    the very start, or a line break followed by an empty line (LF or CRLF). Plain
    `find`s: a regex alternation here cost half the time of a whole route's parse."""
    if pos == 0 and buffer[:1] == b"\n":
        return 0, 1
    if pos == 0 and buffer[:2] == b"\r\n":
        return 0, 2
    lf = buffer.find(b"\n\n", pos)
    crlf = buffer.find(b"\n\r\n", pos) if b"\r" in buffer else -1
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf, crlf + 3
    return (lf, lf + 2) if lf >= 0 else None


class AgiSession:
    """State machine of one FastAGI session (server side)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._eof = False
        self.phase = Phase.HEADER
        self._scanned = 0  # header bytes already searched for the blank line
        self._reply_lines: list[str] = []
        self._reply_bytes = 0
        # HANGUP can arrive while a reply is due; it is reported once, in order.
        self.hung_up = False

    # -- input -------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        if self._eof:
            if data:
                raise LocalProtocolError("receive_data after EOF")
            return
        if not data:
            self._eof = True
            return
        self._buffer += data

    def command_sent(self) -> None:
        """Tell the core that one command was written; its reply is now due."""
        if self.phase is not Phase.READY:
            raise LocalProtocolError(f"cannot send a command in phase {self.phase.value}")
        self.phase = Phase.AWAITING_REPLY
        self._reply_lines = []
        self._reply_bytes = 0

    # -- output ------------------------------------------------------------------
    def next_event(self) -> Event | _NeedData:
        if self.phase is Phase.HEADER:
            env = self._take_environment()
            if env is not None:
                return env
            if self._eof:
                return self._at_eof()
            return NEED_DATA
        while True:
            if self.phase is Phase.CLOSED:
                return Closed()
            line = self._take_line()
            if line is None:
                if self._eof:
                    return self._at_eof()
                return NEED_DATA
            event = self._handle_line(line)
            if event is not None:
                return event

    def _take_environment(self) -> Environment | EnvironmentRefused | None:
        """The environment once its blank line is buffered, else None (need more)."""
        # Resume the search where the last one stopped, less the 2 bytes a blank line
        # split across chunks may have left unmatched.
        match = _blank_line(self._buffer, max(0, self._scanned - 2))
        if match is None:
            self._scanned = len(self._buffer)
            # The blank line can start no earlier than 2 bytes before the buffer's end.
            if len(self._buffer) - 2 > MAX_HEADER_BYTES:
                raise RemoteProtocolError(f"AGI environment exceeds {MAX_HEADER_BYTES} bytes: "
                                          f"{_quote(bytes(self._buffer))}")
            return None
        start, end = match
        if start > MAX_HEADER_BYTES:
            raise RemoteProtocolError(f"AGI environment exceeds {MAX_HEADER_BYTES} bytes: "
                                      f"{_quote(bytes(self._buffer))}")
        event = parse_environment(bytes(self._buffer[:start]))
        del self._buffer[:end]
        self.phase = Phase.READY
        if isinstance(event, Environment):
            early = self._early_bytes()
            if early is not None:
                event = EnvironmentRefused("bytes after the environment before any command: "
                                           + _quote(early))
        if isinstance(event, EnvironmentRefused):
            # Whatever follows came from a peer that does not speak AGI as Asterisk
            # does; only the reply to the bridge's default answer is read from here on.
            self._buffer.clear()
        return event

    def _early_bytes(self) -> bytes | None:
        """What follows the blank line, when it is not only Asterisk's `HANGUP`."""
        if not self._buffer:
            return None  # the usual case: nothing yet
        rest = bytes(self._buffer)
        while rest.startswith(_HANGUP_LINE):
            rest = rest[len(_HANGUP_LINE):]
        if _HANGUP_LINE.startswith(rest):
            return None  # nothing, or the start of a HANGUP split across chunks
        return bytes(self._buffer)

    def _take_line(self) -> str | None:
        end = self._buffer.find(b"\n")
        if end < 0:
            if len(self._buffer) > MAX_LINE_BYTES:
                raise RemoteProtocolError(
                    f"AGI line longer than {MAX_LINE_BYTES} bytes: {bytes(self._buffer[:60])!r}..."
                )
            return None
        if end > MAX_LINE_BYTES:
            raise RemoteProtocolError(
                f"AGI line longer than {MAX_LINE_BYTES} bytes: {bytes(self._buffer[:60])!r}..."
            )
        raw = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        # Replies are Asterisk's own ASCII text; replacement cannot change their meaning.
        return raw.decode("utf-8", errors="replace")

    def _at_eof(self) -> Event:
        phase = self.phase
        self.phase = Phase.CLOSED
        if phase is Phase.HEADER:
            raise RemoteProtocolError(
                f"EOF inside the AGI environment after {len(self._buffer)} bytes"
            )
        if phase is Phase.AWAITING_REPLY and self._reply_lines:
            raise RemoteProtocolError(f"EOF inside a reply: {self._reply_lines!r}")
        return Closed()

    def _handle_line(self, line: str) -> Event | None:
        if line == "HANGUP":
            if self.hung_up:
                return None
            self.hung_up = True
            return Hangup()
        if self.phase is Phase.READY:
            if line == "":
                return None
            raise RemoteProtocolError(f"unexpected AGI line with no command outstanding: {line!r}")
        return self._reply_line(line)

    def _reply_line(self, line: str) -> Event | None:
        self._reply_bytes += len(line) + 1
        if self._reply_bytes > MAX_REPLY_BYTES:
            raise RemoteProtocolError(f"AGI reply exceeds {MAX_REPLY_BYTES} bytes")
        if self._reply_lines:
            # Inside a `520-` usage block: it ends with a line starting `520 `.
            self._reply_lines.append(line)
            if line.startswith("520 "):
                return self._finish_reply(520, "", "\n".join(self._reply_lines[1:-1]))
            return None
        if line.startswith("520-"):
            self._reply_lines.append(line)
            return None
        reply = parse_reply(line)
        if reply is None:
            raise RemoteProtocolError(f"malformed AGI reply: {line!r}")
        self._reply_lines = [line]
        return self._finish_reply(reply.code, reply.result, reply.data)

    def _finish_reply(self, code: int, result: str, data: str) -> Reply:
        raw = "\n".join(self._reply_lines)
        self._reply_lines = []
        self.phase = Phase.READY
        return Reply(code=code, result=result, data=data, raw=raw)
