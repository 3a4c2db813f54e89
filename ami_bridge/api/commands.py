"""The command line's API commands: `login`, `logout`, `users`, `rules`, `trace`, `calls`.

`ami_bridge.cli` declares them (options and --help); `run(args)` carries one out over
the HTTP API (`ami_bridge.api.client`) and returns the exit status: 0 done, 1 refused
by the API or unreachable (the API's field and reason printed), 2 bad usage. The token
comes from --operator-token-file, or from --token-file, where `login` wrote it.
`calls watch` is the live call pop's terminal client: it holds the WebSocket
(`GET /api/v1/ws`, aiohttp's client) open, reconnecting with `ami_bridge.backoff` and
authenticating again each time, prints every pop and what becomes of it on one line,
and sends the choices typed on stdin; `q` or end of input ends it with 0, a refused
token with 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import getpass
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from ami_bridge.api.client import ApiFailure, Client, read_token, write_token
from ami_bridge.backoff import Backoff

PREFIX = "/api/v1"


class Usage(Exception):
    """Bad usage: the message says what to do instead."""


def run(args: argparse.Namespace) -> int:
    try:
        return _COMMANDS[args.command](args)
    except Usage as exc:
        print(f"ami-bridge {args.command}: {exc}", file=sys.stderr)
        return 2
    except ApiFailure as exc:
        print(f"ami-bridge {args.command}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"ami-bridge {args.command}: cannot reach the API at {args.api}: {exc}",
              file=sys.stderr)
        return 1


def _client(args: argparse.Namespace, *, token: bool = True) -> Client:
    try:
        client = Client(args.api)
    except ValueError as exc:
        raise Usage(str(exc)) from None
    if not token:
        return client
    if args.operator_token_file is not None:
        client.token = read_token(args.operator_token_file)
        if client.token is None:
            raise Usage(f"no operator token in {args.operator_token_file}")
    else:
        client.token = read_token(args.token_file)
        if client.token is None:
            raise Usage(f"not logged in ({args.token_file} does not exist); run "
                        "`ami-bridge login --tenant T --user U` first")
    return client


def _password(args: argparse.Namespace, *, confirm: bool) -> str:
    if args.password_file is not None:
        try:
            lines = Path(args.password_file).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise Usage(f"cannot read --password-file: {exc}") from None
        if not lines or not lines[0]:
            raise Usage(f"{args.password_file} is empty")
        return lines[0]
    password = getpass.getpass("Password: ")
    if confirm and getpass.getpass("Again: ") != password:
        raise Usage("the two passwords differ")
    return password


def _when(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


# -- login, logout --------------------------------------------------------------------------

def _login(args: argparse.Namespace) -> int:
    client = _client(args, token=False)
    answer = client.call("POST", f"{PREFIX}/login", {
        "tenant": args.tenant, "user": args.user, "password": _password(args, confirm=False)})
    path = write_token(args.token_file, answer["token"])
    print(f"logged in as {args.user} of {args.tenant} until {_when(answer['expires_at'])} "
          f"(token in {path})")
    return 0


def _logout(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.operator_token_file is not None:
        raise Usage("the operator token is not a session; nothing to log out")
    try:
        client.call("POST", f"{PREFIX}/logout")
    finally:
        args.token_file.expanduser().unlink(missing_ok=True)
    print("logged out")
    return 0


# -- users ------------------------------------------------------------------------------------

def _users(args: argparse.Namespace) -> int:
    client = _client(args)
    base = f"{PREFIX}/tenants/{args.tenant}/users"
    action = args.users_command
    if action == "list":
        for user in client.call("GET", base)["users"]:
            print(f"{user['user_id']:<20} {user['number']:<8} "
                  f"{'admin' if user['admin'] else 'user ':<5} "
                  f"bound to {','.join(user['bindings']) or '-'}  {user['display_name']}")
        return 0
    path = f"{base}/{args.user_id}"
    if action == "show":
        _print_json(client.call("GET", path))
    elif action == "create":
        body: dict[str, Any] = {"user_id": args.user_id, "number": args.number,
                                "display_name": args.name, "timezone": args.timezone,
                                "admin": args.admin}
        if args.bind:
            body["bindings"] = args.bind
        if args.password_file is not None or args.ask_password:
            body["password"] = _password(args, confirm=True)
        _print_json(client.call("POST", base, body))
    elif action == "delete":
        client.call("DELETE", path)
        print(f"deleted {args.user_id}")
    elif action == "passwd":
        client.call("PUT", f"{path}/password", {"password": _password(args, confirm=True)})
        print(f"password of {args.user_id} set")
    elif action == "bind":
        answer = client.call("PUT", f"{path}/bindings", {"extensions": args.extensions})
        print(f"{args.user_id} bound to {','.join(answer['extensions']) or 'nothing'}")
    return 0


# -- rules ------------------------------------------------------------------------------------

def _rules_path(args: argparse.Namespace) -> str:
    if args.user_id is None:
        if args.tenant is not None:
            raise Usage("--tenant goes with USER (an admin's view of a user's rules)")
        return f"{PREFIX}/me/rules"
    if args.tenant is None:
        raise Usage("USER needs --tenant")
    return f"{PREFIX}/tenants/{args.tenant}/users/{args.user_id}/rules"


def _read_json(source: str) -> Any:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        return json.loads(text)
    except OSError as exc:
        raise Usage(f"cannot read {source}: {exc}") from None
    except ValueError as exc:
        raise Usage(f"{'stdin' if source == '-' else source} is not JSON: {exc}") from None


def _rules(args: argparse.Namespace) -> int:
    client = _client(args)
    path = _rules_path(args)
    if args.rules_command == "show":
        _print_json(client.call("GET", path))
        return 0
    if args.rules_command == "set":
        portion = _read_json(args.file)
        if not isinstance(portion, dict):
            raise Usage("the rules must be a JSON object (a portion)")
        if "version" not in portion:  # overwrite whatever is there now
            portion["version"] = client.call("GET", path)["version"]
        answer = client.call("PUT", path, portion)
        print(f"stored version {answer['version']}")
        return 0
    return _edit(client, path)


def _edit(client: Client, path: str) -> int:
    """$EDITOR on the current portion, then PUT with the version read."""
    current = client.call("GET", path)
    version = current.pop("version")
    text = json.dumps(current, indent=2, ensure_ascii=False) + "\n"
    fd, name = tempfile.mkstemp(prefix="ami-bridge-rules-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    editor = shlex.split(os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi")
    if subprocess.run([*editor, name], check=False).returncode != 0:
        print(f"ami-bridge rules edit: the editor failed; nothing stored (your edit is in "
              f"{name})", file=sys.stderr)
        return 1
    try:
        portion = json.loads(Path(name).read_text(encoding="utf-8"))
        if not isinstance(portion, dict):
            raise ValueError("not a JSON object")
        if portion == current:  # the same rules, however the editor laid them out
            os.unlink(name)
            print(f"no change (version {version})")
            return 0
        portion["version"] = version
        answer = client.call("PUT", path, portion)
    except ValueError as exc:
        print(f"ami-bridge rules edit: not valid JSON ({exc}); nothing stored (your edit "
              f"is in {name})", file=sys.stderr)
        return 1
    except ApiFailure as exc:
        why = (f"the rules changed since version {version} was read (now version "
               f"{exc.current}); run `rules edit` again" if exc.status == 409
               else f"refused: {exc.field}: {exc.reason}" if exc.status == 422 else str(exc))
        print(f"ami-bridge rules edit: {why}; nothing stored (your edit is in {name})",
              file=sys.stderr)
        return 1
    os.unlink(name)
    print(f"stored version {answer['version']}")
    return 0


# -- traces -------------------------------------------------------------------------------------

def _trace(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.uniqueid == "replay":
        return _replay(client, args)
    if args.rules is not None or args.user_id is not None or args.tenant_file is not None:
        raise Usage("--rules, --tenant-file and --user go with `trace replay`")
    query = {"tenant": args.tenant} if args.tenant else None
    answer = client.call("GET", f"{PREFIX}/calls/{args.uniqueid}", query=query)
    print(f"call {answer['uniqueid']} of tenant {answer['tenant']}")
    for decision in answer["decisions"]:
        who = f", user {decision['user_id']}" if decision["user_id"] else ""
        print(f"request {decision['request']} at {_when(decision['at'])} in "
              f"{decision['venue']}{who}")
        print(f"  previous: {decision['previous'] or '-'}")
        print(f"  rule:     {decision['rule'] or '-'}")
        print(f"  why:      {decision['why'] or '-'}")
        print(f"  outcome:  {decision['outcome']}")
    return 0


def _replay(client: Client, args: argparse.Namespace) -> int:
    if (args.rules is None) == (args.tenant_file is None):
        raise Usage("trace replay needs exactly one of --rules FILE (a portion) and "
                    "--tenant-file FILE (a tenant.toml, with --tenant); - for stdin")
    if args.tenant_file is not None:
        if args.tenant is None or args.user_id is not None:
            raise Usage("--tenant-file goes with --tenant T (and no --user)")
        path = f"{PREFIX}/tenants/{args.tenant}/replay"
        answer = client.call("POST", path, {"tenant_file": _read_text(args.tenant_file)})
    else:
        if (args.tenant is None) != (args.user_id is None):
            raise Usage("--tenant and --user go together (an admin's replay of a user's "
                        "calls)")
        path = (f"{PREFIX}/me/replay" if args.user_id is None
                else f"{PREFIX}/tenants/{args.tenant}/users/{args.user_id}/replay")
        answer = client.call("POST", path, {"rules": _read_json(args.rules)})
    changed = answer["changed"]
    print(f"replayed {answer['replayed']} decisions; {len(changed)} would change")
    for change in changed:
        notes = "".join([
            f" [after treatment {change['treatment']}, the caller entering the recorded "
            "digits]" if change.get("treatment") else "",
            " [stateful: depends on round robin, split or agent state; one possible answer]"
            if change.get("stateful") else ""])
        print(f"{change['uniqueid']} at {_when(change['at'])}: {change['was']} "
              f"({change['rule_was'] or '-'}) -> {change['would']} ({change['rule_would']})"
              f"{notes}")
    return 0


def _read_text(source: str) -> str:
    try:
        return sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise Usage(f"cannot read {source}: {exc}") from None


# -- calls watch ------------------------------------------------------------------------------

WATCH_HELP = ("commands: take N | vm N | fwd N TARGET | reject N | q  (N: the call's number "
              "in brackets; TARGET: one of its saved targets)")
CHOICE_WORDS = {"take": "take", "vm": "voicemail", "fwd": "forward", "reject": "reject"}
CLOSE_UNAUTHORIZED = 4401  # ami_bridge.personal.pops: the token was refused
CLOSE_WAIT = 2.0  # seconds for the server's answer to our close before we drop the link
HEARTBEAT = 30.0  # as the server's: a dead link is noticed within a minute
MAX_SHOWN = 120  # characters of one server-sent string printed (a caller name is shorter)
GONE_WORDS = {"taken": "taken", "timeout": "timed out", "abandoned": "the caller hung up"}


def _calls(args: argparse.Namespace) -> int:
    if args.operator_token_file is not None:
        raise Usage("the operator gets no call pops; log in as a user (`ami-bridge login`)")
    try:
        base = Client(args.api).base
    except ValueError as exc:
        raise Usage(str(exc)) from None
    if read_token(args.token_file) is None:
        raise Usage(f"not logged in ({args.token_file} does not exist); run "
                    "`ami-bridge login --tenant T --user U` first")
    try:
        return asyncio.run(_watch_stdin(base + f"{PREFIX}/ws", args.token_file))
    except KeyboardInterrupt:
        return 130  # the shell's status for SIGINT


async def _watch_stdin(url: str, token_file: Path) -> int:
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def read() -> None:  # a thread: stdin may be a pipe, a file or a terminal
        for line in sys.stdin:
            if not _post(loop, lines, line):
                return
        _post(loop, lines, None)

    threading.Thread(target=read, name="stdin", daemon=True).start()
    return await Watch(url, token_file, lines, lambda line: print(line, flush=True)).run()


def _post(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None],
          item: str | None) -> bool:
    try:
        loop.call_soon_threadsafe(queue.put_nowait, item)
    except RuntimeError:  # the loop is closed: the watch is over
        return False
    return True


class Watch:
    """The terminal's pop client: `run()` until `q` or end of input (0) or a refused
    token (1). `lines` carries what is typed (None: end of input), `out` prints."""

    def __init__(self, url: str, token_file: Path, lines: asyncio.Queue[str | None],
                 out: Callable[[str], None], *, backoff: Backoff | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.token_file = token_file
        self.lines = lines
        self.out = out
        # A workstation waits out a restart of the bridge: first retry within a second,
        # then at most every 15 s; a link that held 10 s starts again from 1 s.
        self.backoff = backoff or Backoff(initial=1.0, maximum=15.0, stable_after=10.0)
        self.clock = clock
        self.stop = asyncio.Event()
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.short: dict[str, int] = {}  # call id -> the number the user types
        self.calls: dict[int, str] = {}

    async def run(self) -> int:
        commands = asyncio.create_task(self._commands())
        try:
            async with aiohttp.ClientSession() as http:
                while True:
                    connection = asyncio.create_task(self._connection(http))
                    stopped = asyncio.create_task(self.stop.wait())
                    await asyncio.wait({connection, stopped},
                                       return_when=asyncio.FIRST_COMPLETED)
                    stopped.cancel()
                    if self.stop.is_set():
                        await self._close(connection)
                        return 0
                    if connection.result() == CLOSE_UNAUTHORIZED:
                        self.out("the bridge refused the token: not logged in, or the "
                                 "session expired; run `ami-bridge login` again")
                        return 1
                    delay = self.backoff.ended(self.clock())
                    self.out(f"disconnected; connecting again in {delay:.1f} s")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), delay)
        finally:
            commands.cancel()

    async def _close(self, connection: asyncio.Task[int | None]) -> None:
        """Close the socket politely (the server answers a close at once), else drop it."""
        ws = self.ws
        if ws is not None:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                await asyncio.wait_for(ws.close(), CLOSE_WAIT)
        connection.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await connection

    async def _connection(self, http: aiohttp.ClientSession) -> int | None:
        """One connection, until it closes; its close code (None: never connected)."""
        token = read_token(self.token_file)
        if token is None:
            return CLOSE_UNAUTHORIZED
        try:
            async with http.ws_connect(self.url, heartbeat=HEARTBEAT) as ws:
                self.backoff.started(self.clock())
                await ws.send_json({"type": "auth", "token": token})
                self.ws = ws
                async for message in ws:
                    if message.type == aiohttp.WSMsgType.TEXT:
                        self._show(message.data)
                    elif message.type == aiohttp.WSMsgType.ERROR:
                        break
                return ws.close_code
        except (aiohttp.ClientError, OSError) as exc:
            self.out(f"cannot reach {self.url}: {exc or type(exc).__name__}")
            return None
        finally:
            self.ws = None

    def _show(self, text: str) -> None:
        try:
            frame = json.loads(text)
            kind = frame["type"]
            if kind == "hello":
                self.out(f"connected as {_shown(frame['user'])} of {_shown(frame['tenant'])}"
                         f"; {WATCH_HELP}")
            elif kind == "pop":
                self.out(self._pop_line(frame["call"]))
            elif kind == "gone":
                why = GONE_WORDS.get(frame["reason"], _shown(frame["reason"]))
                by = f" by {_shown(frame['by'])}" if frame.get("by") else ""
                self.out(f"{self._name(frame['call'])} gone: {why}{by}")
            elif kind == "accepted":
                self.out(f"{self._name(frame['call'])} accepted")
            elif kind == "refused":
                self.out(f"{self._name(frame['call'])} refused: {_shown(frame['reason'])}")
            elif kind == "error":
                self.out(f"the bridge says: {_shown(frame['reason'])}")
        except (ValueError, KeyError, TypeError, AttributeError):
            self.out(f"an odd frame from the bridge, ignored: {_shown(text)}")

    def _pop_line(self, call: dict[str, Any]) -> str:
        call_id = str(call["call_id"])
        if call_id not in self.short:
            number = len(self.short) + 1
            self.short[call_id] = number
            self.calls[number] = call_id
        n = self.short[call_id]
        caller = _shown(call["ani"]) or "withheld"
        if call.get("ani_name"):
            caller += f" ({_shown(call['ani_name'])})"
        group = f", group {_shown(call['group'])}" if call.get("group") else ""
        until = dt.datetime.fromtimestamp(float(call["expires_at"])).strftime("%H:%M:%S")
        lookup = "; ".join(f"{_shown(k)}: {_shown(v)}" for k, v in call["lookup"].items())
        saved = ", ".join(_shown(t) for t in call["saved"])
        fwd = f" | fwd {n} TARGET ({saved})" if saved else ""
        return (f"[{n}] call from {caller} for {_shown(call['user_id'])} at "
                f"{_shown(call['number'])}{group}, until {until}"
                f"{'; ' + lookup if lookup else ''}; take {n} | vm {n}{fwd} | reject {n}")

    def _name(self, call_id: Any) -> str:
        number = self.short.get(str(call_id))
        return f"[{number}]" if number is not None else f"call {_shown(call_id)}"

    async def _commands(self) -> None:
        while True:
            line = await self.lines.get()
            if line is None or line.strip() in ("q", "quit"):
                self.stop.set()
                return
            words = line.split()
            if words:
                await self._command(words)

    async def _command(self, words: list[str]) -> None:
        choice = CHOICE_WORDS.get(words[0])
        if choice is None or len(words) != (3 if choice == "forward" else 2):
            self.out(WATCH_HELP)
            return
        call_id = self.calls.get(int(words[1])) if words[1].isdigit() else None
        if call_id is None:
            self.out(f"no call [{words[1]}]")
            return
        frame = {"type": "choose", "call": call_id, "choice": choice}
        if choice == "forward":
            frame["target"] = words[2]
        if self.ws is None:
            self.out("not connected; nothing sent")
            return
        try:
            await self.ws.send_json(frame)
        except (aiohttp.ClientError, OSError, RuntimeError) as exc:
            self.out(f"not sent: {exc}")


def _shown(value: Any) -> str:
    """A server-sent string fit for a terminal: no control characters (a caller's name
    comes from the caller), bounded."""
    text = str(value)
    return "".join(c if c.isprintable() else "?" for c in text)[:MAX_SHOWN]


_COMMANDS = {"login": _login, "logout": _logout, "users": _users, "rules": _rules,
             "trace": _trace, "calls": _calls}
