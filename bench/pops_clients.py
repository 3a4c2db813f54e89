"""Workstation clients for the pops benchmark: many WebSockets on `GET /api/v1/ws`.

Each client is one aiohttp WebSocket that authenticates as a page does (first frame
`{"type": "auth", "token": ...}`, a session token from the store, never in the URL),
waits for `hello` and then reads every frame (aiohttp answers the hub's 30 s heartbeat
pings while a client reads). Runs as its own process, on uvloop, with RLIMIT_NOFILE
raised for its sockets. Two modes, one JSON object per line on stdout:

- `idle`: open `--clients` sockets (tokens from `--tokens`, one "user token" a line),
  print `{"connected", "connect_s", ...}`, then hold them open and idle until stdin
  closes; print what arrived meanwhile (frames, closed sockets) and close them.
- `fanout`: open the sockets, then place `--calls` FastAGI route requests (Asterisk's
  side, bench/loadgen.py's environment) at `--rate`/s to the personal venue, each from a
  caller number of its own (so a pop is matched to its call by `ani`), dialling the
  `--dial` numbers in turn. Every `pop` frame is timestamped with time.monotonic() when
  aiohttp hands it over, before it is decoded; the AGI environment's write is the start.
  When every client has the pop (or after `--choose-after` s), client 0 chooses
  `--choice` (reject: the call ends at once, its AGI session gets AB_ACTION=reject), so
  the calls do not wait out the ask timeout. Prints the per-call receipt delays (ms),
  the send times (monotonic, for the hub-side timing of bench/pops_bridge.py), the AGI
  outcomes and what else the clients were told.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.loadgen import ENV, REPLY, ab_variable
from bench.personal_data import PERSONAL

CONNECT_CONCURRENCY = 50  # sockets being opened at once (the API's accept backlog is 128)
CONNECT_TIMEOUT_S = 30.0
DRAIN_S = 10.0  # after the last call: time for the remaining sessions to end


@dataclass
class Call:
    seq: int
    ani: str
    sent: float = 0.0  # monotonic, at the environment's write
    ended: float = 0.0  # the bridge closed the AGI session
    action: str = ""
    received: list[float] = field(default_factory=list)
    call_id: str = ""
    chosen: bool = False


class Clients:
    def __init__(self, api: str, tokens: list[tuple[str, str]]) -> None:
        self.url = api.rstrip("/").replace("http", "ws", 1) + "/api/v1/ws"
        self.tokens = tokens
        self.sockets: list[Any] = []
        self.frames: dict[str, int] = {}
        self.closed = 0
        self.readers: list[asyncio.Task[None]] = []
        self.calls: dict[str, Call] = {}  # by ani
        self.on_pop: Any = None

    async def connect(self, http: Any) -> float:
        limit = asyncio.Semaphore(CONNECT_CONCURRENCY)
        t0 = time.monotonic()

        async def one(user: str, token: str) -> Any:
            async with limit:
                ws = await http.ws_connect(self.url, heartbeat=None, autoping=True)
                await ws.send_str(json.dumps({"type": "auth", "token": token}))
                hello = json.loads((await ws.receive(timeout=CONNECT_TIMEOUT_S)).data)
                if hello.get("type") != "hello" or hello.get("user") != user:
                    raise RuntimeError(f"{user}: expected hello, got {hello}")
                return ws

        self.sockets = list(await asyncio.gather(*(one(u, t) for u, t in self.tokens)))
        took = time.monotonic() - t0
        self.readers = [asyncio.create_task(self._read(i, ws))
                        for i, ws in enumerate(self.sockets)]
        return took

    async def _read(self, index: int, ws: Any) -> None:
        import aiohttp

        while True:
            msg = await ws.receive()
            at = time.monotonic()
            if msg.type != aiohttp.WSMsgType.TEXT:
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
                    self.closed += 1
                    return
                continue
            frame = json.loads(msg.data)
            kind = frame.get("type", "?")
            self.frames[kind] = self.frames.get(kind, 0) + 1
            if kind == "pop" and self.on_pop is not None:
                self.on_pop(index, frame["call"], at)

    async def close(self) -> None:
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in self.sockets), return_exceptions=True)


async def idle(args: argparse.Namespace, tokens: list[tuple[str, str]]) -> None:
    import aiohttp

    clients = Clients(args.api, tokens)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        took = await clients.connect(http)
        print(json.dumps({"connected": len(clients.sockets), "connect_s": round(took, 3)}),
              flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        result = {"frames_while_idle": dict(clients.frames), "closed_while_idle":
                  clients.closed}
        await clients.close()
    print(json.dumps(result), flush=True)


async def _route(call: Call, port: int, dial: str) -> None:
    env = ENV.format(port=port, venue=PERSONAL, ani=call.ani, name=f"Pop bench {call.seq}",
                     dnis=dial).encode()
    n = 800_000_000 + int(time.time()) % 100_000_000 + call.seq  # apart from the loadgen's
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    call.sent = time.monotonic()
    writer.write(env % (n, n, n))
    try:
        while line := await asyncio.wait_for(reader.readline(), 70.0):
            if b"AB_ACTION" in line:
                call.action = ab_variable(line, b"AB_ACTION")
            writer.write(REPLY)
    except TimeoutError:
        call.action = "timeout"
    finally:
        call.ended = time.monotonic()
        writer.close()


async def fanout(args: argparse.Namespace, tokens: list[tuple[str, str]]) -> None:
    import aiohttp

    clients = Clients(args.api, tokens)
    dial = args.dial.split(",")
    loop = asyncio.get_running_loop()
    want = len(tokens)
    choosing: set[asyncio.Task[None]] = set()

    def choose(call: Call) -> None:
        if call.chosen or not call.call_id:
            return
        call.chosen = True
        task = loop.create_task(clients.sockets[0].send_str(json.dumps(
            {"type": "choose", "call": call.call_id, "choice": args.choice})))
        choosing.add(task)
        task.add_done_callback(choosing.discard)

    def on_pop(index: int, pop: dict[str, Any], at: float) -> None:
        call = clients.calls.get(pop.get("ani", ""))
        if call is None:
            return
        call.received.append(at)
        call.call_id = pop["call_id"]
        if len(call.received) == want:
            choose(call)
        elif len(call.received) == 1:
            loop.call_later(args.choose_after, choose, call)

    clients.on_pop = on_pop
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        took = await clients.connect(http)
        sessions: list[asyncio.Task[None]] = []
        t0 = time.monotonic()
        for seq in range(args.calls):
            delay = t0 + seq / args.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            call = Call(seq, f"+4930{args.ani_base + seq:08d}")
            clients.calls[call.ani] = call
            sessions.append(asyncio.create_task(_route(call, args.agi_port,
                                                       dial[seq % len(dial)])))
        await asyncio.wait(sessions, timeout=DRAIN_S + args.choose_after)
        await asyncio.sleep(0.2)  # the last gone frames
        frames = dict(clients.frames)
        await clients.close()
    calls = sorted(clients.calls.values(), key=lambda c: c.seq)
    actions: dict[str, int] = {}
    for c in calls:
        actions[c.action or "unfinished"] = actions.get(c.action or "unfinished", 0) + 1
    print(json.dumps({
        "clients": len(tokens), "connect_s": round(took, 3), "calls": len(calls),
        "rate": args.rate, "choice": args.choice, "actions": actions, "frames": frames,
        "closed": clients.closed,
        "calls_detail": [{"ani": c.ani, "sent": c.sent, "session_ms": round(
            (c.ended - c.sent) * 1000, 3) if c.ended else None,
            "received_ms": sorted(round((t - c.sent) * 1000, 3) for t in c.received)}
            for c in calls]}), flush=True)


def _raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=("idle", "fanout"))
    p.add_argument("--api", required=True, help="http://127.0.0.1:PORT")
    p.add_argument("--tokens", required=True, help='file of "user token" lines')
    p.add_argument("--clients", type=int, default=100, help="the first N lines of --tokens")
    p.add_argument("--agi-port", type=int, default=0)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--rate", type=float, default=10.0)
    p.add_argument("--dial", default="", help="comma-separated numbers dialled in turn")
    p.add_argument("--choice", default="reject", choices=("reject", "voicemail", "take"))
    p.add_argument("--choose-after", type=float, default=2.0,
                   help="choose this long after the first receipt if not all have it")
    p.add_argument("--ani-base", type=int, default=0)
    args = p.parse_args()
    lines = Path(args.tokens).read_text().split("\n")
    tokens = [(u, t) for u, _, t in (x.partition(" ") for x in lines if x)][:args.clients]
    _raise_nofile(len(tokens) + 256)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    if args.mode == "idle":
        asyncio.run(idle(args, tokens))
    else:
        if not args.agi_port or not args.dial:
            p.error("fanout needs --agi-port and --dial")
        asyncio.run(fanout(args, tokens))


if __name__ == "__main__":
    main()
