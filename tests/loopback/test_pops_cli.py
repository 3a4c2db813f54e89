"""`ami-bridge calls watch` end to end: a real `python -m ami_bridge` with stdin piped,
against the API (real SQLite store, real sessions) and the pop hub served on a loopback
port from an event loop in a thread, as the daemon would. The intermediary is the
`Decider` stand-in of test_pops.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from ami_bridge.api import make_app, serve
from ami_bridge.api.client import Client, write_token
from ami_bridge.personal.directory import Directory
from ami_bridge.personal.pops import PopHub, directory_saved, session_authenticator
from ami_bridge.personal.settings import ApiConfig
from ami_bridge.personal.sqlite import SqliteStore
from ami_bridge.tenants import personal
from tests.loopback.test_pops import Decider, make_pop
from tests.unit.test_api import FAST_HASHER, OPERATOR_TOKEN, PASSWORDS, USERS, tenants

ROOT = Path(__file__).resolve().parents[2]
LINE = 20.0  # seconds a line that must come may take (a cold `python -m` on a busy box)


class Served:
    def __init__(self, path: Path) -> None:
        self.store = SqliteStore(path)
        self.directory = Directory()
        self.hub = PopHub(authenticate=session_authenticator(self.store),
                          saved=directory_saved(self.directory))
        self.decider = Decider(self.hub)
        self.hub.decide = self.decider
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.run(self.store.open())
        app = make_app(store=self.store, directory=self.directory, tenants=tenants,
                       config=ApiConfig(host="127.0.0.1", port=0,
                                        operator_token=OPERATOR_TOKEN),
                       parse_portion=personal.parse_portion, hasher=FAST_HASHER,
                       pops=self.hub)
        self.runner = self.run(serve(app, ApiConfig(host="127.0.0.1", port=0)))
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    def run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def call(self, function: Any, *args: Any) -> Any:
        """Run a plain function on the server's loop (the hub is not thread-safe)."""
        async def inside() -> Any:
            return function(*args)
        return self.run(inside())

    def close(self) -> None:
        self.run(self.runner.cleanup())
        self.run(self.store.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = Served(tmp_path / "personal.sqlite3")
    try:
        operator = Client(server.url, OPERATOR_TOKEN)
        for tenant, user, number, admin in USERS:
            operator.call("POST", f"/api/v1/tenants/{tenant}/users", {
                "user_id": user, "number": number, "admin": admin,
                "password": PASSWORDS[user]})
        yield server
    finally:
        server.close()


def login(served: Served, tmp_path: Path, user: str = "bob") -> Path:
    client = Client(served.url)
    answer = client.call("POST", "/api/v1/login", {"tenant": "acme", "user": user,
                                                   "password": PASSWORDS[user]})
    client.token = answer["token"]
    client.call("PUT", "/api/v1/me/rules", {"version": 0, "saved": ["extension:1003"]})
    return write_token(tmp_path / "token", answer["token"])


class Watcher:
    """`ami-bridge calls watch` in a subprocess; its stdout read line by line."""

    def __init__(self, url: str, token_file: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ami_bridge", "calls", "watch", "--api", url,
             "--token-file", str(token_file)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        assert self.process.stdout is not None
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, pattern: str) -> str:
        """The next line matching `pattern` (earlier lines are kept in `seen`)."""
        deadline = time.monotonic() + LINE
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r}; got {self.seen}") \
                    from None
            if line is None:
                raise AssertionError(f"output ended before {pattern!r}; got {self.seen}")
            self.seen.append(line)
            if re.search(pattern, line):
                return line

    def type(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def exit_status(self) -> int:
        return self.process.wait(LINE)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(LINE)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def test_calls_watch_takes_a_call(served: Served, tmp_path: Path) -> None:
    watcher = Watcher(served.url, login(served, tmp_path))
    try:
        watcher.expect(r"^connected as bob of acme; commands: take N")
        pop = make_pop("c1", asked=("bob", "ada"), group="sales",
                       expires_at=time.time() + 60)
        served.call(served.hub.offer, pop)
        line = watcher.expect(r"^\[1\] ")
        assert line.startswith("[1] call from +4930123 (Jane Doe) for bob at 2001, "
                               "group sales, until ")
        assert line.endswith("; customer: ACME Corp; take 1 | vm 1 | fwd 1 TARGET "
                             "(extension:1003) | reject 1")
        watcher.type("dance 1")
        watcher.expect(r"^commands: take N \| vm N")
        watcher.type("take 7")
        watcher.expect(r"^no call \[7\]$")
        watcher.type("fwd 1 extension:1003")
        assert watcher.expect(r"^\[1\] ") == "[1] accepted"
        assert watcher.expect(r"^\[1\] ") == "[1] gone: taken by bob"
        assert served.decider.calls == [("c1", "acme", "bob", "forward", "extension:1003")]
        watcher.type("take 1")
        assert watcher.expect(r"^\[1\] ") == "[1] refused: the call was taken by bob"
        served.call(served.hub.offer, make_pop("c2", asked=("bob",),
                                               expires_at=time.time() + 60))
        watcher.expect(r"^\[2\] call from ")
        served.call(served.hub.gone, "c2", "abandoned")
        assert watcher.expect(r"^\[2\] ") == "[2] gone: the caller hung up"
        watcher.type("q")
        assert watcher.exit_status() == 0
    finally:
        watcher.kill()


def test_calls_watch_reconnects_and_gets_the_waiting_pop_again(
        served: Served, tmp_path: Path) -> None:
    watcher = Watcher(served.url, login(served, tmp_path))
    try:
        watcher.expect(r"^connected as bob of acme")
        served.call(served.hub.offer, make_pop("c1", asked=("bob",),
                                               expires_at=time.time() + 60))
        watcher.expect(r"^\[1\] call from ")

        def drop_all() -> None:
            for sock in list(served.hub._sockets.values()):
                served.hub._drop(sock, "the test cuts the link")
        served.call(drop_all)
        watcher.expect(r"^disconnected; connecting again in \d+\.\d s$")
        watcher.expect(r"^connected as bob of acme")
        watcher.expect(r"^\[1\] call from ")  # still waiting: the same number
        watcher.type("reject 1")
        assert watcher.expect(r"^\[1\] ") == "[1] accepted"
        assert served.decider.calls == [("c1", "acme", "bob", "reject", "")]
        assert watcher.process.stdin is not None
        watcher.process.stdin.close()  # end of input
        assert watcher.exit_status() == 0
    finally:
        watcher.kill()


def test_calls_watch_with_a_refused_token_exits_1_and_without_one_2(
        served: Served, tmp_path: Path) -> None:
    watcher = Watcher(served.url, write_token(tmp_path / "bad", "not-a-session"))
    try:
        watcher.expect(r"^the bridge refused the token: not logged in, or the session "
                       r"expired; run `ami-bridge login` again$")
        assert watcher.exit_status() == 1
    finally:
        watcher.kill()
    watcher = Watcher(served.url, tmp_path / "absent")
    try:
        watcher.expect(r"^ami-bridge calls: not logged in .*absent does not exist")
        assert watcher.exit_status() == 2
    finally:
        watcher.kill()
