"""Sans-I/O framing of the bridge <-> VTS wire protocol (version 2.2).

Frames are single-line JSON objects (UTF-8) ended by LF: JSON escapes every control
character inside strings, so the newline is an unambiguous delimiter and a VTS can be
written in any language with a JSON library and a line reader. Each message carries a
`type`; the full message set is documented in docs/vts-protocol.md and typed in
`ami_bridge.tenants.messages`, which builds messages from the objects decoded here.

`FrameDecoder.receive_data(bytes)` buffers; `next_message()` returns one decoded frame
(a JSON object) or None when more bytes are needed. A frame longer than `MAX_FRAME_BYTES`, EOF in
the middle of a frame, bad UTF-8, bad JSON or a non-object is a `RemoteProtocolError`
quoting the offending bytes. `encode(message)` is the only way a frame is built.
"""

from __future__ import annotations

import json
import json.encoder
from typing import Any

# 2: one target spelling, `KIND:VALUE` (`"target": "queue:sales"`, `previous.target`);
# version 1's `queue` / `external` keys and `previous.kind` are gone.
PROTOCOL_VERSION = 2
# Minor versions add to a version without breaking it (`minor` in `hello`; absent: 0).
# 1: a VTS names the event kinds it wants in its hello (`events`); without it, all.
# 2: `state` frames both ways: a VTS's small persistent state per tenant, kept by the
# bridge and given back after the VTS's hello (only to a VTS that says minor >= 2).
PROTOCOL_MINOR = 2
# The environment variable naming the VTS's end of its socket pair (a file descriptor
# number), set by the bridge's supervisor for the VTS process it starts.
FD_ENV = "AMI_BRIDGE_VTS_FD"
# The largest message is `hello` from the bridge carrying the tenants' routing
# protocols (a few hundred rules is a few tens of KiB); route requests are < 1 KiB.
MAX_FRAME_BYTES = 1024 * 1024

JsonObject = dict[str, Any]


class RemoteProtocolError(Exception):
    """The peer sent bytes that break the VTS wire protocol."""


class FrameDecoder:
    def __init__(self, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._buffer = bytearray()
        self._eof = False
        self._max = max_frame_bytes
        self._scan_from = 0

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._eof = True
        else:
            self._buffer += data

    def next_message(self) -> JsonObject | None:
        """One decoded frame, or None if a complete frame is not buffered yet."""
        end = self._buffer.find(b"\n", self._scan_from)
        if end < 0:
            self._scan_from = len(self._buffer)
            if len(self._buffer) > self._max:
                raise RemoteProtocolError(
                    f"frame longer than {self._max} bytes: {bytes(self._buffer[:60])!r}..."
                )
            if self._eof and self._buffer:
                raise RemoteProtocolError(
                    f"EOF inside a frame: {bytes(self._buffer[:60])!r}"
                )
            return None
        if end > self._max:
            raise RemoteProtocolError(f"frame longer than {self._max} bytes")
        raw = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        self._scan_from = 0
        return decode_frame(raw)

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._buffer


# Built once: json.dumps/json.loads with arguments build a new encoder per call, which
# was a measurable share of each route request on both sides of the link.
_DECODER = json.JSONDecoder()
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)
# The C encoder that JSONEncoder.encode builds on every call, made once (None where
# CPython's _json accelerator is missing). No circular-reference check: messages are
# plain trees built by code.
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_encode_chunks = (
    _c_make_encoder(None, _ENCODER.default, json.encoder.encode_basestring_ascii, None,
                    _ENCODER.key_separator, _ENCODER.item_separator, False, False, True)
    if _c_make_encoder is not None else None
)


def decode_frame(raw: bytes) -> JsonObject:
    try:
        text = raw.decode("utf-8")
        if text[:1] == "{" and text[-1:] == "}":
            # The usual frame: an object with no surrounding whitespace. raw_decode
            # skips json.loads' whitespace handling; anything after the object goes
            # through json.loads, which raises its usual error for it.
            message, end = _DECODER.raw_decode(text)
            if end != len(text):
                message = json.loads(text)
        else:
            message = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RemoteProtocolError(f"undecodable frame {raw[:80]!r}: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise RemoteProtocolError(f"frame is not an object with a string 'type': {raw[:80]!r}")
    return message


def encoded_size(value: object) -> int:
    """The bytes of `value` encoded as in a frame (compact, ASCII): what a size limit on
    part of a message (a VTS's `state`) counts. ValueError/TypeError if not JSON."""
    if _encode_chunks is None:
        return len(_ENCODER.encode(value))
    return sum(len(chunk) for chunk in _encode_chunks(value, 0))


def encode(message: JsonObject) -> bytes:
    """Serialise one message as a frame. ensure_ascii keeps frames 7-bit clean."""
    if _encode_chunks is None:
        return _ENCODER.encode(message).encode("ascii") + b"\n"
    return "".join(_encode_chunks(message, 0)).encode("ascii") + b"\n"
