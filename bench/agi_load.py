"""agi-load: the bridge's routing path against the alternatives, same session, same load.

Servers under test, all started at once on their own ports (4690+, never the tests'
4573) and measured in interleaved order (A B C ... then B C ... A, per repetition):
  bridge          `python -m ami_bridge run` with a generated config: 2 venues, 2 VTS
                  processes (the shipped `ami_bridge.tenants.worker`), a 7-rule routing protocol
  bridge-uvloop   the same unchanged code started on uvloop (bench/servers/*_uvloop.py)
  panoramisk      panoramisk's FastAGI `Application` with a no-op handler (one SET VARIABLE)
  minimal         a hand-written asyncio.Protocol FastAGI server (bench/servers/minimal_agi)
  minimal-uvloop  the same on uvloop
  bridge@baseline `bridge` with the code of the `--baseline PATH` checkout (common.baseline_env)
The load generator (bench/loadgen.py) runs as its own process per point. Figures:
  cpu_us_per_route  the server's own CPU (utime+stime of the server process and, for the
                    bridge, all its VTS children) divided by completed sessions
  p50/p90/p99/max   connect -> server's close, at a fixed offered rate (open loop)
  routes_per_s      saturation throughput (closed loop, `concurrency` in flight)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    BENCH_PORT_BASE,
    RESULTS,
    BridgeServer,
    Progress,
    Server,
    baseline_env,
    emit,
    is_baseline,
    median,
    tree,
    tree_cpu,
)
from bench.configs import venue_name, write_bridge_config

PY = sys.executable
AGI_VENUES = 2  # the bridge under test: 2 tenants, each with its venue and its own VTS
BASELINE_PORT = BENCH_PORT_BASE + 9  # bridge@baseline (bridge-cost has +7 and +8)


@dataclass
class Target:
    name: str
    server: Server
    venues: list[str] = field(default_factory=lambda: ["t0-venue"])


def make_targets(workdir: Path, names: list[str],
                 baseline: Path | None = None) -> list[Target]:
    out: list[Target] = []
    venues = [venue_name(i) for i in range(AGI_VENUES)]
    for k, name in enumerate(["bridge", "bridge-uvloop", "panoramisk", "minimal",
                              "minimal-uvloop", "bridge@baseline"]):
        if name not in names:
            continue
        port = BASELINE_PORT if is_baseline(name) else BENCH_PORT_BASE + k
        log = workdir / f"{name}.log"
        if name.startswith("bridge"):
            uv = name == "bridge-uvloop"
            cfg = workdir / f"{name.replace('@', '-')}.toml"
            write_bridge_config(cfg, port=port, venues=AGI_VENUES, vts_per=1,
                                vts_prefix=f"bench{k}v", uvloop_workers=uv)
            # -O: the product asserts isinstance(transport, asyncio.Transport), which uvloop
            # transports are not (see README: finding); -O drops asserts, nothing else.
            argv = [PY, "-O", "-m", "bench.servers.bridge_uvloop", "run"] if uv else None
            if is_baseline(name) and baseline is None:
                raise ValueError(f"agi-load target {name} needs --baseline PATH")
            env = baseline_env(baseline) if is_baseline(name) and baseline else None
            out.append(Target(name, BridgeServer(name, cfg, port, log, argv=argv, env=env),
                              venues))
        elif name == "panoramisk":
            out.append(Target(name, Server(name, [PY, "-m", "bench.servers.panoramisk_agi",
                                                  "--port", str(port)], port, log), venues))
        else:
            argv = [PY, "-m", "bench.servers.minimal_agi", "--port", str(port)]
            if name.endswith("uvloop"):
                argv.append("--uvloop")
            out.append(Target(name, Server(name, argv, port, log), venues))
    return out


def measure(target: Target, *, mode: str, rate: float, duration: float,
            concurrency: int, split_env: bool = False,
            extra: list[str] | None = None) -> dict[str, Any]:
    """One load point: run the generator, read the server tree's CPU around it.
    `extra`: more loadgen arguments (bench/personal_load.py: `--numbers`)."""
    pids = tree(target.server.pid)
    before = tree_cpu(pids)
    w0 = time.monotonic()
    argv = [PY, "-m", "bench.loadgen", "--port", str(target.server.port), "--mode", mode,
            "--rate", str(rate), "--duration", str(duration), "--concurrency",
            str(concurrency), "--venues", ",".join(target.venues)]
    if split_env:
        argv.append("--split-env")
    argv += extra or []
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60,
                         check=False)
    wall = time.monotonic() - w0
    after = tree_cpu(pids)
    if out.returncode != 0:
        raise RuntimeError(f"loadgen failed: {out.stderr[-2000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    cpu = sum(after[p] - before[p] for p in pids)
    main_cpu = after[pids[0]] - before[pids[0]]
    done = max(res["completed"], 1)
    res.update({
        "target": target.name, "server_processes": len(pids),
        "server_cpu_s": round(cpu, 3),
        "cpu_us_per_route": round(cpu / done * 1e6, 1),
        "cpu_us_per_route_main": round(main_cpu / done * 1e6, 1),
        "cpu_us_per_route_vts": round((cpu - main_cpu) / done * 1e6, 1),
        "server_cpu_pct": round(100 * cpu / wall, 1),
    })
    return res


def run(*, targets: list[str], rates: list[float], main_rate: float, reps: int,
        duration: float, concurrency: int, sat_duration: float, workdir: Path,
        profile: bool = False, sink: Any = None,
        baseline: Path | None = None) -> list[dict[str, Any]]:
    tlist = make_targets(workdir, targets, baseline)
    points = reps * len(tlist) * (len(rates) + 1)
    bar = Progress(points + len(tlist), "agi-load")
    records: list[dict[str, Any]] = []
    try:
        for t in tlist:
            t.server.start()
            measure(t, mode="open", rate=500, duration=1.0, concurrency=concurrency)  # warm
            bar.step(f"started {t.name}")
        for rep in range(reps):
            order = tlist[rep % len(tlist):] + tlist[:rep % len(tlist)]
            for rate in rates:
                for t in order:
                    r = measure(t, mode="open", rate=rate, duration=duration,
                                concurrency=concurrency)
                    rec = {"bench": "agi-load", "kind": "point", "rep": rep, **r}
                    records.append(rec)
                    emit(rec, sink=sink)
                    bar.step(f"{t.name} {rate:g}/s p99 {r['p99_ms']} ms "
                             f"{r['cpu_us_per_route']} us")
            for t in order:
                if t.name in ("bridge", "panoramisk", "minimal"):
                    r = measure(t, mode="open", rate=main_rate, duration=duration,
                                concurrency=concurrency, split_env=True)
                    rec = {"bench": "agi-load", "kind": "split-env", "rep": rep, **r}
                    records.append(rec)
                    emit(rec, sink=sink)
                    bar.log(f"{t.name} env line by line: {r['cpu_us_per_route']} us, "
                            f"p99 {r['p99_ms']} ms")
            for t in order:
                r = measure(t, mode="closed", rate=0, duration=sat_duration,
                            concurrency=concurrency)
                rec = {"bench": "agi-load", "kind": "saturation", "rep": rep, **r}
                records.append(rec)
                emit(rec, sink=sink)
                bar.step(f"{t.name} saturation {r['routes_per_s']}/s")
        if profile:
            for t in tlist:
                if t.name == "bridge":
                    profile_bridge(t, main_rate, duration * 2, concurrency, bar)
        for t in tlist:
            problems = t.server.log_text().count(" ERROR ") + t.server.log_text().count(
                " WARNING ")
            if problems:
                bar.log(f"{t.name}: {problems} warning/error lines in {t.server.log_path}")
    finally:
        for t in tlist:
            t.server.stop()
    summaries = summarize(records, main_rate, concurrency)
    for s in summaries:
        emit(s, sink=sink)
    plot(records, summaries, main_rate)
    return records + summaries


def summarize(records: list[dict[str, Any]], main_rate: float,
              concurrency: int) -> list[dict[str, Any]]:
    out = []
    names = list(dict.fromkeys(r["target"] for r in records))
    for name in names:
        at = [r for r in records if r["target"] == name and r["kind"] == "point"
              and r["offered_rate"] == main_rate]
        sat = [r for r in records if r["target"] == name and r["kind"] == "saturation"]
        s: dict[str, Any] = {
            "bench": "agi-load", "kind": "summary", "target": name,
            "offered_rate": main_rate, "concurrency": concurrency, "reps": len(at),
        }
        for key in ("cpu_us_per_route", "cpu_us_per_route_main", "cpu_us_per_route_vts",
                    "p50_ms", "p90_ms", "p99_ms", "max_ms", "loadgen_cpu_pct"):
            vals = [r[key] for r in at if r.get(key) is not None]
            s[key] = round(median(vals), 3) if vals else None
        s["p99_ms_each"] = [r["p99_ms"] for r in at]
        s["cpu_us_per_route_each"] = [r["cpu_us_per_route"] for r in at]
        split = [r for r in records if r["target"] == name and r["kind"] == "split-env"]
        if split:
            s["split_env_cpu_us_per_route"] = round(median(r["cpu_us_per_route"]
                                                           for r in split), 1)
            s["split_env_p99_ms"] = round(median(r["p99_ms"] for r in split), 3)
        s["routes_per_s"] = round(median(r["routes_per_s"] for r in sat), 1) if sat else None
        s["saturation_cpu_us_per_route"] = (
            round(median(r["cpu_us_per_route"] for r in sat), 1) if sat else None)
        s["saturation_server_cpu_pct"] = (
            round(median(r["server_cpu_pct"] for r in sat), 1) if sat else None)
        s["saturation_loadgen_cpu_pct"] = (
            round(median(r["loadgen_cpu_pct"] for r in sat), 1) if sat else None)
        routed = sum(r["actions"].get("route", 0) for r in at)
        total = sum(r["completed"] for r in at)
        s["routed_fraction"] = round(routed / total, 4) if total else None
        s["errors"] = sum(sum(r["errors"].values()) for r in at + sat)
        out.append(s)
    pano = next((s for s in out if s["target"] == "panoramisk"), None)
    for s in out:
        if pano and pano["cpu_us_per_route"] and s["cpu_us_per_route"]:
            s["panoramisk_over_this_cpu"] = round(pano["cpu_us_per_route"] /
                                                  s["cpu_us_per_route"], 2)
        if s["target"].startswith("bridge"):
            s["target_cpu_le_100us"] = (s["cpu_us_per_route"] or 1e9) <= 100
            s["target_3x_panoramisk"] = (s.get("panoramisk_over_this_cpu") or 0) >= 3
            s["target_p99_le_2ms"] = (s["p99_ms"] or 1e9) <= 2.0
    return out


def plot(records: list[dict[str, Any]], summaries: list[dict[str, Any]],
         main_rate: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    for s in summaries:
        name = s["target"]
        pts = [r for r in records if r["target"] == name and r["kind"] == "point"]
        rates = sorted({r["offered_rate"] for r in pts})
        p50 = [median(r["p50_ms"] for r in pts if r["offered_rate"] == x) for x in rates]
        p99 = [median(r["p99_ms"] for r in pts if r["offered_rate"] == x) for x in rates]
        line, = ax1.plot(rates, p99, "o-", label=f"{name} p99")
        ax1.plot(rates, p50, "x--", color=line.get_color(), label=f"{name} p50")
    ax1.axhline(2.0, color="red", lw=0.8, ls=":", label="target p99 2 ms")
    ax1.set_xlabel("offered routes/s (open loop, <=200 in flight)")
    ax1.set_ylabel("latency connect -> server close (ms)")
    ax1.set_yscale("log")
    ax1.set_title("agi-load: latency against load (medians of reps)")
    ax1.legend(fontsize=7)
    names = [s["target"] for s in summaries]
    main = [s["cpu_us_per_route_main"] or 0 for s in summaries]
    vts = [s["cpu_us_per_route_vts"] or 0 for s in summaries]
    ax2.bar(names, main, label="server process")
    ax2.bar(names, vts, bottom=main, label="VTS processes")
    ax2.axhline(100, color="red", lw=0.8, ls=":", label="target 100 us")
    for i, s in enumerate(summaries):
        ax2.text(i, (main[i] + vts[i]) * 1.02, f"{main[i] + vts[i]:.0f} us\n"
                 f"sat {s['routes_per_s']:.0f}/s", ha="center", fontsize=8)
    ax2.set_ylabel(f"server CPU per route (us) at {main_rate:g}/s")
    ax2.set_title("agi-load: kernel-accounted CPU per routed call")
    ax2.legend(fontsize=8)
    plt.setp(ax2.get_xticklabels(), rotation=15)
    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / "agi_load.png", dpi=110)
    plt.close(fig)


def profile_bridge(t: Target, rate: float, duration: float, concurrency: int,
                   bar: Progress) -> None:
    """py-spy the bridge and one VTS under load; keep the top frames as text."""
    import shutil
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    pids = tree(t.server.pid)
    procs = []
    for i, pid in enumerate(pids[:2]):
        outp = RESULTS / f"agi_load_profile_{'bridge' if i == 0 else 'vts'}.txt"
        procs.append((outp, subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--duration", str(int(duration) + 1),
             "--rate", "500", "--format", "raw", "--nonblocking", "-o", str(outp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    time.sleep(1.0)
    measure(t, mode="open", rate=rate, duration=duration, concurrency=concurrency)
    for outp, p in procs:
        p.wait(60)
        if outp.exists():
            (outp.with_suffix(".top.txt")).write_text(top_frames(outp.read_text()))
    bar.log("profiles: " + ", ".join(str(o) for o, _ in procs))


def top_frames(collapsed: str, n: int = 25) -> str:
    """Self and inclusive sample shares by function from py-spy's collapsed stacks."""
    self_c: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        c = int(count)
        frames = stack.split(";")
        total += c
        leaf = frames[-1]
        self_c[leaf] = self_c.get(leaf, 0) + c
        for f in set(frames):
            incl[f] = incl.get(f, 0) + c
    lines = [f"{total} samples", "", "-- self --"]
    for f, c in sorted(self_c.items(), key=lambda x: -x[1])[:n]:
        lines.append(f"{100 * c / max(total, 1):5.1f}%  {f}")
    lines += ["", "-- inclusive --"]
    for f, c in sorted(incl.items(), key=lambda x: -x[1])[:n * 2]:
        lines.append(f"{100 * c / max(total, 1):5.1f}%  {f}")
    return "\n".join(lines) + "\n"
