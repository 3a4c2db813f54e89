"""A VTS's output into the bridge's log (ami_bridge/supervision/vts_output.py).

The framer is pure (bytes and `now` in); every input is also fed one byte at a time.
"""

from __future__ import annotations

import asyncio
import logging
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ami_bridge.supervision.vts_output import (
    BURST_LINES,
    MAX_LINE_BYTES,
    RATE_LINES_PER_S,
    Dropped,
    Item,
    Line,
    OutputFramer,
    escape,
    pump_output,
)

FAST = settings(max_examples=200, deadline=None, database=None)


def whole(data: bytes, **kw: int) -> list[Item]:
    framer = OutputFramer(now=0.0, **kw)
    return framer.feed(data, 0.0) + framer.end(0.0)


def bytewise(data: bytes, **kw: int) -> list[Item]:
    framer = OutputFramer(now=0.0, **kw)
    items: list[Item] = []
    for i in range(len(data)):
        items += framer.feed(data[i:i + 1], 0.0)
    return items + framer.end(0.0)


@pytest.mark.parametrize("raw, text", [
    (b"plain text: 100% ok", "plain text: 100% ok"),
    (b"tab\there", "tab\\there"),
    (b"cr\rhere", "cr\\rhere"),
    (b"\x1b[2Kerased", "\\x1b[2Kerased"),
    (b"\x00\x07\x7f", "\\x00\\x07\\x7f"),
    ("C1 \x85 next line".encode(), "C1 \\x85 next line"),
    ("sep\u2028\u2029".encode(), "sep\\u2028\\u2029"),
    ("bidi \u202e\u2066".encode(), "bidi \\u202e\\u2066"),
    ("zero width\u200b joiner\ufeff".encode(), "zero width\\u200b joiner\\ufeff"),
    ("caf\u00e9 \u65e5\u672c \U0001f600".encode(), "caf\u00e9 \u65e5\u672c \U0001f600"),
    (b"bad \xff\xfe utf8 \xe2\x82", "bad \\xff\\xfe utf8 \\xe2\\x82"),
])
def test_escape(raw: bytes, text: str) -> None:
    assert escape(raw) == text


@given(st.binary(max_size=300) | st.text(max_size=100).map(str.encode))
@FAST
def test_escaped_text_is_one_line_without_controls(raw: bytes) -> None:
    text = escape(raw)
    assert len(text.splitlines()) <= 1
    assert not [c for c in text if unicodedata.category(c) in {"Cc", "Cf", "Zl", "Zp", "Cs"}]


def test_lines_whole_and_bytewise() -> None:
    data = b"one\r\ntwo\n\nthree without newline"
    expected = [Line("one"), Line("two"), Line(""), Line("three without newline")]
    assert whole(data) == bytewise(data) == expected


def test_a_multibyte_character_split_across_reads_survives() -> None:
    framer = OutputFramer(now=0.0)
    data = "d\u00e9j\u00e0 vu\n".encode()
    assert framer.feed(data[:2], 0.0) == []
    assert framer.feed(data[2:], 0.0) == [Line("d\u00e9j\u00e0 vu")]


def test_a_long_line_is_cut_and_its_rest_skipped() -> None:
    data = b"a" * 25 + b"\nnext\n" + b"b" * 11 + b"\n" + b"c" * 30
    expected = [Line("a" * 10, cut=True), Line("next"), Line("b" * 10, cut=True),
                Line("c" * 10, cut=True)]
    assert whole(data, max_line=10) == bytewise(data, max_line=10) == expected
    # exactly the limit is not cut
    assert whole(b"x" * 10 + b"\n", max_line=10) == [Line("x" * 10)]


def test_default_line_limit() -> None:
    items = whole(b"z" * (MAX_LINE_BYTES * 3) + b"\nok\n")
    assert items == [Line("z" * MAX_LINE_BYTES, cut=True), Line("ok")]


def test_rate_limit_drops_and_reports_then_recovers() -> None:
    framer = OutputFramer(now=100.0, rate=2.0, burst=3)
    items = framer.feed(b"1\n2\n3\n4\n5\n", 100.0)
    assert items == [Line("1"), Line("2"), Line("3")]
    assert framer.feed(b"6\n", 100.4) == []  # 0.8 tokens: still dropping
    # one second later there are two tokens: the count of dropped lines comes first
    assert framer.feed(b"7\n8\n9\n", 101.4) == [Dropped(3), Line("7"), Line("8")]
    assert framer.end(101.4) == [Dropped(1)]


def test_default_rate_admits_a_burst() -> None:
    data = b"".join(b"line %d\n" % i for i in range(BURST_LINES + 50))
    items = whole(data)
    assert items[:BURST_LINES] == [Line(f"line {i}") for i in range(BURST_LINES)]
    assert items[BURST_LINES:] == [Dropped(50)]
    assert RATE_LINES_PER_S > 0


def test_a_clock_going_backwards_earns_nothing() -> None:
    framer = OutputFramer(now=10.0, rate=1.0, burst=1)
    assert framer.feed(b"a\n", 10.0) == [Line("a")]
    assert framer.feed(b"b\n", 5.0) == []
    assert framer.feed(b"c\n", 10.5) == []
    assert framer.feed(b"d\n", 11.0) == [Dropped(2), Line("d")]


def test_pump_logs_labelled_lines_until_eof(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ami_bridge.vts")

    async def main() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(b"ready\n\nINFO ami_bridge.daemon: reload ok\n%s %d\x1b")
        reader.feed_eof()
        await pump_output(reader, "acme", level=logging.WARNING)

    asyncio.run(main())
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ami_bridge.vts.acme", "WARNING", "vts[acme]> ready"),
        ("ami_bridge.vts.acme", "WARNING", "vts[acme]> "),
        ("ami_bridge.vts.acme", "WARNING", "vts[acme]> INFO ami_bridge.daemon: reload ok"),
        ("ami_bridge.vts.acme", "WARNING", "vts[acme]> %s %d\\x1b"),
    ]


def test_pump_reports_cut_lines_and_drops(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ami_bridge.vts")

    async def main() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(b"y" * (MAX_LINE_BYTES + 1) + b"\n")
        reader.feed_data(b"spam\n" * (BURST_LINES + 5))
        reader.feed_eof()
        await pump_output(reader, "acme", clock=lambda: 0.0)

    asyncio.run(main())
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == f"vts[acme]> {'y' * MAX_LINE_BYTES} [line cut]"
    assert messages[1:-1] == ["vts[acme]> spam"] * (BURST_LINES - 1)
    assert messages[-1] == "vts[acme]: 6 output lines dropped (more than 20 lines/s)"
    assert caplog.records[-1].levelname == "WARNING"
