"""Log set-up of the daemon (`ami-bridge run --log-format text|json`).

Contract. `setup(level, fmt)` sends every log record to stderr (systemd's journal, a
container's log) as one line: `text` is `TEXT_FORMAT`; `json` is one JSON object per
line with `ts` (UTC, ISO 8601, milliseconds), `level`, `logger`, `message`, every field
the call passed in `extra` (the per-call line's `venue`, `tenant`, `disposition`, `rule`,
`latency_ms`, ...; the alarms' `alarm`, `venue`, `raised`) and `exc` for a traceback.
The stdlib suffices for this (a dozen lines), rather than python-json-logger, whose
import path moved between major versions and which adds a dependency for it.
Secrets never reach a record in the first place (docs/operations.md, Logs): this module
masks nothing.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
FORMATS = ("text", "json")
# What every LogRecord carries; anything else on a record came from `extra`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        seconds = time.gmtime(record.created)
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", seconds) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"log format {fmt!r}: expected one of {', '.join(FORMATS)}")


def setup(level: str, fmt: str = "text", stream: TextIO | None = None) -> None:
    """Configure the root logger once, as logging.basicConfig would, with `fmt`."""
    # Neither format prints a record's pid, thread or process name; collecting them costs
    # a getpid() and ~1.5 µs per record, and the daemon writes one record per routed call
    # (bench/README.md, "Notes: the routing path").
    logging.logProcesses = False
    logging.logThreads = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
