"""The long scale-out fault run (`make test-faults`): bridges killed and restarted under load.

Contract. `python -m harness.scale_faults [--out FILE]` starts a :class:`harness.cluster.Cluster`
of two Asterisks and two bridges (with the Asterisk trace), loads both Asterisks with
acme calls (`RATE` calls/s each for `DURATION_S`), and SIGKILLs then restarts a bridge
at each time of `SCHEDULE` (A twice, B once). It returns, prints and optionally writes
a frozen :class:`ScaleFaultResult` as JSON: per Asterisk, SIPp's successful and failed
calls, the calls that reached the operator (the venue fallback, counted at the SIPp
phone and in the trace), the route requests that went to another node's bridge, and for
every kill the failover time (the Asterisk's AMI logoff of the killed bridge to its
first request to another bridge). Exit status 0 when no call failed and none took the
fallback, else 1. The short variant is tests/integration/test_scale_out.py.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.cluster import Cluster, Node, Trace
from harness.sipp import start_uac

RATE = 10.0  # calls/s into each Asterisk: the short test's load, sustained
DURATION_S = 60.0
HOLD_MS = 200
# (seconds after the load starts, node index): A, B, then A again; each kill is
# followed at once by a restart, which took about 5 s here under load.
SCHEDULE = ((10.0, 0), (28.0, 1), (45.0, 0))
AMI_USER = "ami-bridge"  # asterisk-conf/manager.d/ami-bridge.conf
UAC_PORT = 5081
# SIPp's own timeout: the load plus room for the last calls.
UAC_TIMEOUT_S = DURATION_S + 30.0


@dataclass(frozen=True)
class NodeResult:
    asterisk: int
    successful: int
    failed: int
    operator: int
    fallback_steps: int
    to_other_bridges: int


@dataclass(frozen=True)
class KillResult:
    at_s: float
    node: int
    restart_s: float
    failover_ms: float | None  # None: no call arrived while that bridge was down


@dataclass(frozen=True)
class ScaleFaultResult:
    rate: float
    duration_s: float
    nodes: tuple[NodeResult, ...]
    kills: tuple[KillResult, ...]

    @property
    def ok(self) -> bool:
        return all(n.failed == 0 and n.operator == 0 and n.fallback_steps == 0
                   for n in self.nodes)


def own_url(node: Node) -> str:
    return f"agi://{node.bridge.config.agi_host}:{node.bridge.config.agi_port}/"


def failover_ms(trace: Trace, own: str, after_logoff: int) -> float | None:
    """From the `after_logoff`-th AMI logoff in `trace` to the first route request that
    went to another bridge after it."""
    logoffs = trace.logoffs(AMI_USER)
    if len(logoffs) <= after_logoff:
        return None
    killed = logoffs[after_logoff]
    moved = [s.at for s in trace.route_requests() if s.at >= killed
             and not s.args.startswith(own)]
    return (moved[0] - killed).total_seconds() * 1000 if moved else None


def run(directory: Path, *, rate: float = RATE, duration_s: float = DURATION_S,
        schedule: tuple[tuple[float, int], ...] = SCHEDULE) -> ScaleFaultResult:
    calls = int(rate * duration_s)
    with Cluster(directory, trace=True, name="scale-faults") as cluster:
        cluster.phones()
        uacs = [start_uac(from_user="acme-trunk", dnis="100", calls=calls, rate=rate,
                          hold_ms=HOLD_MS, port=UAC_PORT, target=n.asterisk.sip,
                          host=n.asterisk.host, timeout_s=UAC_TIMEOUT_S) for n in cluster]
        started = time.monotonic()
        restarts: list[tuple[float, int, float]] = []
        for at_s, index in schedule:
            time.sleep(max(0.0, started + at_s - time.monotonic()))
            bridge = cluster.nodes[index].bridge
            if bridge.pid is not None:
                os.kill(bridge.pid, signal.SIGKILL)
            bridge.stop()
            restart = time.monotonic()
            bridge.start()
            restarts.append((at_s, index, time.monotonic() - restart))
        stats = [u.wait() for u in uacs]
        arrived = cluster.stop_phones()
        nodes = []
        for node, got in zip(cluster, stats, strict=True):
            trace = node.trace()
            nodes.append(NodeResult(
                asterisk=node.index + 1, successful=got.successful, failed=got.failed,
                operator=arrived[(node.index, "acme-operator")],
                fallback_steps=sum(1 for s in trace.steps
                                   if s.app == "Gosub" and "operator" in s.args),
                to_other_bridges=sum(1 for s in trace.route_requests()
                                     if not s.args.startswith(own_url(node)))))
        kills = []
        seen = {index: 0 for index in range(len(cluster.nodes))}
        for at_s, index, restart_s in restarts:
            node = cluster.nodes[index]
            kills.append(KillResult(at_s, index + 1, round(restart_s, 2),
                                    failover_ms(node.trace(), own_url(node), seen[index])))
            seen[index] += 1
    return ScaleFaultResult(rate, duration_s, tuple(nodes), tuple(kills))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.scale_faults",
                                     description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--out", type=Path, help="also write the result here (JSON)")
    parser.add_argument("--duration", type=float, default=DURATION_S)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ab-scale-faults-") as tmp:
        result = run(Path(tmp), duration_s=args.duration)
    text = json.dumps({**asdict(result), "ok": result.ok}, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
