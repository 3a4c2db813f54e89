"""pops: live call pops (issue 11) - fan-out latency to 100 clients, and 1,000 idle clients.

One bridge (`python -m bench.pops_bridge run`: the product with the hub's fan-out timed
from inside) with `[api]` and a store of N users (1,000) of tenant `pb`
(bench/personal_data.py's world; users u00000..., numbers 20000..., desks 10000...). The
first 100 form the pickup group `sales` (`[personal.pickup_groups]`), and each of them
has one rule `{"action": "ask", "timeout": 5, "group": "sales"}` then voicemail: a call
to any of them pops up on all 100. Every user has a session written to the store as
`POST /api/v1/login` writes it (`Session(sha256(token), ...)`: the hub checks
`store.get_session`), so no password hashing is involved; the clients
(bench/pops_clients.py, their own process) send the token in the auth frame.

Steps: warm-up (100 clients, 10 calls); `baseline` (no clients: the bridge's own idle
CPU for `baseline_s`, RSS/PSS); `idle` (`idle_clients` sockets open and idle for
`idle_s`: the bridge's RSS/PSS after they connected and at the end, its utime+stime and
context switches over the idle time; heartbeats every 30 s); `fanout` (100 clients,
`calls` route requests at `rate`/s, each to a group member in turn; one client rejects
each call once all 100 have its pop, so calls end at once). Figures: per call, the time
from the AGI environment's write to the pop's arrival at each client
(time.monotonic, CLOCK_MONOTONIC, shared by the processes of the host), `last_ms` = the
100th client (target: p99 <= 50 ms); hub-side, from the bridge's own notes: write ->
`offer` (the route request through the VTS to the hub), the `offer` call itself, offer ->
the last pop frame handed to its socket. Idle target: < 50 MB more RSS for 1,000
clients, no CPU when idle.
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from bench.common import (
    BridgeServer,
    Progress,
    cpu_seconds,
    emit,
    pss_kib,
    rss_kib,
    tree,
)
from bench.personal_data import (
    RING_TIME,
    TENANT,
    desk,
    number,
    user_id,
    write_config,
)

PY = sys.executable
PORT = 4730  # AGI; the API on PORT + 1 (personal: 4710-4715)
GROUP = "sales"
GROUP_SIZE = 100  # the issue: "a call pop reaches 100 open clients"
ASK_TIMEOUT = 5  # s, the rule's minimum: a call nobody chose ends soon
SESSION_S = 86_400.0
TARGET_LAST_P99_MS = 50.0  # the issue: within 50 ms p99 of the route request
TARGET_IDLE_MB = 50.0  # the issue: 1,000 idle clients cost under 50 MB
WARMUP_CALLS = 10
SETTLE_S = 2.0  # after the clients connected, before RSS is read


def _ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(q * len(v)))], 3)


def _pcts(values: list[float], prefix: str) -> dict[str, Any]:
    return {f"{prefix}_p50_ms": _ms(values, 0.50), f"{prefix}_p99_ms": _ms(values, 0.99),
            f"{prefix}_max_ms": round(max(values), 3) if values else None}


async def _fill(path: Path, users: int, tokens: Path) -> None:
    from ami_bridge.api.auth import new_token
    from ami_bridge.personal.model import Session, User
    from ami_bridge.personal.sqlite import SqliteStore
    from ami_bridge.tenants.personal import parse_portion

    extensions = [desk(i) for i in range(users)]
    rules = {"saved": ["external:+4930111222"], "rules": [
        {"name": "pop", "action": "ask", "timeout": ASK_TIMEOUT, "group": GROUP},
        {"name": "else", "action": "voicemail"}]}
    body = parse_portion(rules, extensions=extensions, external_prefixes=("+49",),
                         ring_time=RING_TIME).to_json()
    store = SqliteStore(path)
    await store.open()
    lines = []
    try:
        for i in range(users):
            user = User(TENANT, user_id(i), number(i), display_name=f"User {i}",
                        bindings=(desk(i),))
            await store.create_user(user)
            if i < GROUP_SIZE:
                await store.put_portion(TENANT, user.user_id, body, expected_version=0)
            token, digest = new_token()
            await store.add_session(Session(digest, TENANT, user.user_id,
                                            time.time() + SESSION_S))
            lines.append(f"{user.user_id} {token}")
    finally:
        await store.close()
    tokens.write_text("\n".join(lines) + "\n")
    tokens.chmod(0o600)


def _config(workdir: Path, users: int, store: Path) -> Path:
    cfg = workdir / "bridge.toml"
    write_config(cfg, agi_port=PORT, api_port=PORT + 1, store=store, users=users, vts="pp")
    members = ", ".join(f'"{user_id(i)}"' for i in range(GROUP_SIZE))
    with cfg.open("a") as out:  # the last table of the file is the personal venue's
        out.write(f"\n[tenants.{TENANT}.personal.pickup_groups]\n{GROUP} = [{members}]\n")
    return cfg


def _raise_nofile(need: int) -> int:
    """Raise this process's soft limit; the bridge and the clients inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _limit_nofile(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return line.split()[3]
    return "?"


