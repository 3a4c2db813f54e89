"""The command line's API commands: `login`, `logout`, `users`, `rules`, `trace`.

`ami_bridge.cli` declares them (options and --help); `run(args)` carries one out over
the HTTP API (`ami_bridge.api.client`) and returns the exit status: 0 done, 1 refused
by the API or unreachable (the API's field and reason printed), 2 bad usage. The token
comes from --operator-token-file, or from --token-file, where `login` wrote it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ami_bridge.api.client import ApiFailure, Client, read_token, write_token

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


_COMMANDS = {"login": _login, "logout": _logout, "users": _users, "rules": _rules,
             "trace": _trace}
