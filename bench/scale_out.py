"""scale-out (issue 16): the shared store's cost per call, two bridges against one, and
how soon a rule changed through one bridge is followed by another.

The world is bench/personal_data.py's: tenant `pb` with its seven-rule venue `pb-venue`
and its personal venue `pb-personal` with N users (10,000; `changer` besides). Bridges
(the product, `python -m ami_bridge run`, one VTS each, each with `[api]`):
  sqlite  the single-node default: the SQLite store (the personal bench's cached file)
  pg-a    the same config on a PostgreSQL store (`[store] backend = "postgresql"`), a
          server the bench starts itself (harness/postgres.py) and fills through the
          store API
  pg-b    a second bridge on that same database
Parts, each interleaved and rotated per repetition, summaries are medians:
  store    (issue target b) open loop at `rate`/s, <= 200 in flight, tenant and personal
           routes into `sqlite` and `pg-a`: CPU per route (bridge + VTS, /proc) and
           p50/p99; `added_us` = postgres - sqlite per kind, paired by repetition, the
           shared store's added per-call cost (target <= 50 us); the PostgreSQL server's
           own CPU per route is reported beside it (it runs on another host in a cluster)
  scale    (target a) closed loop, personal routes, 200 in flight per loadgen: `one` =
           one loadgen on pg-a; `two` = one loadgen on pg-a and one on pg-b at once,
           summed. routes/s, CPU per route of each bridge, the machine's busy share
           (/proc/stat) and routes per CPU-second (bridges + VTS; and with the loadgens
           and PostgreSQL); ratios two / one (target ~ 2 on a host with the cores for it).
           And `paced`: the same two variants open loop at `rate`/2 per bridge (the
           machine keeps up with both), for each bridge's CPU per route without the
           oversubscription of the closed loop (issue 16: "the same per-call CPU")
  change   (target c) the rule-change client (bench/personal_change.py) PUTs through
           pg-a's HTTP API and asks pg-b for the changed user's number, next to
           `rate`/2 personal calls on pg-b: from the 200 to the first answer at pg-b
           with the new target, p50/p99 (target p99 <= 100 ms); a change not seen within
           VISIBLE_WITHIN_MS counts in `never_seen` (a bridge that reads the store only
           at start never sees one)
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.agi_load import Target, measure
from bench.common import BridgeServer, Progress, emit, median, tree, tree_cpu
from bench.personal_data import (
    NUMBER_BASE,
    PERSONAL,
    VENUE,
    fill,
    filled_store,
    write_config,
)

PY = sys.executable
PORT_BASE = 4740  # AGI on PORT_BASE + 2k, API on + 1 (personal: 4710-4715, pops: 4730-4731)
BRIDGES = ("sqlite", "pg-a", "pg-b")
STORE_BRIDGES = {"sqlite": "sqlite", "postgres": "pg-a"}  # part `store`: name -> bridge
KINDS = ("tenant", "personal")
SCALE_VARIANTS = ("one", "two")
SWEEP_RATE = 2000.0  # calls/s of the warm-up that calls every user once (personal bench)
CONCURRENCY = 200  # in flight per loadgen, as in every other bench
FILL_PARALLEL = 8  # users written at once into PostgreSQL (the store's pool has more)
DATABASE = "scale"
TARGET_ADDED_US = 50.0  # issue 16 (b): the shared store adds <= 50 us per call
TARGET_TWO_OVER_ONE = 2.0  # issue 16 (a): two bridges route ~ 2x one
TARGET_VISIBLE_P99_MS = 100.0  # issue 16 (c): a change at A is followed at B within 100 ms
VISIBLE_WITHIN_MS = 1000.0  # 10x the target: a change not seen by then is "never seen"


# -- the machine ----------------------------------------------------------------------------

def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat's `cpu` line
    (busy = everything but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8])  # guest times are inside user/nice already
    return total - fields[3] - fields[4], total


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """The share of all CPUs that was busy between two machine_ticks() readings."""
    total = after[1] - before[1]
    return round((after[0] - before[0]) / total, 3) if total > 0 else None


def cpu_of(pids: list[int]) -> float:
    return sum(tree_cpu(pids).values())


# -- servers ----------------------------------------------------------------------------

def _bridge(name: str, k: int, workdir: Path, users: int, *, store: Path,
            dsn: str | None) -> tuple[Target, Path]:
    port = PORT_BASE + 2 * k
    cfg = workdir / f"{name}.toml"
    write_config(cfg, agi_port=port, api_port=port + 1, store=store, users=users,
                 vts=f"so{k}v", store_dsn=dsn)
    return Target(name, BridgeServer(name, cfg, port, workdir / f"{name}.log")), cfg


def _fill_postgres(dsn: str, users: int) -> float:
    """Every user and portion written into the database at `dsn` through the store API
    (PostgresStore, which also creates the tables); the seconds it took."""
    from ami_bridge.personal.postgres import PostgresStore

    async def go() -> None:
        store = PostgresStore(dsn)
        await store.open()
        try:
            await fill(store, users, parallel=FILL_PARALLEL)
        finally:
            await store.close()

    t0 = time.monotonic()
    asyncio.run(go())
    return time.monotonic() - t0


def _point(t: Target, kind: str, rate: float, duration: float, users: int,
           pg_pid: int) -> dict[str, Any]:
    """One open-loop point on `t`, with the PostgreSQL server's CPU around it."""
    pg = tree(pg_pid)
    before = cpu_of(pg)
    if kind == "tenant":
        t.venues = [VENUE]
        r = measure(t, mode="open", rate=rate, duration=duration, concurrency=CONCURRENCY)
    else:
        t.venues = [PERSONAL]
        r = measure(t, mode="open", rate=rate, duration=duration, concurrency=CONCURRENCY,
                    extra=["--numbers", f"{NUMBER_BASE}:{users}"])
    r["pg_cpu_us_per_route"] = round((cpu_of(pg) - before) / max(r["completed"], 1) * 1e6, 1)
    return r


