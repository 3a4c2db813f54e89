"""The unchanged shipped VTS runtime (`ami_bridge.tenants.worker`) run on uvloop.

Named in a generated config as `[vts.X] command = [python, "-m",
"bench.servers.worker_uvloop", "--vts", "X"]`, which the config already allows.
"""

import sys

import uvloop

from ami_bridge.tenants.worker import main

if __name__ == "__main__":
    uvloop.install()
    sys.exit(main(sys.argv[1:]))
