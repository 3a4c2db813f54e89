"""A minimal hand-written asyncio FastAGI server: the floor for a Python FastAGI answer.

One `asyncio.Protocol` per connection: buffer until the blank line that ends the AGI
environment, write one `SET VARIABLE AB_ACTION "route"`, close when Asterisk's `200`
reply line arrives. No validation, no routing, no logging: what is left is the cost of
the event loop, the TCP accept and the three socket reads/writes of one session.
`--uvloop` runs the same code on uvloop.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

ANSWER = b'SET VARIABLE AB_ACTION "route"\n'


class MinimalAgi(asyncio.Protocol):
    __slots__ = ("buf", "sent", "tr")

    def __init__(self) -> None:
        self.buf = b""
        self.sent = False
        self.tr: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tr = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.sent:
            if b"\n\n" in self.buf:
                self.sent = True
                self.buf = self.buf.split(b"\n\n", 1)[1]
                self.tr.write(ANSWER)  # type: ignore[union-attr]
        elif b"\n" in self.buf:
            self.tr.close()  # type: ignore[union-attr]


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = await loop.create_server(MinimalAgi, "127.0.0.1", port, reuse_address=True,
                                      backlog=1024)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--uvloop", action="store_true")
    a = p.parse_args()
    if a.uvloop:
        import uvloop
        uvloop.install()
    asyncio.run(main(a.port))