def _loadgen(port: int, *, mode: str, rate: float, duration: float, users: int,
             sweep: bool = False) -> subprocess.Popen[str]:
    argv = [PY, "-m", "bench.loadgen", "--port", str(port), "--mode", mode, "--rate",
            str(rate), "--duration", str(duration), "--concurrency", str(CONCURRENCY),
            "--venues", PERSONAL, "--numbers", f"{NUMBER_BASE}:{users}"]
    if sweep:
        argv.append("--sweep")
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen failed: {err[-2000:]}")
    res: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return res


def together(bridges: list[Target], *, mode: str, rate: float, duration: float,
             users: int, pg_pid: int) -> dict[str, Any]:
    """Personal routes into every bridge of `bridges` at once (one loadgen each, started
    together; `mode` closed: saturation, open: `rate`/s each): summed routes/s, each
    bridge's CPU per route, the machine's busy share and routes per CPU-second."""
    pids = {t.name: tree(t.server.pid) for t in bridges}
    pg = tree(pg_pid)
    before = {name: tree_cpu(p) for name, p in pids.items()}
    pg0, m0 = cpu_of(pg), machine_ticks()
    procs = [_loadgen(t.server.port, mode=mode, rate=rate, duration=duration, users=users)
             for t in bridges]
    results = [_result(p, duration + 60) for p in procs]
    m1, pg1 = machine_ticks(), cpu_of(pg)
    per_bridge: dict[str, Any] = {}
    bridges_cpu = 0.0
    for t, res in zip(bridges, results, strict=True):
        after = tree_cpu(pids[t.name])
        ps = pids[t.name]
        cpu = sum(after[p] - before[t.name][p] for p in ps)
        main_cpu = after[ps[0]] - before[t.name][ps[0]]
        done = max(res["completed"], 1)
        bridges_cpu += cpu
        per_bridge[t.name] = {
            "routes_per_s": res["routes_per_s"], "completed": res["completed"],
            "errors": res["errors"], "p50_ms": res["p50_ms"], "p99_ms": res["p99_ms"],
            "cpu_us_per_route": round(cpu / done * 1e6, 1),
            "cpu_us_per_route_main": round(main_cpu / done * 1e6, 1),
            "cpu_us_per_route_vts": round((cpu - main_cpu) / done * 1e6, 1),
            "loadgen_cpu_s": res["loadgen_cpu_s"], "actions": res["actions"]}
    completed = sum(r["completed"] for r in results)
    loadgens_cpu = sum(r["loadgen_cpu_s"] for r in results)
    pg_cpu = pg1 - pg0
    return {
        "bridges": [t.name for t in bridges], "per_bridge": per_bridge,
        "routes_per_s": round(sum(r["routes_per_s"] for r in results), 1),
        "completed": completed, "errors": sum(sum(r["errors"].values()) for r in results),
        "machine_busy_share": busy_share(m0, m1),
        "bridges_cpu_s": round(bridges_cpu, 3), "pg_cpu_s": round(pg_cpu, 3),
        "loadgens_cpu_s": round(loadgens_cpu, 3),
        "routes_per_bridge_cpu_s": round(completed / bridges_cpu, 1) if bridges_cpu else None,
        "routes_per_cpu_s_all": (round(completed / (bridges_cpu + pg_cpu + loadgens_cpu), 1)
                                 if bridges_cpu else None),
    }


