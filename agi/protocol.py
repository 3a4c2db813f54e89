"""Sans-I/O core of one FastAGI session, seen from the server (the bridge) side.

Bytes from Asterisk go in with `receive_data` (b"" means EOF); events come out of
`next_event` until it returns `NEED_DATA`. Commands go out as bytes built by
`ami_bridge.agi.wire` and are announced with `command_sent`, so the core knows a reply is due.

The session has three phases, all in this module:
  HEADER  - Asterisk sends `agi_key: value` lines ended by a blank line -> `Environment`
  READY   - between commands; `HANGUP` from Asterisk -> `Hangup` (the channel is gone)
  AWAITING_REPLY - one command outstanding; `200 result=...` (or 5xx, including the
            multi-line `520-` usage block, read to its end) -> `Reply`
EOF at any point -> `Closed`. Every buffer has a named bound; crossing it, EOF inside a
header or a malformed line raises `RemoteProtocolError` quoting the offending bytes.
Bytes are framed first and decoded per complete line (UTF-8, undecodable bytes
replaced), so a character split across TCP segments is never lost.
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

Event = Environment | Reply | Hangup | Closed

_REPLY_RE = re.compile(r"^(\d{3})(?: result=(\S*))?(?: \((.*)\))?(.*)$")
# One well-formed environment line, as `_header_line` accepts it: the key is everything
# before the first ':' and starts with `agi_`; one space after the ':' is dropped. Used
# on a whole decoded block at once (one C-level scan instead of ~25 Python iterations:
# the benchmark profile had the per-line loop as the largest single cost of a route);
# a block with any line this does not match goes the per-line way, which names it.
_ENV_LINE_RE = re.compile(r"^(agi_[^:\n]*): ?(.*)$", re.MULTILINE)


class AgiSession:
    """State machine of one FastAGI session (server side)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._eof = False
        self.phase = Phase.HEADER
        self._header: dict[str, str] = {}
        self._header_lines = 0
        self._header_bytes = 0
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
            env = self._take_header_block()
            if env is not None:
                return env
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

    def _take_header_block(self) -> Environment | None:
        """The whole environment at once when its blank line is buffered (the usual case:
        Asterisk writes it in one go); else None, and lines are taken one at a time."""
        while self._buffer.startswith(b"\n") and not self._header:
            del self._buffer[:1]  # stray blank lines before the environment
        end = self._buffer.find(b"\n\n")
        if end < 0 or self._header_lines or end > MAX_HEADER_BYTES:
            return None  # partial, or too big: the line-by-line path decides
        block = bytes(self._buffer[:end])
        n_lines = block.count(b"\n") + 1
        if n_lines > MAX_HEADER_LINES:
            return None
        # A line can only pass MAX_LINE_BYTES when the whole block does.
        if end > MAX_LINE_BYTES and max(map(len, block.split(b"\n"))) > MAX_LINE_BYTES:
            return None
        if b"\r" not in block:
            # Decoding the block at once equals decoding line by line: LF is ASCII and
            # never part of a multi-byte sequence, so replacements fall the same way.
            pairs = _ENV_LINE_RE.findall(block.decode("utf-8", errors="replace"))
            if len(pairs) == n_lines:
                del self._buffer[: end + 2]
                self.phase = Phase.READY
                return Environment(dict(pairs))
        for raw in block.split(b"\n"):
            line = (raw[:-1] if raw.endswith(b"\r") else raw).decode("utf-8", errors="replace")
            key, sep, value = line.partition(":")
            if not sep or not key.startswith("agi_"):
                raise RemoteProtocolError(f"malformed AGI environment line: {line!r}")
            self._header[key] = value[1:] if value.startswith(" ") else value
        del self._buffer[: end + 2]
        self.phase = Phase.READY
        return Environment(dict(self._header))

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
        self._header_bytes += end + 1
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        return raw.decode("utf-8", errors="replace")

    def _at_eof(self) -> Event:
        phase = self.phase
        self.phase = Phase.CLOSED
        if phase is Phase.HEADER:
            raise RemoteProtocolError(
                f"EOF inside the AGI environment after {self._header_lines} lines"
            )
        if phase is Phase.AWAITING_REPLY and self._reply_lines:
            raise RemoteProtocolError(f"EOF inside a reply: {self._reply_lines!r}")
        return Closed()

    def _handle_line(self, line: str) -> Event | None:
        if self.phase is Phase.HEADER:
            return self._header_line(line)
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

    def _header_line(self, line: str) -> Event | None:
        if line == "":
            if not self._header:
                # Asterisk never sends an empty environment; tolerate stray blank lines.
                return None
            self.phase = Phase.READY
            return Environment(dict(self._header))
        self._header_lines += 1
        if self._header_lines > MAX_HEADER_LINES or self._header_bytes > MAX_HEADER_BYTES:
            raise RemoteProtocolError(
                f"AGI environment exceeds {MAX_HEADER_LINES} lines or {MAX_HEADER_BYTES} bytes"
            )
        key, sep, value = line.partition(":")
        if not sep or not key.startswith("agi_"):
            raise RemoteProtocolError(f"malformed AGI environment line: {line!r}")
        self._header[key] = value[1:] if value.startswith(" ") else value
        return None

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
        match = _REPLY_RE.match(line)
        if match is None:
            raise RemoteProtocolError(f"malformed AGI reply: {line!r}")
        code, result, data, _rest = match.groups()
        self._reply_lines = [line]
        return self._finish_reply(int(code), result or "", data or "")

    def _finish_reply(self, code: int, result: str, data: str) -> Reply:
        raw = "\n".join(self._reply_lines)
        self._reply_lines = []
        self.phase = Phase.READY
        return Reply(code=code, result=result, data=data, raw=raw)
