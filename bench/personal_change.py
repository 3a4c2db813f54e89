"""Rule-change visibility: how soon after the API's 200 does the next call see new rules?

A client of the real HTTP API flips one user's portion between "forward always to 1002"
and "... to 1003" (`PUT /api/v1/tenants/{tenant}/users/{user}/rules` with the operator's
token, over one keep-alive aiohttp session, as a web front end would) and places FastAGI
route requests for that user's number as Asterisk would (bench/loadgen.py's environment,
agi_context = the personal venue, agi_extension = the number), reading AB_TARGET from the
bridge's MSet. Per change:

- right after the 200, route requests one after the other until one answers with the new
  target: `visible_ms` = from the 200 to that answer's close (so it includes one route's
  round trip, so under load mostly the route's own latency); `visible_start_ms` = from
  the 200 to the start of that request (the change itself needs no time to spread: the
  API puts it in the directory before it answers); every answer with the old target from
  a request started after the 200 is a stale answer (`stale_after_200`; the contract
  says there are none);
- and, concurrently, one route request started `offset_ms` after the PUT was sent
  (usually before its 200): counted by when it started (before / after the 200) and what
  it saw (old / new); old after the 200 is stale too.

Across bridges (bench/scale_out.py, `--route-port`): the PUT goes to bridge A's API and
every route request to bridge B's FastAGI port, with `--within-ms` as the bound: a change
B has not shown that long after the 200 counts in `never_seen` and the client goes on with
the next one. B may then still hold an older target, so before each PUT one request asks B
what it answers now (`pre`): a change whose new target B already answers cannot be told
from B having seen it and counts in `ambiguous`, not in the figures.

Run next to the 1,000/s load by bench/personal_load.py; prints one JSON object.

    python -m bench.personal_change --agi-port 4700 --api http://127.0.0.1:4701 \\
        --token-file bridge.token --changes 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from bench.loadgen import ENV, REPLY, ab_variable, percentiles
from bench.personal_data import (
    CHANGER,
    CHANGER_NUMBER,
    FORWARD_TARGETS,
    PERSONAL,
    TENANT,
    changer_portion,
)

MAX_TRIES = 50  # route requests after one 200 before the change counts as never seen
ROUTE_TIMEOUT_S = 5.0


class Router:
    """FastAGI route requests for one number, Asterisk's side."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.n = int(time.time() * 1000) % 2**31 + 500_000_000  # apart from the loadgen's
        self.template = ENV.format(port=port, venue=PERSONAL, ani="+4930999123",
                                   name="Change bench", dnis=CHANGER_NUMBER).encode()

    async def route(self) -> tuple[float, float, str]:
        """(started, ended, AB_TARGET or 'AB_ACTION:x' when no target was set)."""
        self.n += 1
        t0 = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(self.template % (self.n, self.n, self.n))
        target, action = "", ""
        try:
            while line := await asyncio.wait_for(reader.readline(), ROUTE_TIMEOUT_S):
                if b"AB_TARGET" in line:
                    target = ab_variable(line, b"AB_TARGET")
                if b"AB_ACTION" in line:
                    action = ab_variable(line, b"AB_ACTION")
                writer.write(REPLY)
        finally:
            writer.close()
        return t0, time.perf_counter(), target or f"AB_ACTION:{action}"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    token = Path(args.token_file).read_text().strip()
    url = f"{args.api}/api/v1/tenants/{TENANT}/users/{CHANGER}/rules"
    headers = {"Authorization": f"Bearer {token}"}
    cross = args.route_port is not None
    router = Router(args.route_port if cross else args.agi_port)
    within_s = args.within_ms / 1000 if args.within_ms is not None else None
    visible: list[float] = []
    visible_start: list[float] = []
    put_ms: list[float] = []
    stale = never = other = first_new = ambiguous = 0
    concurrent = {"before_200_old": 0, "before_200_new": 0, "after_200_old": 0,
                  "after_200_new": 0, "other": 0}
    deadline = time.monotonic() + args.max_seconds
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(url) as answer:
            version = int((await answer.json())["version"])
        current = (await router.route())[2]
        done = 0
        while done < args.changes and time.monotonic() < deadline:
            new = FORWARD_TARGETS[1] if current == FORWARD_TARGETS[0] else FORWARD_TARGETS[0]
            old = current
            pre = (await router.route())[2] if cross else old
            sent = time.perf_counter()

            async def delayed(at: float = sent) -> tuple[float, float, str]:
                await asyncio.sleep(max(0.0, at + args.offset_ms / 1000 - time.perf_counter()))
                return await router.route()

            probe = asyncio.create_task(delayed())
            async with http.put(url, json={"version": version, **changer_portion(new)}) as answer:
                body = await answer.json()
                ok = answer.status == 200
            t200 = time.perf_counter()
            if not ok:
                probe.cancel()
                raise RuntimeError(f"PUT answered {answer.status}: {body}")
            version = int(body["version"])
            put_ms.append((t200 - sent) * 1000)
            attempt = 0
            while pre != new:
                if (within_s is None and attempt >= MAX_TRIES) or (
                        within_s is not None and time.perf_counter() - t200 > within_s):
                    never += 1
                    break
                attempt += 1
                started, ended, target = await router.route()
                if target == new:
                    visible.append((ended - t200) * 1000)
                    visible_start.append((started - t200) * 1000)
                    first_new += attempt == 1
                    break
                if target == old and started >= t200:
                    stale += 1
                elif target != old:
                    other += 1
            ambiguous += pre == new
            started, _, target = await probe
            when = "after_200" if started >= t200 else "before_200"
            if target in (old, new):
                concurrent[f"{when}_{'new' if target == new else 'old'}"] += 1
            else:
                concurrent["other"] += 1
            stale += when == "after_200" and target == old
            current = new
            done += 1
            await asyncio.sleep(args.gap_ms / 1000)
    vis = percentiles([v / 1000 for v in visible])
    vis_start = percentiles([v / 1000 for v in visible_start])
    return {
        "changes": done, "offset_ms": args.offset_ms, "gap_ms": args.gap_ms,
        "visible_p50_ms": vis["p50_ms"], "visible_p99_ms": vis["p99_ms"],
        "visible_max_ms": vis["max_ms"],
        "visible_start_p50_ms": vis_start["p50_ms"], "visible_start_p99_ms": vis_start["p99_ms"],
        "visible_start_max_ms": vis_start["max_ms"], "stale_after_200": stale, "never_seen": never,
        "first_route_after_200_new": first_new, "other_answers": other,
        "cross_bridge": cross, "within_ms": args.within_ms, "ambiguous": ambiguous,
        "concurrent_probe": concurrent,
        "put_p50_ms": percentiles([p / 1000 for p in put_ms])["p50_ms"],
        "put_p99_ms": percentiles([p / 1000 for p in put_ms])["p99_ms"],
        "visible_ms_each": [round(v, 3) for v in visible],
        "target_visible_p99_le_50ms": (vis["p99_ms"] or 1e9) <= 50 and not never,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agi-port", type=int, required=True)
    p.add_argument("--api", required=True, help="http://127.0.0.1:PORT")
    p.add_argument("--token-file", required=True, help="the operator token (0600)")
    p.add_argument("--changes", type=int, default=200)
    p.add_argument("--offset-ms", type=float, default=2.0,
                   help="the concurrent route request starts this long after the PUT")
    p.add_argument("--gap-ms", type=float, default=20.0, help="pause between changes")
    p.add_argument("--max-seconds", type=float, default=60.0)
    p.add_argument("--route-port", type=int, default=None,
                   help="route requests to this bridge's FastAGI port instead of "
                   "--agi-port's (a change made through A, seen at B)")
    p.add_argument("--within-ms", type=float, default=None,
                   help="a change not seen this long after the 200 counts as never seen "
                   f"(default: after {MAX_TRIES} route requests)")
    args = p.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
