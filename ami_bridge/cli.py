"""The `ami-bridge` command line: `run` the daemon, `check` a config file, `conf render` /
`conf check` the tenants' dialplan fragments, `ctl` a running bridge; `login`, `logout`,
`users`, `rules`, `trace` and `calls watch` talk to the personal router's HTTP API
(ami_bridge.api.commands). Every command that reads the bridge config goes through
`config.load`, which refuses tenant files that name what they do not own
(ami_bridge.ownership)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from ami_bridge import config as config_mod

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ami-bridge",
        description="Multi-tenant call routing for Asterisk: one CTI attachment (an AMI "
        "session and a FastAGI listener), one "
        "virtual transaction server (VTS) process per tenant.")
    parser.add_argument("--version", action="version", version="ami-bridge 0.1.0")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the bridge daemon (SIGHUP reloads the config)",
                         description="Run the bridge: FastAGI server, intermediary and the "
                         "supervised VTS processes. SIGTERM/SIGINT stop it, SIGHUP reloads "
                         "the config file.")
    run.add_argument("--config", type=Path, required=True, help="bridge config (TOML)")
    run.add_argument("--log-level", default="info",
                     choices=["debug", "info", "warning", "error"],
                     help="debug also logs every AGI and VTS wire line")
    check = sub.add_parser("check", help="validate a config file and exit",
                           description="Load and validate a bridge config; print the venue "
                           "map, or the error (file, key, bad value) with exit status 2.")
    check.add_argument("--config", type=Path, required=True, help="bridge config (TOML)")
    conf = sub.add_parser("conf", help="tenant dialplan fragments: render, check; init",
                          description="Render the tenants' dialplan fragments from the "
                          "config, or lint fragments (rendered and hand-written).")
    conf_sub = conf.add_subparsers(dest="conf_command", required=True, metavar="ACTION")
    render = conf_sub.add_parser(
        "render", help="write ami-bridge/extensions.conf, ami-bridge/tenants/*.conf and "
        "ami-bridge/queues.conf under --out",
        description="Render every tenant's dialplan fragment (venues with the FastAGI "
        "route and AGISTATUS fallback, internal, queue and outbound contexts, language, "
        "music class, channel limit), the include file for extensions.conf and the "
        "queues. The rendered files are first checked as `ctl apply` checks them "
        "(the dialplan linted with what OUT already includes, every queue member "
        "against its owner); any finding: exit 1 and nothing is written. "
        "Deterministic; only changed files are rewritten, atomically.")
    render.add_argument("--config", type=Path, required=True, help="bridge config (TOML)")
    render.add_argument("--out", type=Path, required=True,
                        help="Asterisk's config directory (files go to OUT/ami-bridge/)")
    render.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the rendered files differ from OUT")
    from ami_bridge.kit import command as kit_command  # conf init

    kit_command.add_parser(conf_sub)
    check = conf_sub.add_parser(
        "check", help="lint dialplan files (rendered and hand-written) for tenant isolation",
        description="Lint dialplan files and their #includes (and queues.conf): every "
        "context belongs to exactly one tenant; no include, Goto, Gosub, handler, Dial or "
        "Local/ channel crosses into another tenant's contexts unless declared shared; "
        "caller-controlled data never reaches a Dial string unfiltered; venues check "
        "AGISTATUS; nothing a tenant's dialplan does at run time escapes it (channels "
        "chosen at run time or of other tenants' endpoints, GLOBAL/SHARED/DB writes, "
        "System/SHELL/EVAL/FILE, AGI to other servers); queue members are the queue's "
        "tenant's own. Prints 'file:line: code message' (codes: docs/dialplan-lint.md); "
        "exit 0 clean, 1 findings, 2 usage or I/O error.")
    check.add_argument("files", nargs="*", type=Path,
                       help="dialplan files (default: extensions.conf of --asterisk-conf)")
    check.add_argument("--config", type=Path, help="bridge config: its tenants are the owners "
                       "(with its [owners] grants and [shared] contexts)")
    check.add_argument("--tenant", action="append", default=[],
                       help="a tenant name (repeatable), instead of or besides --config")
    check.add_argument("--shared", action="append", default=[],
                       help="a context every tenant may reach (repeatable)")
    check.add_argument("--asterisk-conf", type=Path,
                       help="Asterisk's config directory, where #include paths start")
    ctl = sub.add_parser("ctl", help="talk to a running bridge: status, reload, apply",
                         description="Send a command to a running bridge over its control "
                         "socket ([bridge] control_socket). `reload` re-reads the config "
                         "file (like SIGHUP) and says whether it was accepted; `status` "
                         "prints venues, VTS processes, pending calls and counters as JSON.")
    ctl.add_argument("action", choices=["status", "reload", "apply"],
                     help="apply: reload, and render + check + swap the tenants' dialplan "
                     "fragments and reload them in Asterisk, rolling back on failure")
    where = ctl.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", type=Path, help="bridge config naming the control socket")
    where.add_argument("--socket", help="control socket path")
    _api_parsers(sub)
    return parser


def _api_parsers(sub: Any) -> None:
    """login, logout, users, rules, trace, calls: clients of the personal router's API."""
    from ami_bridge.api.client import API_ENV, DEFAULT_API, DEFAULT_TOKEN_FILE

    conn = argparse.ArgumentParser(add_help=False)
    conn.add_argument("--api", default=os.environ.get(API_ENV, DEFAULT_API),
                      help=f"the API's base URL (default: ${API_ENV}, else {DEFAULT_API})")
    token = conn.add_mutually_exclusive_group()
    token.add_argument("--token-file", type=Path, default=DEFAULT_TOKEN_FILE,
                       help="the session token `login` writes (0600; default "
                       f"{DEFAULT_TOKEN_FILE})")
    token.add_argument("--operator-token-file", type=Path,
                       help="use the operator's token from this file instead of a session")
    login = sub.add_parser("login", parents=[conn], help="log in to the API as a tenant's user",
                           description="Exchange a user's password (prompted, or the first "
                           "line of --password-file) for a session token, written to "
                           "--token-file readable by you only.")
    login.add_argument("--tenant", required=True, help="the user's tenant")
    login.add_argument("--user", required=True, help="the user's login name")
    login.add_argument("--password-file", type=Path, help="read the password from this file")
    sub.add_parser("logout", parents=[conn], help="end the session and delete the token file",
                   description="Log the session out at the API and delete --token-file.")
    users = sub.add_parser("users", help="a tenant's users (its admin, or the operator)",
                           description="List, show, create, delete users of a tenant, set "
                           "their passwords and bindings. Needs a session of the tenant's "
                           "admin, or --operator-token-file.")
    users_sub = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")

    def user_action(name: str, text: str, *, user: bool = True) -> argparse.ArgumentParser:
        action: argparse.ArgumentParser = users_sub.add_parser(
            name, parents=[conn], help=text, description=text)
        action.add_argument("--tenant", required=True, help="the tenant")
        if user:
            action.add_argument("user_id", metavar="USER", help="the user's login name")
        return action

    user_action("list", "list the tenant's users", user=False)
    user_action("show", "print one user as JSON")
    create = user_action("create", "create a user (bound to the number's home extension "
                         "unless --bind is given)")
    create.add_argument("--number", required=True, help="one of the tenant's personal numbers")
    create.add_argument("--name", default="", help="display name")
    create.add_argument("--timezone", default="", help="IANA zone (default: the tenant's)")
    create.add_argument("--admin", action="store_true", help="make the user a tenant admin")
    create.add_argument("--bind", action="append", default=[], metavar="EXT",
                        help="an extension whose device rings for the user (repeatable)")
    secret = create.add_mutually_exclusive_group()
    secret.add_argument("--password-file", type=Path, help="the password's file (first line)")
    secret.add_argument("--ask-password", action="store_true", help="prompt for a password")
    user_action("delete", "delete a user with the user's rules and bindings")
    passwd = user_action("passwd", "set a user's password (prompted twice, or "
                         "--password-file)")
    passwd.add_argument("--password-file", type=Path, help="the password's file (first line)")
    bind = user_action("bind", "bind a user to exactly these extensions (hot-desk: taken "
                       "from whoever had them)")
    bind.add_argument("extensions", nargs="*", metavar="EXT", help="extensions (none: unbind)")
    rules = sub.add_parser("rules", help="your own routing rules (or, admin, a user's)",
                           description="Show, set or edit a portion of routing rules "
                           "(docs/personal-rules.md): your own, or with --tenant and USER a "
                           "user's of your tenant (admin, operator).")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    for name, text in [("show", "print the rules as JSON, with their version"),
                       ("set", "store rules from a JSON file or stdin; with no \"version\" "
                        "in it, whatever is stored now is overwritten"),
                       ("edit", "open $VISUAL or $EDITOR on the rules and store them back, "
                        "refused if someone changed them meanwhile (your edit is kept)")]:
        action = rules_sub.add_parser(name, parents=[conn], help=text, description=text)
        action.add_argument("--tenant", help="the user's tenant (with USER)")
        action.add_argument("user_id", nargs="?", metavar="USER", help="a user (admin)")
        if name == "set":
            action.add_argument("--file", "-f", default="-",
                                help="the rules' JSON file (default: - , stdin)")
    trace = sub.add_parser("trace", parents=[conn], help="why a call went where it went; "
                           "replay candidate rules",
                           description="`trace UNIQUEID`: print a call's routing decisions "
                           "in order (request, previous attempt, rule, why, outcome). "
                           "`trace replay --rules FILE`: which of your recorded calls would "
                           "go elsewhere under these rules (--tenant and --user: a user's). "
                           "`trace replay --tenant-file FILE --tenant T`: which of the "
                           "tenant's recorded venue calls would go elsewhere under this "
                           "tenant.toml (tenant admin, operator); answers that depend on "
                           "round robin, split or agent state are marked stateful.")
    trace.add_argument("uniqueid", metavar="UNIQUEID|replay", help="the call's unique id, "
                       "or `replay`")
    trace.add_argument("--tenant", help="the call's tenant (operator); the user's or the "
                       "tenant's (replay)")
    trace.add_argument("--user", dest="user_id", help="replay: the user (admin, operator)")
    trace.add_argument("--rules", help="replay: the candidate rules' JSON file (- for stdin)")
    trace.add_argument("--tenant-file", help="replay: a candidate tenant.toml for --tenant's "
                       "venue calls (- for stdin); instead of --rules")
    calls = sub.add_parser("calls", help="live call pops: calls your rules ask you about",
                           description="Calls that a rule with action `ask` offers to you "
                           "(or to your pickup group) while they ring.")
    calls_sub = calls.add_subparsers(dest="calls_command", required=True, metavar="ACTION")
    calls_sub.add_parser(
        "watch", parents=[conn], help="print call pops as they come and answer them",
        description="Connect to the bridge's WebSocket (/api/v1/ws) with the session "
        "token of `login`, print every call offered to you on one line ([N], the caller, "
        "the number dialled, what the tenant looked up about the caller, the choices) and "
        "what becomes of it (accepted, refused with why, gone: taken by whom, timed out, "
        "the caller hung up). Type on stdin: `take N` (ring your own phones), `vm N` (to "
        "voicemail), `fwd N TARGET` (to one of your saved targets), `reject N`, `q` to "
        "quit. Reconnects with backoff when the link drops. Exit 0 on q or end of input, "
        "1 when the token is refused, 2 when not logged in.")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        cfg = _load(args.config)
        if cfg is None:
            return 2
        for venue in cfg.venues.values():
            print(f"venue {venue.context}: tenant {venue.tenant}, VTS {venue.vts}, "
                  f"router timeout {venue.router_timeout:g} s")
        return 0
    if args.command == "ctl":
        return _ctl(args)
    if args.command == "conf":
        return _conf(args)
    if args.command in ("login", "logout", "users", "rules", "trace", "calls"):
        from ami_bridge.api.commands import run as run_api

        return run_api(args)
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    from ami_bridge.daemon import run
    from ami_bridge.eventloop import run as run_loop

    try:
        return run_loop(run(args.config))
    except config_mod.ConfigError as exc:
        print(f"ami-bridge: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"ami-bridge: {exc}", file=sys.stderr)
        return 1


def _load(path: Path) -> config_mod.BridgeConfig | None:
    """The config, or None after printing why it is refused (file, key, value)."""
    try:
        return config_mod.load(path)
    except config_mod.ConfigError as exc:
        print(f"ami-bridge: {exc}", file=sys.stderr)
        return None


def _conf(args: argparse.Namespace) -> int:
    from ami_bridge.apply import lint
    from ami_bridge.dialplan import render

    if args.conf_command == "check":
        return _conf_check(args)
    if args.conf_command == "init":
        from ami_bridge.kit import command as kit_command

        return kit_command.run(args)
    cfg = _load(args.config)
    if cfg is None:
        return 2
    files = render.render_tree(cfg)
    if args.check:
        stale = [name for name, text in files.items()
                 if not (args.out / name).is_file()
                 or (args.out / name).read_text(encoding="utf-8") != text]
        for name in stale:
            print(f"{args.out / name}: differs from what the config renders")
        return 1 if stale else 0
    findings = lint(files, args.out, cfg)
    if findings:
        for finding in findings:
            print(finding)
        print(f"ami-bridge: conf render refused: {len(findings)} finding"
              f"{'s' if len(findings) != 1 else ''} in the rendered files; nothing written",
              file=sys.stderr)
        return 1
    for name in render.write_tree(files, args.out):
        print(f"wrote {args.out / name}")
    return 0


def _conf_check(args: argparse.Namespace) -> int:
    from ami_bridge import apply as apply_mod
    from ami_bridge.dialplan.check import run_check

    tenants = list(args.tenant)
    conf_dir = args.asterisk_conf
    shared, owners = set(args.shared), {}
    extra: dict[str, Any] = {}
    if args.config is not None:
        cfg = _load(args.config)
        if cfg is None:
            return 2
        tenants += list(cfg.tenants)
        conf_dir = conf_dir or cfg.asterisk_conf_dir
        shared |= cfg.owners.shared_contexts  # [shared] contexts
        owners = dict(cfg.owners.contexts)  # [owners.TENANT] contexts
        extra = {"allow": cfg.dialplan_allow, "agi_addresses": apply_mod.agi_addresses(cfg)}
    files = list(args.files) or ([conf_dir / "extensions.conf"] if conf_dir else [])
    return run_check(files, tenants=sorted(set(tenants)), shared=frozenset(shared),
                     owners=owners, out=sys.stdout, config_dir=conf_dir, **extra)


def _ctl(args: argparse.Namespace) -> int:
    from ami_bridge import control

    try:
        path = args.socket or config_mod.load(args.config).control_socket
        answer = control.request(path, args.action)
    except config_mod.ConfigError as exc:
        print(f"ami-bridge: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"ami-bridge: cannot reach the bridge's control socket: {exc}", file=sys.stderr)
        return 1
    if not answer.get("ok"):
        print(f"ami-bridge: {args.action} refused: {answer.get('error')}", file=sys.stderr)
        return 1
    if args.action == "status":
        print(json.dumps(answer["status"], indent=2, sort_keys=True))
    elif args.action == "apply":
        for name in answer.get("changed") or []:
            print(f"changed {name}")
        print("applied")
    else:
        print("reloaded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
