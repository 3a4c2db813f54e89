"""The sans-I/O AGI session core: fed whole, byte by byte, and with trailing data.

An environment that can be read more than one way is refused whole (`EnvironmentRefused`),
in every chunking, and the session stays usable for the bridge's default answer.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ami_bridge.agi.protocol import (
    MAX_HEADER_BYTES,
    MAX_HEADER_LINES,
    MAX_LINE_BYTES,
    NEED_DATA,
    AgiSession,
    Closed,
    Environment,
    EnvironmentRefused,
    Hangup,
    LocalProtocolError,
    Phase,
    RemoteProtocolError,
    Reply,
    parse_environment,
)

ENV = (
    b"agi_network: yes\n"
    b"agi_network_script: route\n"
    b"agi_request: agi://127.0.0.1:4573/route\n"
    b"agi_channel: PJSIP/acme-trunk-00000001\n"
    b"agi_language: en\n"
    b"agi_uniqueid: 1732584000.1\n"
    b"agi_callerid: 4930123456\n"
    b"agi_calleridname: M\xc3\xbcller: Sales\n"
    b"agi_context: acme-venue\n"
    b"agi_extension: 100\n"
    b"agi_priority: 4\n"
    b"agi_arg_1: \n"
    b"\n"
)


def drain(session: AgiSession) -> list[object]:
    events = []
    while (event := session.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, Closed):
            break
    return events


def feed_in_chunks(data: bytes, size: int) -> list[object]:
    session = AgiSession()
    events: list[object] = []
    for i in range(0, len(data), size):
        session.receive_data(data[i : i + size])
        events += drain(session)
    return events


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(ENV)])
def test_environment_in_any_chunking(size: int) -> None:
    events = feed_in_chunks(ENV, size)
    assert len(events) == 1
    env = events[0]
    assert isinstance(env, Environment)
    assert env.get("agi_context") == "acme-venue"
    assert env.get("agi_calleridname") == "Müller: Sales"  # UTF-8 split, colon in value
    assert env.get("agi_arg_1") == ""


def test_crlf_lines_are_accepted() -> None:
    events = feed_in_chunks(ENV.replace(b"\n", b"\r\n"), 5)
    assert isinstance(events[0], Environment)
    assert events[0].get("agi_extension") == "100"


def test_trailing_data_after_header_waits_for_a_command() -> None:
    session = AgiSession()
    session.receive_data(ENV + b"HANGUP\n")
    assert isinstance(session.next_event(), Environment)
    assert session.next_event() == Hangup()
    assert session.next_event() is NEED_DATA


def test_hangup_split_across_chunks_after_the_environment() -> None:
    session = AgiSession()
    session.receive_data(ENV + b"HANG")
    assert isinstance(session.next_event(), Environment)
    assert session.next_event() is NEED_DATA
    session.receive_data(b"UP\n")
    assert session.next_event() == Hangup()


def test_reply_requires_command_sent() -> None:
    session = AgiSession()
    session.receive_data(ENV)
    assert isinstance(session.next_event(), Environment)
    session.receive_data(b"200 result=1\n")
    with pytest.raises(RemoteProtocolError, match="no command outstanding"):
        session.next_event()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"200 result=1\n", Reply(200, "1", "", "200 result=1")),
        (b"200 result=0 (timeout) endpos=1234\n",
         Reply(200, "0", "timeout", "200 result=0 (timeout) endpos=1234")),
        (b"200 result=1 (some value)\n",
         Reply(200, "1", "some value", "200 result=1 (some value)")),
        (b"510 Invalid or unknown command\n", Reply(510, "", "", "510 Invalid or unknown command")),
        (b"511 Command Not Permitted on a dead channel or intercept routine\n",
         Reply(511, "", "", "511 Command Not Permitted on a dead channel or intercept routine")),
    ],
)
def test_replies(line: bytes, expected: Reply) -> None:
    session = AgiSession()
    session.receive_data(ENV)
    drain(session)
    session.command_sent()
    for b in line:
        session.receive_data(bytes([b]))
    assert drain(session) == [expected]
    assert session.phase is Phase.READY


def test_520_usage_block_is_read_to_its_end() -> None:
    session = AgiSession()
    session.receive_data(ENV)
    drain(session)
    session.command_sent()
    session.receive_data(
        b"520-Invalid command syntax.  Proper usage follows:\n"
        b" Usage: SET VARIABLE <variablename> <value>\n"
        b"520 End of proper usage.\n"
    )
    [reply] = drain(session)
    assert isinstance(reply, Reply) and reply.code == 520
    assert "Usage: SET VARIABLE" in reply.data
    assert session.phase is Phase.READY


def test_hangup_while_awaiting_reply_then_reply() -> None:
    session = AgiSession()
    session.receive_data(ENV)
    drain(session)
    session.command_sent()
    session.receive_data(b"HANGUP\n511 Command Not Permitted on a dead channel\n")
    events = drain(session)
    assert events[0] == Hangup()
    assert isinstance(events[1], Reply) and events[1].code == 511


def test_eof_inside_header_is_an_error_not_a_hang() -> None:
    session = AgiSession()
    session.receive_data(ENV[:40])
    assert session.next_event() is NEED_DATA
    session.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="EOF inside the AGI environment"):
        session.next_event()


def test_eof_between_commands_is_closed() -> None:
    session = AgiSession()
    session.receive_data(ENV)
    drain(session)
    session.receive_data(b"")
    assert session.next_event() == Closed()


def test_header_size_is_bounded_before_the_blank_line_arrives() -> None:
    session = AgiSession()
    line = b"agi_arg_1: " + b"b" * 1000 + b"\n"
    session.receive_data(line * (MAX_HEADER_BYTES // len(line) + 2))
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        session.next_event()


@pytest.mark.parametrize("size", [1, 1000, 10**6])
def test_header_bound_is_the_same_in_every_chunking(size: int) -> None:
    """A header one byte over the bound fails, one at the bound is read, however fed."""
    for extra, fails in ((1, True), (0, False)):
        line = b"agi_arg_1: " + b"y" * 3990 + b"\n"
        filler = b"x" * (MAX_HEADER_BYTES + extra - 3 * len(line) - 11)
        data = line * 3 + b"agi_arg_9: " + filler + b"\n\n"
        assert len(data) - 2 == MAX_HEADER_BYTES + extra
        session = AgiSession()
        try:
            events = []
            for i in range(0, len(data), size):
                session.receive_data(data[i : i + size])
                events += drain(session)
        except RemoteProtocolError:
            assert fails
        else:
            assert not fails
            assert [type(e) for e in events] == [EnvironmentRefused]  # agi_arg_1 repeated


def test_http_request_is_refused_quoting_its_bytes() -> None:
    session = AgiSession()
    session.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    [event] = drain(session)
    assert isinstance(event, EnvironmentRefused)
    assert "GET / HTTP" in event.reason


# -- ambiguous environments are refused whole ---------------------------------------
def _with(line: bytes) -> bytes:
    """ENV with one more line before its blank line."""
    return ENV[:-1] + line + b"\n\n"


HOSTILE = {
    "repeated key": (_with(b"agi_context: globex-venue"), "repeated"),
    "repeated key, same value": (_with(b"agi_context: acme-venue"), "repeated"),
    "line without agi_ key": (_with(b"context: x"), "not `agi_key: value`"),
    "line without a colon": (_with(b"agi_context"), "not `agi_key: value`"),
    "no space after the colon": (_with(b"agi_dnid:100"), "not `agi_key: value`"),
    "upper-case key": (_with(b"AGI_DNID: 100"), "not `agi_key: value`"),
    "NUL in a value": (_with(b"agi_dnid: 1\x002"), "NUL"),
    "CR inside a line": (_with(b"agi_dnid: 1\r2"), "CR inside"),
    "over-long line": (_with(b"agi_arg_2: " + b"a" * MAX_LINE_BYTES), "longer than"),
    "too many lines": (ENV[:-1] + b"".join(b"agi_arg_%d: \n" % i for i in range(2, 300))
                       + b"\n", f"exceeds {MAX_HEADER_LINES}"),
    "not UTF-8 in the venue": (ENV.replace(b"acme-venue", b"acme-\xff"), "not UTF-8"),
    "not UTF-8 in a key": (_with(b"agi_\xe9: 1"), "not UTF-8"),
}


# Bytes that follow the blank line in the same read: the handler would see the
# environment, send a command, and take them as its reply.
SMUGGLED = {
    "reply smuggled after the blank line": b"200 result=1\n",
    "second environment after the blank line": b"agi_context: x\n\n",
    "blank line after the blank line": b"\n",
    "HANGUP then a reply": b"HANGUP\n200 result=1\n",
    "an empty environment first": b"",  # the blank line comes first: ENV is what follows
}


def _smuggled(case: str) -> bytes:
    return b"\n" + ENV if case == "an empty environment first" else ENV + SMUGGLED[case]


@pytest.mark.parametrize("case", sorted(SMUGGLED))
def test_bytes_after_the_blank_line_refuse_the_environment(case: str) -> None:
    session = AgiSession()
    session.receive_data(_smuggled(case))
    [event] = drain(session)
    assert isinstance(event, EnvironmentRefused)
    assert ("empty environment" if case.startswith("an empty") else "after the environment") \
        in event.reason
    session.command_sent()
    assert drain(session) == []  # the smuggled reply was dropped, not taken


@pytest.mark.parametrize("case", sorted(SMUGGLED))
def test_bytes_after_the_environment_in_a_later_read_are_never_a_reply(case: str) -> None:
    """The environment was whole when read; a line that comes before any command is an
    error (blank lines and HANGUP excepted), never taken for the reply to a later one."""
    data = _smuggled(case)
    end = data.index(b"\n\n") + 2 if data[0] != 10 else 1
    session = AgiSession()
    session.receive_data(data[:end])
    assert isinstance(session.next_event(), Environment | EnvironmentRefused)
    session.receive_data(data[end:])
    events: list[object] = []
    try:
        events += drain(session)
    except RemoteProtocolError as exc:
        assert "no command outstanding" in str(exc)
    else:
        assert case == "blank line after the blank line"
    assert not any(isinstance(e, Reply) for e in events)


@pytest.mark.parametrize("size", [1, 2, 7, 10**6])
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_ambiguous_environment_is_refused_in_any_chunking(case: str, size: int) -> None:
    data, why = HOSTILE[case]
    session = AgiSession()
    events: list[object] = []
    for i in range(0, len(data), size):
        session.receive_data(data[i : i + size])
        events += drain(session)
    assert len(events) == 1, events
    assert isinstance(events[0], EnvironmentRefused)
    assert why in events[0].reason
    # The session can still carry the default answer, and reads only its reply.
    assert session.phase is Phase.READY
    session.command_sent()
    session.receive_data(b"200 result=0\n")
    assert drain(session) == [Reply(200, "0", "", "200 result=0")]


def test_not_utf8_in_the_caller_name_is_replaced_not_refused() -> None:
    [event] = feed_in_chunks(ENV.replace(b"M\xc3\xbcller", b"M\xfcller"), 3)
    assert isinstance(event, Environment)
    assert event.get("agi_calleridname") == "M\ufffdller: Sales"


def test_refusal_quotes_the_offending_bytes() -> None:
    refused = parse_environment(b"agi_context: a\nagi_x\x00y: 1")
    assert refused == EnvironmentRefused("NUL byte in environment line b'agi_x\\x00y: 1'")


@given(st.lists(st.sampled_from([
    b"agi_context: v\n", b"agi_dnid: 1\n", b"agi_x: \xff\n", b"\n", b"\r\n", b"HANGUP\n",
    b"200 result=1\n", b"agi_", b":", b" ", b"\x00", b"\r", b"HANG",
]), max_size=12), st.integers(min_value=1, max_value=9))
def test_any_input_reads_the_environment_the_same_however_chunked(parts: list[bytes],
                                                                  size: int) -> None:
    """Only RemoteProtocolError escapes, and the chunking never changes how the environment
    reads; the one difference allowed: bytes after the blank line in the same read refuse
    it, while in a later read they are an error after it."""
    data = b"".join(parts) + b"\n\n"

    def first(step: int) -> object:
        session = AgiSession()
        try:
            for i in range(0, len(data), step):
                session.receive_data(data[i : i + step])
                if (event := session.next_event()) is not NEED_DATA:
                    return event
            session.receive_data(b"")
            return session.next_event()
        except RemoteProtocolError:
            return "error"

    whole, chunked = first(len(data)), first(size)
    if isinstance(whole, EnvironmentRefused) and "after the environment" in whole.reason:
        assert isinstance(chunked, Environment | EnvironmentRefused)
    else:
        assert chunked == whole


def test_command_sent_twice_is_a_local_error() -> None:
    session = AgiSession()
    session.receive_data(ENV)
    drain(session)
    session.command_sent()
    with pytest.raises(LocalProtocolError):
        session.command_sent()
