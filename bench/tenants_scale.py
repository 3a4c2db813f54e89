"""tenants-scale: memory and routing p99 of the bridge with 10 ... 1,000 venues.

For each size, one tenant per venue with the 7-rule protocol of bench/configs.py, and
two mappings of venues to VTS processes, measured one after the other at each size:
  vts_per = 1   the design as it stands: one `[vts.X]`, so one OS process, per tenant
  vts_per = 50  one VTS process serving 50 tenants (several venues -> one vts), which
                the config already allows
and, with vts_per = 1, both ways of starting a VTS (`[bridge] vts_spawn`):
  fork          each VTS forked from the fork server, sharing its imported runtime
  exec          each VTS its own interpreter (bwrap + setpriv + python)
(vts_per > 1 runs with fork only: a handful of processes either way). Quick mode: 10
and 1000 venues with fork, 100 with exec (an exec'd 1000 takes ~2 min and ~13 GB).
Figures: total PSS (/proc/PID/smaps_rollup) of the bridge and all its VTS processes,
the bridge's own PSS and thread count, the time until every VTS said hello (and the
time to stop), what one VTS process dirties (median over the VTS of smaps_rollup's
Private_Dirty, Pss, Shared_Clean: the PSS breakdown), and the
routing latency (bench/loadgen.py, open loop, venues chosen round robin over all of
them) at 500 routes/s with up to 200 in flight (1000/s is the bridge's saturation
here, where p99 measures the queue, not the size). A size whose projected memory exceeds
65 % of MemAvailable is skipped and reported as such.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ami_bridge import control
from bench.common import (
    BENCH_PORT_BASE,
    RESULTS,
    BridgeServer,
    Progress,
    emit,
    pss_kib,
    threads,
    tree,
    tree_cpu,
)
from bench.configs import write_bridge_config

PORT = BENCH_PORT_BASE + 10
SPAWNS = ("fork", "exec")
QUICK_POINTS = ((10, 1, "fork"), (1000, 1, "fork"), (100, 1, "exec"))
ROLLUP_KEYS = ("Rss", "Pss", "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty")


def mem_available_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 0


def points(sizes: list[int], vts_per: list[int], spawns: tuple[str, ...] = SPAWNS,
           quick: bool = False) -> list[tuple[int, int, str]]:
    """(venues, vts_per, vts_spawn) in the order they run."""
    if quick:
        return list(QUICK_POINTS)
    return [(size, per, spawn) for size in sizes for per in vts_per
            for spawn in (spawns if per == 1 else ("fork",))]


def run(*, sizes: list[int], vts_per: list[int], workdir: Path, quick: bool = False,
        rate: float = 500, duration: float | None = None, spawns: tuple[str, ...] = SPAWNS,
        sink: Any = None) -> list[dict[str, Any]]:
    duration = duration or (3.0 if quick else 5.0)
    plan = points(sizes, vts_per, spawns, quick)
    bar = Progress(len(plan), "tenants-scale")
    records: list[dict[str, Any]] = []
    per_vts_kib: dict[tuple[int, str], float] = {}
    for size, per, spawn in plan:
        n_vts_expected = (size + per - 1) // per
        est = per_vts_kib.get((per, spawn), 0) * n_vts_expected
        if est > mem_available_kib() * 0.65:
            rec = {"bench": "tenants-scale", "venues": size, "vts_per": per,
                   "vts_spawn": spawn, "vts_processes": n_vts_expected, "skipped":
                   f"projected {est / 1024**2:.1f} GiB > 65 % of MemAvailable"}
            records.append(rec)
            emit(rec, sink=sink)
            bar.step("skipped")
            continue
        rec = measure_size(size, per, workdir, rate, duration, spawn=spawn)
        if rec.get("vts_processes") and "total_pss_mb" in rec:
            per_vts_kib[(per, spawn)] = rec["total_pss_mb"] * 1024 / rec["vts_processes"]
        records.append(rec)
        emit(rec, sink=sink)
        bar.step(f"{size} venues / {rec.get('vts_processes')} VTS ({spawn}): "
                 f"{rec.get('total_pss_mb')} MB, start {rec.get('start_s')} s, "
                 f"p99 {rec.get('p99_ms')} ms")
    plot(records)
    return records


def rollup(pid: int) -> dict[str, int]:
    """smaps_rollup's kB figures of one process (empty if it is gone)."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            key, _, rest = line.partition(":")
            if key in ROLLUP_KEYS:
                out[key] = int(rest.split()[0])
    except OSError:
        pass
    return out


