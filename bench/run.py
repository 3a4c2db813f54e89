"""Entry point of the benchmarks: `python -m bench [--only NAME,...] [--quick]`.

Runs agi-load, e2e-cps, drivers, bridge-cost, tenants-scale, personal, pops and
scale-out in that order (each can be picked with `--only`). With `--baseline PATH` (a
checkout of older code) agi-load adds the target `bridge@baseline` and bridge-cost the
variants `routed@baseline` and `routed-noami@baseline`, run from PATH in the same session.
Prints one JSON object per result line on stdout, a progress bar on stderr, and writes
PNG plots and a copy of the JSON lines (`results.jsonl`) under bench/results/.
Generated configs and server logs go to bench/.run/<timestamp>/ (ignored by git).
"""

from __future__ import annotations

import argparse
import sys
import time

from bench.common import REPO, RESULTS, baseline_checkout, is_baseline

ALL = ("agi-load", "e2e-cps", "drivers", "bridge-cost", "tenants-scale", "personal", "pops",
       "scale-out")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=",".join(ALL), help=f"comma-separated subset of {ALL}")
    p.add_argument("--quick", action="store_true", help="fewer reps and shorter steps")
    p.add_argument("--reps", type=int, default=None, help="agi-load repetitions (default 3)")
    p.add_argument("--profile", action="store_true",
                   help="agi-load: py-spy the bridge and a VTS under load; personal: the VTS")
    p.add_argument("--baseline", default=None, metavar="PATH",
                   help="a checkout of the code to compare with (e.g. `git worktree add "
                   "/work/wt/baseline c8cddc6`): agi-load target bridge@baseline, "
                   "bridge-cost variants routed@baseline and routed-noami@baseline")
    p.add_argument("--agi-targets", default="bridge,bridge-uvloop,panoramisk,minimal,"
                   "minimal-uvloop", help="agi-load targets (bridge@baseline is added "
                   "with --baseline)")
    p.add_argument("--venues", default="10,100,500,1000", help="tenants-scale sizes")
    p.add_argument("--vts-per", default="1,50",
                   help="tenants-scale: venues per VTS process, one run per value")
    p.add_argument("--e2e-step-s", type=float, default=None)
    p.add_argument("--e2e-variants", default="static,routed",
                   help="e2e-cps variants, interleaved: static, routed, routed-noami")
    p.add_argument("--e2e-ramp", default=None,
                   help="e2e-cps ramp START,STEP,STOP calls/s (default 120,40,640)")
    p.add_argument("--drivers-variants", default=None,
                   help="drivers: static and/or registry drivers, comma-separated "
                   "(default: static and every driver of tests/integration/drivers.py)")
    p.add_argument("--drivers-reps", type=int, default=None,
                   help="drivers: repetitions in rotated order (default 3, the minimum)")
    p.add_argument("--drivers-step-s", type=float, default=None,
                   help="drivers: seconds per SIPp step (default 4, quick 3)")
    p.add_argument("--drivers-grid", default=None,
                   help="drivers: knee search LO,HI,RES calls/s (default 100,420,40)")
    p.add_argument("--drivers-cpu-rate", type=int, default=None,
                   help="drivers: calls/s of the CPU-per-call step (default 100)")
    p.add_argument("--cost-variants", default=None,
                   help="bridge-cost: comma-separated subset of static, routed, "
                   "routed-noami (and with --baseline routed@baseline, "
                   "routed-noami@baseline); default all")
    p.add_argument("--cost-reps", type=int, default=None,
                   help="bridge-cost: repetitions in rotated order (default 3, the minimum)")
    p.add_argument("--cost-step-s", type=float, default=None,
                   help="bridge-cost: seconds per SIPp step (default 4, quick 3)")
    p.add_argument("--cost-grid", default=None,
                   help="bridge-cost: knee search LO,HI,RES calls/s (default 120,680,40)")
    p.add_argument("--cost-cpu-rate", type=int, default=None,
                   help="bridge-cost: calls/s of the CPU-per-call step (default 120)")
    p.add_argument("--personal-users", type=int, default=10_000,
                   help="personal: users in the store (default 10000)")
    p.add_argument("--personal-changes", type=int, default=200,
                   help="personal: rule changes through the API (default 200)")
    p.add_argument("--pops-calls", type=int, default=None,
                   help="pops: calls popped up on 100 clients (default 200, quick 100)")
    p.add_argument("--pops-idle-clients", type=int, default=1000,
                   help="pops: idle WebSocket clients (default 1000)")
    p.add_argument("--pops-idle-s", type=float, default=None,
                   help="pops: seconds the idle clients are watched (default 60, quick 30)")
    p.add_argument("--scale-users", type=int, default=None,
                   help="scale-out: users in the store (default 10000, quick 2000)")
    p.add_argument("--scale-changes", type=int, default=None,
                   help="scale-out: rule changes through bridge A (default 200, quick 50)")
    args = p.parse_args(argv)
    chosen = [x for x in args.only.split(",") if x]
    bad = set(chosen) - set(ALL)
    if bad:
        p.error(f"unknown benchmark {sorted(bad)}; choose from {ALL}")
    baseline = None
    if args.baseline:
        try:
            baseline = baseline_checkout(args.baseline)
        except ValueError as exc:
            p.error(str(exc))
    agi_targets = [t for t in args.agi_targets.split(",") if t]
    if baseline is not None and "bridge@baseline" not in agi_targets:
        agi_targets.append("bridge@baseline")
    if baseline is None and any(is_baseline(t) for t in agi_targets):
        p.error("agi-load target bridge@baseline needs --baseline PATH")
    workdir = REPO / "bench" / ".run" / time.strftime("%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    sink = (RESULTS / "results.jsonl").open("a")
    try:
        if "agi-load" in chosen:
            from bench import agi_load
            reps = args.reps or (2 if args.quick else 3)
            agi_load.run(
                targets=agi_targets, baseline=baseline,
                rates=[500, 1000, 2000] if not args.quick else [1000],
                main_rate=1000, reps=reps, duration=3.0 if args.quick else 5.0,
                concurrency=200, sat_duration=3.0 if args.quick else 4.0,
                workdir=workdir / "agi-load", profile=args.profile, sink=sink)
        if "e2e-cps" in chosen:
            from bench import e2e_cps
            e2e_variants = tuple(v for v in args.e2e_variants.split(",") if v)
            bad_v = set(e2e_variants) - set(e2e_cps.VARIANTS)
            if bad_v:
                p.error(f"unknown e2e variant {sorted(bad_v)}; choose from "
                        f"{tuple(e2e_cps.VARIANTS)}")
            ramp = [int(x) for x in args.e2e_ramp.split(",")] if args.e2e_ramp else []
            e2e_cps.run(workdir=workdir / "e2e-cps", quick=args.quick,
                        step_s=args.e2e_step_s, variants=e2e_variants, sink=sink,
                        **dict(zip(("start", "step", "stop"), ramp, strict=False)))
        if "drivers" in chosen:
            from bench import drivers
            grid = [int(x) for x in args.drivers_grid.split(",")] if args.drivers_grid else []
            try:
                drivers.run(
                    workdir=workdir / "drivers",
                    variants=tuple(v for v in (args.drivers_variants or "").split(",") if v)
                    or None,
                    reps=args.drivers_reps or drivers.REPS,
                    step_s=args.drivers_step_s or (3.0 if args.quick else drivers.STEP_S),
                    cpu_rate=args.drivers_cpu_rate or drivers.CPU_RATE, sink=sink,
                    **dict(zip(("lo", "hi", "res"), grid, strict=False)))
            except ValueError as exc:
                p.error(str(exc))
        if "bridge-cost" in chosen:
            from bench import bridge_cost
            grid = [int(x) for x in args.cost_grid.split(",")] if args.cost_grid else []
            try:
                bridge_cost.run(
                    workdir=workdir / "bridge-cost", baseline=baseline,
                    variants=tuple(v for v in (args.cost_variants or "").split(",") if v)
                    or None,
                    reps=args.cost_reps or bridge_cost.REPS,
                    step_s=args.cost_step_s or (3.0 if args.quick else bridge_cost.STEP_S),
                    cpu_rate=args.cost_cpu_rate or bridge_cost.CPU_RATE, sink=sink,
                    **dict(zip(("lo", "hi", "res"), grid, strict=False)))
            except ValueError as exc:
                p.error(str(exc))
        if "tenants-scale" in chosen:
            from bench import tenants_scale
            tenants_scale.run(sizes=[int(x) for x in args.venues.split(",")],
                              vts_per=[int(x) for x in args.vts_per.split(",")],
                              workdir=workdir / "tenants-scale", quick=args.quick, sink=sink)
        if "personal" in chosen:
            from bench import personal_load
            personal_load.run(
                users=args.personal_users, reps=args.reps or (2 if args.quick else 3),
                duration=3.0 if args.quick else 5.0, rate=1000,
                changes=args.personal_changes, change_s=15.0 if args.quick else 25.0,
                workdir=workdir / "personal", profile=args.profile, sink=sink)
        if "pops" in chosen:
            from bench import pops_load
            pops_load.run(
                calls=args.pops_calls or (100 if args.quick else 200), rate=10.0,
                idle_clients=args.pops_idle_clients,
                idle_s=args.pops_idle_s or (30.0 if args.quick else 60.0),
                baseline_s=10.0 if args.quick else 20.0, workdir=workdir / "pops", sink=sink)
        if "scale-out" in chosen:
            from bench import scale_out
            scale_out.run(
                users=args.scale_users or (2000 if args.quick else 10_000),
                reps=args.reps or (2 if args.quick else 3),
                duration=3.0 if args.quick else 5.0, rate=1000,
                sat_duration=3.0 if args.quick else 4.0,
                changes=args.scale_changes or (50 if args.quick else 200),
                change_s=15.0 if args.quick else 25.0,
                workdir=workdir / "scale-out", sink=sink)
    finally:
        sink.close()
    print(f"bench: plots and results.jsonl in {RESULTS}; logs in {workdir}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