def cross_change(a: Target, a_cfg: Path, b: Target, rate: float, users: int, changes: int,
                 seconds: float) -> dict[str, Any]:
    """The rule-change client: PUT through a's API, route requests at b, next to
    `rate`/s of personal calls on b."""
    load = _loadgen(b.server.port, mode="open", rate=rate, duration=seconds, users=users)
    try:
        time.sleep(0.5)  # the load is running before the first change
        out = subprocess.run(
            [PY, "-m", "bench.personal_change", "--agi-port", str(a.server.port),
             "--route-port", str(b.server.port), "--api",
             f"http://127.0.0.1:{a.server.port + 1}", "--token-file",
             str(a_cfg.with_suffix(".token")), "--changes", str(changes),
             "--within-ms", str(VISIBLE_WITHIN_MS),
             "--max-seconds", str(max(seconds - 2.0, 3.0))],
            capture_output=True, text=True, timeout=seconds + 60, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"personal_change failed: {out.stderr[-2000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        background = _result(load, seconds + 60)
    result.pop("target_visible_p99_le_50ms", None)  # the same-bridge target, not this one
    # B answering the old target after A's 200 is the propagation being measured (every
    # poll until B follows, or for VISIBLE_WITHIN_MS), not the same-bridge contract breach
    # personal_change calls stale
    result["old_answers_at_b_after_200"] = result.pop("stale_after_200")
    seen = result["visible_p99_ms"]
    return {"bench": "scale-out", "kind": "rule-change", "api_bridge": a.name,
            "route_bridge": b.name, "users": users, **result,
            "not_seen_within_ms": VISIBLE_WITHIN_MS,
            "target_visible_p99_le_100ms": (seen is not None and seen <= TARGET_VISIBLE_P99_MS
                                            and not result["never_seen"]),
            "load_offered_rate": rate, "load_completed": background["completed"],
            "load_p99_ms": background["p99_ms"], "load_errors": background["errors"]}


# -- the run ----------------------------------------------------------------------------

def run(*, users: int, reps: int, duration: float, rate: float, sat_duration: float,
        changes: int, change_s: float, workdir: Path,
        sink: Any = None) -> list[dict[str, Any]]:
    from harness.postgres import PostgresServer

    workdir.mkdir(parents=True, exist_ok=True)
    steps = (4 + len(BRIDGES) + reps * (len(STORE_BRIDGES) * len(KINDS)
                                        + 2 * len(SCALE_VARIANTS)) + 1)
    bar = Progress(steps, "scale-out")
    sqlite_store, fill_s = filled_store(users, workdir / "sqlite.sqlite3")
    bar.step(f"sqlite store with {users} users "
             f"({'cached' if fill_s is None else f'filled in {fill_s:.0f} s'})")
    records: list[dict[str, Any]] = []
    setup: dict[str, Any] = {"bench": "scale-out", "kind": "setup", "users": users,
                             "sqlite_fill_s": fill_s}
    tlist: dict[str, Target] = {}
    configs: dict[str, Path] = {}
    with PostgresServer() as pg:
        assert pg.process is not None
        pg_pid = pg.process.pid
        setup["pg_boot_s"] = round(pg.boot_s, 3)
        dsn = pg.create_database(DATABASE)
        bar.step(f"PostgreSQL up in {pg.boot_s:.1f} s")
        setup["pg_fill_s"] = round(_fill_postgres(dsn, users), 1)
        bar.step(f"PostgreSQL store filled in {setup['pg_fill_s']} s")
        try:
            for k, name in enumerate(BRIDGES):
                t, configs[name] = _bridge(name, k, workdir, users, store=sqlite_store,
                                           dsn=None if name == "sqlite" else dsn)
                t.server.start(120)
                tlist[name] = t
                setup[f"{name}_ready_s"] = round(t.server.ready_s, 3)
                for kind in KINDS:  # warm up: imports, caches, the first connections
                    _point(t, kind, rate / 2, 1.0, users, pg_pid)
                # every user called once, as on a bridge that has run a while (personal)
                _result(_loadgen(t.server.port, mode="open", rate=SWEEP_RATE,
                                 duration=users / SWEEP_RATE, users=users, sweep=True),
                        users / SWEEP_RATE + 60)
                bar.step(f"started {name} in {setup[f'{name}_ready_s']} s")
            emit(setup, sink=sink)
            points = [(store, kind) for store in STORE_BRIDGES for kind in KINDS]
            for rep in range(reps):
                order = points[rep % len(points):] + points[:rep % len(points)]
                for store, kind in order:
                    t = tlist[STORE_BRIDGES[store]]
                    r = _point(t, kind, rate, duration, users, pg_pid)
                    rec = {"bench": "scale-out", "kind": "point", "store": store,
                           "venue_kind": kind, "rep": rep, "users": users, **r}
                    records.append(rec)
                    emit(rec, sink=sink)
                    bar.step(f"{store} {kind} {r['cpu_us_per_route']} us "
                             f"p99 {r['p99_ms']} ms")
                runs = [(kind, variant) for kind in ("saturation", "paced")
                        for variant in SCALE_VARIANTS]
                for kind, variant in runs[rep % len(runs):] + runs[:rep % len(runs)]:
                    on = [tlist["pg-a"]] + ([tlist["pg-b"]] if variant == "two" else [])
                    closed = kind == "saturation"
                    seconds = sat_duration if closed else duration
                    s = together(on, mode="closed" if closed else "open",
                                 rate=0 if closed else rate / 2, duration=seconds,
                                 users=users, pg_pid=pg_pid)
                    rec = {"bench": "scale-out", "kind": kind, "variant": variant,
                           "rep": rep, "users": users, "duration_s": seconds,
                           "offered_rate_each": None if closed else rate / 2, **s}
                    records.append(rec)
                    emit(rec, sink=sink)
                    bar.step(f"{kind} {variant}: {s['routes_per_s']}/s, busy "
                             f"{s['machine_busy_share']}, us/route "
                             f"{[b['cpu_us_per_route'] for b in s['per_bridge'].values()]}")
            change = cross_change(tlist["pg-a"], configs["pg-a"], tlist["pg-b"], rate / 2,
                                  users, changes, change_s)
            records.append(change)
            emit(change, sink=sink)
            bar.step(f"A -> B: visible p99 {change['visible_p99_ms']} ms, not seen within "
                     f"{VISIBLE_WITHIN_MS:g} ms {change['never_seen']}, ambiguous "
                     f"{change['ambiguous']}")
            for t in tlist.values():
                log = t.server.log_text()
                problems = log.count(" ERROR ") + log.count(" WARNING ")
                if problems:
                    bar.log(f"{t.name}: {problems} warning/error lines in {t.server.log_path}")
        finally:
            for t in tlist.values():
                t.server.stop()
    summaries = summarize(records, rate)
    for s in summaries:
        emit(s, sink=sink)
    plot(records, summaries, rate)
    return [setup, *records, *summaries]


# -- summaries ----------------------------------------------------------------------------

def _paired(a: list[dict[str, Any]], b: list[dict[str, Any]], key: str,
            op: str) -> list[float]:
    """b[key] - a[key] (op "-") or b[key] / a[key] (op "/"), paired by repetition."""
    by_rep = {r["rep"]: r for r in a}
    out = []
    for r in b:
        other = by_rep.get(r["rep"])
        if other is None or r.get(key) is None or other.get(key) is None:
            continue
        if op == "-":
            out.append(round(r[key] - other[key], 1))
        elif other[key]:
            out.append(round(r[key] / other[key], 3))
    return out


def summarize(records: list[dict[str, Any]], rate: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    points = [r for r in records if r["kind"] == "point"]
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for store in STORE_BRIDGES:
        for kind in KINDS:
            at = [r for r in points if r["store"] == store and r["venue_kind"] == kind]
            if not at:
                continue
            by[(store, kind)] = at
            s: dict[str, Any] = {"bench": "scale-out", "kind": "summary", "store": store,
                                 "venue_kind": kind, "offered_rate": rate, "reps": len(at)}
            for key in ("cpu_us_per_route", "cpu_us_per_route_main", "cpu_us_per_route_vts",
                        "pg_cpu_us_per_route", "p50_ms", "p99_ms", "max_ms",
                        "routes_per_s", "loadgen_cpu_pct"):
                vals = [r[key] for r in at if r.get(key) is not None]
                s[key] = round(median(vals), 3) if vals else None
            s["cpu_us_per_route_each"] = [r["cpu_us_per_route"] for r in at]
            s["p99_ms_each"] = [r["p99_ms"] for r in at]
            actions: dict[str, int] = {}
            for r in at:
                for key, n in r["actions"].items():
                    actions[key] = actions.get(key, 0) + n
            total = sum(r["completed"] for r in at)
            s["actions"] = actions
            s["decided_fraction"] = (round((actions.get("route", 0) + actions.get("reject", 0))
                                           / total, 4) if total else None)
            s["deferred_ticks"] = sum(r["deferred_ticks"] for r in at)
            s["errors"] = sum(sum(r["errors"].values()) for r in at)
            out.append(s)
    for kind in KINDS:
        lite, pg = by.get(("sqlite", kind)), by.get(("postgres", kind))
        if not lite or not pg:
            continue
        each = _paired(lite, pg, "cpu_us_per_route", "-")
        added = round(median(each), 1) if each else None
        out.append({
            "bench": "scale-out", "kind": "store-cost", "venue_kind": kind,
            "offered_rate": rate,
            "sqlite_cpu_us_per_route": round(median(r["cpu_us_per_route"] for r in lite), 1),
            "postgres_cpu_us_per_route": round(median(r["cpu_us_per_route"] for r in pg), 1),
            "added_us_per_route": added, "added_us_each": each,
            "added_us_main": round(median(_paired(lite, pg, "cpu_us_per_route_main", "-")), 1),
            "added_us_vts": round(median(_paired(lite, pg, "cpu_us_per_route_vts", "-")), 1),
            "pg_server_cpu_us_per_route": round(median(r["pg_cpu_us_per_route"] for r in pg), 1),
            "sqlite_p99_ms": round(median(r["p99_ms"] for r in lite), 3),
            "postgres_p99_ms": round(median(r["p99_ms"] for r in pg), 3),
            "target_added_le_50us": added is not None and added <= TARGET_ADDED_US})
    sat = [r for r in records if r["kind"] == "saturation"]
    one = [r for r in sat if r["variant"] == "one"]
    two = [r for r in sat if r["variant"] == "two"]
    if one and two:
        s = {"bench": "scale-out", "kind": "scale", "reps": len(one), "users":
             one[0]["users"]}
        for variant, at in (("one", one), ("two", two)):
            for key in ("routes_per_s", "machine_busy_share", "routes_per_bridge_cpu_s",
                        "routes_per_cpu_s_all"):
                vals = [r[key] for r in at if r.get(key) is not None]
                s[f"{variant}_{key}"] = round(median(vals), 3) if vals else None
            for name in ("pg-a", "pg-b"):
                vals = [r["per_bridge"][name]["cpu_us_per_route"] for r in at
                        if name in r["per_bridge"]]
                if vals:
                    s[f"{variant}_{name}_cpu_us_per_route"] = round(median(vals), 1)
        ratio_each = _paired(one, two, "routes_per_s", "/")
        s["two_over_one_routes_per_s"] = round(median(ratio_each), 3) if ratio_each else None
        s["two_over_one_each"] = ratio_each
        per_cpu = _paired(one, two, "routes_per_bridge_cpu_s", "/")
        s["two_over_one_per_bridge_cpu_s"] = round(median(per_cpu), 3) if per_cpu else None
        # Two bridges doing the same work per call route 2x one *per CPU-second of
        # bridge*; whether they route 2x per wall second depends on free cores.
        s["two_over_one_cpu_normalised"] = (round(2 * s["two_over_one_per_bridge_cpu_s"], 3)
                                            if s["two_over_one_per_bridge_cpu_s"] else None)
        s["target_two_over_one"] = TARGET_TWO_OVER_ONE
        paced = [r for r in records if r["kind"] == "paced"]
        for variant in SCALE_VARIANTS:
            at = [r for r in paced if r["variant"] == variant]
            for name in ("pg-a", "pg-b"):
                vals = [r["per_bridge"][name]["cpu_us_per_route"] for r in at
                        if name in r["per_bridge"]]
                if vals:
                    s[f"paced_{variant}_{name}_cpu_us_per_route"] = round(median(vals), 1)
                    s[f"paced_{variant}_{name}_cpu_us_per_route_each"] = vals
            busy = [r["machine_busy_share"] for r in at if r["machine_busy_share"] is not None]
            s[f"paced_{variant}_machine_busy_share"] = round(median(busy), 3) if busy else None
        one_cpu = s.get("paced_one_pg-a_cpu_us_per_route")
        two_cpu = [s.get(f"paced_two_{n}_cpu_us_per_route") for n in ("pg-a", "pg-b")]
        if one_cpu and all(two_cpu):
            # each bridge's CPU per route with the other one busy too, against alone
            s["paced_two_over_one_cpu_per_route"] = round(
                sum(c for c in two_cpu if c) / 2 / one_cpu, 3)
        s["paced_offered_rate_each"] = paced[0]["offered_rate_each"] if paced else None
        out.append(s)
    return out


def plot(records: list[dict[str, Any]], summaries: list[dict[str, Any]], rate: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.common import RESULTS

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 5))
    rows = [s for s in summaries if s["kind"] == "summary"]
    labels = [f"{s['store']}\n{s['venue_kind']}" for s in rows]
    main = [s["cpu_us_per_route_main"] or 0 for s in rows]
    vts = [s["cpu_us_per_route_vts"] or 0 for s in rows]
    ax1.bar(labels, main, label="bridge process")
    ax1.bar(labels, vts, bottom=main, label="VTS process")
    for i, s in enumerate(rows):
        ax1.text(i, (main[i] + vts[i]) * 1.02, f"{s['cpu_us_per_route']:.0f} us\n"
                 f"p99 {s['p99_ms']:.1f} ms", ha="center", fontsize=8)
    ax1.set_ylim(0, max([m + v for m, v in zip(main, vts, strict=True)] or [1]) * 1.25)
    ax1.set_ylabel(f"bridge + VTS CPU per route (us) at {rate:g}/s")
    ax1.set_title("(b) the store's cost per call (medians)")
    ax1.legend(fontsize=8, loc="upper left")
    scale = next((s for s in summaries if s["kind"] == "scale"), None)
    if scale:
        names = ["one", "two"]
        rps = [scale[f"{n}_routes_per_s"] or 0 for n in names]
        per_cpu = [scale[f"{n}_routes_per_bridge_cpu_s"] or 0 for n in names]
        x = range(len(names))
        ax2.bar([i - 0.2 for i in x], rps, width=0.4, label="routes/s (closed loop)")
        ax2.bar([i + 0.2 for i in x], per_cpu, width=0.4,
                label="routes per bridge CPU-second")
        ax2.set_xticks(list(x), [f"{n} bridge{'s' if n == 'two' else ''}" for n in names])
        ax2.set_title(f"(a) two / one: {scale['two_over_one_routes_per_s']} per wall s, "
                      f"busy {scale['two_machine_busy_share']}; CPU per route paced: "
                      f"x{scale.get('paced_two_over_one_cpu_per_route')}", fontsize=9)
        ax2.legend(fontsize=8)
    change = next((r for r in records if r["kind"] == "rule-change"), None)
    if change and change["visible_ms_each"]:
        vals = sorted(change["visible_ms_each"])
        ax3.plot(vals, [(i + 1) / len(vals) for i in range(len(vals))], "-")
    elif change:
        ax3.text(0.5, 0.5, f"no change seen at {change['route_bridge']}\n"
                 f"({change['ambiguous']} ambiguous)", transform=ax3.transAxes,
                 ha="center", va="center")
    if change:
        ax3.set_xscale("log")
        ax3.set_xlim(0.5, VISIBLE_WITHIN_MS)
        ax3.axvline(TARGET_VISIBLE_P99_MS, color="red", lw=0.8, ls=":",
                    label="target p99 100 ms")
        ax3.set_xlabel("ms from A's 200 to the first route at B with the new rule")
        ax3.set_ylabel("fraction of changes")
        ax3.set_title(f"(c) A -> B: {change['changes']} changes, {change['never_seen']} not "
                      f"seen within {VISIBLE_WITHIN_MS:g} ms", fontsize=9)
        ax3.legend(fontsize=8)
    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / "scale_out.png", dpi=110)
    plt.close(fig)