def _median(values: list[int]) -> float:
    ordered = sorted(values)
    return float(ordered[len(ordered) // 2]) if ordered else 0.0


def _with_spawn(cfg: Path, spawn: str) -> None:
    """bench/configs.py writes the [bridge] table; the spawn mode goes in right below it."""
    text = cfg.read_text()
    cfg.write_text(text.replace("[bridge]\n", f'[bridge]\nvts_spawn = "{spawn}"\n', 1))


def measure_size(size: int, per: int, workdir: Path, rate: float,
                 duration: float, *, spawn: str = "fork") -> dict[str, Any]:
    cfg = workdir / f"bridge-{size}-{per}-{spawn}.toml"
    n_vts = write_bridge_config(cfg, port=PORT, venues=size, vts_per=per,
                                vts_prefix=f"bsc{per}x")
    _with_spawn(cfg, spawn)
    server = BridgeServer(f"scale-{size}-{per}-{spawn}", cfg, PORT,
                          workdir / f"bridge-{size}-{per}-{spawn}.log")
    rec: dict[str, Any] = {"bench": "tenants-scale", "venues": size, "vts_per": per,
                           "vts_spawn": spawn}
    try:
        server.start(timeout_s=60 + 0.5 * n_vts)
        time.sleep(2.0)  # let start-up garbage settle before reading memory
        pids = tree(server.pid)
        status = control.request(str(cfg.with_suffix(".sock")), "status")["status"]
        vts = [v["pid"] for v in status["vts"].values() if v.get("pid")]
        total = sum(pss_kib(p) for p in pids)
        bridge_pss = pss_kib(server.pid)
        # What one VTS costs: medians over all of them (forked ones share the runtime).
        # An exec'd VTS's pid is its bwrap's; the interpreter is the last of its tree.
        rollups = [rollup(tree(p)[-1]) for p in vts]
        rec["vts_rollup_kb_median"] = {
            key: _median([r[key] for r in rollups if key in r]) for key in ROLLUP_KEYS}
        # bwrap's two processes per exec'd VTS, or the fork server and its bwrap pair
        rec["helper_processes"] = len(pids) - 1 - len(vts)
        def load_argv(seconds: float) -> list[str]:
            return [sys.executable, "-m", "bench.loadgen", "--port", str(PORT), "--mode",
                    "open", "--rate", str(rate), "--duration", str(seconds), "--concurrency",
                    "200", "--venue-format", "t{i}-venue", "--venue-count", str(size)]
        # A warm-up pass that routes into every venue at least once (the venues are taken
        # round robin) before the measured window: a VTS's first routes take its one-off
        # costs (a forked child's copy-on-write faults on the shared runtime, ~110 kB per
        # VTS; an exec'd one's cold caches), which 10 VTS pay in the first milliseconds and
        # 1,000 would pay all through a window of a few seconds. Steady state is the figure.
        warm_s = max(1.0, 1.2 * size / rate)
        subprocess.run(load_argv(warm_s), capture_output=True, text=True,
                       timeout=warm_s + 60, check=True)
        rec["warmup_s"] = round(warm_s, 1)
        c0 = tree_cpu(pids)
        out = subprocess.run(load_argv(duration), capture_output=True, text=True,
                             timeout=duration + 60, check=True)
        c1 = tree_cpu(pids)
        load = json.loads(out.stdout.strip().splitlines()[-1])
        done = max(load["completed"], 1)
        rec.update({
            "vts_processes": len(vts), "start_s": round(server.ready_s, 1),
            "total_pss_mb": round(total / 1024, 1),
            "bridge_pss_mb": round(bridge_pss / 1024, 1),
            # (total - bridge) / VTS: the helpers (bwrap, the fork server) included
            "vts_pss_mb_mean": round((total - bridge_pss) / 1024 / max(len(vts), 1), 2),
            "bridge_threads": threads(server.pid),
            "offered_rate": rate, "concurrency": 200,
            "p50_ms": load["p50_ms"], "p90_ms": load["p90_ms"], "p99_ms": load["p99_ms"],
            "max_ms": load["max_ms"], "routes_per_s": load["routes_per_s"],
            "completed": load["completed"], "errors": load["errors"],
            "actions": load["actions"],
            "cpu_us_per_route": round(sum(c1[p] - c0[p] for p in pids) / done * 1e6, 1),
            "total_pss_after_load_mb": round(sum(pss_kib(p) for p in pids) / 1024, 1),
        })
    except Exception as exc:  # one size failing must not lose the others' figures
        rec["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    finally:
        t0 = time.monotonic()
        server.stop(grace_s=30.0 + 0.05 * n_vts)
        rec["stop_s"] = round(time.monotonic() - t0, 1)
    return rec


def plot(records: list[dict[str, Any]]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for per, spawn in sorted({(r["vts_per"], r.get("vts_spawn", "exec")) for r in records}):
        pts = [r for r in records if r["vts_per"] == per
               and r.get("vts_spawn", "exec") == spawn and "total_pss_mb" in r]
        label = ("1 VTS per tenant" if per == 1 else f"1 VTS per {per} tenants") + f", {spawn}"
        ax1.plot([r["venues"] for r in pts], [r["total_pss_mb"] for r in pts], "o-",
                 label=label)
        ax2.plot([r["venues"] for r in pts], [r["p99_ms"] for r in pts], "o-", label=label)
    ax1.axhline(4096, color="red", lw=0.8, ls=":", label="target 4 GB")
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_xlabel("venues (one tenant each)")
        ax.legend(fontsize=8)
    ax1.set_yscale("log")
    ax1.set_ylabel("total PSS of bridge + VTS (MB)")
    ax1.set_title("tenants-scale: memory")
    ax2.set_ylabel("routing p99 (ms) at 500 routes/s")
    ax2.set_title("tenants-scale: latency")
    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / "tenants_scale.png", dpi=110)
    plt.close(fig)
