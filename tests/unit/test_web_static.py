"""The workstation page's files and how the API app serves them.

Served by the real app (`make_app`) on a loopback test server: `GET /` and `GET
/static/{name}` answer only the files of ami_bridge/web/static (a whitelist read at
start; no path reaches the file system), with a strict CSP and no-sniff, and revalidate
by ETag. The files themselves: no inline script or style (the CSP would block them), no
URL but this origin's, no HTML parsing of server strings, a label for every control,
and every element id documented in docs/workstation.md for the tests that drive it.
"""

from __future__ import annotations

import asyncio
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from ami_bridge.personal.directory import Directory
from ami_bridge.personal.sqlite import SqliteStore
from ami_bridge.web import CSP, StaticFiles
from tests.unit.test_api import Clock, Rules, build_app

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "ami_bridge" / "web" / "static"
DOC = ROOT / "docs" / "workstation.md"


def fetch(tmp_path: Path, *requests: tuple[str, dict[str, str]]) -> list[tuple[int, Any, str]]:
    """(status, headers, body) of each GET path with its headers, on one app."""
    from ami_bridge.tenants import personal

    async def run() -> list[tuple[int, Any, str]]:
        store = SqliteStore(tmp_path / "personal.sqlite3")
        app = build_app(store, Directory(), Clock(),
                        Rules(personal.parse_portion, personal.evaluate))
        answers = []
        async with TestClient(TestServer(app)) as client:
            for path, headers in requests:
                response = await client.get(path, headers=headers, allow_redirects=False)
                answers.append((response.status, response.headers, await response.text()))
        return answers

    return asyncio.run(run())


def test_the_page_and_its_files_are_served_with_a_strict_policy(tmp_path: Path) -> None:
    (index, js, css) = fetch(tmp_path, ("/", {}), ("/static/app.js", {}),
                             ("/static/app.css", {}))
    assert index[0] == 200 and index[1]["Content-Type"] == "text/html; charset=utf-8"
    assert '<script src="/static/app.js" defer></script>' in index[2]
    assert js[0] == 200 and js[1]["Content-Type"] == "text/javascript; charset=utf-8"
    assert css[0] == 200 and css[1]["Content-Type"] == "text/css; charset=utf-8"
    assert js[2] == (STATIC / "app.js").read_text(encoding="utf-8")
    for _, headers, _ in (index, js, css):
        policy = dict(part.strip().split(" ", 1) for part in
                      headers["Content-Security-Policy"].split(";"))
        assert policy["default-src"] == "'self'"
        assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
        assert policy["connect-src"] == "'self' ws: wss:"
        assert policy["object-src"] == "'none'" and policy["frame-ancestors"] == "'none'"
        assert "unsafe" not in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Cache-Control"] == "no-cache"
        assert re.fullmatch(r'"[0-9a-f]{32}"', headers["ETag"])


def test_an_unchanged_file_is_revalidated_with_304(tmp_path: Path) -> None:
    (first,) = fetch(tmp_path, ("/static/app.js", {}))
    etag = first[1]["ETag"]
    (again, other) = fetch(tmp_path, ("/static/app.js", {"If-None-Match": etag}),
                           ("/static/app.js", {"If-None-Match": '"0000"'}))
    assert (again[0], again[2]) == (304, "")
    assert again[1]["ETag"] == etag and again[1]["Content-Security-Policy"] == CSP
    assert other[0] == 200 and other[2]


def test_only_the_whitelisted_names_are_served(tmp_path: Path) -> None:
    paths = ["/static/..%2F__init__.py", "/static/%2e%2e%2f__init__.py",
             "/static/../__init__.py", "/static/__init__.py", "/static/", "/static",
             "/static/app.js/x", "/static/APP.JS", "/static/.hidden", "/index.html",
             "/static/..%2F..%2Fapi%2Fapp.py", "/static/%2Fetc%2Fpasswd"]
    answers = fetch(tmp_path, *((path, {}) for path in paths))
    assert [status for status, _, _ in answers] == [404] * len(paths)
    assert all("import" not in body and "root:" not in body for _, _, body in answers)
    assert set(StaticFiles.load().files) == {"index.html", "app.js", "app.css"}


class _Page(HTMLParser):
    """What the accessibility and policy checks need from index.html."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.label_for: set[str] = set()
        self.template_labels: set[str] = set()  # label data-for=NAME in templates
        self.controls: list[tuple[str, dict[str, str], bool, bool]] = []  # tag, attrs,
        # in a template, inside a <label>
        self.scripts: list[dict[str, str]] = []
        self.inline: list[str] = []  # style= and on*= attributes
        self._label = 0
        self._template = 0
        self._script_text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {key: value or "" for key, value in attrs}
        self.inline += [f"{tag} {key}" for key in found if key == "style"
                        or key.startswith("on")]
        if "id" in found:
            self.ids.append(found["id"])
        if tag == "template":
            self._template += 1
        elif tag == "label":
            self._label += 1
            if "for" in found:
                self.label_for.add(found["for"])
            if "data-for" in found:
                self.template_labels.add(found["data-for"])
        elif tag == "script":
            self.scripts.append(found)
        elif tag in {"input", "select", "textarea"}:
            self.controls.append((tag, found, self._template > 0, self._label > 0))

    def handle_endtag(self, tag: str) -> None:
        if tag == "template":
            self._template -= 1
        elif tag == "label":
            self._label -= 1

    def handle_data(self, data: str) -> None:
        if self.scripts and self.lasttag == "script":
            self._script_text += data.strip()


def _page() -> _Page:
    page = _Page()
    page.feed((STATIC / "index.html").read_text(encoding="utf-8"))
    return page


def test_the_page_has_no_inline_script_or_style_and_a_label_for_every_control() -> None:
    page = _page()
    assert page.scripts == [{"src": "/static/app.js", "defer": ""}]
    assert page._script_text == ""
    assert page.inline == []
    assert len(page.controls) > 15
    unlabelled = [
        (tag, attrs) for tag, attrs, in_template, in_label in page.controls
        if not in_label and attrs.get("id") not in page.label_for
        and not (in_template and attrs.get("name") in page.template_labels)]
    assert unlabelled == []


def test_the_script_talks_only_to_its_own_origin_and_never_parses_html() -> None:
    script = (STATIC / "app.js").read_text(encoding="utf-8")
    assert re.findall(r"https?://", script) == []
    assert re.findall(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|"
                      r"new Function", script) == []
    assert 'const API = "/api/v1";' in script
    # The token travels in the first WebSocket frame, never in the URL.
    assert "`${scheme}${location.host}${API}/ws`" in script
    assert '{type: "auth", token: state.session.token}' in script


def test_every_element_id_is_documented() -> None:
    doc = DOC.read_text(encoding="utf-8")
    source = "".join((STATIC / name).read_text(encoding="utf-8")
                     for name in ("index.html", "app.js"))
    ids = _page().ids
    assert len(ids) > 30
    assert [i for i in ids if f"#{i}`" not in doc] == []
    # The data attributes the tests select by.
    for attribute in ("data-rule-index", "data-step-index", "data-item-index", "data-field",
                      "data-call-id", "data-choice", "data-state", "data-reason",
                      "data-uniqueid", "data-request", "data-outcome"):
        assert attribute in doc, attribute
        dataset = re.sub(r"-([a-z])", lambda m: m.group(1).upper(), attribute[5:])
        assert attribute in source or f"dataset.{dataset}" in source, attribute
