"""The unchanged bridge CLI with the pop hub's fan-out timed from inside (pops benchmark).

A benchmark-only wrapper, `python -m bench.pops_bridge run --config FILE`, with
`AB_POPS_TIMING=FILE` in its environment: `PopHub.offer` and aiohttp's
`WebSocketResponse.send_str` are wrapped to note `time.monotonic()` (CLOCK_MONOTONIC,
one clock for every process of the host, so the client process can compare) when each
offer starts and returns and when each `pop` frame has been handed to its socket's
transport. At exit (SIGTERM: the daemon stops cleanly) one JSON line per pop goes to
FILE: `ani` (the benchmark's calls each have their own), `offer_start`, `offer_end`,
`sends` (frames written) and `last_send` (the last of them). Nothing else changes:
the notes are appended to lists, the JSON is built only at exit.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
from typing import Any

from aiohttp import web

from ami_bridge.cli import main
from ami_bridge.personal import pops

_offers: list[tuple[str, str, float, float]] = []  # call_id, ani, start, end
_sends: list[tuple[str, float]] = []  # the pop frame's text (shared, not copied), when


def _install(path: str) -> None:
    offer = pops.PopHub.offer
    send_str = web.WebSocketResponse.send_str

    def timed_offer(self: pops.PopHub, pop: pops.Pop) -> None:
        start = time.monotonic()
        offer(self, pop)
        _offers.append((pop.call_id, pop.ani, start, time.monotonic()))

    async def timed_send(self: web.WebSocketResponse, data: str, compress: Any = None
                         ) -> None:
        await send_str(self, data, compress)
        if data.startswith('{"type":"pop"'):
            _sends.append((data, time.monotonic()))

    pops.PopHub.offer = timed_offer  # type: ignore[method-assign]
    web.WebSocketResponse.send_str = timed_send  # type: ignore[method-assign]
    atexit.register(_dump, path)


def _dump(path: str) -> None:
    last: dict[str, tuple[int, float]] = {}
    for text, at in _sends:
        call_id = json.loads(text)["call"]["call_id"]
        n, t = last.get(call_id, (0, 0.0))
        last[call_id] = (n + 1, max(t, at))
    with open(path, "w") as out:
        for call_id, ani, start, end in _offers:
            n, t = last.get(call_id, (0, 0.0))
            out.write(json.dumps({"call_id": call_id, "ani": ani, "offer_start": start,
                                  "offer_end": end, "sends": n, "last_send": t}) + "\n")


if __name__ == "__main__":
    timing = os.environ.get("AB_POPS_TIMING")
    if timing:
        _install(timing)
    sys.exit(main(sys.argv[1:]))
