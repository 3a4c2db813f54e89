"""The API's one door for input: request bodies and fields, checked before any use.

Every value a client sends passes through here. A body must be one JSON object of at
most `MAX_BODY` bytes (no NaN/Infinity, bounded nesting); a field is taken by name with
its type, length and pattern checked, and strings never carry CR, LF or NUL (they end
up in logs, traces and, through the directory, in channel variables). A refusal is an
`ApiError` naming the field and the reason; the app turns it into
`{"error": {"field": ..., "reason": ...}}` with its status. Pure: no I/O.
"""

from __future__ import annotations

import json
import re
import zoneinfo
from collections.abc import Collection, Mapping
from typing import Any

from ami_bridge.personal.model import MAX_BINDINGS, MAX_DISPLAY_NAME, USER_ID_RE

# A request body of 64 KiB holds a full portion (50 rules, 100 + 100 patterns, 20 saved
# targets, every string at its 64-character limit: about 30 KiB) twice over.
MAX_BODY = 64 * 1024
# Passwords: 10 characters at least (NIST SP 800-63B asks 8; a router's web login is
# exposed), 128 at most so one login cannot make the hash work on megabytes.
MIN_PASSWORD = 10
MAX_PASSWORD = 128
TIMEZONE_RE = re.compile(r"[A-Za-z0-9_+-]{1,32}(/[A-Za-z0-9_+-]{1,32}){0,3}")  # fullmatch
UNIQUEID_RE = re.compile(r"[0-9A-Za-z._-]{1,64}")  # fullmatch; Asterisk's 1700000000.42
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_LINE_BREAK_RE = re.compile(r"[\r\n\x00]")


class ApiError(Exception):
    """A refused request: HTTP `status`, the `field` at fault and why."""

    def __init__(self, status: int, field: str, reason: str, *,
                 extra: Mapping[str, Any] | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status} {field}: {reason}")
        self.status = status
        self.field = field
        self.reason = reason
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"field": self.field, "reason": self.reason, **self.extra}}


def invalid(field: str, reason: str) -> ApiError:
    return ApiError(422, field, reason)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def body_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 naming what is wrong."""
    if len(raw) > MAX_BODY:
        raise ApiError(413, "body", f"larger than {MAX_BODY} bytes")
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ApiError(400, "body", f"not JSON: {exc}"[:200]) from None
    if not isinstance(value, dict):
        raise ApiError(400, "body", f"must be a JSON object, got {type(value).__name__}")
    return value


def only_keys(obj: Mapping[str, Any], allowed: Collection[str], where: str = "") -> None:
    for key in obj:
        if key not in allowed:
            field = f"{where}.{key}" if where else str(key)
            raise invalid(field, f"unknown key; expected {', '.join(sorted(allowed))}")


def text(obj: Mapping[str, Any], key: str, *, default: str | None = None,
         max_len: int = 64, pattern: re.Pattern[str] | None = None, what: str = "") -> str:
    """A string field: required when `default` is None; no CR, LF or NUL."""
    if key not in obj:
        if default is None:
            raise invalid(key, "required")
        return default
    value = obj[key]
    if not isinstance(value, str):
        raise invalid(key, f"must be a string, got {type(value).__name__}")
    if _LINE_BREAK_RE.search(value):
        raise invalid(key, "must not contain CR, LF or NUL")
    if len(value) > max_len:
        raise invalid(key, f"longer than {max_len} characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise invalid(key, f"must be {what or 'of the form ' + pattern.pattern}, got {value!r}")
    return value


def boolean(obj: Mapping[str, Any], key: str, default: bool) -> bool:
    value = obj.get(key, default)
    if not isinstance(value, bool):
        raise invalid(key, f"must be true or false, got {value!r}")
    return value


def integer(obj: Mapping[str, Any], key: str, *, minimum: int, maximum: int) -> int:
    if key not in obj:
        raise invalid(key, "required")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise invalid(key, f"must be an integer {minimum}..{maximum}, got {value!r}")
    return value


def user_id(obj: Mapping[str, Any], key: str = "user_id") -> str:
    return text(obj, key, pattern=USER_ID_RE,
                what="a login name: a lower-case letter, then a-z 0-9 . _ - (64 at most)")


def display_name(obj: Mapping[str, Any], default: str | None = "") -> str:
    value = text(obj, "display_name", default=default, max_len=MAX_DISPLAY_NAME)
    if _CONTROL_RE.search(value):
        raise invalid("display_name", "must not contain control characters")
    return value


def timezone(obj: Mapping[str, Any], default: str | None = "") -> str:
    """"" (the tenant's) or an IANA zone this machine knows."""
    value = text(obj, "timezone", default=default, pattern=None)
    if not value:
        return value
    if not TIMEZONE_RE.fullmatch(value):
        raise invalid("timezone", f"must be an IANA zone like 'Europe/Berlin', got {value!r}")
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise invalid("timezone", f"unknown time zone {value!r}") from None
    return value


def password(obj: Mapping[str, Any], key: str = "password") -> str:
    value = text(obj, key, max_len=MAX_PASSWORD)
    if len(value) < MIN_PASSWORD:
        raise invalid(key, f"must be at least {MIN_PASSWORD} characters")
    return value


def number(obj: Mapping[str, Any], numbers: Mapping[str, str]) -> str:
    """One of the tenant's personal numbers ([personal.numbers])."""
    value = text(obj, "number")
    if value not in numbers:
        known = ", ".join(sorted(numbers)) or "none: the tenant has no [personal] numbers"
        raise invalid("number", f"{value!r} is not one of the tenant's personal numbers "
                      f"({known})")
    return value


def extensions(value: Any, tenant_extensions: Collection[str],
               field: str = "extensions") -> tuple[str, ...]:
    """Bindings: distinct keys of the tenant's `extensions`, at most MAX_BINDINGS."""
    if not isinstance(value, list):
        raise invalid(field, f"must be a list of extensions, got {type(value).__name__}")
    if len(value) > MAX_BINDINGS:
        raise invalid(field, f"at most {MAX_BINDINGS} extensions, got {len(value)}")
    seen: list[str] = []
    for index, ext in enumerate(value):
        where = f"{field}[{index}]"
        if not isinstance(ext, str) or _LINE_BREAK_RE.search(ext) or len(ext) > 64:
            raise invalid(where, f"must be an extension, got {ext!r}"[:200])
        if ext not in tenant_extensions:
            raise invalid(where, f"{ext!r} is not one of the tenant's extensions")
        if ext in seen:
            raise invalid(where, f"{ext!r} is listed twice")
        seen.append(ext)
    return tuple(seen)
