"""systemd's readiness protocol (sd_notify) for `Type=notify` units, without a library.

The whole protocol is one datagram of newline-separated `KEY=VALUE` lines (READY=1,
STATUS=..., STOPPING=1, RELOADING=1, MONOTONIC_USEC=...) sent to the AF_UNIX datagram
socket named by `$NOTIFY_SOCKET` (sd_notify(3); a leading `@` names an abstract socket).
That is a dozen lines of socket code, so the bridge depends on no binding for it.
Without `$NOTIFY_SOCKET` (not started by systemd, or not `Type=notify`) every call is a
no-op. A failed send is logged once and never raised: readiness reporting must not stop
the bridge from routing calls. Values are single lines: a newline in a STATUS text would
start a second assignment, so it is replaced.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"


def encode(fields: Mapping[str, str]) -> bytes:
    """One notification datagram: `KEY=VALUE` lines, values flattened to one line."""
    lines = []
    for key, value in fields.items():
        if not key or not key.isupper() or "=" in key:
            raise ValueError(f"sd_notify key {key!r} is not an upper-case variable name")
        lines.append(f"{key}={' '.join(str(value).splitlines())}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def _address(value: str) -> str | bytes:
    # An abstract-namespace socket is spelled with a leading @, bound with a leading NUL.
    return b"\0" + value[1:].encode() if value.startswith("@") else value


class Notifier:
    """Sends notifications to `socket_path` (default: `$NOTIFY_SOCKET`); a no-op without."""

    def __init__(self, socket_path: str | None = None) -> None:
        self.path = socket_path if socket_path is not None else os.environ.get(
            NOTIFY_SOCKET_ENV, "")
        self._failed = False

    @property
    def enabled(self) -> bool:
        return bool(self.path)

    def notify(self, **fields: str) -> bool:
        """Send one datagram; True if it was sent."""
        if not self.path:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(encode(fields), _address(self.path))
        except OSError as exc:
            if not self._failed:  # the manager is gone or the socket is wrong: say so once
                log.warning("sd_notify to %s failed: %s", self.path, exc)
                self._failed = True
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify(READY="1", STATUS=status)

    def status(self, status: str) -> bool:
        return self.notify(STATUS=status)

    def stopping(self, status: str) -> bool:
        return self.notify(STOPPING="1", STATUS=status)

    def reloading(self, status: str) -> bool:
        # systemd >= 253 wants MONOTONIC_USEC with RELOADING=1 (for Type=notify-reload);
        # older managers ignore the extra field.
        return self.notify(RELOADING="1", STATUS=status,
                           MONOTONIC_USEC=str(time.clock_gettime_ns(time.CLOCK_MONOTONIC)
                                              // 1000))
