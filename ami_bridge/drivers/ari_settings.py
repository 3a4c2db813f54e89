"""The bridge config's `[ari]` section: where the ARI driver reaches Asterisk.

Absent: no ARI connection (a venue with `driver = "ari"` then takes its dialplan
fallback at once: Stasis() to an application nobody registered fails, docs/drivers.md).
Present: `url` (Asterisk's HTTP server, default http://127.0.0.1:8089: not 8088, the
personal API's default port on the same host), `username` (the ari.conf user),
`password_file` (one line, readable by its owner only: `validation.secret_file`) and
`app` (the Stasis application the venues enter, default "ami-bridge"). Errors name the
key and the bad value, like every other section. No I/O beyond reading the password file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ami_bridge.agi.variables import DEFAULT_STASIS_APP
from ami_bridge.validation import Fail, no_unknown, secret_file, string, table

# 8089: Asterisk's HTTP port in asterisk-conf/http.conf; 8088 (Asterisk's own default)
# is the bridge's personal API default ([api] listen) on the same host.
DEFAULT_URL = "http://127.0.0.1:8089"
# The Stasis application name the rendered venues enter (render.route_request).
DEFAULT_APP = DEFAULT_STASIS_APP
# ARI application and user names: plain words, so they sit in a URL query and in a
# dialplan argument without quoting (a ',' would split Stasis()'s arguments).
APP_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # fullmatch
USERNAME_RE = APP_RE
# ari.conf passwords: any printable ASCII but space, up to a length no sane one exceeds.
PASSWORD_RE = re.compile(r"[!-~]{8,256}")  # fullmatch


@dataclass(frozen=True)
class AriConfig:
    url: str = DEFAULT_URL  # scheme://host:port, no path: the driver adds /ari/...
    username: str = DEFAULT_APP
    password: str = field(default="", repr=False)  # never printed
    app: str = DEFAULT_APP


def parse_ari(raw: Mapping[str, Any], path: Path, fail: Fail) -> AriConfig | None:
    if "ari" not in raw:
        return None
    section = table(raw, "ari", fail)
    no_unknown(section, {"url", "username", "password_file", "app"}, "ari", fail)
    url = string(section, "url", DEFAULT_URL, None, "ari", fail, what="an http:// URL")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/") \
            or parts.query or parts.username:
        raise fail("ari.url", f"must be http(s)://HOST:PORT (no path, no credentials), "
                   f"got {url!r}")
    username = string(section, "username", DEFAULT_APP, USERNAME_RE, "ari", fail,
                      what="an ari.conf user name (letters, digits, _ . -)")
    app = string(section, "app", DEFAULT_APP, APP_RE, "ari", fail,
                 what="a Stasis application name (letters, digits, _ . -)")
    if "password_file" not in section:
        raise fail("ari.password_file", "is required: the file holding the ari.conf "
                   "user's password (mode 0600)")
    password = secret_file(section, "password_file", "ari", path, PASSWORD_RE, fail,
                           what="one line of 8 to 256 printable characters, no spaces")
    assert password is not None
    return AriConfig(url=url.rstrip("/"), username=username, password=password, app=app)
