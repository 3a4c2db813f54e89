"""FastAGI load generator: plays Asterisk's side of `AGI(agi://host:port/route)`.

Each session connects, sends the full `agi_*` environment in one write (as res_agi
does for FastAGI: agi_network, agi_network_script = route, agi_request, channel, caller
id, DNID, agi_context = a venue, ...), answers every command line with `200 result=1`
(what Asterisk answers to `SET VARIABLE`), and ends when the server closes the
connection - the moment the dialplan would go on with AGISTATUS=SUCCESS. Latency is
from `connect()` to that EOF. What the server set in AB_ACTION is counted, so a bridge
that default-routes everything cannot pass for a fast one; AB_KIND too (a personal
venue routes to `phones`, `extension`, `external`, `voicemail`). With `--numbers
START:COUNT` every session dials one of COUNT numbers from START at random (agi_dnid
and agi_extension), as calls to the users of a personal venue do (`--sweep`: each in
turn, to call every user once).

Two modes: `open` offers a fixed rate (sessions started on a schedule, at most
`concurrency` in flight; starts that would exceed it wait and are counted as
`deferred`), `closed` keeps `concurrency` sessions in flight for `duration` seconds
(the saturation throughput). Runs in its own process, on uvloop when available, and
prints one JSON object with its own CPU time (getrusage) so its share is visible.

    python -m bench.loadgen --port 4690 --mode open --rate 1000 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import time
from typing import Any

ENV = (
    "agi_network: yes\n"
    "agi_network_script: route\n"
    "agi_request: agi://127.0.0.1:{port}/route\n"
    "agi_channel: PJSIP/{venue}-trunk-%08x\n"
    "agi_language: en\n"
    "agi_type: PJSIP\n"
    "agi_uniqueid: 1767225600.%d\n"
    "agi_version: 22.10.0\n"
    "agi_callerid: {ani}\n"
    "agi_calleridname: {name}\n"
    "agi_callingpres: 0\n"
    "agi_callingani2: 0\n"
    "agi_callington: 0\n"
    "agi_callingtns: 0\n"
    "agi_dnid: {dnis}\n"
    "agi_rdnis: unknown\n"
    "agi_context: {venue}\n"
    "agi_extension: {dnis}\n"
    "agi_priority: 4\n"
    "agi_enhanced: 0.0\n"
    "agi_accountcode: \n"
    "agi_threadid: 139876543210%d\n"
    "\n"
)
REPLY = b"200 result=1\n"
# A session that has not ended after this long is counted as timed out and aborted.
DRAIN_TIMEOUT_S = 10.0


def templates(port: int, venues: list[str], n: int = 512,
              dialled: bool = False) -> list[bytes]:
    """`n` environments cycling over venues and a caller mix: mostly presented numbers,
    some withheld, some VIP, DNIS on both sides of the sales prefix. `dialled`: the DNIS
    is left as a `%b` placeholder (filled per session)."""
    rng = random.Random(42)
    out = []
    for i in range(n):
        venue = venues[i % len(venues)]
        r = rng.random()
        if r < 0.05:
            ani, name = "anonymous", "Anonymous"
        elif r < 0.10:
            ani, name = f"+4930555{rng.randrange(10**4):04d}", "VIP caller"
        else:
            ani, name = f"+49{rng.randrange(10**9, 10**10)}", f"Caller \"{i}\" O'Brien"
        dnis = "%b" if dialled else f"{rng.choice('12')}{rng.randrange(1000):03d}"
        out.append(ENV.format(port=port, venue=venue, ani=ani, name=name,
                              dnis=dnis).encode())
    return out


def _ab_action(line: bytes) -> str:
    """AB_ACTION's value from `SET VARIABLE AB_ACTION "x"` or from the bridge's one
    `EXEC MSet "AB_KIND=...,AB_ACTION=x"` (the variable is last in both)."""
    return ab_variable(line, b"AB_ACTION")


def ab_variable(line: bytes, name: bytes) -> str:
    """A variable's value from `SET VARIABLE NAME "x"` or from `EXEC MSet "...,NAME=x,..."`."""
    tail = line.rpartition(name)[2].strip().strip(b'"').lstrip(b"=")
    return tail.split(b",", 1)[0].strip(b'"').decode(errors="replace")


class Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.actions: dict[str, int] = {}
        self.kinds: dict[str, int] = {}
        self.commands = 0
        self.errors: dict[str, int] = {}
        self.inflight = 0
        self.started = 0
        self.deferred = 0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class AsteriskSide(asyncio.Protocol):
    """One FastAGI session as Asterisk's res_agi plays it."""

    __slots__ = ("buf", "ended", "env", "gen", "t0", "tr")

    def __init__(self, gen: Generator, env: bytes, t0: float) -> None:
        self.gen = gen
        self.env = env
        self.t0 = t0
        self.buf = b""
        self.ended = False
        self.tr: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tr = transport  # type: ignore[assignment]
        self.gen.live.add(self)
        if self.gen.split_env:
            # res_agi writes the environment one line per write(); on loopback most of
            # them arrive as separate segments, so the server sees ~22 small reads.
            for line in self.env.splitlines(keepends=True):
                transport.write(line)  # type: ignore[attr-defined]
        else:
            transport.write(self.env)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        if b"\n" not in buf:
            self.buf = buf
            return
        lines = buf.split(b"\n")
        self.buf = lines.pop()
        stats = self.gen.stats
        for line in lines:
            stats.commands += 1
            if b"AB_ACTION" in line:
                value = _ab_action(line)
                stats.actions[value] = stats.actions.get(value, 0) + 1
            if b"AB_KIND" in line:
                kind = ab_variable(line, b"AB_KIND")
                stats.kinds[kind] = stats.kinds.get(kind, 0) + 1
        self.tr.write(REPLY * len(lines))  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        self._end(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._end("reset" if exc is not None else "closed-early")

    def _end(self, error: str | None) -> None:
        if self.ended:
            return
        self.ended = True
        gen = self.gen
        gen.live.discard(self)
        if error is None:
            gen.stats.latencies.append(time.perf_counter() - self.t0)
        else:
            gen.stats.error(error)
        gen.session_done()


class Generator:
    def __init__(self, port: int, envs: list[bytes], concurrency: int,
                 split_env: bool = False, numbers: list[bytes] | None = None,
                 sweep: bool = False) -> None:
        self.split_env = split_env
        self.numbers = numbers
        self.sweep = sweep
        self.dialled = 0
        self.rng = random.Random(7)
        self.port = port
        self.envs = envs
        self.concurrency = concurrency
        self.stats = Stats()
        self.live: set[AsteriskSide] = set()
        self.loop = asyncio.get_running_loop()
        # Asterisk's channel sequence and unique ids never repeat while it runs; start
        # each generator at a fresh point so runs against one bridge never reuse a
        # channel name (the bridge's loop guard counts entries per channel).
        self.n = int(time.time() * 1000) % 2**31
        self.closed_deadline: float | None = None
        self.idle = asyncio.Event()

    def start_one(self) -> None:
        self.n += 1
        n = self.n
        if self.numbers is None:
            env = self.envs[n % len(self.envs)] % (n, n, n)
        else:
            if self.sweep:  # each number in turn
                dialled = self.numbers[self.dialled % len(self.numbers)]
                self.dialled += 1
            else:
                dialled = self.numbers[int(self.rng.random() * len(self.numbers))]
            env = self.envs[n % len(self.envs)] % (n, n, dialled, dialled, n)
        t0 = time.perf_counter()
        self.stats.inflight += 1
        self.stats.started += 1
        self.idle.clear()
        task = self.loop.create_task(self.loop.create_connection(
            lambda: AsteriskSide(self, env, t0), "127.0.0.1", self.port))
        task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.stats.error(type(exc).__name__)
            self.session_done()

    def session_done(self) -> None:
        self.stats.inflight -= 1
        if self.closed_deadline is not None and time.perf_counter() < self.closed_deadline:
            self.start_one()
        elif self.stats.inflight == 0:
            self.idle.set()

    async def open_loop(self, rate: float, duration: float) -> None:
        total = int(rate * duration)
        t0 = time.perf_counter()
        while self.stats.started < total:
            due = min(total, int((time.perf_counter() - t0) * rate) + 1)
            while self.stats.started < due and self.stats.inflight < self.concurrency:
                self.start_one()
            if self.stats.started < due:
                self.stats.deferred += 1
            await asyncio.sleep(0.001)

    async def closed_loop(self, duration: float) -> None:
        self.closed_deadline = time.perf_counter() + duration
        for _ in range(self.concurrency):
            self.start_one()
        await asyncio.sleep(duration)

    async def drain(self) -> None:
        if self.stats.inflight == 0:
            return
        try:
            await asyncio.wait_for(self.idle.wait(), DRAIN_TIMEOUT_S)
        except TimeoutError:
            for s in list(self.live):
                s.gen.stats.error("timeout")
                s.ended = True
                if s.tr is not None:
                    s.tr.abort()


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    v = sorted(values)

    def p(q: float) -> float:
        return round(v[min(len(v) - 1, int(q * len(v)))] * 1000, 3)

    return {"p50_ms": p(0.50), "p90_ms": p(0.90), "p99_ms": p(0.99),
            "max_ms": round(v[-1] * 1000, 3)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    venues = args.venues.split(",") if args.venues else [
        args.venue_format.format(i=i) for i in range(args.venue_count)]
    numbers = None
    if args.numbers:
        start, _, count = args.numbers.partition(":")
        numbers = [str(int(start) + i).encode() for i in range(int(count or 1))]
    gen = Generator(args.port, templates(args.port, venues, dialled=numbers is not None),
                    args.concurrency, args.split_env, numbers, args.sweep)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    w0 = time.perf_counter()
    if args.mode == "open":
        await gen.open_loop(args.rate, args.duration)
    else:
        await gen.closed_loop(args.duration)
    offered_wall = time.perf_counter() - w0
    await gen.drain()
    wall = time.perf_counter() - w0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    st = gen.stats
    done = len(st.latencies)
    return {
        "mode": args.mode, "split_env": args.split_env,
        "offered_rate": args.rate if args.mode == "open" else None,
        "concurrency": args.concurrency, "duration_s": args.duration,
        "started": st.started, "completed": done, "errors": st.errors,
        "deferred_ticks": st.deferred, "actions": st.actions, "kinds": st.kinds,
        "commands": st.commands,
        "wall_s": round(wall, 3), "routes_per_s": round(done / offered_wall, 1),
        **percentiles(st.latencies),
        "loadgen_cpu_s": round(cpu, 3), "loadgen_cpu_pct": round(100 * cpu / wall, 1),
        "loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mode", choices=("open", "closed"), default="open")
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--venues", default="", help="comma-separated agi_context values")
    p.add_argument("--venue-format", default="t{i}-venue",
                   help="venue context of venue i (a str.format with {i})")
    p.add_argument("--venue-count", type=int, default=1)
    p.add_argument("--numbers", default="",
                   help="START:COUNT: dial one of COUNT numbers from START at random")
    p.add_argument("--sweep", action="store_true",
                   help="with --numbers: dial each number in turn instead of at random")
    p.add_argument("--no-uvloop", action="store_true")
    p.add_argument("--split-env", action="store_true",
                   help="write the environment one line per write(), as res_agi does")
    args = p.parse_args()
    if not args.no_uvloop:
        try:
            import uvloop
            uvloop.install()
        except ImportError:
            pass
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
