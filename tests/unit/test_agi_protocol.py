"""The sans-I/O AGI session core: fed whole, byte by byte, and with trailing data."""

from __future__ import annotations

import pytest

from ami_bridge.agi.protocol import (
    MAX_HEADER_BYTES,
    MAX_LINE_BYTES,
    NEED_DATA,
    AgiSession,
    Closed,
    Environment,
    Hangup,
    LocalProtocolError,
    Phase,
    RemoteProtocolError,
    Reply,
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


def test_reply_requires_command_sent() -> None:
    session = AgiSession()
    session.receive_data(ENV + b"200 result=1\n")
    assert isinstance(session.next_event(), Environment)
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


def test_overlong_line_is_refused_before_newline_arrives() -> None:
    session = AgiSession()
    session.receive_data(b"agi_x: " + b"a" * (MAX_LINE_BYTES + 1))
    with pytest.raises(RemoteProtocolError, match="longer than"):
        session.next_event()


def test_header_size_is_bounded() -> None:
    session = AgiSession()
    line = b"agi_arg_1: " + b"b" * 1000 + b"\n"
    session.receive_data(line * (MAX_HEADER_BYTES // len(line) + 2))
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        session.next_event()


def test_malformed_header_line_quotes_the_bytes() -> None:
    session = AgiSession()
    session.receive_data(b"GET / HTTP/1.1\n")
    with pytest.raises(RemoteProtocolError, match="GET / HTTP"):
        session.next_event()


def test_command_sent_twice_is_a_local_error() -> None:
    session = AgiSession()
    session.receive_data(ENV)
    drain(session)
    session.command_sent()
    with pytest.raises(LocalProtocolError):
        session.command_sent()
