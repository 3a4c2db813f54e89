"""The sans-I/O AMI core against the byte-exact corpus in tests/data/ami/.

Every well-formed transcript is fed whole, split in two at every byte position (each
block separately for the long ones, so the run stays fast), byte by byte, and with
trailing data; each yields exactly the messages in its `.expected.json` (written by an
independent naive parser in make_corpus.py). Every broken transcript ends in a
RemoteProtocolError naming the fault, never in a hang.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ami_bridge.ami.protocol import (
    MAX_ACTION_LINE_BYTES,
    MAX_BLOCK_BYTES,
    MAX_GREETING_BYTES,
    NEED_DATA,
    AmiConnection,
    ConnectionClosed,
    Event,
    Greeting,
    ListCollector,
    LocalProtocolError,
    Message,
    RemoteProtocolError,
    Response,
    encode_action,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "ami"
GOOD = sorted(p.name.removesuffix(".ami") for p in DATA.glob("*.ami")
              if (DATA / p.name.replace(".ami", ".expected.json")).exists())  # fmt: skip
BROKEN = sorted(p.name.removesuffix(".ami") for p in DATA.glob("broken_*.ami"))
# Files small enough to split at literally every byte of the whole transcript.
WHOLE_SPLIT_MAX = 4096
# The 1 MB event: split at this many positions spread over it, not at every byte.
BIG_SPLITS = 200


def load(name: str) -> bytes:
    return (DATA / f"{name}.ami").read_bytes()


def expected(name: str) -> list[Message]:
    out: list[Message] = []
    for item in json.loads((DATA / f"{name}.expected.json").read_text()):
        if item["type"] == "greeting":
            out.append(Greeting(version=item["version"]))
            continue
        fields = tuple(
            (k, v if isinstance(v, str) else v["repeat"] * v["times"] + v["tail"])
            for k, v in item["fields"]
        )
        if item["type"] == "response":
            pairs = dict(reversed(fields))
            out.append(Response(action_id=pairs.get("ActionID"),
                                success=fields[0][1] in ("Success", "Goodbye"),
                                message=pairs.get("Message"), fields=fields))  # fmt: skip
        else:
            out.append(Event(name=fields[0][1], fields=fields))
    return out


def feed(chunks: Iterable[bytes], *, eof: bool = True) -> list[Message]:
    conn = AmiConnection()
    out: list[Message] = []
    # Empty chunks are skipped: b"" means EOF, which only the last one may be.
    for chunk in [*(c for c in chunks if c), *([b""] if eof else [])]:
        conn.receive_data(chunk)
        while (msg := conn.next_event()) is not NEED_DATA:
            assert not isinstance(msg, type(NEED_DATA))
            out.append(msg)
            if isinstance(msg, ConnectionClosed):
                break
    return out


@pytest.mark.parametrize("name", GOOD)
def test_whole(name: str) -> None:
    assert feed([load(name)]) == [*expected(name), ConnectionClosed()]


@pytest.mark.parametrize("name", GOOD)
def test_split_in_two_everywhere(name: str) -> None:
    data, want = load(name), [*expected(name), ConnectionClosed()]
    if len(data) <= WHOLE_SPLIT_MAX:
        positions: Iterable[int] = range(len(data) + 1)
    elif name.startswith("big_"):
        positions = sorted({*range(0, len(data), len(data) // BIG_SPLITS), len(data) - 1,
                            len(data) - 2, len(data) - 3, 30, 31, 32})  # fmt: skip
    else:
        positions = range(0, len(data) + 1, 97)  # whole file; every block follows
    for pos in positions:
        assert feed([data[:pos], data[pos:]]) == want, f"split at {pos}"


@pytest.mark.parametrize("name", [n for n in GOOD if not n.startswith("big_")])
def test_each_block_split_at_every_byte(name: str) -> None:
    data = load(name)
    eol = b"\r\n" if b"\r\n" in data else b"\n"
    greeting, _, rest = data.partition(eol)
    blocks = [b + eol + eol for b in rest.split(eol + eol) if b]
    for block, want in zip(blocks, expected(name)[1:], strict=True):
        for pos in range(len(block) + 1):
            got = feed([greeting + eol + block[:pos], block[pos:]])
            assert got == [Greeting(version="11.0.0"), want, ConnectionClosed()], pos


@pytest.mark.parametrize("name", [n for n in GOOD if not n.startswith(("big_", "real_"))])
def test_byte_by_byte(name: str) -> None:
    data = load(name)
    chunks = [data[i : i + 1] for i in range(len(data))]
    assert feed(chunks) == [*expected(name), ConnectionClosed()]


@pytest.mark.parametrize("name", GOOD)
def test_trailing_data_waits(name: str) -> None:
    data = load(name)
    eol = b"\r\n" if b"\r\n" in data else b"\n"
    # A partial next block must stay buffered (NEED_DATA), not be emitted or lost.
    got = feed([data + b"Event: Next" + eol + b"Key: va"], eof=False)
    assert got == expected(name)
    conn = AmiConnection()
    conn.receive_data(data + b"Event: Next" + eol + eol)
    msgs = []
    while (msg := conn.next_event()) is not NEED_DATA:
        msgs.append(msg)
    assert msgs == [*expected(name), Event(name="Next", fields=(("Event", "Next"),))]


@pytest.mark.parametrize("name", BROKEN)
def test_broken_inputs_fail_clearly(name: str) -> None:
    data = load(name)
    error = (DATA / f"{name}.error.txt").read_text().strip()
    for chunks in ([data], [data[i : i + 1] for i in range(len(data))]):
        with pytest.raises(RemoteProtocolError, match=error):
            feed(chunks)


def test_error_is_sticky_and_quotes_bytes() -> None:
    conn = AmiConnection()
    conn.receive_data(b"SSH-2.0-OpenSSH\r\n")
    with pytest.raises(RemoteProtocolError) as first:
        conn.next_event()
    assert b"SSH-2.0" in first.value.offending and "SSH-2.0" in str(first.value)
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


def test_oversize_block_is_rejected_without_waiting_for_its_end() -> None:
    conn = AmiConnection()
    conn.receive_data(b"Asterisk Call Manager/11.0.0\r\nEvent: Huge\r\nValue: ")
    assert isinstance(conn.next_event(), Greeting)
    chunk = b"x" * 65536
    with pytest.raises(RemoteProtocolError, match="no end of block"):
        for _ in range(MAX_BLOCK_BYTES // len(chunk) + 2):
            conn.receive_data(chunk)
            assert conn.next_event() is NEED_DATA


def test_oversize_complete_block_is_rejected() -> None:
    data = b"Asterisk Call Manager/11.0.0\r\nEvent: Huge\r\nValue: "
    data += b"y" * MAX_BLOCK_BYTES + b"\r\n\r\n"
    with pytest.raises(RemoteProtocolError, match="over"):
        feed([data])


def test_long_garbage_without_newline_before_greeting() -> None:
    with pytest.raises(RemoteProtocolError, match="greeting"):
        feed([b"Asterisk Call Manager/" + b"9" * MAX_GREETING_BYTES], eof=False)


def test_clean_eof_before_greeting_and_receive_after_eof() -> None:
    conn = AmiConnection()
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed()
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"x")


def test_duplicate_keys_and_views() -> None:
    cmd = [m for m in feed([load("command_output")]) if isinstance(m, Response)]
    assert cmd[1].get_all("Output")[0] == "[ Context 'acme-internal' created by 'pbx_config' ]"
    assert len(cmd[1].get_all("output")) == 8
    assert cmd[1].headers["Output"] == cmd[1].get_all("Output")[0]
    assert cmd[1].action_id == "cmd2" and cmd[1].success
    test_event = [m for m in feed([load("duplicate_keys")]) if isinstance(m, Event)][1]
    assert test_event.get_all("State") == ["CallIDChange", "CallIDChange"]


def test_escaped_newline_and_decoding_policy() -> None:
    user_event = feed([load("escaped_newline")])[1]
    assert isinstance(user_event, Event)
    assert user_event.get("Body") == "line one\\nline two\\\\n"  # kept verbatim
    assert user_event.get("Empty") == ""
    names = [m.get("CallerIDName") for m in feed([load("utf8_latin1")]) if isinstance(m, Event)]
    assert names == ["Jürgen Ölmann ☎", "J\ufffdrgen"]


def test_response_without_action_id() -> None:
    response = feed([load("response_without_actionid")])[1]
    assert response == Response(
        action_id=None, success=False, message="Missing action in request",
        fields=(("Response", "Error"), ("Message", "Missing action in request")),
    )  # fmt: skip


def test_list_collector_on_core_show_channels() -> None:
    msgs = [m for m in feed([load("core_show_channels")]) if isinstance(m, Response | Event)]
    collector = ListCollector("csc1")
    done = [collector.feed(m) for m in msgs]
    assert done == [False, False, False, True]
    assert collector.response is not None and collector.response.success
    assert [e.get("Uniqueid") for e in collector.events] == ["1795657017.1", "1795657017.0"]
    assert collector.complete_event is not None
    assert collector.complete_event.get("ListItems") == "2"
    failed = ListCollector("x")
    assert failed.feed(Response(action_id="x", success=False, message="no", fields=()))


def test_encode_action() -> None:
    assert encode_action("Redirect", "ab-1", {"Channel": "PJSIP/a-1", "Priority": "1"}) == (
        b"Action: Redirect\r\nActionID: ab-1\r\nChannel: PJSIP/a-1\r\nPriority: 1\r\n\r\n"
    )
    pairs = [("Variable", "A=1"), ("Variable", "B=ü")]
    assert encode_action("Originate", "o", pairs).count(b"Variable: ") == 2
    assert "B=ü".encode() in encode_action("Originate", "o", pairs)


@pytest.mark.parametrize(
    ("name", "action_id", "fields"),
    [
        ("Redirect", "a", {"Channel": "PJSIP/x\r\nAction: Command"}),
        ("Redirect", "a", {"Channel": "x\n"}),
        ("Redirect", "a", {"Channel": "x\x00"}),
        ("Redirect", "a", {"Chan nel": "x"}),
        ("Redirect", "a", {"Channel:": "x"}),
        ("Redirect", "a", {"ActionID": "b"}),
        ("Redirect", "a", {"action": "Command"}),
        ("Redi\r\nrect", "a", {}),
        ("Redirect", "a\r\n", {}),
        ("Redirect", "", {}),
        ("Redirect", "a", {"Channel": "x" * MAX_ACTION_LINE_BYTES}),
        ("Redirect", "a", {f"K{i}": "v" for i in range(200)}),
    ],
)
def test_encode_action_rejects(name: str, action_id: str, fields: dict[str, str]) -> None:
    with pytest.raises(LocalProtocolError):
        encode_action(name, action_id, fields)


@pytest.mark.parametrize("value", ["PJSIP/x\rAction: Command", "x\r", "\r", "a\rb\rc"])
def test_encode_action_rejects_a_bare_cr(value: str) -> None:
    # A CR with no LF after it: other AMI readers, proxies and terminals showing the wire
    # log may take it for a line end, so a caller id carrying one could add a header or
    # a second action. The door refuses it like LF and NUL, naming the value.
    with pytest.raises(LocalProtocolError, match=r"CR, LF or NUL not allowed in .*\\r"):
        encode_action("Redirect", "a", {"Channel": value})
    with pytest.raises(LocalProtocolError):
        encode_action("Originate", "o", [("Variable", "A=1"), ("Variable", value)])


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.text(st.sampled_from("ab:= \r\n\x00ü"), max_size=8), max_size=4))
def test_every_cr_on_the_wire_ends_a_line(values: list[str]) -> None:
    # Whatever the values, an accepted action has no CR or LF but its own CRLFs: one line
    # per header, and no value can have split off a line of its own.
    pairs = [(f"K{i}", v) for i, v in enumerate(values)]
    try:
        data = encode_action("Originate", "o", pairs)
    except LocalProtocolError:
        assert any(c in v for v in values for c in "\r\n\x00")
        return
    lines = data.removesuffix(b"\r\n\r\n").split(b"\r\n")
    assert len(lines) == 2 + len(values)
    assert all(b"\r" not in line and b"\n" not in line for line in lines)
