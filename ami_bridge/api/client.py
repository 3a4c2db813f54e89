"""A small synchronous client of the API for the command line (stdlib urllib only).

`Client.call(method, path, body)` sends JSON with the bearer token and returns the
decoded answer, or raises `ApiFailure` carrying the API's status, field and reason
(`current` on a stale version). Connection trouble is `OSError` (urllib's `URLError`
is one). The session token lives in a file only its owner may read (0600, in a 0700
directory), like an SSH key; nothing here prints it.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

DEFAULT_API = "http://127.0.0.1:8088"
API_ENV = "AMI_BRIDGE_API"
DEFAULT_TOKEN_FILE = Path("~/.config/ami-bridge/token")
TIMEOUT = 30.0  # seconds; a login hashes a password, the rest are quick
MAX_ANSWER = 16 * 1024 * 1024  # a trace listing is far smaller; a bound all the same


class ApiFailure(Exception):
    """The API refused a request: its status, the field at fault and why."""

    def __init__(self, status: int, field: str, reason: str, current: int | None = None):
        super().__init__(f"HTTP {status}: {field + ': ' if field else ''}{reason}"
                         + (f" (current version {current})" if current is not None else ""))
        self.status = status
        self.field = field
        self.reason = reason
        self.current = current


class Client:
    def __init__(self, base: str, token: str | None = None, *,
                 timeout: float = TIMEOUT) -> None:
        if urllib.parse.urlsplit(base).scheme not in ("http", "https"):
            raise ValueError(f"--api must be an http:// or https:// URL, got {base!r}")
        self.base = base.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None,
             query: dict[str, str] | None = None) -> Any:
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                raw = answer.read(MAX_ANSWER)
        except urllib.error.HTTPError as exc:
            raise _failure(exc) from None
        return json.loads(raw) if raw else None


def _failure(exc: urllib.error.HTTPError) -> ApiFailure:
    try:
        error = json.loads(exc.read(MAX_ANSWER))["error"]
        current = error.get("current")
        return ApiFailure(exc.code, str(error.get("field", "")), str(error.get("reason", "")),
                          current if isinstance(current, int) else None)
    except (ValueError, KeyError, TypeError, AttributeError):
        return ApiFailure(exc.code, "", str(exc.reason))


def read_token(path: Path) -> str | None:
    """The token in `path` (first line), or None when there is no such file."""
    try:
        text = path.expanduser().read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    return text or None


def write_token(path: Path, token: str) -> Path:
    """Write the token readable by its owner only; returns the file written."""
    path = path.expanduser()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as file:
        os.fchmod(file.fileno(), 0o600)  # an older file may have had wider bits
        file.write(token + "\n")
    return path
