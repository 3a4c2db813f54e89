"""bridge-cost: what the whole bridge costs per routed call on the real Asterisk, split
into routing path, AMI path and VTS, and the end-to-end knee against the static path
(issue 14; `python -m bench --only bridge-cost [--baseline PATH]`).

Variants (each on its own fresh Asterisk boot, bench/fair.py):
  static        e2e-cps's `bench-static-trunk` -> Dial: no bridge, no AGI, no AMI session
  routed        `acme-trunk` -> the shipped FastAGI `acme-venue` -> the bridge (e2e-cps's
                acme config, its AMI session on, `[metrics]` on) -> its VTS -> Dial
  routed-noami  the same bridge without `[ami]`: the routing path alone
  routed@baseline, routed-noami@baseline  (with `--baseline PATH`) the same two with the
                bridge and its VTS imported from PATH (common.baseline_env) and Asterisk
                booted from PATH's asterisk-conf/ (the manager user's event filters are
                part of what changes); the static variant is shared.
The protocol: `reps` (>= 3) repetitions, variants in rotated order, a fresh Asterisk per
variant and repetition. Per variant and repetition a CPU step at `cpu_rate` (120
calls/s, the issue's rate) for `step_s`: Asterisk's CPU per successful call (its
process tree), the bridge main process's and its VTS processes' (utime + stime from
/proc, bench/e2e_cps.py `_step`), and the AMI events and bytes per call from the
bridge's /metrics counters `ami_bridge_ami_events_received_total` and `..._bytes_...`
(scraped before the step and after its calls drained; a code without them, the
baseline before the AMI work, gives null: counting with a second observer session
would count another manager user's events, not the bridge's). Then the knee by
bisection over the grid above `cpu_rate` (fair.knee). The summary gives, per side
(after = this checkout, baseline), each figure as median, min, max and per-repetition
values: `bridge_cpu_ms_per_call_split` {routing = main CPU of routed-noami, ami =
main(routed) - main(routed-noami), vts = VTS CPU of routed, total = main + VTS of
routed}, `ami_events_per_call`, `asterisk_cpu_ratio` (static / routed Asterisk ms per
call, same repetition) and `knee_over_static` (routed / static knee, same repetition).
"""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import (
    BENCH_PORT_BASE,
    REPO,
    RESULTS,
    BridgeServer,
    Progress,
    baseline_env,
    checkout_commit,
    emit,
    is_baseline,
    tree,
)
from bench.e2e_cps import ACME_CONFIG, _drain, _step, without_ami
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

# The bench's own ports (drivers 4696, e2e-cps 4695, tenants-scale 4700; tests 4573).
AGI_PORT = BENCH_PORT_BASE + 7
METRICS_PORT = BENCH_PORT_BASE + 8
STATIC = "static"
ROUTED = "routed"
NOAMI = "routed-noami"
VARIANTS = (STATIC, ROUTED, NOAMI)
BASELINE_VARIANTS = (f"{ROUTED}@baseline", f"{NOAMI}@baseline")
# The rate for the CPU figures.
CPU_RATE = 120
# Grid of the knee: the drivers run of 2026-11-29 (idle machine) had static at its 420
# ceiling; probes on the busy box put it at 240-300 (bench/README.md).
# Bisection costs log2 of the grid, so a top well above static costs one probe more.
LO, HI, RES = 120, 680, 40
STEP_S = 4.0
EVENTS_COUNTER = "ami_bridge_ami_events_received_total"
BYTES_COUNTER = "ami_bridge_ami_bytes_received_total"
# A series every bridge's /metrics has (each configured venue listed from the start at 0,
# docs/operations.md): its presence tells "answered without the AMI counters" from "no
# answer".
UP = "ami_bridge_route_requests_total"
SCRAPE_TIMEOUT_S = 5.0
NO_COUNTER_NOTE = (f"{EVENTS_COUNTER} absent from the bridge's /metrics (code before the "
                   "AMI counters): null; a second observer session would count its own "
                   "manager user's events, not the bridge's, so none is used")
