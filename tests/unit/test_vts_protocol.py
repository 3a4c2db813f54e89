"""The bridge <-> VTS framing core."""

from __future__ import annotations

import pytest

from ami_bridge.tenants.protocol import FrameDecoder, RemoteProtocolError, encode

MESSAGES = [
    {"type": "hello", "v": 1, "vts": "acme"},
    {"type": "route_request", "handle": "ab", "call": {"ani_name": "Line\nTwo \u00fc\u20ac"}},
    {"type": "disposition", "handle": "ab", "action": "route", "target": "1001"},
]
STREAM = b"".join(encode(m) for m in MESSAGES)


def decode_all(chunks: list[bytes]) -> list[dict[str, object]]:
    decoder = FrameDecoder()
    out = []
    for chunk in chunks:
        decoder.receive_data(chunk)
        while (m := decoder.next_message()) is not None:
            out.append(m)
    return out


def test_frames_are_one_line_each() -> None:
    assert STREAM.count(b"\n") == len(MESSAGES)


@pytest.mark.parametrize("size", [1, 2, 5, 13, len(STREAM)])
def test_any_chunking(size: int) -> None:
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert decode_all(chunks) == MESSAGES


def test_eof_inside_frame() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b'{"type":"hel')
    assert decoder.next_message() is None
    decoder.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="EOF inside a frame"):
        decoder.next_message()


def test_frame_size_is_bounded() -> None:
    decoder = FrameDecoder(max_frame_bytes=100)
    decoder.receive_data(b"x" * 101)
    with pytest.raises(RemoteProtocolError, match="longer than 100"):
        decoder.next_message()


@pytest.mark.parametrize("raw", [b"not json\n", b"[1,2]\n", b'{"no_type":1}\n', b"\xff\xfe\n"])
def test_bad_frames_are_named(raw: bytes) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(raw)
    with pytest.raises(RemoteProtocolError):
        decoder.next_message()