def _switches(pid: int) -> int:
    """Context switches (voluntary + not) of all the process's threads: its wake-ups."""
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def _memory(pid: int) -> dict[str, float]:
    vts = tree(pid)[1:]
    return {"rss_mb": round(rss_kib(pid) / 1024, 2), "pss_mb": round(pss_kib(pid) / 1024, 2),
            "vts_rss_mb": round(sum(rss_kib(p) for p in vts) / 1024, 2)}


def _watch(pid: int, seconds: float) -> dict[str, Any]:
    """The bridge's CPU (main process, and its VTS tree apart) over `seconds` of idling,
    read once a second too: `busy_seconds` maps each second (from the start) in which
    the main process used CPU to the milliseconds it used (the kernel counts in ticks of
    10 ms), so a heartbeat round shows as the second it fell in."""
    vts = tree(pid)[1:]
    c0, v0, s0 = cpu_seconds(pid), sum(cpu_seconds(p) for p in vts), _switches(pid)
    start, prev, busy = time.monotonic(), c0, {}
    for second in range(1, int(seconds) + 1):
        time.sleep(max(0.0, start + second - time.monotonic()))
        now = cpu_seconds(pid)
        if now > prev:
            busy[str(second)] = round((now - prev) * 1000)
        prev = now
    time.sleep(max(0.0, start + seconds - time.monotonic()))
    c1, v1, s1 = cpu_seconds(pid), sum(cpu_seconds(p) for p in vts), _switches(pid)
    per_min = 60.0 / seconds
    return {"seconds": seconds, "cpu_s": round(c1 - c0, 3),
            "cpu_s_per_min": round((c1 - c0) * per_min, 3),
            "cpu_pct": round(100 * (c1 - c0) / seconds, 3),
            "vts_cpu_s_per_min": round((v1 - v0) * per_min, 3),
            "switches_per_min": round((s1 - s0) * per_min, 1), "busy_seconds": busy}


def _clients(mode: str, api: str, tokens: Path, clients: int, *extra: str) -> list[str]:
    return [PY, "-m", "bench.pops_clients", mode, "--api", api, "--tokens", str(tokens),
            "--clients", str(clients), *extra]


