"""The bridge's control socket: `status`, `reload` and `apply`, for `ami-bridge ctl` and scripts.

A Unix stream socket (mode 0600: whoever can use it can reload the bridge) speaking one
JSON object per line each way: `{"cmd": "status"}` -> the intermediary's venue map,
VTS connections, pending counts, counters and supervisor state;
`{"cmd": "reload"}` -> `{"ok": true}` or `{"ok": false, "error": "..."}` (the running
config is kept when the file does not validate); `{"cmd": "apply"}` -> the same with
`"changed"` (ami_bridge.apply; with `[cluster]` on every node: ami_bridge.cluster.apply).
The same framing core as the VTS wire (`ami_bridge.tenants.protocol`) bounds each
request. `serve` replaces a stale socket file; a bridge that stops cleanly removes its
own (`remove`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ami_bridge.tenants.protocol import FrameDecoder, RemoteProtocolError, encode

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 4096  # requests are one short command
CLIENT_TIMEOUT = 30.0  # a reload of a large config stays well under this
# `apply` with [cluster] waits for every node's prepare and commit, each bounded by
# ami_bridge.cluster.apply.Timeouts (20 s + 30 s, and 30 s to roll back): room for 3
# nodes at their worst; a node typically takes about a second.
APPLY_CLIENT_TIMEOUT = 300.0

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


async def serve(path: str, handler: Handler) -> asyncio.AbstractServer:
    sock_path = Path(path)
    # A directory the bridge creates is its own (0700); an existing one is the operator's.
    sock_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if sock_path.is_socket():
            sock_path.unlink()  # a stale socket from a bridge that did not stop cleanly

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder(max_frame_bytes=MAX_REQUEST_BYTES)
        try:
            while data := await reader.read(MAX_REQUEST_BYTES):
                decoder.receive_data(data)
                while (request := decoder.next_message()) is not None:
                    writer.write(encode(await handler(request)))
                    await writer.drain()
        except RemoteProtocolError as exc:
            writer.write(encode({"type": "error", "ok": False, "error": str(exc)}))
        except Exception:
            log.exception("control session failed")
        finally:
            writer.close()

    # Born 0600: a chmod after bind leaves a moment in which anyone may connect. The umask
    # is the process's: it is set around the one synchronous bind (no await, so no other
    # task runs meanwhile) and restored at once.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(sock_path))
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old)
    return await asyncio.start_unix_server(session, sock=sock)


def remove(path: str) -> None:
    """Unlink the control socket of a bridge that stops cleanly (a socket file left
    behind would make `ctl` report "connection refused" instead of "no such file")."""
    sock_path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        if sock_path.is_socket():
            sock_path.unlink()


def request(path: str, command: str, *, timeout: float = CLIENT_TIMEOUT) -> dict[str, Any]:
    """Send one command to a running bridge and return its answer (blocking client)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(encode({"type": "request", "cmd": command}))
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    answer: dict[str, Any] = json.loads(data)
    return answer
