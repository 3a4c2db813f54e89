"""The shipped VTS runtime with its cache of validated portions turned off: every personal
call validates the user's portion again (the runtime before the cache, for an A/B in one
run of `python -m bench --only personal`).

Named in a generated config as `[vts.X] command = [python, "-m",
"bench.servers.worker_nocache", "--vts", "X"]`.
"""

from __future__ import annotations

import argparse
import sys

from ami_bridge.tenants import messages as m
from ami_bridge.tenants import personal
from ami_bridge.tenants.worker import Worker, run


class NoCacheWorker(Worker):
    def _rules(self, tenant: str, user: m.UserRouting, ring_time: int) -> personal.RuleSet:
        return personal.parse_portion(dict(user.portion), extensions=None,
                                      external_prefixes=(), ring_time=ring_time)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.servers.worker_nocache")
    parser.add_argument("--vts", required=True)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    return run(args.vts, args.log_level, lambda done: NoCacheWorker(name=args.vts, done=done))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