TARGETS = {"bridge_total_ms_per_call": 0.5, "asterisk_cpu_ratio": 0.92,
           "knee_over_static": 0.85}
SIDES = {"after": "", "baseline": "@baseline"}


def counters(text: str, names: tuple[str, ...]) -> dict[str, float | None]:
    """The value of each counter in a Prometheus text exposition, summed over its label
    sets; None for a name with no sample."""
    out: dict[str, float | None] = dict.fromkeys(names)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name = head.split("{", 1)[0].strip()
        if name in out:
            try:
                out[name] = (out[name] or 0.0) + float(value)
            except ValueError:
                continue
    return out


def scrape(port: int = METRICS_PORT) -> dict[str, float | None]:
    """The AMI counters of the bridge listening on `port` (None each if unreachable)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                    timeout=SCRAPE_TIMEOUT_S) as resp:
            text = resp.read().decode("utf-8", errors="replace")
    except (OSError, urllib.error.URLError):
        return dict.fromkeys((EVENTS_COUNTER, BYTES_COUNTER, UP))
    return counters(text, (EVENTS_COUNTER, BYTES_COUNTER, UP))


def per_call(before: float | None, after: float | None, calls: int) -> float | None:
    if before is None or after is None or calls <= 0:
        return None
    return round((after - before) / calls, 2)


def bridge_config(workdir: Path, variant: str) -> Path:
    """e2e-cps's acme config on this bench's port with [metrics]; without [ami] for the
    noami variants."""
    name = variant.replace("@", "-")
    path = workdir / f"bridge-{name}.toml"
    text = ACME_CONFIG.format(port=AGI_PORT, control=workdir / f"bridge-{name}.sock")
    if variant.startswith(NOAMI):
        text = without_ami(text)
    path.write_text(f'{text}\n[metrics]\nlisten = "127.0.0.1:{METRICS_PORT}"\n')
    return path


def measure_cpu(ast: Any, bridge: Any, trunk: str, rate: int, step_s: float,
                ) -> dict[str, Any]:
    """e2e-cps's step with the AMI counters read around it: before the step, and after
    its calls have drained (the last hang-up events arrive after SIPp's last BYE)."""
    before = scrape() if bridge.running else {}
    r = _step(ast, bridge, trunk, rate, step_s)
    after: dict[str, float | None] = {}
    if bridge.running:
        _drain(ast)
        after = scrape()
    # False: no /metrics answer at all (not: an answer without the counters)
    r["metrics_scraped"] = None not in (before.get(UP), after.get(UP)) if bridge.running \
        else None
    ok = int(r["successful"])
    r["ami_events_per_call"] = per_call(before.get(EVENTS_COUNTER), after.get(EVENTS_COUNTER),
                                        ok)
    r["ami_bytes_per_call"] = per_call(before.get(BYTES_COUNTER), after.get(BYTES_COUNTER), ok)
    return r


class _Run:
    """One run: the Asterisk boots, the bridges (this checkout's or the baseline's), the
    records."""

    def __init__(self, *, workdir: Path, baseline: Path | None, step_s: float,
                 cpu_rate: int, rates: list[int], sink: Any, bar: Progress) -> None:
        self.workdir, self.baseline, self.cpu_rate, self.rates = (workdir, baseline,
                                                                  cpu_rate, rates)
        self.sink = sink
        self.boots = Boots(bench="bridge-cost", name="bench-cost", agi_port=AGI_PORT,
                           step_s=step_s, sink=sink, bar=bar)
        self.records = self.boots.records

    def root(self, variant: str) -> Path:
        if is_baseline(variant):
            assert self.baseline is not None, f"{variant} without --baseline"
            return self.baseline
        return REPO

    def variant(self, variant: str, rep: int, position: int) -> dict[str, Any]:
        processes = 0
        root = self.root(variant)
        conf_src = root / "asterisk-conf"
        boot_s = self.boots.boot(conf_src, static_files(conf_src))
        bridge: Any = NoBridge()
        if variant != STATIC:
            name = variant.replace("@", "-")
            bridge = BridgeServer(f"cost-{name}", bridge_config(self.workdir, variant),
                                  AGI_PORT, self.workdir / f"bridge-{name}-{rep}.log",
                                  env=baseline_env(root) if is_baseline(variant) else None)
            bridge.start()  # ready: VTS connected, AMI session (if any) resynced
            # VTS CPU is read from the bridge's descendants: a VTS started elsewhere (a
            # fork server outside the bridge's tree, say) would read as 0.
            processes = len(tree(bridge.pid))
            if processes < 2:
                self.boots.bar.log(f"bridge-cost {variant}: no VTS process below the bridge "
                                   f"(pid {bridge.pid}); its VTS CPU will read 0")
        trunk = STATIC_TRUNK if variant == STATIC else ROUTED_TRUNK
        try:
            cpu = self.boots.probe(bridge, variant, rep, self.cpu_rate, "cpu", trunk=trunk,
                                   measure=measure_cpu)
            knee_cps = knee(lambda rate: bool(self.boots.probe(
                bridge, variant, rep, rate, "knee", trunk=trunk)["passed"]), self.rates,
                cpu_rate=self.cpu_rate, cpu_passed=bool(cpu["passed"]))
        finally:
            bridge.stop()
        rec = {"bench": "bridge-cost", "kind": "run", "variant": variant, "rep": rep,
               "position": position, "code": "baseline" if is_baseline(variant) else "after",
               "boot_s": round(boot_s, 2), "bridge_processes": processes,
               "knee_cps": knee_cps,
               "knee_is_ceiling": knee_cps == self.rates[-1], "cpu_rate_cps": self.cpu_rate,
               "cpu_step_passed": cpu["passed"],
               **{k: cpu[k] for k in ("asterisk_cpu_ms_per_call", "bridge_cpu_ms_per_call",
                                      "bridge_main_cpu_ms_per_call", "vts_cpu_ms_per_call",
                                      "ami_events_per_call", "ami_bytes_per_call")}}
        self.records.append(rec)
        emit(rec, sink=self.sink)
        return rec


# -- summary (pure: runs in, figures out) -------------------------------------------------

def _paired(runs: list[dict[str, Any]], a: str, b: str) -> list[tuple[dict[str, Any],
                                                                      dict[str, Any]]]:
    """The (a, b) run pairs of the same repetition, in rep order."""
    by = {(r["variant"], r["rep"]): r for r in runs}
    reps = sorted({r["rep"] for r in runs})
    return [(by[a, rep], by[b, rep]) for rep in reps if (a, rep) in by and (b, rep) in by]


def _cpu_ok(*rs: dict[str, Any]) -> bool:
    return all(r["cpu_step_passed"] for r in rs)


def _counted(values: list[float | None]) -> dict[str, Any] | None:
    if not values or None in values:
        return None
    return spread([v for v in values if v is not None])


def side_figures(runs: list[dict[str, Any]], suffix: str) -> dict[str, Any]:
    """The issue's figures for one side (`suffix` "" = after, "@baseline"), each a spread
    over the repetitions where every run it needs had its CPU step pass."""
    routed, noami = ROUTED + suffix, NOAMI + suffix
    with_noami = [(r, n) for r, n in _paired(runs, routed, noami) if _cpu_ok(r, n)]
    routed_ok = [r for r in sorted(runs, key=lambda r: r["rep"])
                 if r["variant"] == routed and r["cpu_step_passed"]]
    split = {
        "routing": spread([n["bridge_main_cpu_ms_per_call"] for _, n in with_noami]),
        "ami": spread([round(r["bridge_main_cpu_ms_per_call"]
                             - n["bridge_main_cpu_ms_per_call"], 3) for r, n in with_noami]),
        "vts": spread([r["vts_cpu_ms_per_call"] for r in routed_ok]),
        "total": spread([r["bridge_cpu_ms_per_call"] for r in routed_ok]),
    }
    static_pairs = _paired(runs, STATIC, routed)
    return {
        "bridge_cpu_ms_per_call_split": split,
        # null, not a partial spread, when the code has no counter (NO_COUNTER_NOTE)
        **{key: _counted([r[key] for r in routed_ok])
           for key in ("ami_events_per_call", "ami_bytes_per_call")},
        "asterisk_cpu_ratio": spread([
            round(s["asterisk_cpu_ms_per_call"] / r["asterisk_cpu_ms_per_call"], 3)
            for s, r in static_pairs if _cpu_ok(s, r) and r["asterisk_cpu_ms_per_call"]]),
        "knee_over_static": spread([round(r["knee_cps"] / s["knee_cps"], 3)
                                    for s, r in static_pairs if s["knee_cps"]]),
        "knee_over_static_noami": spread([round(n["knee_cps"] / s["knee_cps"], 3)
                                          for s, n in _paired(runs, STATIC, noami)
                                          if s["knee_cps"]]),
    }


def summarise(runs: list[dict[str, Any]], variants: tuple[str, ...], *, reps: int,
              step_s: float, cpu_rate: int, rates: list[int],
              baseline_commit: str | None = None) -> dict[str, Any]:
    per: dict[str, Any] = {}
    for v in variants:
        mine = sorted((r for r in runs if r["variant"] == v), key=lambda r: r["rep"])
        ok = [r for r in mine if r["cpu_step_passed"]]
        per[v] = {"knee_cps": spread([r["knee_cps"] for r in mine]),
                  "knee_is_ceiling": [r["knee_is_ceiling"] for r in mine],
                  # a CPU step that failed gives no CPU figure (the records keep it)
                  "cpu_step_passed": [r["cpu_step_passed"] for r in mine],
                  "positions": [r["position"] for r in mine],
                  **{k: spread([r[k] for r in ok if r[k] is not None])
                     for k in ("asterisk_cpu_ms_per_call", "bridge_cpu_ms_per_call",
                               "bridge_main_cpu_ms_per_call", "vts_cpu_ms_per_call",
                               "ami_events_per_call", "ami_bytes_per_call")}}
    sides = {side: side_figures(runs, suffix) for side, suffix in SIDES.items()
             if ROUTED + suffix in variants}
    out: dict[str, Any] = {
        "bench": "bridge-cost", "kind": "summary", "variants": list(variants), "reps": reps,
        "step_s": step_s, "cpu_rate_cps": cpu_rate,
        "grid": [rates[0], rates[-1], rates[1] - rates[0] if len(rates) > 1 else 0],
        "static_knee_is_ceiling": any(per.get(STATIC, {}).get("knee_is_ceiling", [])),
        "baseline_commit": baseline_commit, "targets": TARGETS,
    }
    for key in ("bridge_cpu_ms_per_call_split", "ami_events_per_call", "ami_bytes_per_call",
                "asterisk_cpu_ratio", "knee_over_static", "knee_over_static_noami"):
        out[key] = {side: figs[key] for side, figs in sides.items()}
    if any(figs["ami_events_per_call"] is None for figs in sides.values()):
        out["ami_events_note"] = NO_COUNTER_NOTE
    out["per_variant"] = per
    return out


def run(*, workdir: Path, baseline: Path | None = None,
        variants: tuple[str, ...] | None = None, reps: int = REPS, step_s: float = STEP_S,
        cpu_rate: int = CPU_RATE, lo: int = LO, hi: int = HI, res: int = RES,
        sink: Any = None) -> list[dict[str, Any]]:
    from harness.asterisk import sandbox_ready

    if not sandbox_ready():
        print("bridge-cost: sandbox not provisioned (scripts/provision-sandbox); skipped",
              file=sys.stderr)
        return []
    known = VARIANTS + (BASELINE_VARIANTS if baseline else ())
    variants = variants or known
    unknown = set(variants) - set(known)
    if unknown:
        raise ValueError(f"bridge-cost: unknown variant(s) {sorted(unknown)}; choose from "
                         f"{known}" + ("" if baseline else " (…@baseline needs --baseline)"))
    if reps < REPS:
        print(f"bridge-cost: {reps} repetition(s): below the fair protocol's {REPS}, "
              "medians are not comparable", file=sys.stderr)
    workdir.mkdir(parents=True, exist_ok=True)
    rates = grid(lo, hi, res)
    bar = Progress(reps * len(variants) * estimated_probes(rates, cpu_rate), "bridge-cost")
    bar.log("bridge-cost: waiting for the sandbox Asterisk lock (other test runs may hold it)")
    state = _Run(workdir=workdir, baseline=baseline, step_s=step_s, cpu_rate=cpu_rate,
                 rates=rates, sink=sink, bar=bar)
    runs: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        for rep in range(reps):
            for position, variant in enumerate(rotated(variants, rep)):
                runs.append(state.variant(variant, rep, position))
    finally:
        state.boots.stop()
    summary = summarise(runs, variants, reps=reps, step_s=step_s, cpu_rate=cpu_rate,
                        rates=rates,
                        baseline_commit=checkout_commit(baseline) if baseline else None)
    summary["after_commit"] = checkout_commit(REPO)
    summary["wall_s"] = round(time.monotonic() - started, 1)
    summary["lock_wait_s"] = state.boots.lock_wait_s
    emit(summary, sink=sink)
    plot(summary)
    return [*state.records, summary]


def plot(summary: dict[str, Any]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = summary["per_variant"]
    names = list(per)
    panels = (("knee_cps", "knee (calls/s, 0 failed)"),
              ("asterisk_cpu_ms_per_call", "Asterisk CPU ms/call"),
              ("bridge_main_cpu_ms_per_call", "bridge main CPU ms/call"),
              ("vts_cpu_ms_per_call", "VTS CPU ms/call"),
              ("ami_events_per_call", "AMI events/call (bridge counter)"))
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    flat = list(axes.flat)
    for ax, (key, title) in zip(flat, panels, strict=False):
        _bars(ax, names, [per[n][key] for n in names])
        ax.set_title(f"{title} at {summary['cpu_rate_cps']}/s" if "call" in key else title)
    ax = flat[5]
    split = summary["bridge_cpu_ms_per_call_split"]
    parts = ("routing", "ami", "vts", "total")
    labels = [f"{part}\n{side}" for side in split for part in parts]
    _bars(ax, labels, [split[side][part] for side in split for part in parts])
    ax.axhline(TARGETS["bridge_total_ms_per_call"], color="r", linestyle=":", linewidth=1)
    ax.set_title("bridge + VTS ms/call split (target total 0.5)")
    fig.suptitle(f"bridge-cost: {summary['reps']} reps, a fresh Asterisk per variant, "
                 "rotated order; bars = medians, whiskers = min..max; orange = baseline")
    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / "bridge_cost.png", dpi=110)
    plt.close(fig)


def _bars(ax: Any, labels: list[str], spreads: list[dict[str, Any]]) -> None:
    """Bars at the medians with min..max whiskers (a missing figure: no bar)."""
    xs = range(len(labels))
    meds = [s["median"] if s and s["median"] is not None else 0.0 for s in spreads]
    lo = [m - s["min"] if s and s["median"] is not None else 0.0
          for m, s in zip(meds, spreads, strict=True)]
    hi = [s["max"] - m if s and s["median"] is not None else 0.0
          for m, s in zip(meds, spreads, strict=True)]
    colors = ["tab:orange" if "baseline" in label else "tab:blue" for label in labels]
    ax.bar(xs, meds, yerr=[lo, hi], capsize=4, color=colors, alpha=0.7)
    for x, s in zip(xs, spreads, strict=True):
        if not s or s["median"] is None:
            ax.text(x, 0, "null", ha="center", va="bottom", fontsize=7, color="grey")
    ax.set_xticks(list(xs), labels, fontsize=7, rotation=20)
