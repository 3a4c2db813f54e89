"""A short, separate AMI login that reloads Asterisk modules (the dialplan, the queues).

The bridge's own AMI user is least-privilege and may not reload anything (`Reload`
needs the `system` or `config` write class). Reloading after a tenant change is the one
administrative act the bridge performs, so it logs in as a second user that can do only
that (asterisk-conf/manager.d/ami-bridge-reload.conf: write = system, no events), sends
`Reload` for each module, and logs off. It is not a CTI attachment: no events, seconds
long, only when an operator applies a tenant change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ami_bridge.ami.protocol import (
    NEED_DATA,
    AmiConnection,
    ConnectionClosed,
    Event,
    Greeting,
    Response,
    encode_action,
)

log = logging.getLogger(__name__)

TIMEOUT = 10.0  # a dialplan reload of a few thousand contexts takes well under a second


class ReloadError(Exception):
    """The reload login or a module reload failed; the message says which and why.

    `started` is False when no Reload action was sent (connection or login failed), so
    Asterisk certainly still runs the dialplan it had."""

    def __init__(self, message: str, *, started: bool = True) -> None:
        super().__init__(message)
        self.started = started


async def reload_modules(*, host: str, port: int, username: str, secret: str,
                         modules: list[str], timeout: float = TIMEOUT) -> None:
    try:
        await asyncio.wait_for(_reload(host, port, username, secret, modules), timeout)
    except (TimeoutError, OSError) as exc:
        raise ReloadError(f"AMI reload as {username!r} at {host}:{port} failed: "
                          f"{exc or 'timed out'}", started=False) from None


async def _reload(host: str, port: int, username: str, secret: str,
                  modules: list[str]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    conn = AmiConnection()

    async def response(action_id: str) -> Response:
        while True:
            item = conn.next_event()
            if item is NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                continue
            if isinstance(item, ConnectionClosed):
                raise ReloadError("Asterisk closed the reload session")
            if isinstance(item, Response) and item.action_id == action_id:
                return item
            if isinstance(item, Greeting | Event | Response):
                continue  # the greeting, stray events, other responses

    try:
        writer.write(encode_action("Login", "reload-login", {
            "Username": username, "Secret": secret, "Events": "off"}))
        login = await response("reload-login")
        if not login.success:
            raise ReloadError(f"AMI login as {username!r} refused: {login.message}",
                              started=False)
        for i, module in enumerate(modules):
            writer.write(encode_action("Reload", f"reload-{i}", {"Module": module}))
            answer = await response(f"reload-{i}")
            if not answer.success:
                raise ReloadError(f"reload of {module} refused: {answer.message}")
            log.info("AMI: reloaded %s", module)
        writer.write(encode_action("Logoff", "reload-logoff"))
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
