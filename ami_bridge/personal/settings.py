"""The bridge config's `[api]` and `[store]` sections: where the personal router's HTTP
API listens and where its store lives (docs/configuration.md).

`[api]` is optional: without it no API is served. It listens on loopback unless told
otherwise; `tls_cert` and `tls_key` (PEM files) together switch it to HTTPS. The
operator's bearer token is read from `operator_token_file`, which must be readable by
its owner only (like the AGI secret). `[store]` picks the backend: `sqlite` (the
embedded default, one file under the daemon's state directory) or `postgresql` (a
libpq connection string, for several bridges sharing users). Errors name the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ami_bridge.validation import (
    Fail,
    count,
    listen,
    no_unknown,
    positive,
    secret_file,
    table,
)

DEFAULT_API_PORT = 8088
DEFAULT_TOKEN_TTL = 3600.0  # seconds a session token lives; refreshed by the client
DEFAULT_STATE_DIR = "/var/lib/ami-bridge"
STORE_FILE = "personal.sqlite3"
DEFAULT_TRACE_MAX_AGE = 7 * 86400.0  # a week of "why did my call go there"
DEFAULT_TRACE_MAX_ROWS = 100_000  # per tenant
BACKENDS = ("sqlite", "postgresql")
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{32,128}")  # fullmatch; the operator token


@dataclass(frozen=True)
class ApiConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_API_PORT
    tls_cert: Path | None = None
    tls_key: Path | None = None
    operator_token: str | None = field(default=None, repr=False)  # never printed
    token_ttl: float = DEFAULT_TOKEN_TTL


@dataclass(frozen=True)
class StoreConfig:
    backend: str = "sqlite"
    path: Path = Path(DEFAULT_STATE_DIR) / STORE_FILE  # sqlite
    dsn: str = field(default="", repr=False)  # postgresql; may hold a password
    trace_max_age: float = DEFAULT_TRACE_MAX_AGE
    trace_max_rows: int = DEFAULT_TRACE_MAX_ROWS


def parse_api(raw: Mapping[str, Any], path: Path, fail: Fail) -> ApiConfig | None:
    if "api" not in raw:
        return None
    api = table(raw, "api", fail)
    no_unknown(api, {"listen", "tls_cert", "tls_key", "operator_token_file", "token_ttl"},
               "api", fail)
    host, port = listen(api.get("listen", f"127.0.0.1:{DEFAULT_API_PORT}"), "api.listen", fail)
    host = host.strip("[]")  # aiohttp binds the bare address
    cert, key = (_file(api, name, path, fail) for name in ("tls_cert", "tls_key"))
    if (cert is None) != (key is None):
        raise fail("api.tls_cert", "tls_cert and tls_key go together (both PEM files), "
                   "or neither for plain HTTP on loopback")
    return ApiConfig(host=host, port=port, tls_cert=cert, tls_key=key,
                     operator_token=_operator_token(api, path, fail),
                     token_ttl=positive(api, "token_ttl", DEFAULT_TOKEN_TTL, "api", fail))


def parse_store(raw: Mapping[str, Any], path: Path, fail: Fail) -> StoreConfig:
    store = table(raw, "store", fail)
    no_unknown(store, {"backend", "path", "dsn", "trace_max_age", "trace_max_rows"},
               "store", fail)
    backend = store.get("backend", "sqlite")
    if backend not in BACKENDS:
        raise fail("store.backend", f"must be one of {', '.join(BACKENDS)}, got {backend!r}")
    dsn = store.get("dsn", "")
    if not isinstance(dsn, str) or (backend == "postgresql" and not dsn):
        raise fail("store.dsn", "postgresql needs a libpq connection string, like "
                   "'host=/run/postgresql dbname=ami_bridge'")
    raw_path = store.get("path", str(Path(DEFAULT_STATE_DIR) / STORE_FILE))
    if not isinstance(raw_path, str) or not raw_path:
        raise fail("store.path", f"must be a file path, got {raw_path!r}")
    file = Path(raw_path) if raw_path.startswith("/") else path.parent / raw_path
    return StoreConfig(backend=backend, path=file, dsn=dsn,
                       trace_max_age=positive(store, "trace_max_age", DEFAULT_TRACE_MAX_AGE,
                                              "store", fail),
                       trace_max_rows=count(store, "trace_max_rows", DEFAULT_TRACE_MAX_ROWS,
                                            "store", fail))


def _file(api: Mapping[str, Any], key: str, path: Path, fail: Fail) -> Path | None:
    raw = api.get(key, "")
    if not isinstance(raw, str):
        raise fail(f"api.{key}", f"expected a path, got {raw!r}")
    if not raw:
        return None
    file = Path(raw) if raw.startswith("/") else path.parent / raw
    if not file.is_file():
        raise fail(f"api.{key}", f"{file} is not a readable file")
    return file


def _operator_token(api: Mapping[str, Any], path: Path, fail: Fail) -> str | None:
    return secret_file(api, "operator_token_file", "api", path, TOKEN_RE, fail,
                       what="one line of 32 to 128 characters A-Z a-z 0-9 _ - (e.g. "
                       "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
