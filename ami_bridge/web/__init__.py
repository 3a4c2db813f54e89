"""The workstation web page's static files, served by the API app.

Contract. `StaticFiles.load()` reads every file of `ami_bridge/web/static/` (package
data, shipped in the wheel) once, at start: that listing is the whitelist, so
`GET /static/{name}` can only ever answer one of those files by its exact name, and no
request path reaches the file system (no traversal, no symlink, no file added later).
`index` answers `GET /` with index.html. Every answer carries a strict
Content-Security-Policy (scripts and styles from this origin only, nothing inline; fetch
and WebSocket to this origin), `X-Content-Type-Options: nosniff`, no framing, no
referrer, and `Cache-Control: no-cache` with a strong ETag (names are not versioned, so
a browser revalidates and gets 304 while the file is unchanged). The page itself talks
only to the bridge's own API (docs/workstation.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

PACKAGE = "ami_bridge.web"
FOLDER = "static"
INDEX = "index.html"
# The page's whole CSP: only 'self', nothing inline, no plugins, no framing, no <base>.
# connect-src names ws:/wss: too, as not every browser counts a same-host WebSocket as
# 'self' (CSP Level 3 does; older engines did not).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")
CACHE = "no-cache"  # revalidate every time (ETag): the names carry no version
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
         ".png": "image/png", ".svg": "image/svg+xml"}
# Only these suffixes are served; anything else in the folder (an editor's backup) is not.
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
           "Cache-Control": CACHE}


@dataclass(frozen=True)
class StaticFile:
    name: str
    body: bytes
    content_type: str
    etag: str  # quoted, strong


class StaticFiles:
    """The whitelist of static files and the two handlers that serve them."""

    def __init__(self, files: Mapping[str, StaticFile]) -> None:
        if INDEX not in files:
            raise ValueError(f"the web page's {INDEX} is missing from {PACKAGE}/{FOLDER}")
        self.files = dict(files)

    @classmethod
    def load(cls) -> StaticFiles:
        """Read the package's static folder (flat: sub-folders are not served)."""
        files: dict[str, StaticFile] = {}
        for entry in resources.files(PACKAGE).joinpath(FOLDER).iterdir():
            suffix = "." + entry.name.rpartition(".")[2]
            if not entry.is_file() or entry.name.startswith(".") or suffix not in TYPES:
                continue
            body = entry.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            files[entry.name] = StaticFile(entry.name, body, TYPES[suffix], etag)
        return cls(files)

    def _answer(self, request: web.Request, item: StaticFile) -> web.Response:
        headers = {**HEADERS, "ETag": item.etag}
        if item.etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        charset = "utf-8" if item.content_type.startswith("text/") else None
        return web.Response(body=item.body, content_type=item.content_type,
                            charset=charset, headers=headers)

    async def index(self, request: web.Request) -> web.Response:
        return self._answer(request, self.files[INDEX])

    async def static(self, request: web.Request) -> web.Response:
        item = self.files.get(request.match_info["name"])
        if item is None:
            raise web.HTTPNotFound()
        return self._answer(request, item)
