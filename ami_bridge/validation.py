"""Validation helpers shared by the bridge and tenant config loaders.

Every check raises `ConfigError` through a `Fail` callable that the loader builds for
one file, so each message reads `FILE: dotted.key: what is wrong (got VALUE)`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """The configuration is invalid; the message says where and why."""


Fail = Callable[[str, str], ConfigError]


def failer(path: object) -> Fail:
    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(f"{path}: {key}: {message}")

    return fail


def join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def table(raw: Mapping[str, Any], key: str, fail: Fail, prefix: str = "") -> Mapping[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, Mapping):
        raise fail(join(prefix, key), f"must be a table, got {value!r}")
    return value


def no_unknown(raw: Mapping[str, Any], allowed: set[str], key: str, fail: Fail) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise fail(join(key, unknown[0]), f"unknown key (allowed: {', '.join(sorted(allowed))})")


def count(raw: Mapping[str, Any], key: str, default: int, where: str, fail: Fail,
          *, minimum: int = 1) -> int:
    value = raw.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise fail(join(where, key), f"must be {what}, got {value!r}")
    return value


def positive(raw: Mapping[str, Any], key: str, default: float, where: str, fail: Fail) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise fail(join(where, key), f"must be a positive number of seconds, got {value!r}")
    return float(value)


def names(raw: Mapping[str, Any], key: str, pattern: re.Pattern[str], where: str,
          fail: Fail) -> list[str]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise fail(join(where, key), f"must be a list of strings, got {value!r}")
    for item in value:
        if not pattern.fullmatch(item):
            raise fail(join(where, key), f"{item!r} is not valid")
    return value


def string(raw: Mapping[str, Any], key: str, default: str, pattern: re.Pattern[str] | None,
           where: str, fail: Fail, *, what: str = "value") -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or (pattern is not None and value != default
                                      and not pattern.fullmatch(value)):
        raise fail(join(where, key), f"must be {what}, got {value!r}")
    return value


def secret_file(raw: Mapping[str, Any], key: str, where: str, config_path: Path,
                pattern: re.Pattern[str], fail: Fail, *, what: str) -> str | None:
    """A secret kept in its own file (`key` names the file, relative to the config):
    one line matching `pattern`, readable by its owner only (a secret others can read is
    no secret). None when the key is absent; `what` says what the line must hold."""
    value = raw.get(key)
    if value is None:
        return None
    dotted = join(where, key)
    if not isinstance(value, str) or not value:
        raise fail(dotted, f"expected a path, got {value!r}")
    path = Path(value) if value.startswith("/") else config_path.parent / value
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(dotted, f"cannot read {path}: {exc}") from None
    if mode & 0o077:
        raise fail(dotted, f"{path} is readable by others (mode {mode & 0o777:o}); make it "
                   "0600 (chmod 600) so only the bridge reads it")
    if not pattern.fullmatch(text):
        raise fail(dotted, f"{path} must hold {what}")
    return text


def listen(value: Any, key: str, fail: Fail) -> tuple[str, int]:
    """`HOST:PORT` (an IPv6 host bracketed: `[::1]:8088`, kept so) -> (host, port)."""
    host, sep, port = str(value).rpartition(":")
    if not isinstance(value, str) or not sep or not host or not port.isascii() \
            or not port.isdigit() or not 0 < int(port) < 65536:
        raise fail(key, f"expected HOST:PORT with a port 1-65535, got {value!r}")
    return host, int(port)