def _fanout(api: str, tokens: Path, calls: int, rate: float, ani_base: int) -> dict[str, Any]:
    dial = ",".join(number(i) for i in range(GROUP_SIZE))
    out = subprocess.run(
        _clients("fanout", api, tokens, GROUP_SIZE, "--agi-port", str(PORT), "--calls",
                 str(calls), "--rate", str(rate), "--dial", dial, "--ani-base", str(ani_base)),
        capture_output=True, text=True, timeout=calls / rate + 120, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"pops_clients fanout failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _idle(bridge: BridgeServer, api: str, tokens: Path, clients: int, seconds: float,
          bar: Progress) -> dict[str, Any]:
    proc = subprocess.Popen(_clients("idle", api, tokens, clients), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        first = proc.stdout.readline()
        if not first:
            raise RuntimeError(f"pops_clients idle failed: {proc.stderr.read()[-2000:]}"
                               if proc.stderr else "pops_clients idle failed")
        connected = json.loads(first)
        bar.step(f"{connected['connected']} clients connected in {connected['connect_s']} s")
        time.sleep(SETTLE_S)
        after_connect = _memory(bridge.pid)
        cpu = _watch(bridge.pid, seconds)
        at_end = _memory(bridge.pid)
        proc.stdin.close()
        tail = json.loads(proc.stdout.readline() or "{}")
    finally:
        proc.wait(60)
    time.sleep(SETTLE_S)
    return {**connected, **tail, "after_connect": after_connect, "idle": cpu,
            "at_end": at_end, "after_close": _memory(bridge.pid)}


def _hub_notes(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    notes = (json.loads(line) for line in path.read_text().splitlines() if line)
    return {n["ani"]: n for n in notes}


def run(*, calls: int, rate: float, idle_clients: int, idle_s: float, baseline_s: float,
        workdir: Path, sink: IO[str] | None = None) -> list[dict[str, Any]]:
    workdir.mkdir(parents=True, exist_ok=True)
    users = max(idle_clients, GROUP_SIZE)
    bar = Progress(7, "pops")
    store, tokens = workdir / "bridge.sqlite3", workdir / "tokens.txt"
    t0 = time.monotonic()
    asyncio.run(_fill(store, users, tokens))
    fill_s = round(time.monotonic() - t0, 2)
    cfg = _config(workdir, users, store)
    nofile = _raise_nofile(2 * idle_clients + 1024)
    bar.step(f"store with {users} users and sessions in {fill_s} s")
    timing = workdir / "hub_timing.jsonl"
    timing.unlink(missing_ok=True)
    bridge = BridgeServer("bridge", cfg, PORT, workdir / "bridge.log",
                          argv=[PY, "-m", "bench.pops_bridge", "run"],
                          env={"AB_POPS_TIMING": str(timing)})
    api = f"http://127.0.0.1:{PORT + 1}"
    bridge.start(120)
    setup: dict[str, Any] = {"bench": "pops", "kind": "setup", "users": users,
                             "group_size": GROUP_SIZE, "store_fill_s": fill_s,
                             "ready_s": round(bridge.ready_s, 3),
                             "bridge_nofile": _limit_nofile(bridge.pid),
                             "our_nofile": nofile}
    try:
        _fanout(api, tokens, WARMUP_CALLS, rate, 90_000_000)  # imports, first sockets
        time.sleep(SETTLE_S)
        bar.step(f"bridge ready in {setup['ready_s']} s, warmed up")
        baseline = {"memory": _memory(bridge.pid), "idle": _watch(bridge.pid, baseline_s)}
        bar.step(f"baseline: {baseline['memory']['rss_mb']} MB, "
                 f"{baseline['idle']['cpu_s_per_min']} CPU s/min without clients")
        idle = _idle(bridge, api, tokens, idle_clients, idle_s, bar)
        bar.step(f"idle: {idle['at_end']['rss_mb']} MB, {idle['idle']['cpu_s_per_min']} "
                 "CPU s/min")
        fan = _fanout(api, tokens, calls, rate, 0)
        bar.step(f"fan-out: {fan['calls']} calls to {fan['clients']} clients")
        log = bridge.log_text()
        problems = log.count(" ERROR ") + log.count(" WARNING ")
    finally:
        bridge.stop()
    hub = _hub_notes(timing)
    emit(setup, sink=sink)
    idle_rec = idle_record(baseline, idle, idle_clients, idle_s)
    fan_rec = fanout_record(fan, hub, rate)
    fan_rec["bridge_log_problems"] = problems
    for rec in (idle_rec, fan_rec):
        emit(rec, sink=sink)
    plot(fan, hub, idle_rec, fan_rec)
    bar.step("done")
    return [setup, idle_rec, fan_rec]


def idle_record(baseline: dict[str, Any], idle: dict[str, Any], clients: int,
                seconds: float) -> dict[str, Any]:
    before = baseline["memory"]
    end = idle["at_end"]
    added = end["rss_mb"] - before["rss_mb"]
    return {
        "bench": "pops", "kind": "idle", "clients": clients, "connected": idle["connected"],
        "connect_s": idle["connect_s"], "idle_s": seconds,
        "rss_before_mb": before["rss_mb"], "rss_after_connect_mb": idle["after_connect"]
        ["rss_mb"], "rss_at_end_mb": end["rss_mb"], "rss_after_close_mb":
        idle["after_close"]["rss_mb"], "rss_added_mb": round(added, 2),
        "rss_added_kb_per_client": round(added * 1024 / max(clients, 1), 1),
        "pss_before_mb": before["pss_mb"], "pss_at_end_mb": end["pss_mb"],
        "pss_added_mb": round(end["pss_mb"] - before["pss_mb"], 2),
        "vts_rss_before_mb": before["vts_rss_mb"], "vts_rss_at_end_mb": end["vts_rss_mb"],
        "cpu_s_per_min": idle["idle"]["cpu_s_per_min"], "cpu_pct": idle["idle"]["cpu_pct"],
        "switches_per_min": idle["idle"]["switches_per_min"],
        "busy_seconds": idle["idle"]["busy_seconds"],
        "watch_starts_s_after_connect": SETTLE_S,  # busy_seconds count from there
        "baseline_cpu_s_per_min": baseline["idle"]["cpu_s_per_min"],
        "baseline_switches_per_min": baseline["idle"]["switches_per_min"],
        "baseline_s": baseline["idle"]["seconds"],
        "baseline_busy_seconds": baseline["idle"]["busy_seconds"],
        "vts_cpu_s_per_min": idle["idle"]["vts_cpu_s_per_min"],
        "frames_while_idle": idle.get("frames_while_idle"),
        "closed_while_idle": idle.get("closed_while_idle"),
        "target_rss_added_lt_50mb": added < TARGET_IDLE_MB,
    }


def fanout_record(fan: dict[str, Any], hub: dict[str, dict[str, Any]],
                  rate: float) -> dict[str, Any]:
    detail = fan["calls_detail"]
    clients = fan["clients"]
    every = [ms for c in detail for ms in c["received_ms"]]
    complete = [c for c in detail if len(c["received_ms"]) == clients]
    last = [c["received_ms"][-1] for c in complete]
    first = [c["received_ms"][0] for c in detail if c["received_ms"]]
    to_offer, offer, to_last_send, last_send_to_last = [], [], [], []
    for c in complete:
        note = hub.get(c["ani"])
        if note is None:
            continue
        to_offer.append((note["offer_start"] - c["sent"]) * 1000)
        offer.append((note["offer_end"] - note["offer_start"]) * 1000)
        if note["last_send"]:
            to_last_send.append((note["last_send"] - note["offer_start"]) * 1000)
            last_send_to_last.append(c["received_ms"][-1]
                                     - (note["last_send"] - c["sent"]) * 1000)
    sessions = [c["session_ms"] for c in detail if c["session_ms"] is not None]
    p99 = _ms(last, 0.99)
    return {
        "bench": "pops", "kind": "fanout", "clients": clients, "calls": fan["calls"],
        "rate": rate, "choice": fan["choice"], "connect_s": fan["connect_s"],
        "calls_with_every_client": len(complete),
        "receipts": len(every), "receipts_expected": clients * fan["calls"],
        **_pcts(last, "last"), **_pcts(every, "each"), **_pcts(first, "first"),
        "hub_notes": len(to_offer),
        **_pcts(to_offer, "write_to_offer"), **_pcts(offer, "offer"),
        **_pcts(to_last_send, "offer_to_last_send"),
        **_pcts(last_send_to_last, "last_send_to_last_receipt"),
        **_pcts(sessions, "agi_session"),
        "actions": fan["actions"], "frames": fan["frames"], "closed": fan["closed"],
        "last_ms_each": last,
        "target_last_p99_le_50ms": p99 is not None and p99 <= TARGET_LAST_P99_MS
        and len(complete) == fan["calls"],
    }


def plot(fan: dict[str, Any], hub: dict[str, dict[str, Any]], idle: dict[str, Any],
         rec: dict[str, Any]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.common import RESULTS

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    series = [("100th client (last)", rec["last_ms_each"]),
              ("each receipt", [ms for c in fan["calls_detail"] for ms in c["received_ms"]]),
              ("first client", [c["received_ms"][0] for c in fan["calls_detail"]
                                if c["received_ms"]])]
    offers = [(hub[c["ani"]]["offer_start"] - c["sent"]) * 1000
              for c in fan["calls_detail"] if c["ani"] in hub]
    series.append(("hub offer starts (route path)", offers))
    for label, values in series:
        vals = sorted(values)
        if vals:
            ax1.plot(vals, [(i + 1) / len(vals) for i in range(len(vals))], label=label)
    ax1.axvline(TARGET_LAST_P99_MS, color="red", lw=0.8, ls=":", label="target p99 50 ms")
    ax1.set_xscale("log")
    ax1.set_xlabel("ms from the AGI environment's write")
    ax1.set_ylabel("fraction")
    ax1.set_title(f"pop fan-out: {rec['calls']} calls to {rec['clients']} clients at "
                  f"{rec['rate']:g}/s (p99 last {rec['last_p99_ms']} ms)")
    ax1.legend(fontsize=8)
    labels = ["before", f"{idle['clients']} connected", f"after {idle['idle_s']:g} s idle",
              "after close"]
    values = [idle["rss_before_mb"], idle["rss_after_connect_mb"], idle["rss_at_end_mb"],
              idle["rss_after_close_mb"]]
    ax2.bar(labels, values, color="tab:blue")
    for i, v in enumerate(values):
        ax2.text(i, v * 1.01, f"{v:.1f} MB", ha="center", fontsize=8)
    ax2.axhline(idle["rss_before_mb"] + TARGET_IDLE_MB, color="red", lw=0.8, ls=":",
                label="target: before + 50 MB")
    ax2.set_ylabel("bridge main process RSS (MB)")
    ax2.set_title(f"{idle['clients']} idle clients: +{idle['rss_added_mb']} MB, "
                  f"{idle['cpu_s_per_min']} CPU s/min (no clients: "
                  f"{idle['baseline_cpu_s_per_min']})")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / "pops.png", dpi=110)
    plt.close(fig)
