"""A VTS's stdout and stderr, into the bridge's log as lines labelled with the VTS's name.

Contract. Whatever a VTS writes is untrusted: it must never pass for a line of the bridge's
own log nor flood it. `OutputFramer` (pure: bytes and the time in, items out) cuts the
byte stream into lines first and decodes each complete line second (UTF-8, undecodable
bytes shown as \\xNN), escapes every control, format and line/paragraph separator
character, so one VTS line is one log record with no terminal control in it, cuts lines
longer than `MAX_LINE_BYTES`, and admits lines through a token bucket (`RATE_LINES_PER_S`,
`BURST_LINES`), reporting how many it dropped. `pump_output` is the asyncio glue: it reads
one stream of a VTS process to its end and logs every line under the logger
`ami_bridge.vts.<name>` with the prefix `vts[<name>]>`, at the level the caller chooses
(`start_captured` logs both streams at INFO: a VTS chooses no level of the bridge's log,
and its exit is logged by the supervisor anyway). It never raises on what the VTS writes;
it ends at EOF, which comes when the VTS (and all it started) has exited.
`start_captured` starts a VTS command that way: stdin /dev/null, stdout and stderr into
two pumps, and of the bridge's descriptors only the VTS's socket end.
"""

from __future__ import annotations

import asyncio
import logging
import time
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

# A log line long enough for any sensible message or traceback line (Python's own are
# far below 1 KiB), short enough that a VTS cannot fill the log with one line.
MAX_LINE_BYTES = 2048
# A VTS that logs faster than this for long is broken or hostile; the burst admits a
# whole Python traceback at once (a deep one is ~100 lines) and a start-up banner.
RATE_LINES_PER_S = 20.0
BURST_LINES = 200
READ_CHUNK = 64 * 1024
LOGGER_PREFIX = "ami_bridge.vts"

# Unicode categories that could break a line, move the cursor or reorder text when a log
# is read on a terminal or in a viewer: controls (Cc), format characters such as the
# bidi overrides (Cf), line and paragraph separators (Zl, Zp), surrogates (Cs, from
# bytes that are not UTF-8 they cannot come, but keep the rule total).
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


@dataclass(frozen=True)
class Line:
    text: str  # escaped: printable, no line breaks
    cut: bool = False  # the VTS's line was longer than MAX_LINE_BYTES


@dataclass(frozen=True)
class Dropped:
    count: int  # lines the rate limit threw away since the last report


Item = Line | Dropped


def escape(raw: bytes) -> str:
    """One VTS line as printable text: \\n, \\r, \\t, \\xNN, \\uNNNN for the rest."""
    text = raw.decode("utf-8", "backslashreplace")
    out = []
    for ch in text:
        if unicodedata.category(ch) not in _ESCAPED_CATEGORIES:
            out.append(ch)
        elif ch in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
    return "".join(out)


class OutputFramer:
    """Bytes of one VTS stream in, `Line` and `Dropped` items out; `now` is passed in."""

    def __init__(self, *, now: float, max_line: int = MAX_LINE_BYTES,
                 rate: float = RATE_LINES_PER_S, burst: int = BURST_LINES) -> None:
        self._max_line = max_line
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = now
        self._buffer = bytearray()
        self._skipping = False  # inside a line already cut: discard up to its newline
        self._dropped = 0

    def feed(self, data: bytes, now: float) -> list[Item]:
        items: list[Item] = []
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                break
            line = bytes(self._buffer[:end])
            del self._buffer[:end + 1]
            if self._skipping:
                self._skipping = False
                continue
            cut = len(line) > self._max_line
            self._admit(line[:self._max_line] if cut else line, cut, now, items)
        if not self._skipping and len(self._buffer) > self._max_line:
            self._admit(bytes(self._buffer[:self._max_line]), True, now, items)
            self._skipping = True
        if self._skipping:
            self._buffer.clear()
        return items

    def end(self, now: float) -> list[Item]:
        """At EOF: the last line if it had no newline, and the count of dropped lines."""
        items: list[Item] = []
        if self._buffer and not self._skipping:
            self._admit(bytes(self._buffer), False, now, items)
        self._buffer.clear()
        if self._dropped:
            items.append(Dropped(self._dropped))
            self._dropped = 0
        return items

    def _admit(self, raw: bytes, cut: bool, now: float, items: list[Item]) -> None:
        self._tokens = min(self._burst, self._tokens + max(0.0, now - self._last) * self._rate)
        self._last = max(self._last, now)
        if self._tokens < 1.0:
            self._dropped += 1
            return
        self._tokens -= 1.0
        if self._dropped:
            items.append(Dropped(self._dropped))
            self._dropped = 0
        items.append(Line(escape(raw.removesuffix(b"\r")), cut))


def vts_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"{LOGGER_PREFIX}.{name}")


async def pump_output(stream: asyncio.StreamReader, name: str, *, level: int = logging.INFO,
                      logger: logging.Logger | None = None,
                      clock: Callable[[], float] = time.monotonic) -> None:
    """Log every line of one VTS stream until EOF (see the module docstring)."""
    log = logger or vts_logger(name)
    framer = OutputFramer(now=clock())
    while True:
        try:
            chunk = await stream.read(READ_CHUNK)
        except (ConnectionError, OSError) as exc:  # the pipe broke: the VTS is gone
            log.warning("vts[%s]: output unreadable: %s", name, exc)
            chunk = b""
        items = framer.feed(chunk, clock()) if chunk else framer.end(clock())
        for item in items:
            if isinstance(item, Line):
                log.log(level, "vts[%s]> %s%s", name, item.text, " [line cut]" if item.cut else "")
            else:
                log.warning("vts[%s]: %d output lines dropped (more than %g lines/s)", name,
                            item.count, RATE_LINES_PER_S)
        if not chunk:
            return


async def start_captured(
    argv: Sequence[str], *, name: str, pass_fd: int, env: Mapping[str, str] | None = None,
) -> tuple[asyncio.subprocess.Process, asyncio.Task[None]]:
    """Start one VTS process (confined or not: `argv` says) with its output captured.

    The task ends when both streams reached EOF; the caller keeps it, cancels it when it
    stops caring, and need not await it before a restart (an unconfined VTS's leftover
    children may hold the pipes open)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, pass_fds=(pass_fd,), close_fds=True, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    stdout, stderr = proc.stdout, proc.stderr
    if stdout is None or stderr is None:  # not with PIPE; keeps mypy's Optional honest
        raise RuntimeError(f"VTS {name}: no output pipes")

    async def capture() -> None:
        await asyncio.gather(pump_output(stdout, name, level=logging.INFO),
                             pump_output(stderr, name, level=logging.INFO))

    return proc, asyncio.create_task(capture(), name=f"vts-{name}-output")
