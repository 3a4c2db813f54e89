"""asyncio glue for one bridge <-> VTS connection (the bridge side).

On connect the bridge sends its `hello` (protocol version and the routing protocols
of the tenants this VTS serves); the VTS is attached to the intermediary only after its
own `hello` with a matching version. Frames are decoded by the sans-I/O
`ami_bridge.tenants.protocol.FrameDecoder` and handed to the intermediary, which types
them (`ami_bridge.tenants.messages.parse`) and refuses what is malformed without
closing the link; a framing error, a bad hello or a VTS that stops reading (its
unread output passes `MAX_WRITE_BUFFER`) closes the link, and the intermediary
default-routes that VTS's pending calls. Other tenants are unaffected: each VTS has its
own socket and buffers, and nothing here waits on a VTS.

Frames sent during one event-loop iteration go out in one write at its end (a
`call_soon` flush): route requests that arrive together cost one send() and wake the
VTS once, instead of once each.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from ami_bridge.intermediary import Intermediary
from ami_bridge.tenants import messages
from ami_bridge.tenants.protocol import (
    PROTOCOL_VERSION,
    FrameDecoder,
    JsonObject,
    RemoteProtocolError,
    encode,
)

log = logging.getLogger(__name__)

# A VTS that does not read 4 MiB of route requests (several thousand calls) is hung.
MAX_WRITE_BUFFER = 4 * 1024 * 1024


class VtsLinkProtocol(asyncio.Protocol):
    def __init__(self, name: str, intermediary: Intermediary) -> None:
        self.name = name
        self._intermediary = intermediary
        self._decoder = FrameDecoder()
        self._transport: asyncio.Transport | None = None
        self._outgoing: list[bytes] = []  # frames waiting for this iteration's flush
        self._loop: asyncio.AbstractEventLoop | None = None  # the connection's loop
        self.ready = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's transports are not asyncio.Transport subclasses
        self._transport = cast(asyncio.Transport, transport)
        # Kept: asyncio.get_running_loop() per frame costs a getpid() system call here.
        self._loop = asyncio.get_running_loop()
        self._write(self._intermediary.hello_for(self.name))

    def data_received(self, data: bytes) -> None:
        self._decoder.receive_data(data)
        try:
            while (message := self._decoder.next_message()) is not None:
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("vts %s << %r", self.name, message)
                if self.ready:
                    self._intermediary.on_vts_message(self.name, message)
                else:
                    self._on_hello(message)
        except RemoteProtocolError as exc:
            log.error("VTS %s: protocol error: %s; closing the link", self.name, exc)
            self.close()
        except Exception:
            log.exception("VTS %s: message handling failed; closing the link", self.name)
            self.close()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._outgoing.clear()
        if self.ready:
            self.ready = False
            self._intermediary.detach_vts(self.name)

    def _on_hello(self, raw: JsonObject) -> None:
        try:
            hello = messages.parse(raw)
        except messages.MessageError as exc:
            raise RemoteProtocolError(f"expected hello: {exc}") from None
        if not isinstance(hello, messages.Hello) or hello.v != PROTOCOL_VERSION:
            raise RemoteProtocolError(
                f"expected hello with v={PROTOCOL_VERSION}, got {str(raw)[:120]}")
        self.ready = True
        self._intermediary.attach_vts(self.name, self, events=hello.events,
                                      minor=hello.minor)

    # -- VtsLink -----------------------------------------------------------------------
    def send(self, message: messages.Message) -> None:
        self._write(message)

    def _write(self, message: messages.Message) -> None:
        if self._transport is None:
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug("vts %s >> %r", self.name, message)
        if not self._outgoing:
            loop = self._loop if self._loop is not None else asyncio.get_running_loop()
            loop.call_soon(self._flush)
        self._outgoing.append(encode(messages.to_wire(message)))

    def _flush(self) -> None:
        if self._transport is None or self._transport.is_closing() or not self._outgoing:
            self._outgoing.clear()
            return
        data = b"".join(self._outgoing)
        self._outgoing.clear()
        self._transport.write(data)
        if self._transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.error("VTS %s is not reading (%d bytes queued); closing the link",
                      self.name, self._transport.get_write_buffer_size())
            self.close()

    def close(self) -> None:
        self._outgoing.clear()
        if self._transport is not None:
            self._transport.abort()
