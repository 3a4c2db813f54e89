"""The `ami-bridge` command line: `run` the daemon, `check` a config file, `conf render` /
`conf check` the tenants' dialplan fragments, `conf show` the effective config, `conf
init` write the operator's drop-in files, `ctl status|reload|apply` a running bridge,
`status` print its health (ami_bridge.status), `calltest` check the tenants' rules with
real calls (ami_bridge.calltest); `login`, `logout`, `users`, `rules`, `trace` and `calls
watch` talk to the personal router's HTTP API (ami_bridge.api.commands). Every command
that reads the bridge config takes `-c/--config` (else `$AMI_BRIDGE_CONFIG`, else
/etc/ami-bridge/bridge.toml: ami_bridge.conffiles) and goes through `config.load`, which
merges `conf.d/` and refuses tenant files that name what they do not own
(ami_bridge.ownership)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ami_bridge import conffiles
from ami_bridge import config as config_mod

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
CONFIG_HELP = (f"the bridge config (TOML; its {conffiles.FRAGMENT_DIR}/*.toml are merged in); "
               f"default: ${conffiles.CONFIG_ENV}, else {conffiles.DEFAULT_CONFIG_PATH}")


def _config_option(parser: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup,
                   *, what: str = "", **default: Any) -> None:
    """-c/--config on a command that reads the bridge config (resolved by `_located`)."""
    parser.add_argument("-c", "--config", type=Path, help=CONFIG_HELP + what, **default)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ami-bridge",
        description="Multi-tenant call routing for Asterisk: one CTI attachment (an AMI "
        "session and a FastAGI listener), one "
        "virtual transaction server (VTS) process per tenant.")
    from ami_bridge.status import version

    parser.add_argument("--version", action="version", version=f"ami-bridge {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the bridge daemon (SIGHUP reloads the config)",
                         description="Run the bridge: FastAGI server, intermediary and the "
                         "supervised VTS processes. SIGTERM/SIGINT stop it gracefully (new "
                         "AGI sessions refused, pending calls answered or default-routed; "
                         "docs/deployment.md), SIGHUP reloads the config file.")
    _config_option(run)
    run.add_argument("--log-level", default="info",
                     choices=["debug", "info", "warning", "error"],
                     help="debug also logs every AGI and VTS wire line")
    run.add_argument("--log-format", default="text", choices=["text", "json"],
                     help="json: one JSON object per line, with the per-call line's fields "
                     "(docs/operations.md)")
    check = sub.add_parser("check", help="validate a config file and exit",
                           description="Load and validate a bridge config (with its "
                           "conf.d/*.toml); print the fragments merged and the venue map, "
                           "or the error (file, key, bad value) with exit status 2.")
    _config_option(check)
    conf = sub.add_parser("conf", help="tenant dialplan fragments: render, check; the "
                          "effective config: show; the operator's drop-in files: init",
                          description="Render the tenants' dialplan fragments from the "
                          "config, lint fragments (rendered and hand-written), or show the "
                          "effective config.")
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
    _config_option(render)
    render.add_argument("--out", type=Path, required=True,
                        help="Asterisk's config directory (files go to OUT/ami-bridge/)")
    render.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the rendered files differ from OUT")
    from ami_bridge.kit import command as kit_command  # conf init

    kit_command.add_parser(conf_sub)
    check = conf_sub.add_parser(
        "check", help="lint dialplan files (rendered and hand-written) for tenant isolation",
        description="Lint dialplan files and their #includes (and queues.conf): every "
        "context belongs to exactly one tenant or to the operator ([operator], "
        "--operator), or is shared; a tenant's include, Goto, Gosub, handler, Dial or "
        "Local/ channel reaches only its own and shared contexts; "
        "caller-controlled data never reaches a Dial string unfiltered; venues check "
        "AGISTATUS and [globals] sets AB_AGI_URL (to the bridge's agi_listen, with "
        "--config); nothing a tenant's dialplan does at run time escapes it (channels "
        "chosen at run time or of other tenants' endpoints, GLOBAL/SHARED/DB writes, "
        "System/SHELL/EVAL/FILE, AGI to other servers); queue members are the queue's "
        "tenant's own. Prints 'file:line: code message' (codes: docs/dialplan-lint.md); "
        "exit 0 clean, 1 findings, 2 usage or I/O error.")
    check.add_argument("files", nargs="*", type=Path,
                       help="dialplan files (default: extensions.conf of --asterisk-conf)")
    # Optional here: used when given, set, or when the default file exists.
    _config_option(check, what=" if that exists; its tenants are the owners (with its "
                   "[owners] grants, [shared] and [operator] contexts)")
    check.add_argument("--tenant", action="append", default=[],
                       help="a tenant name (repeatable), instead of or besides --config")
    check.add_argument("--shared", action="append", default=[], metavar="PATTERN",
                       help="a context every tenant may reach: a name or fnmatch pattern "
                       "(repeatable)")
    check.add_argument("--operator", action="append", default=[], metavar="PATTERN",
                       help="a context of the operator's own dialplan, which no tenant may "
                       "reach: a name or fnmatch pattern such as 'dundi-*' (repeatable)")
    check.add_argument("--asterisk-conf", type=Path,
                       help="Asterisk's config directory, where #include paths start")
    show = conf_sub.add_parser(
        "show", help="print the effective config (conf.d merged, defaults filled, secrets "
        "masked)",
        description="Print the config the bridge would run with: the main file with its "
        "conf.d/*.toml merged in, the tenant files of tenants_dir as [tenants.NAME], and "
        "the defaults the loader fills in, as TOML (or JSON). Secrets (AMI secrets, "
        "tokens, the password of a PostgreSQL DSN) are masked; *_file keys show the "
        "file's path, never its content. Exit 2 when the config is refused.")
    _config_option(show)
    show.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    _ctl_parsers(sub)
    status = sub.add_parser(
        "status", help="a running bridge's health: AMI, tenants, VTS processes, pending "
        "calls, recent errors, version",
        description="Ask a running bridge over its control socket and print a compact "
        "table: version and uptime, the AMI session (connected, reconnects), the tenants, "
        "every VTS process (pid, uptime, restarts, connected, flapping, pending calls) and "
        "the newest of the warnings and errors it logged. Exit 0 when the AMI session (if "
        "configured) and every VTS are connected, 3 when something is degraded, 1 when "
        "the bridge cannot be reached.")
    status.add_argument("--json", action="store_true",
                        help="print the whole status document as JSON")
    where = status.add_mutually_exclusive_group()
    _config_option(where)
    where.add_argument("--socket", help="control socket path (instead of the config's)")
    _api_parsers(sub)
    _calltest_parser(sub)
    return parser


def _calltest_parser(sub: Any) -> None:
    """`calltest`: the tenants' rules checked with real calls (ami_bridge.calltest)."""
    from ami_bridge.calltest import run as ct

    calltest = sub.add_parser(
        "calltest", help="place test calls per tenant rule through Asterisk and check "
        "where they ring",
        description="Derive call cases from the tenant files (per venue, one call per "
        "rule a call can reach now, in the tenant's timezone, and the device it must "
        "ring), place them through a running Asterisk and bridge with SIPp, follow each "
        "over AMI and cancel it while it rings (nobody answers), then print expected "
        "against actual destination and latency percentiles. Exit 0 when every call "
        "rang where expected, 1 on any mismatch, 2 on usage or config errors. "
        "docs/calltest.md.")
    _config_option(calltest, what="; its tenant files are the expectation, its [ami] "
                   "login follows the calls")
    calltest.add_argument("--entry", action="append", default=[], metavar="VENUE=USER",
                          help="how a call gets into VENUE: the SIP user it is sent From "
                          "(the endpoint Asterisk puts into that venue); VENUE= sends the "
                          "case's caller number instead (trunks recognised by address). "
                          "Repeatable; venues without one are skipped")
    calltest.add_argument("--pai", action="store_true",
                          help="send each case's caller number as P-Asserted-Identity "
                          "(the entries' endpoints have trust_id_inbound = yes)")
    calltest.add_argument("--sip", default=ct.DEFAULT_SIP, metavar="HOST:PORT",
                          help=f"Asterisk's SIP address (default {ct.DEFAULT_SIP})")
    calltest.add_argument("--rate", type=float, default=ct.DEFAULT_RATE,
                          help=f"calls per second (default {ct.DEFAULT_RATE:g})")
    calltest.add_argument("--repeat", type=int, default=1, help="place each case N times")
    calltest.add_argument("--ring-ms", type=int, default=ct.DEFAULT_RING_MS,
                          help="how long a call rings before it is cancelled (default "
                          f"{ct.DEFAULT_RING_MS})")
    calltest.add_argument("--wait-ms", type=int, default=ct.DEFAULT_WAIT_MS,
                          help="longest wait for ringing before a call is cancelled "
                          f"anyway (default {ct.DEFAULT_WAIT_MS})")
    calltest.add_argument("--ami", metavar="HOST:PORT", help="AMI address (default: [ami])")
    calltest.add_argument("--ami-user", help="AMI user (default: [ami] username); read "
                          "classes call and system suffice")
    calltest.add_argument("--ami-secret-file", type=Path, help="its secret (first line)")
    calltest.add_argument("--sipp", default="sipp", help="the SIPp command line (default: "
                          "sipp)")
    calltest.add_argument("--local-ip", help="address SIPp sends from (default: the one "
                          "that routes to --sip)")
    calltest.add_argument("--workdir", type=Path, help="keep SIPp's scenario, injection "
                          "file and log here (default: a temporary directory)")
    calltest.add_argument("--list", action="store_true",
                          help="print the cases and skipped rules; place no call")


