"""The command line's API commands end to end, against the API served on a loopback port.

The server runs on its own event loop in a thread (as the daemon's would); the commands
are `cli.main(argv)` in the test's thread, plus one real `python -m ami_bridge`.
`rules edit` runs with EDITOR set to a small script, which for the conflict case first
writes the rules itself, like a second user editing at the same time.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ami_bridge import cli
from ami_bridge.api import serve
from ami_bridge.api.client import ApiFailure, Client
from ami_bridge.personal.directory import Directory
from ami_bridge.personal.settings import ApiConfig
from ami_bridge.personal.sqlite import SqliteStore
from tests.conftest import examples
from tests.unit.test_api import (  # noqa: F401  (store, rules_parser: fixtures)
    OPERATOR_TOKEN,
    TENANT_FILE,
    Clock,
    Rules,
    _decision,
    _venue_decision,
    build_app,
    rules_parser,
    store,
)

ROOT = Path(__file__).resolve().parents[2]


class Served:
    """The API on a loopback port, its event loop in a thread."""

    def __init__(self, sqlite: SqliteStore, rules: Rules) -> None:
        self.store = sqlite
        self.directory = Directory()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.run(sqlite.open())
        app = build_app(sqlite, self.directory, Clock(), rules)
        self.runner = self.run(serve(app, ApiConfig(host="127.0.0.1", port=0)))
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def close(self) -> None:
        self.run(self.runner.cleanup())
        self.run(self.store.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def served(store: SqliteStore, rules_parser: Rules) -> Iterator[Served]:  # noqa: F811
    server = Served(store, rules_parser)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    operator = tmp_path / "operator-token"
    operator.write_text(OPERATOR_TOKEN + "\n")
    operator.chmod(0o600)
    ann = tmp_path / "ann-password"
    ann.write_text("ann-password-1\n")
    ada = tmp_path / "ada-password"
    ada.write_text("ada-password-3\n")
    return {"operator": operator, "ann": ann, "ada": ada,
            "token": tmp_path / "config" / "token"}


def ab(served: Served, files: dict[str, Path], *argv: str, operator: bool = False) -> int:
    token = (["--operator-token-file", str(files["operator"])] if operator
             else ["--token-file", str(files["token"])])
    return cli.main([*argv, "--api", served.url, *token])


def seed(served: Served, files: dict[str, Path]) -> None:
    for user, number, extra in [("ann", "2001", []), ("bob", "2002", []),
                                ("ada", "2003", ["--admin"])]:
        assert ab(served, files, "users", "create", "--tenant", "acme", user, "--number",
                  number, "--name", user.title(), "--password-file",
                  str(files[user] if user in files else files["ann"]), *extra,
                  operator=True) == 0


def test_users_login_rules_and_logout(served: Served, files: dict[str, Path],
                                      capsys: pytest.CaptureFixture[str],
                                      tmp_path: Path) -> None:
    seed(served, files)
    capsys.readouterr()
    assert ab(served, files, "users", "list", "--tenant", "acme", operator=True) == 0
    listing = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listing] == ["ada", "ann", "bob"]
    assert "admin" in listing[0] and "bound to 1001" in listing[1]

    assert ab(served, files, "login", "--tenant", "acme", "--user", "ann",
              "--password-file", str(files["ann"])) == 0
    assert stat.S_IMODE(files["token"].stat().st_mode) == 0o600
    assert stat.S_IMODE(files["token"].parent.stat().st_mode) == 0o700
    assert "logged in as ann of acme" in capsys.readouterr().out

    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"vip": ["0171*"], "rules": [
        {"name": "all", "action": "forward", "target": "extension:1002"}]}))
    assert ab(served, files, "rules", "set", "--file", str(rules)) == 0
    assert capsys.readouterr().out.strip() == "stored version 1"
    assert ab(served, files, "rules", "show") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == 1 and shown["vip"] == ["0171*"]
    assert served.directory.by_number("acme", "2001")[1].version == 1  # type: ignore[index]

    # A refusal prints the API's field and reason, exits 1, stores nothing.
    rules.write_text(json.dumps({"version": 1, "rules": [
        {"action": "forward", "target": "extension:1001&1002"}]}))
    assert ab(served, files, "rules", "set", "--file", str(rules)) == 1
    assert "HTTP 422: rules[0].target:" in capsys.readouterr().err
    # A user is not an admin: listing users is refused with the API's reason.
    assert ab(served, files, "users", "list", "--tenant", "acme") == 1
    assert "HTTP 403: admin:" in capsys.readouterr().err

    # The admin: hot-desk, password, rules of a user, delete.
    assert ab(served, files, "users", "bind", "--tenant", "acme", "bob", "1001", "1002",
              operator=True) == 0
    assert served.directory.user("acme", "ann").bindings == ()  # type: ignore[union-attr]
    assert ab(served, files, "users", "passwd", "--tenant", "acme", "bob", "--password-file",
              str(files["ada"]), operator=True) == 0
    capsys.readouterr()
    assert ab(served, files, "rules", "show", "--tenant", "acme", "ann", operator=True) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 1
    assert ab(served, files, "users", "delete", "--tenant", "acme", "bob", operator=True) == 0
    assert ab(served, files, "users", "show", "--tenant", "acme", "bob", operator=True) == 1
    assert "HTTP 404" in capsys.readouterr().err

    assert ab(served, files, "logout") == 0
    assert not files["token"].exists()
    assert ab(served, files, "rules", "show") == 2
    assert "not logged in" in capsys.readouterr().err


EDITOR = """\
import json, sys, urllib.request
path = sys.argv[1]
portion = json.load(open(path))
mode = {mode!r}
if mode == "conflict":  # someone else stores the rules while we edit
    request = urllib.request.Request(
        {url!r} + "/api/v1/me/rules", method="PUT",
        data=json.dumps({{"version": 0, "vip": ["099*"]}}).encode(),
        headers={{"Authorization": "Bearer " + open({token!r}).read().strip(),
                 "Content-Type": "application/json"}})
    urllib.request.urlopen(request).read()
