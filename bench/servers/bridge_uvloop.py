"""The unchanged bridge CLI run on uvloop (`uvloop.install()` before `asyncio.run`).

A benchmark-only wrapper that measures what uvloop would give the product without
touching it: `python -m bench.servers.bridge_uvloop run --config FILE`.
"""

import sys

import uvloop

from ami_bridge.cli import main

if __name__ == "__main__":
    uvloop.install()
    sys.exit(main(sys.argv[1:]))