CTL_ACTIONS = {
    "status": ("print venues, VTS processes, pending calls and counters as JSON", ""),
    "reload": ("re-read the config (like SIGHUP) and say whether it was accepted",
               " A refused config leaves the running one in place (exit 1, with why)."),
    "apply": ("reload, and render + check + swap the tenants' dialplan fragments and "
              "reload them in Asterisk, rolling back on failure",
              " Needs [bridge] asterisk_conf_dir and [ami] reload_username. With [cluster],"
              " the tenant files of this node's tenants_dir go to every node, all or none:"
              " each node first checks them against its own config and Asterisk conf dir"
              " (PREPARE; an unreachable or refusing node stops it, nothing changes), then"
              " each applies them (COMMIT); a node that fails rolls back every node already"
              " changed. The error names each node and why; changed files print as"
              " 'changed NODE: FILE' (docs/operations.md, docs/scale-out.md)."),
}


def _ctl_parsers(sub: Any) -> None:
    """`ctl ACTION`, each action with its own --help. The socket comes from --socket, or
    from the config's [bridge] control_socket; either may also stand before ACTION."""
    ctl = sub.add_parser("ctl", help="talk to a running bridge: status, reload, apply",
                         description="Send a command to a running bridge over its control "
                         "socket ([bridge] control_socket of the config, or --socket).")
    where = ctl.add_mutually_exclusive_group()
    _config_option(where)
    where.add_argument("--socket", help="control socket path (instead of the config's)")
    actions = ctl.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, (text, more) in CTL_ACTIONS.items():
        action = actions.add_parser(name, help=text, description=f"ctl {name}: {text}.{more}")
        # SUPPRESS: an option not given here keeps what was given before ACTION.
        here = action.add_mutually_exclusive_group()
        _config_option(here, default=argparse.SUPPRESS)
        here.add_argument("--socket", default=argparse.SUPPRESS,
                          help="control socket path (instead of the config's)")


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
        cfg = _load(args)
        if cfg is None:
            return 2
        for fragment in cfg.fragments:
            print(f"merged {fragment}")
        for venue in cfg.venues.values():
            print(f"venue {venue.context}: tenant {venue.tenant}, VTS {venue.vts}, "
                  f"router timeout {venue.router_timeout:g} s")
        return 0
    if args.command == "ctl":
        return _ctl(args)
    if args.command == "status":
        from ami_bridge.status import command as status_command

        located = None if args.socket is not None else _located(args)
        if args.socket is None and located is None:
            return 2
        return status_command(args.socket, located, as_json=args.json)
    if args.command == "conf":
        return _conf(args)
    if args.command == "calltest":
        from ami_bridge.calltest.run import main as calltest

        located = _located(args)
        if located is None:
            return 2
        args.config = located
        return calltest(args)
    if args.command in ("login", "logout", "users", "rules", "trace", "calls"):
        from ami_bridge.api.commands import run as run_api

        return run_api(args)
    path = _located(args)
    if path is None:
        return 2
    from ami_bridge import logs

    logs.setup(args.log_level, args.log_format)
    from ami_bridge.daemon import run
    from ami_bridge.eventloop import run as run_loop

    try:
        return run_loop(run(path))
    except config_mod.ConfigError as exc:
        print(f"ami-bridge: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"ami-bridge: {exc}", file=sys.stderr)
        return 1


def _located(args: argparse.Namespace) -> Path | None:
    """The main config file of -c/--config, $AMI_BRIDGE_CONFIG or the default; None after
    printing that it does not exist and where its path came from."""
    try:
        return conffiles.require(conffiles.locate(args.config, os.environ))
    except config_mod.ConfigError as exc:
        print(f"ami-bridge: {exc}", file=sys.stderr)
        return None


def _load(args: argparse.Namespace) -> config_mod.BridgeConfig | None:
    """The config, or None after printing why it is refused (file, key, value)."""
    path = _located(args)
    if path is None:
        return None
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
    if args.conf_command == "show":
        return _conf_show(args)
    if args.conf_command == "init":
        from ami_bridge.kit import command as kit_command

        return kit_command.run(args)
    cfg = _load(args)
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
    shared, owners, operator = set(args.shared), {}, set(args.operator)
    extra: dict[str, Any] = {}
    location = conffiles.locate(args.config, os.environ)
    # The config is optional here (--tenant alone names owners): only a default path that
    # does not exist means "none"; a path the operator gave must exist.
    if location.given or location.path.exists():
        cfg = _load(args)
        if cfg is None:
            return 2
        tenants += list(cfg.tenants)
        conf_dir = conf_dir or cfg.asterisk_conf_dir
        shared |= cfg.owners.shared_contexts  # [shared] contexts
        operator |= cfg.owners.operator_contexts  # [operator] contexts
        owners = dict(cfg.owners.contexts)  # [owners.TENANT] contexts
        extra = {"allow": cfg.dialplan_allow, "agi_addresses": apply_mod.agi_addresses(cfg),
                 "bridge_agi": apply_mod.bridge_agi(cfg),
                 "stasis_app": apply_mod.stasis_app(cfg)}
    files = list(args.files) or ([conf_dir / "extensions.conf"] if conf_dir else [])
    return run_check(files, tenants=sorted(set(tenants)), shared=frozenset(shared),
                     operator=frozenset(operator), owners=owners, out=sys.stdout,
                     config_dir=conf_dir, **extra)


def _conf_show(args: argparse.Namespace) -> int:
    from ami_bridge import confshow

    path = _located(args)
    if path is None:
        return 2
    try:
        text = confshow.show(path, as_json=args.json)
    except config_mod.ConfigError as exc:
        print(f"ami-bridge: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


def _ctl(args: argparse.Namespace) -> int:
    from ami_bridge import control

    if args.socket is not None and args.config is not None:
        print("ami-bridge: ctl: give --socket or -c/--config, not both", file=sys.stderr)
        return 2
    try:
        path = args.socket or config_mod.load(
            conffiles.require(conffiles.locate(args.config, os.environ))).control_socket
        answer = control.request(path, args.action, timeout=control.APPLY_CLIENT_TIMEOUT
                                 if args.action == "apply" else control.CLIENT_TIMEOUT)
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
