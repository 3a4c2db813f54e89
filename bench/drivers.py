"""drivers: the end-to-end knee and the CPU per call of each routing driver, side by side
with the static dialplan (`python -m bench --only drivers`).

Variants: `static` (bench/e2e_cps.py's trunk whose context Dials the agent: no bridge,
no AGI, no AMI session; the physical limit of the path) and one per entry of the driver
registry (tests/integration/drivers.py: `acme-trunk` -> `acme-venue` rendered for that
driver -> the bridge, with its AMI session as in production -> its VTS -> Dial). Adding
a driver to the registry adds it here.

The fair protocol (bench/fair.py, shared with bridge-cost; bench/README.md, "The e2e
order effect"): every variant gets a fresh Asterisk boot (the venues rendered for its
driver are given to the boot, nothing is reloaded), the variants run in a rotated order
per repetition (A B C, B C A, C A B ...), at least 3 repetitions, and the summary gives
medians with their spread (min, max, the per-rep values). Per variant and rep: first
`cpu_rate` calls/s for `step_s` (Asterisk's CPU per call from /proc of its process tree;
the bridge's, with its VTS, the same way), then the knee by bisection over the grid
`lo`..`hi` in steps of `res`: a probe passes with 0 failed SIPp calls at the offered
rate (bench/e2e_cps.py `_step`), a failed probe is tried once more (single runs vary by
~15 %). The knee is the highest passing grid rate; `cpu_rate` failing makes it 0, `hi`
passing makes it the ceiling (flagged). With the defaults a variant and rep take ~45 s:
4 variants x 3 reps in about 10 minutes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from bench.common import BENCH_PORT_BASE, RESULTS, BridgeServer, Progress, emit
from bench.e2e_cps import ACME_CONFIG
from bench.fair import (
    REPS,
    ROUTED_TRUNK,
    STATIC_TRUNK,
    Boots,
    NoBridge,
    estimated_probes,
    grid,
    knee,
    rotated,
    spread,
    static_files,
)

# FastAGI port of the bench's bridge (e2e-cps has 4695); never the tests' 4573.
AGI_PORT = BENCH_PORT_BASE + 6
STATIC = "static"
# Defaults, from the e2e-cps runs of bench/README.md: the routed knee sat at 140-240
# calls/s and the static one at 280-380, so 100/s is below every knee (the CPU figures
# are compared there) and 420/s above them.
CPU_RATE = 100
LO, HI, RES = 100, 420, 40
STEP_S = 4.0


def driver_registry() -> dict[str, Any]:
    """Name -> Driver (tests/integration/drivers.py), the one registry of drivers."""
    from tests.integration.drivers import DRIVERS

    return {d.name: d for d in DRIVERS}


def default_variants() -> tuple[str, ...]:
    return (STATIC, *driver_registry())


def bridge_config(driver: Any, workdir: Path) -> Path:
    """e2e-cps's acme bridge config (with [ami]) with its venue on `driver`."""
    path = workdir / f"bridge-{driver.name}.toml"
    text = ACME_CONFIG.format(port=AGI_PORT, control=workdir / f"bridge-{driver.name}.sock")
    venue = 'vts = "benche2e"\n'
    text = text.replace(venue, venue + driver.venue_line() + "\n", 1)
    path.write_text(text + "\n" + driver.sections(workdir))
    return path


class _Run:
    """One benchmark run: the sandbox Asterisk (bench/fair.py Boots: one lock, a boot per
    variant and rep), the bridges, and the records."""

    def __init__(self, *, workdir: Path, step_s: float, cpu_rate: int, rates: list[int],
                 sink: Any, bar: Progress) -> None:
        from harness.asterisk import DEFAULT_CONF_SRC

        self.workdir, self.cpu_rate, self.rates = workdir, cpu_rate, rates
        self.sink = sink
        self.conf_src = DEFAULT_CONF_SRC
        self.boots = Boots(bench="drivers", name="bench-drivers", agi_port=AGI_PORT,
                           step_s=step_s, sink=sink, bar=bar)
        self.records = self.boots.records

    def variant(self, variant: str, rep: int, position: int) -> dict[str, Any]:
        from tests.integration.drivers import fragments

        files = static_files(self.conf_src)
        if variant != STATIC:
            files.update(fragments(driver_registry()[variant]))
        boot_s = self.boots.boot(self.conf_src, files)
        bridge: Any = NoBridge()
        if variant != STATIC:
            driver = driver_registry()[variant]
            bridge = BridgeServer(f"drivers-{variant}", bridge_config(driver, self.workdir),
                                  AGI_PORT, self.workdir / f"bridge-{variant}-{rep}.log")
            bridge.start()  # ready: VTS connected, AMI session resynced
        trunk = STATIC_TRUNK if variant == STATIC else ROUTED_TRUNK
        try:
            cpu = self.boots.probe(bridge, variant, rep, self.cpu_rate, "cpu", trunk=trunk)
            knee_cps = knee(lambda rate: bool(self.boots.probe(
                bridge, variant, rep, rate, "knee", trunk=trunk)["passed"]), self.rates,
                cpu_rate=self.cpu_rate, cpu_passed=bool(cpu["passed"]))
        finally:
            bridge.stop()
        rec = {"bench": "drivers", "kind": "run", "variant": variant, "rep": rep,
               "position": position, "boot_s": round(boot_s, 2), "knee_cps": knee_cps,
               "knee_is_ceiling": knee_cps == self.rates[-1], "cpu_rate_cps": self.cpu_rate,
               "cpu_step_passed": cpu["passed"],
               "asterisk_cpu_ms_per_call": cpu["asterisk_cpu_ms_per_call"],
               "bridge_cpu_ms_per_call": cpu["bridge_cpu_ms_per_call"]}
        self.records.append(rec)
        emit(rec, sink=self.sink)
        return rec


