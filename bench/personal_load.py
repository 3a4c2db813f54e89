"""personal: what a user's own rules cost per routed call, and how soon a change is seen.

One bridge (its one VTS, the shipped runtime) serves tenant `pb` of bench/personal_data.py:
the tenant venue with the seven-rule protocol of the agi-load benchmark and the personal
venue with N users (10,000) in its store, filled through the store API and loaded into the
directory at start. Points (open loop, `rate`/s, at most 200 in flight, interleaved and
rotated per repetition, medians):
  tenant    route requests into `pb-venue` (the agi-load setup)
  personal  route requests into `pb-personal`, each to a random user's number
            (agi_extension = agi_dnid = the number); the bridge adds the user's portion,
            the VTS evaluates it (bench/loadgen.py --numbers). Before the points every
            user is called once (--sweep), as on a bridge that has run a while
on two bridges side by side: `bridge` (the product) and `bridge-nocache` (the same with
the VTS validating the portion on every call, bench/servers/worker_nocache.py: the
runtime before its portion cache). Then, on `bridge`, the rule-change client
(bench/personal_change.py) runs next to the personal load at `rate`/s.
Figures: cpu_us_per_route (main + VTS, /proc), p50/p99, routed and decided fractions
and AB_KIND counts, the ratio personal / tenant per bridge (target: <= 1.10), the
directory's load time (in-process, as the daemon loads it) and the bridge's time to
ready, RSS of the bridge and its VTS with N users against the same config on an empty
store, and the visibility of a change (target: p99 <= 50 ms, no stale answer after 200).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.agi_load import Target, measure
from bench.common import BridgeServer, Progress, emit, median, rss_kib, tree
from bench.personal_data import (
    NUMBER_BASE,
    PERSONAL,
    VENUE,
    directory_load_s,
    filled_store,
    write_config,
)

PY = sys.executable
PORT_BASE = 4710  # AGI on PORT_BASE + 2k, API on PORT_BASE + 2k + 1 (agi-load: 4690-4694)
TARGETS = ("bridge", "bridge-nocache")
KINDS = ("tenant", "personal")
SWEEP_RATE = 2000.0  # calls/s of the warm-up that calls every user once
TARGET_RATIO = 1.10  # the issue: personal rules add at most 10 % CPU per routed call
TARGET_VISIBLE_MS = 50.0  # the issue: a change is visible to the next call within 50 ms p99


def _bridge(name: str, k: int, workdir: Path, users: int,
            store: Path) -> tuple[Target, Path]:
    port = PORT_BASE + 2 * k
    cfg = workdir / f"{name}.toml"
    vts = f"pb{k}v"
    command = None
    if name == "bridge-nocache":
        command = [PY, "-m", "bench.servers.worker_nocache", "--vts", vts]
    write_config(cfg, agi_port=port, api_port=port + 1, store=store, users=users, vts=vts,
                 vts_command=command)
    return Target(name, BridgeServer(name, cfg, port, workdir / f"{name}.log")), cfg


def _rss(pid: int) -> dict[str, int]:
    pids = tree(pid)
    return {"main_kib": rss_kib(pids[0]), "vts_kib": sum(rss_kib(p) for p in pids[1:])}


def _point(t: Target, kind: str, rate: float, duration: float, users: int) -> dict[str, Any]:
    if kind == "tenant":
        t.venues = [VENUE]
        return measure(t, mode="open", rate=rate, duration=duration, concurrency=200)
    t.venues = [PERSONAL]
    return measure(t, mode="open", rate=rate, duration=duration, concurrency=200,
                   extra=["--numbers", f"{NUMBER_BASE}:{users}"])


def run(*, users: int, reps: int, duration: float, rate: float, changes: int,
        change_s: float, workdir: Path, profile: bool = False,
        sink: Any = None) -> list[dict[str, Any]]:
    workdir.mkdir(parents=True, exist_ok=True)
    bar = Progress(3 + len(TARGETS) + reps * len(TARGETS) * len(KINDS) + 1, "personal")
    store, fill_s = filled_store(users, workdir / "bridge.sqlite3")
    how = f"filled in {fill_s:.0f} s" if fill_s is not None else "cached"
    bar.step(f"store with {users} users ({how})")
    loads = [directory_load_s(store) for _ in range(3)]
    setup: dict[str, Any] = {
        "bench": "personal", "kind": "setup", "users": loads[0][0], "store_fill_s": fill_s,
        "directory_load_s": round(median(s for _, s in loads), 3),
        "directory_load_s_each": [round(s, 3) for _, s in loads]}
    bar.step(f"directory load {setup['directory_load_s']} s")
    # The same config on an empty store: what the users themselves cost in memory.
    empty, _ = _bridge("bridge-empty", 2 * len(TARGETS), workdir, users,
                       workdir / "empty.sqlite3")
    empty.server.start(120)
    try:
        _point(empty, "tenant", rate / 2, 1.0, users)
        setup["empty_ready_s"] = round(empty.server.ready_s, 3)  # type: ignore[attr-defined]
        setup["empty_rss"] = _rss(empty.server.pid)
    finally:
        empty.server.stop()
    bar.step(f"empty store: ready {setup['empty_ready_s']} s, rss {setup['empty_rss']}")
    records: list[dict[str, Any]] = []
    tlist: list[Target] = []
    configs: dict[str, Path] = {}
    try:
        for k, name in enumerate(TARGETS):
            own = workdir / f"{name}.sqlite3"
            if own != store:
                own.write_bytes(store.read_bytes())
            t, configs[name] = _bridge(name, k, workdir, users, own)
            t.server.start(120)
            tlist.append(t)
            setup[f"{name}_ready_s"] = round(t.server.ready_s, 3)  # type: ignore[attr-defined]
            setup[f"{name}_rss_start"] = _rss(t.server.pid)
            for kind in KINDS:  # warm up: imports, caches, the first connections
                _point(t, kind, rate / 2, 1.0, users)
            # Every user called once: the steady state of a bridge that has run a while
            # (1,000 calls/s over 10,000 users is one call per user per 10 s), where the
            # VTS has seen each user's current portion before. Without it most calls of a
            # short run would be a user's first, which no cache can help.
            t.venues = [PERSONAL]
            measure(t, mode="open", rate=SWEEP_RATE, duration=users / SWEEP_RATE,
                    concurrency=200, extra=["--numbers", f"{NUMBER_BASE}:{users}", "--sweep"])
            bar.step(f"started {name} in {setup[f'{name}_ready_s']} s")
        emit(setup, sink=sink)
        points = [(t, kind) for t in tlist for kind in KINDS]
        for rep in range(reps):
            order = points[rep % len(points):] + points[:rep % len(points)]
            for t, kind in order:
                r = _point(t, kind, rate, duration, users)
                rec = {"bench": "personal", "kind": "point", "venue_kind": kind, "rep": rep,
                       "users": users, **r}
                records.append(rec)
                emit(rec, sink=sink)
                bar.step(f"{t.name} {kind} {r['cpu_us_per_route']} us p99 {r['p99_ms']} ms")
        if profile:
            for t in tlist:
                _profile_vts(t, rate, duration * 2, users, bar)
        change = _changes(tlist[0], configs[tlist[0].name], rate, users, changes, change_s)
        records.append(change)
        emit(change, sink=sink)
        bar.step(f"rule changes: visible p99 {change['visible_p99_ms']} ms, "
                 f"stale {change['stale_after_200']}")
        for t in tlist:
            setup[f"{t.name}_rss_end"] = _rss(t.server.pid)
            log = t.server.log_text()
            problems = log.count(" ERROR ") + log.count(" WARNING ")
            if problems:
                bar.log(f"{t.name}: {problems} warning/error lines in {t.server.log_path}")
    finally:
        for t in tlist:
            t.server.stop()
    summaries = summarize(records, setup, rate)
    for s in summaries:
        emit(s, sink=sink)
    plot(records, summaries, rate)
    return [setup, *records, *summaries]


def _profile_vts(t: Target, rate: float, duration: float, users: int, bar: Progress) -> None:
    """py-spy the VTS (the biggest process under the bridge: the confinement wrappers
    are small) under personal load; the top frames go next to the PNG."""
    import shutil

    from bench.agi_load import top_frames
    from bench.common import RESULTS

    spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    vts = max(tree(t.server.pid)[1:], key=rss_kib)
    raw = RESULTS / f"personal_profile_{t.name}_vts.txt"
    spying = subprocess.Popen(
        [spy, "record", "--pid", str(vts), "--duration", str(int(duration) + 1), "--rate",
         "500", "--format", "raw", "--nonblocking", "-o", str(raw)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    _point(t, "personal", rate, duration, users)
    spying.wait(60)
    if raw.exists():
        raw.with_suffix(".top.txt").write_text(top_frames(raw.read_text()))
        bar.log(f"profile of {t.name}'s VTS: {raw.with_suffix('.top.txt')}")


def _changes(t: Target, cfg: Path, rate: float, users: int, changes: int,
             seconds: float) -> dict[str, Any]:
    """The rule-change client next to `rate`/s of personal calls on bridge `t`."""
    port = t.server.port
    load = subprocess.Popen(
        [PY, "-m", "bench.loadgen", "--port", str(port), "--mode", "open", "--rate", str(rate),
         "--duration", str(seconds), "--venues", PERSONAL, "--numbers",
         f"{NUMBER_BASE}:{users}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)  # the load is running before the first change
        out = subprocess.run(
            [PY, "-m", "bench.personal_change", "--agi-port", str(port), "--api",
             f"http://127.0.0.1:{port + 1}", "--token-file", str(cfg.with_suffix(".token")),
             "--changes", str(changes), "--max-seconds", str(max(seconds - 2.0, 3.0))],
            capture_output=True, text=True, timeout=seconds + 60, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"personal_change failed: {out.stderr[-2000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        lout, lerr = load.communicate(timeout=seconds + 60)
    if load.returncode != 0:
        raise RuntimeError(f"loadgen failed: {lerr[-2000:]}")
    background = json.loads(lout.strip().splitlines()[-1])
    return {"bench": "personal", "kind": "rule-change", "target": t.name, "users": users,
            **result, "load_offered_rate": rate, "load_completed": background["completed"],
            "load_routes_per_s": background["routes_per_s"],
            "load_p99_ms": background["p99_ms"], "load_errors": background["errors"]}


def summarize(records: list[dict[str, Any]], setup: dict[str, Any],
              rate: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    points = [r for r in records if r["kind"] == "point"]
    for name in TARGETS:
        for kind in KINDS:
            at = [r for r in points if r["target"] == name and r["venue_kind"] == kind]
            if not at:
                continue
            s: dict[str, Any] = {"bench": "personal", "kind": "summary", "target": name,
                                 "venue_kind": kind, "offered_rate": rate, "reps": len(at),
                                 "users": setup["users"]}
            for key in ("cpu_us_per_route", "cpu_us_per_route_main", "cpu_us_per_route_vts",
                        "p50_ms", "p99_ms", "max_ms", "routes_per_s", "loadgen_cpu_pct"):
                s[key] = round(median(r[key] for r in at), 3)
            s["cpu_us_per_route_each"] = [r["cpu_us_per_route"] for r in at]
            s["p99_ms_each"] = [r["p99_ms"] for r in at]
            total = sum(r["completed"] for r in at)
            actions: dict[str, int] = {}
            kinds: dict[str, int] = {}
            for r in at:
                for key, n in r["actions"].items():
                    actions[key] = actions.get(key, 0) + n
                for key, n in r.get("kinds", {}).items():
                    kinds[key] = kinds.get(key, 0) + n
            s["actions"], s["kinds"] = actions, kinds
            # routed: AB_ACTION=route; decided: route or a rule's reject (not a default)
            s["routed_fraction"] = round(actions.get("route", 0) / total, 4) if total else None
            s["decided_fraction"] = (round((actions.get("route", 0) + actions.get("reject", 0))
                                           / total, 4) if total else None)
            s["deferred_ticks"] = sum(r["deferred_ticks"] for r in at)
            s["errors"] = sum(sum(r["errors"].values()) for r in at)
            out.append(s)
    by = {(s["target"], s["venue_kind"]): s for s in out}
    for name in TARGETS:
        ten, per = by.get((name, "tenant")), by.get((name, "personal"))
        if ten is None or per is None:
            continue
        ratio = {"bench": "personal", "kind": "ratio", "target": name, "users": setup["users"],
                 "tenant_cpu_us_per_route": ten["cpu_us_per_route"],
                 "personal_cpu_us_per_route": per["cpu_us_per_route"],
                 "ratio_personal_over_tenant": round(per["cpu_us_per_route"]
                                                     / ten["cpu_us_per_route"], 3),
                 "added_us_per_route": round(per["cpu_us_per_route"]
                                             - ten["cpu_us_per_route"], 1),
                 "added_us_main": round(per["cpu_us_per_route_main"]
                                        - ten["cpu_us_per_route_main"], 1),
                 "added_us_vts": round(per["cpu_us_per_route_vts"]
                                       - ten["cpu_us_per_route_vts"], 1)}
        # the same ratio per repetition (both points of a rep ran minutes apart at most)
        each = [p / t for p, t in zip(
            per["cpu_us_per_route_each"], ten["cpu_us_per_route_each"], strict=False)]
        ratio["ratio_each"] = [round(x, 3) for x in each]
        ratio["target_ratio_le_1_10"] = ratio["ratio_personal_over_tenant"] <= TARGET_RATIO
        start, end = setup.get(f"{name}_rss_start", {}), setup.get(f"{name}_rss_end", {})
        ratio["rss_start"], ratio["rss_end"] = start, end
        ratio["rss_empty_store"] = setup.get("empty_rss")
        ratio["ready_s"] = setup.get(f"{name}_ready_s")
        out.append(ratio)
    cached, uncached = by.get(("bridge", "personal")), by.get(("bridge-nocache", "personal"))
    if cached and uncached:
        out.append({"bench": "personal", "kind": "cache", "users": setup["users"],
                    "personal_cpu_us_nocache": uncached["cpu_us_per_route"],
                    "personal_cpu_us_cache": cached["cpu_us_per_route"],
                    "vts_us_nocache": uncached["cpu_us_per_route_vts"],
                    "vts_us_cache": cached["cpu_us_per_route_vts"],
                    "saved_us_per_route": round(uncached["cpu_us_per_route"]
                                                - cached["cpu_us_per_route"], 1)})
    return out


def plot(records: list[dict[str, Any]], summaries: list[dict[str, Any]], rate: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.common import RESULTS

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    rows = [s for s in summaries if s["kind"] == "summary"]
    labels = [f"{s['target']}\n{s['venue_kind']}" for s in rows]
    main = [s["cpu_us_per_route_main"] for s in rows]
    vts = [s["cpu_us_per_route_vts"] for s in rows]
    ax1.bar(labels, main, label="bridge process")
    ax1.bar(labels, vts, bottom=main, label="VTS process")
    for i, s in enumerate(rows):  # the label: the median of the totals, as in the tables
        ax1.text(i, (main[i] + vts[i]) * 1.02, f"{s['cpu_us_per_route']:.0f} us\n"
                 f"p99 {s['p99_ms']:.1f} ms", ha="center", fontsize=8)
    ax1.set_ylim(0, max([m + v for m, v in zip(main, vts, strict=True)] or [1]) * 1.25)
    tenant = next((s for s in rows if s["target"] == "bridge"
                   and s["venue_kind"] == "tenant"), None)
    if tenant:
        ax1.axhline(tenant["cpu_us_per_route"] * TARGET_RATIO, color="red", lw=0.8, ls=":",
                    label="target: tenant path + 10 %")
    users = rows[0]["users"] if rows else 0
    ax1.set_ylabel(f"server CPU per route (us) at {rate:g}/s")
    ax1.set_title(f"personal: CPU per routed call, {users} users (medians of reps)")
    ax1.legend(fontsize=8, loc="upper left")
    change = next((r for r in records if r["kind"] == "rule-change"), None)
    if change and change["visible_ms_each"]:
        vals = sorted(change["visible_ms_each"])
        ax2.plot(vals, [(i + 1) / len(vals) for i in range(len(vals))], "-")
        ax2.axvline(TARGET_VISIBLE_MS, color="red", lw=0.8, ls=":", label="target p99 50 ms")
        ax2.set_xscale("log")
        ax2.set_xlabel("ms from the PUT's 200 to the first route showing the new rules")
        ax2.set_ylabel("fraction of changes")
        ax2.set_title(f"rule change -> next call, {change['changes']} changes, "
                      f"{change['stale_after_200']} stale, load {rate:g}/s")
        ax2.legend(fontsize=8)
    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / "personal.png", dpi=110)
    plt.close(fig)
