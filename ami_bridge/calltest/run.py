"""`ami-bridge calltest`: derive the cases, place them with SIPp, follow them over AMI,
print expected against actual.

Contract. `main(args)` (the parsed `calltest` subcommand) returns the exit status: 0 when
every placed call rang where its case expects, 1 on any mismatch or call not seen, 2 on
usage or config errors and when the test cannot run at all (AMI login refused, SIPp
missing or failing, nothing to test). It loads the bridge config (its tenant files are
the expectation; its `[ami]` login, unless --ami-* flags say otherwise, is the read-only
observer), logs in to AMI, writes the scenario and injection file into a working
directory and runs SIPp there (`--sipp`, a command line: the operator's `sipp`, or a
wrapper that runs it elsewhere), waits for SIPp and for every call's hang-up (bounded),
then prints one line per call and the latency percentiles. Nothing here answers a call.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import secrets
import shlex
import socket
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ami_bridge import config as config_mod
from ami_bridge.ami.client import AmiClient
from ami_bridge.ami.protocol import Event
from ami_bridge.calltest.cases import Case, Plan, derive
from ami_bridge.calltest.entries import Entry, EntryError, parse_entry
from ami_bridge.calltest.follow import Follower, percentile
from ami_bridge.calltest.scenario import CallLine, injection_csv, scenario_xml
from ami_bridge.validation import listen

DEFAULT_SIP = "127.0.0.1:5060"
DEFAULT_RATE = 5.0
DEFAULT_RING_MS = 500
DEFAULT_WAIT_MS = 10_000
# AMI login and FullyBooted on a running Asterisk take milliseconds; 10 s covers a busy box.
AMI_LOGIN_TIMEOUT_S = 10.0
# After SIPp quits, how long the last calls' Hangup events may take to arrive (Asterisk
# sends them within milliseconds of the CANCEL; the margin is for a loaded machine).
HANGUP_GRACE_S = 5.0
# SIPp's own bound beyond the last call's start: ringing wait + ring time + this.
SIPP_MARGIN_S = 20.0
PERCENTILES = (0.5, 0.9, 0.99)
SCENARIO_FILE = "calltest.xml"
INJECTION_FILE = "calltest.csv"
LOG_FILE = "sipp.log"


class UsageError(Exception):
    """Exit status 2: the command line or the config does not allow a test run."""


@dataclass(frozen=True)
class Placed:
    case: Case
    marker: str


def main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        _check_numbers(args)
        cfg = config_mod.load(args.config)
        entries = _entries(args)
        plan = derive(cfg.tenants, cfg.venues.values(), entries, dt.datetime.now(dt.UTC))
        if args.list:
            print_plan(plan, out)
            return 0
        if not plan.cases:
            print_plan(plan, out)
            raise UsageError("no case to place (every venue or rule is skipped, see above)")
        ami = _ami_login(args, cfg)
        return asyncio.run(_run(args, plan, entries, ami, out))
    except (config_mod.ConfigError, EntryError, UsageError, OSError) as exc:
        print(f"ami-bridge calltest: {exc}", file=sys.stderr)
        return 2


def _check_numbers(args: argparse.Namespace) -> None:
    for flag, value, low in (("--rate", args.rate, 0.0), ("--repeat", args.repeat, 0),
                             ("--wait-ms", args.wait_ms, 0), ("--ring-ms", args.ring_ms, -1)):
        if not value > low:
            raise UsageError(f"{flag}: must be {'positive' if low == 0 else 'at least 0'}, "
                             f"got {value}")


def _entries(args: argparse.Namespace) -> dict[str, Entry]:
    entries: dict[str, Entry] = {}
    for text in args.entry:
        entry = parse_entry(text, pai=args.pai)
        if entry.venue in entries:
            raise EntryError(f"--entry {text!r}: venue {entry.venue} has an entry already")
        entries[entry.venue] = entry
    if not entries:
        raise EntryError("no --entry VENUE=USER: calltest needs to know how a call gets "
                         "into each venue (docs/calltest.md)")
    return entries


@dataclass(frozen=True)
class AmiLogin:
    host: str
    port: int
    username: str
    secret: str


def _ami_login(args: argparse.Namespace, cfg: config_mod.BridgeConfig) -> AmiLogin:
    def fail(key: str, message: str) -> config_mod.ConfigError:
        return config_mod.ConfigError(f"{key}: {message}")

    base = cfg.ami
    host, port = listen(args.ami, "--ami", fail) if args.ami else (
        (base.host, base.port) if base else ("127.0.0.1", 5038))
    username = args.ami_user or (base.username if base else "")
    if args.ami_secret_file is not None:
        secret = args.ami_secret_file.read_text(encoding="utf-8").splitlines()[0].strip() \
            if args.ami_secret_file.stat().st_size else ""
    else:
        secret = base.secret if base else ""
    if not username or not secret:
        raise UsageError(f"{cfg.path}: no [ami] login, and no --ami-user and "
                         "--ami-secret-file: calltest follows the calls over AMI")
    return AmiLogin(host, port, username, secret)


def placements(plan: Plan, repeat: int, token: str) -> list[Placed]:
    """Each case `repeat` times, interleaved (case order, then again); each call's marker
    is unique to this run."""
    return [Placed(case, f"calltest-{token}-{i * len(plan.cases) + n}")
            for i in range(repeat) for n, case in enumerate(plan.cases)]


async def _run(args: argparse.Namespace, plan: Plan, entries: dict[str, Entry],
               ami: AmiLogin, out: TextIO) -> int:
    calls = placements(plan, args.repeat, secrets.token_hex(3))
    follower = Follower([p.marker for p in calls])
    loop = asyncio.get_running_loop()

    def on_event(event: Event) -> None:
        follower.feed(event.name, event.headers, loop.time())

    client = AmiClient(host=ami.host, port=ami.port, username=ami.username,
                       secret=ami.secret, on_event=on_event, read_pause=0.0)
    runner = asyncio.create_task(client.run())
    try:
        try:
            await client.wait_connected(AMI_LOGIN_TIMEOUT_S)
        except TimeoutError:
            why = client.last_login_error or "no session"
            raise UsageError(f"AMI {ami.host}:{ami.port} as {ami.username}: {why}") from None
        await _place(args, calls, entries)
        await _until_ended(follower, {p.marker for p in calls}, loop)
    finally:
        await client.close()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    return report(plan, calls, follower, out)


async def _place(args: argparse.Namespace, calls: Sequence[Placed],
                 entries: dict[str, Entry]) -> None:
    sip_host, sip_port = listen(args.sip, "--sip",
                                lambda k, m: config_mod.ConfigError(f"{k}: {m}"))
    local_ip = args.local_ip or _route_source(sip_host, sip_port)
    lines = [CallLine(entries[p.case.venue].from_user(p.case.ani), p.case.dnis, p.marker,
                      p.case.ani) for p in calls]
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="ami-bridge-calltest-")))
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / SCENARIO_FILE).write_text(scenario_xml(
            ring_ms=args.ring_ms, wait_ms=args.wait_ms, pai=args.pai), encoding="utf-8")
        (workdir / INJECTION_FILE).write_text(injection_csv(lines), encoding="utf-8")
        bound = len(calls) / args.rate + (args.wait_ms + args.ring_ms) / 1000 + SIPP_MARGIN_S
        argv = [*shlex.split(args.sipp), f"{sip_host}:{sip_port}",
                "-sf", SCENARIO_FILE, "-inf", INJECTION_FILE,
                "-i", local_ip, "-p", str(_free_port(local_ip, socket.SOCK_DGRAM)),
                "-mp", str(_free_port(local_ip, socket.SOCK_DGRAM)),
                "-m", str(len(calls)), "-r", f"{args.rate:g}", "-rp", "1000",
                "-timeout", f"{bound:.0f}s", "-nostdin"]  # fmt: skip
        with (workdir / LOG_FILE).open("wb") as log:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv, cwd=workdir, stdin=asyncio.subprocess.DEVNULL, stdout=log,
                    stderr=asyncio.subprocess.STDOUT)
            except FileNotFoundError:
                raise UsageError(f"--sipp {args.sipp!r}: not found (install SIPp or name "
                                 "its path)") from None
            try:
                rc = await asyncio.wait_for(proc.wait(), bound + 10.0)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise UsageError(f"SIPp still running after {bound + 10:.0f} s; killed "
                                 f"(log: {workdir / LOG_FILE})") from None
        # 0: every call went through the scenario, 1: some did not (calltest's verdict
        # comes from AMI, not from SIPp); anything else is SIPp failing to run.
        if rc not in (0, 1):
            tail = (workdir / LOG_FILE).read_text(errors="replace").splitlines()[-15:]
            raise UsageError(f"SIPp exited with status {rc}:\n" + "\n".join(tail))


async def _until_ended(follower: Follower, markers: set[str],
                       loop: asyncio.AbstractEventLoop) -> None:
    deadline = loop.time() + HANGUP_GRACE_S
    while loop.time() < deadline and not markers <= follower.ended():
        await asyncio.sleep(0.05)


def _route_source(host: str, port: int) -> str:
    """The local address the kernel would send from to reach `host` (a connected UDP
    socket sends nothing)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                       socket.SOCK_DGRAM) as sock:
        sock.connect((host.strip("[]"), port))
        return str(sock.getsockname()[0])