def summarise(runs: list[dict[str, Any]], variants: tuple[str, ...], *, reps: int,
              step_s: float, cpu_rate: int, rates: list[int]) -> dict[str, Any]:
    per: dict[str, Any] = {}
    for v in variants:
        mine = sorted((r for r in runs if r["variant"] == v), key=lambda r: r["rep"])
        cpu_ok = [r for r in mine if r["cpu_step_passed"]]
        per[v] = {
            "knee_cps": spread([r["knee_cps"] for r in mine]),
            "asterisk_cpu_ms_per_call": spread([r["asterisk_cpu_ms_per_call"] for r in cpu_ok]),
            "bridge_cpu_ms_per_call": spread([r["bridge_cpu_ms_per_call"] for r in cpu_ok]),
            "positions": [r["position"] for r in mine],
        }
    static = per.get(STATIC, {}).get("knee_cps", {}).get("median")
    for p in per.values():
        k = p["knee_cps"]["median"]
        p["knee_over_static"] = round(k / static, 3) if static and k is not None \
            else None
    return {"bench": "drivers", "kind": "summary", "variants": list(variants), "reps": reps,
            "step_s": step_s, "cpu_rate_cps": cpu_rate, "grid": [rates[0], rates[-1],
            rates[1] - rates[0] if len(rates) > 1 else 0], "ami_session": True,
            "static_has_bridge": False, "per_variant": per}


def run(*, workdir: Path, variants: tuple[str, ...] | None = None, reps: int = REPS,
        step_s: float = STEP_S, cpu_rate: int = CPU_RATE, lo: int = LO, hi: int = HI,
        res: int = RES, sink: Any = None) -> list[dict[str, Any]]:
    from harness.asterisk import sandbox_ready

    if not sandbox_ready():
        print("drivers: sandbox not provisioned (scripts/provision-sandbox); skipped",
              file=sys.stderr)
        return []
    variants = variants or default_variants()
    unknown = set(variants) - set(default_variants())
    if unknown:
        raise ValueError(f"drivers: unknown variant(s) {sorted(unknown)}; the registry "
                         f"(tests/integration/drivers.py) and static give "
                         f"{default_variants()}")
    if reps < 3:
        print(f"drivers: {reps} repetition(s): below the fair protocol's 3, medians are "
              "not comparable", file=sys.stderr)
    workdir.mkdir(parents=True, exist_ok=True)
    rates = grid(lo, hi, res)
    bar = Progress(reps * len(variants) * estimated_probes(rates, cpu_rate), "drivers")
    bar.log("drivers: waiting for the sandbox Asterisk lock (other test runs may hold it)")
    state = _Run(workdir=workdir, step_s=step_s, cpu_rate=cpu_rate, rates=rates, sink=sink,
                 bar=bar)
    runs: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        for rep in range(reps):
            for position, variant in enumerate(rotated(variants, rep)):
                runs.append(state.variant(variant, rep, position))
    finally:
        state.boots.stop()
    summary = summarise(runs, variants, reps=reps, step_s=step_s, cpu_rate=cpu_rate,
                        rates=rates)
    summary["wall_s"] = round(time.monotonic() - started, 1)
    emit(summary, sink=sink)
    plot(state.records, summary)
    return [*state.records, summary]


def plot(records: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = summary["per_variant"]
    names = list(per)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, key, title in ((axes[0], "knee_cps", "knee (calls/s, 0 failed)"),
                           (axes[1], "asterisk_cpu_ms_per_call", "Asterisk CPU ms/call"),
                           (axes[2], "bridge_cpu_ms_per_call", "bridge+VTS CPU ms/call")):
        for i, n in enumerate(names):
            each = per[n][key]["each"]
            ax.plot([i] * len(each), each, "o", alpha=0.5)
            if per[n][key]["median"] is not None:
                ax.plot([i - 0.2, i + 0.2], [per[n][key]["median"]] * 2, "k-")
        ax.set_xticks(range(len(names)), names)
        ax.set_title(f"{title} at {summary['cpu_rate_cps']}/s" if "cpu" in key else title)
    fig.suptitle(f"routing drivers: {summary['reps']} reps, a fresh Asterisk per variant, "
                 "rotated order; bars = medians")
    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / "drivers.png", dpi=110)
    plt.close(fig)
