"""A FastAGI server that dies in the middle of every route request, for failover tests.

Contract. :class:`DyingAgiServer` listens on a free loopback port (`url`), reads each
connection's AGI environment up to its blank line, then resets the connection (SO_LINGER
0: what the kernel does to the sockets of a SIGKILLed bridge with unread data) without
answering: Asterisk has sent the call to a bridge that is gone. `environments` counts
the environments read whole. A context manager; one thread, gone on exit.
"""

from __future__ import annotations

import socket
import struct
import threading
from types import TracebackType
from typing import Self

# An AGI environment is a few hundred bytes (res_agi.c setup_env); a bound for the test.
MAX_ENVIRONMENT = 64 * 1024
ACCEPT_POLL_S = 0.1


class DyingAgiServer:
    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(ACCEPT_POLL_S)
        self.url = f"agi://127.0.0.1:{self._sock.getsockname()[1]}"
        self.environments = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="dying-agi", daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5.0)
                data = b""
                while b"\n\n" not in data and len(data) < MAX_ENVIRONMENT:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                if b"\n\n" in data:
                    self.environments += 1
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()