def _free_port(ip: str, kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, kind) as sock:
        sock.bind((ip, 0))
        return int(sock.getsockname()[1])


# -- the report ---------------------------------------------------------------------------

def print_plan(plan: Plan, out: TextIO) -> None:
    rows = [[c.tenant, c.venue, c.rule, c.dnis, c.ani, " | ".join(sorted(c.expected)), c.why]
            for c in plan.cases]
    _table(["tenant", "venue", "case", "DNIS", "ANI", "expected", "why"], rows, out)
    _print_skipped(plan, out)


def _print_skipped(plan: Plan, out: TextIO) -> None:
    for s in plan.skipped:
        print(f"skipped: {s.tenant} {s.venue}{' rule ' + repr(s.rule) if s.rule else ''}: "
              f"{s.why}", file=out)


def report(plan: Plan, calls: Sequence[Placed], follower: Follower, out: TextIO) -> int:
    """Print the table and the percentiles; 0 when every call matched, else 1."""
    rows, latencies, bad = [], [], 0
    for placed in calls:
        case = placed.case
        seen = follower.observation(placed.marker)
        actual = seen.actual if seen is not None else "(call not seen)"
        latency = seen.latency if seen is not None else None
        ok = actual in case.expected
        bad += not ok
        if latency is not None:
            latencies.append(latency)
        rows.append([case.tenant, case.venue, f"{case.rule} ({case.dnis} from {case.ani})",
                     " | ".join(sorted(case.expected)), actual,
                     "-" if latency is None else f"{latency * 1000:.0f} ms",
                     "ok" if ok else "MISMATCH"])
    _table(["tenant", "venue", "case", "expected", "actual", "latency", "result"], rows, out)
    _print_skipped(plan, out)
    if latencies:
        parts = [f"p{int(f * 100)} {percentile(latencies, f) * 1000:.0f} ms" for f in PERCENTILES]
        print(f"latency (call enters Asterisk -> first dial): {', '.join(parts)}, "
              f"max {max(latencies) * 1000:.0f} ms over {len(latencies)} calls", file=out)
    print(f"{len(calls)} calls, {len(calls) - bad} at their expected destination, "
          f"{bad} not", file=out)
    return 1 if bad else 0


def _table(header: list[str], rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(),
              file=out)
