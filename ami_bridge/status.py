"""`ami-bridge status`: what a running bridge reports about itself, and how it is shown.

Two halves of one contract, the status document (the control socket's `status` answer,
built in ami_bridge.daemon): the daemon side keeps the last `RECENT_RECORDS` WARNING and
ERROR log lines in a ring buffer (`RecentLog`, a logging.Handler on the root logger), so
an operator sees why a call was default-routed without reading the journal; the client
side (`render`) prints the document as a compact table, `--json` prints it whole. The
version is the installed distribution's (`importlib.metadata`), never a literal, so the
wheel, `--version` and `status` cannot disagree. `render` reads the document
defensively: a bridge of another version may lack a key, and `status` must still print.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

DISTRIBUTION = "ami-bridge"
# Enough to cover a burst (a VTS crash logs about five lines) and still print on a screen.
RECENT_RECORDS = 50
# A log line that quotes a large frame must not make the status answer large.
MAX_MESSAGE_CHARS = 500
RECENT_SHOWN = 10  # the human table shows the newest ones; --json has them all
# Exit statuses of `ami-bridge status` (1 is every command's "cannot reach / refused").
EXIT_OK, EXIT_UNREACHABLE, EXIT_DEGRADED = 0, 1, 3


def version() -> str:
    """The installed ami-bridge version ("unknown" when run from an uninstalled tree)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class Recent:
    at: float  # wall-clock seconds
    level: str
    logger: str
    message: str


class RecentLog(logging.Handler):
    """The last `capacity` records at WARNING or above, oldest first."""

    def __init__(self, capacity: int = RECENT_RECORDS) -> None:
        super().__init__(level=logging.WARNING)
        self._records: deque[Recent] = deque(maxlen=capacity)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not break logging for the caller
            message = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            message = f"{message}: {record.exc_info[1]!r}"
        self._records.append(Recent(at=record.created, level=record.levelname,
                                    logger=record.name, message=message[:MAX_MESSAGE_CHARS]))

    def records(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self._records]


def duration(seconds: float | None) -> str:
    """3d4h, 2h05m, 4m10s, 12s: the two largest units."""
    if seconds is None:
        return "-"
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{s:02d}s"
    return f"{s}s"


def _yes(value: object) -> str:
    return "yes" if value else "no"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def render(status: Mapping[str, Any]) -> str:
    """The status document as a compact human-readable table."""
    lines = [f"ami-bridge {status.get('version', '?')}, pid {status.get('pid', '?')}, "
             f"up {duration(status.get('uptime_s'))}"]
    ami = status.get("ami")
    if ami is None:
        lines.append("AMI      not configured")
    else:
        state = "connected" if ami.get("connected") else "NOT CONNECTED"
        lines.append(f"AMI      {state}, {ami.get('reconnects', 0)} reconnects, "
                     f"{ami.get('calls', 0)} calls tracked")
    ari = status.get("ari")
    if ari is not None:  # only with [ari]: the ARI driver's WebSocket
        state = "connected" if ari.get("connected") else "NOT CONNECTED"
        lines.append(f"ARI      {state}, {ari.get('reconnects', 0)} reconnects, "
                     f"{ari.get('calls', 0)} calls, {ari.get('requests', 0)} requests")
    tenants = status.get("tenants") or {}
    lines.append(f"tenants  {', '.join(sorted(tenants)) or '-'}")
    pending = status.get("pending") or {}
    lines.append(f"pending  {sum(pending.values())} calls")
    vts = status.get("vts") or {}
    if vts:
        rows = [["VTS", "PID", "UP", "RESTARTS", "CONNECTED", "FLAPPING", "PENDING"]]
        for name, p in sorted(vts.items()):
            rows.append([name, str(p.get("pid") or "-"), duration(p.get("uptime_s")),
                         str(p.get("restarts", 0)), _yes(p.get("connected")),
                         "YES" if p.get("flapping") else "no", str(pending.get(name, 0))])
        lines += ["", *_table(rows)]
    recent = status.get("recent") or []
    if recent:
        shown = recent[-RECENT_SHOWN:]
        lines += ["", f"recent warnings and errors ({len(shown)} of {len(recent)}, newest "
                  "last):"]
        for r in shown:
            at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.get("at", 0)))
            lines.append(f"  {at} {r.get('level', '?'):7} {r.get('message', '')}")
    else:
        lines += ["", "no recent warnings or errors"]
    return "\n".join(lines)


def degraded(status: Mapping[str, Any]) -> list[str]:
    """What is not as it should be: AMI or ARI down, a VTS not connected or flapping,
    stopping."""
    problems = []
    ami = status.get("ami")
    if ami is not None and not ami.get("connected"):
        problems.append("AMI session not connected")
    ari = status.get("ari")
    if ari is not None and not ari.get("connected"):
        problems.append("ARI WebSocket not connected (ari venues take their fallback)")
    for name, p in sorted((status.get("vts") or {}).items()):
        if not p.get("connected"):
            problems.append(f"VTS {name} not connected")
        if p.get("flapping"):
            problems.append(f"VTS {name} flapping")
    if status.get("stopping"):
        problems.append("the bridge is stopping")
    return problems


def command(socket_path: str | None, config_path: Path | None, *, as_json: bool) -> int:
    """`ami-bridge status`: ask the bridge, print, and exit 0, 1 or 3 (see the help)."""
    from ami_bridge import config as config_mod
    from ami_bridge import control

    try:
        if socket_path is None:
            assert config_path is not None
            socket_path = config_mod.load(config_path).control_socket
        answer = control.request(socket_path, "status")
    except config_mod.ConfigError as exc:
        print(f"ami-bridge: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"ami-bridge: cannot reach the bridge's control socket {socket_path}: {exc}",
              file=sys.stderr)
        return EXIT_UNREACHABLE
    if not answer.get("ok") or not isinstance(answer.get("status"), dict):
        print(f"ami-bridge: status refused: {answer.get('error')}", file=sys.stderr)
        return EXIT_UNREACHABLE
    document: dict[str, Any] = answer["status"]
    if as_json:
        print(json.dumps(document, indent=2, sort_keys=True))
    else:
        print(render(document))
    problems = degraded(document)
    if problems and not as_json:
        print(f"\nDEGRADED: {'; '.join(problems)}")
    return EXIT_DEGRADED if problems else EXIT_OK
