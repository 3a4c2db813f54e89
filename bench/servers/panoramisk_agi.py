"""panoramisk's FastAGI server with a no-op `route` handler that sets one variable.

This is what an integrator would write instead of the bridge: `Application.handler`
on `asyncio.start_server` (streams), one `send_command` per session, as its docs show.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from panoramisk.fast_agi import Application


async def route(request) -> None:  # type: ignore[no-untyped-def]
    await request.send_command('SET VARIABLE AB_ACTION "route"')


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    app = Application()
    app.add_route("route", route)
    server = await asyncio.start_server(app.handler, "127.0.0.1", port, reuse_address=True,
                                        backlog=1024)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)  # panoramisk logs every request at INFO
    asyncio.run(main(a.port))