if mode == "refused":
    portion["rules"] = [{{"action": "forward", "target": "extension:3001"}}]
elif mode != "untouched":
    portion["vip"].append("0172*")
json.dump(portion, open(path, "w"))
"""


def _editor(tmp_path: Path, served: Served, files: dict[str, Path], mode: str) -> str:
    script = tmp_path / f"editor-{mode}.py"
    script.write_text(EDITOR.format(mode=mode, url=served.url, token=str(files["token"])))
    return f"{sys.executable} {script}"


def test_rules_edit_stores_the_edit_or_keeps_it_on_refusal(
        served: Served, files: dict[str, Path], capsys: pytest.CaptureFixture[str],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed(served, files)
    assert ab(served, files, "login", "--tenant", "acme", "--user", "ann",
              "--password-file", str(files["ann"])) == 0
    monkeypatch.delenv("VISUAL", raising=False)
    capsys.readouterr()

    monkeypatch.setenv("EDITOR", _editor(tmp_path, served, files, "untouched"))
    assert ab(served, files, "rules", "edit") == 0
    assert capsys.readouterr().out.strip() == "no change (version 0)"

    monkeypatch.setenv("EDITOR", _editor(tmp_path, served, files, "conflict"))
    assert ab(served, files, "rules", "edit") == 1
    err = capsys.readouterr().err
    assert "changed since version 0 was read (now version 1)" in err
    kept = Path(err.rsplit("your edit is in ", 1)[1].rstrip(")\n"))
    assert json.loads(kept.read_text())["vip"] == ["0172*"]
    kept.unlink()
    portion = served.run(served.store.get_portion("acme", "ann"))
    assert (portion.version, portion.body["vip"]) == (1, ["099*"])

    monkeypatch.setenv("EDITOR", _editor(tmp_path, served, files, "refused"))
    assert ab(served, files, "rules", "edit") == 1
    err = capsys.readouterr().err
    assert "refused: rules[0].target:" in err
    Path(err.rsplit("your edit is in ", 1)[1].rstrip(")\n")).unlink()
    assert served.run(served.store.get_portion("acme", "ann")).version == 1

    monkeypatch.setenv("EDITOR", _editor(tmp_path, served, files, "append"))
    assert ab(served, files, "rules", "edit") == 0
    assert capsys.readouterr().out.strip() == "stored version 2"
    portion = served.run(served.store.get_portion("acme", "ann"))
    assert portion.body["vip"] == ["099*", "0172*"]


def test_trace_and_replay(served: Served, files: dict[str, Path], rules_parser: Rules,  # noqa: F811
                          capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    seed(served, files)
    served.run(served.store.add_traces([
        _decision(rules_parser, "1700.1", "01711111", 1_799_990_000.0),
        _decision(rules_parser, "1700.2", "03011111", 1_799_990_060.0)]))
    assert ab(served, files, "login", "--tenant", "acme", "--user", "ann",
              "--password-file", str(files["ann"])) == 0
    capsys.readouterr()
    assert ab(served, files, "trace", "1700.1") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "call 1700.1 of tenant acme"
    assert out[1].startswith("request 1 at ") and out[1].endswith("in acme-personal, user ann")
    assert [line.split(":")[0].strip() for line in out[2:]] == [
        "previous", "rule", "why", "outcome"]
    assert ab(served, files, "trace", "1700.2", "--tenant", "globex", operator=True) == 1
    assert ab(served, files, "trace", "1700.2", "--tenant", "acme", operator=True) == 0

    candidate = tmp_path / "candidate.json"
    candidate.write_text(json.dumps({"rules": [
        {"name": "mobiles", "when": {"callers": ["0171*"]}, "action": "forward",
         "target": "extension:1003"}]}))
    capsys.readouterr()
    assert ab(served, files, "trace", "replay", "--rules", str(candidate)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "replayed 2 decisions; 1 would change"
    assert out[1].startswith("1700.1 at ") and out[1].endswith(
        "-> route extension:1003 (#1 mobiles)")
    assert ab(served, files, "trace", "replay", "--rules", str(candidate), "--tenant",
              "acme", "--user", "ann", operator=True) == 0
    assert ab(served, files, "trace", "replay") == 2


def test_trace_replay_of_a_tenant_file(served: Served, files: dict[str, Path],
                                       capsys: pytest.CaptureFixture[str],
                                       tmp_path: Path) -> None:
    seed(served, files)
    served.run(served.store.add_traces([
        _venue_decision("2100.1", "2027-01-13T10:00"),
        _venue_decision("2100.2", "2027-01-13T19:30")]))
    candidate = tmp_path / "tenant.toml"
    candidate.write_text(TENANT_FILE)
    capsys.readouterr()
    assert ab(served, files, "trace", "replay", "--tenant-file", str(candidate), "--tenant",
              "acme", operator=True) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "replayed 2 decisions; 1 would change"
    assert out[1].startswith("2100.2 at 2027-01-13 18:30:00 UTC: ") and out[1].endswith(
        ": default vts ((no rule matched)) -> route extension:1002 (evening)")
    assert len(out) == 2
    # Round robin: the answer is one possible one, and says so.
    candidate.write_text(TENANT_FILE.replace('targets = ["1002"]',
                                             'targets = ["1001", "1002"]\n'
                                             'strategy = "round_robin"'))
    assert ab(served, files, "login", "--tenant", "acme", "--user", "ada",
              "--password-file", str(files["ada"])) == 0
    capsys.readouterr()
    assert ab(served, files, "trace", "replay", "--tenant-file", str(candidate), "--tenant",
              "acme") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].endswith("(evening) [stateful: depends on round robin, split or agent "
                           "state; one possible answer]")
    # A refused file names the key; usage mistakes are exit status 2.
    candidate.write_text(TENANT_FILE.replace('name = "evening"', 'name = "evening"\n'
                                             'action = "forward"'))
    assert ab(served, files, "trace", "replay", "--tenant-file", str(candidate), "--tenant",
              "acme") == 1
    assert "tenant_file.rules[0].action: must be one of" in capsys.readouterr().err
    portion = tmp_path / "portion.json"
    portion.write_text("{}")
    for argv in (["--tenant-file", str(candidate)],
                 ["--tenant-file", str(candidate), "--tenant", "acme", "--user", "ann"],
                 ["--tenant-file", str(candidate), "--rules", str(portion)],
                 ["--tenant-file", str(tmp_path / "missing.toml"), "--tenant", "acme"]):
        assert ab(served, files, "trace", "replay", *argv) == 2, argv
    assert ab(served, files, "trace", "2100.1", "--tenant-file", str(candidate)) == 2


def test_the_installed_entry_point_talks_to_the_api(served: Served,
                                                    files: dict[str, Path]) -> None:
    seed(served, files)
    env = {**os.environ, "AMI_BRIDGE_API": served.url}
    done = subprocess.run(
        [sys.executable, "-m", "ami_bridge", "users", "list", "--tenant", "acme",
         "--operator-token-file", str(files["operator"])],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()] == ["ada", "ann", "bob"]
    done = subprocess.run(
        [sys.executable, "-m", "ami_bridge", "users", "list", "--tenant", "acme",
         "--api", "http://127.0.0.1:1", "--operator-token-file", str(files["operator"])],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert done.returncode == 1 and "cannot reach the API" in done.stderr


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)
_BODIES = _JSON | st.fixed_dictionaries({}, optional={
    key: _JSON for key in ("version", "rules", "vip", "blocked", "saved", "extensions",
                           "user_id", "number", "display_name", "timezone", "admin",
                           "password", "bindings", "tenant", "user")})


def test_no_request_body_makes_a_500(served: Served, files: dict[str, Path]) -> None:
    seed(served, files)
    ann = Client(served.url)
    ann.token = ann.call("POST", "/api/v1/login", {"tenant": "acme", "user": "ann",
                                                    "password": "ann-password-1"})["token"]
    operator = Client(served.url, OPERATOR_TOKEN)
    targets = [(ann, "PUT", "/api/v1/me/rules"), (ann, "PUT", "/api/v1/me/bindings"),
               (ann, "POST", "/api/v1/me/replay"), (ann, "POST", "/api/v1/login"),
               (operator, "POST", "/api/v1/tenants/acme/users"),
               (operator, "PUT", "/api/v1/tenants/acme/users/bob"),
               (operator, "PUT", "/api/v1/tenants/acme/users/bob/password")]

    @settings(max_examples=examples(60), deadline=None, database=None)
    @given(body=_BODIES, which=st.integers(0, len(targets) - 1))
    def check(body: Any, which: int) -> None:
        client, method, path = targets[which]
        try:
            client.call(method, path, body)
        except ApiFailure as exc:
            assert 400 <= exc.status < 500, (method, path, body, exc)
    check()
