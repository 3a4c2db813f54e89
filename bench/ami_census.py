"""ami-census: what one AMI session costs Asterisk, and what it receives per call.

`python -m bench.ami_census [--rate 120] [--seconds 6] [--variants none,shipped,narrow]`

One sandbox Asterisk boot per variant (the e2e-cps configuration: static trunk, wide
RTP range); SIPp places `rate * seconds` calls of 100 ms through the static route
(`bench-static-trunk` -> Dial PJSIP/acme-agent: no AGI, so no bridge is needed, and the
events are those of any answered call), or with `--path routed` through acme-trunk ->
AGI -> a bridge whose config has no [ami] (its CPU is reported too). Variants:
  none     no AMI session logged in
  shipped  a session as the shipped `ami-bridge` user (asterisk-conf/manager.d/)
  narrow   the same user with NARROW_FILTERS appended (exclusions by header)
  <file>   any other name: a manager.d/ami-bridge.conf read from that path
The session is a plain socket read by `AmiConnection` in a thread. Per variant: Asterisk
CPU ms per successful call (utime+stime of its process), events per call by name, and
DeviceStateChange per call by device.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import REPO, BridgeServer, cpu_seconds, machine, tree
from bench.e2e_cps import (
    ACME_CONFIG,
    HOLD_MS,
    RTP_CONF,
    STATIC_DIALPLAN,
    STATIC_PJSIP,
    UAC_PORT,
)

AGI_PORT = 4696

SHIPPED = REPO / "asterisk-conf" / "manager.d" / "ami-bridge.conf"
# Header exclusions tried on top of the shipped filters (Asterisk 20.12+/22 advanced
# filters: include filters first, then any matching exclude drops the event).
NARROW_FILTERS = """
; --- bench/ami_census.py: narrow variant ---
eventfilter(action(exclude),name(DeviceStateChange),header(Device),method(starts_with)) = Queue:
eventfilter(action(exclude),name(DeviceStateChange),header(Device),method(ends_with)) = -trunk
eventfilter(action(exclude),name(Newstate),header(ChannelState),method(regex)) = ^[0-5]$
"""


def switches(pid: int) -> int:
    """Voluntary context switches of `pid` so far (each one a sleep in epoll_wait)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Session(threading.Thread):
    def __init__(self, username: str, secret: str) -> None:
        super().__init__(daemon=True)
        self.names: Counter[str] = Counter()
        self.devices: Counter[str] = Counter()
        self.bytes = 0
        self.sock = socket.create_connection(("127.0.0.1", 5038), timeout=5)
        self.sock.sendall(f"Action: Login\r\nActionID: l1\r\nUsername: {username}\r\n"
                          f"Secret: {secret}\r\n\r\n".encode())
        self.stop_at: float | None = None
        self.counting = False

    def run(self) -> None:
        from ami_bridge.ami.protocol import NEED_DATA, AmiConnection, Event

        conn = AmiConnection()
        self.sock.settimeout(0.5)
        while True:
            try:
                data = self.sock.recv(256 * 1024)
            except TimeoutError:
                if self.stop_at is not None and time.monotonic() > self.stop_at:
                    return
                continue
            except OSError:  # closed by `one` at the end of the count
                return
            if not data:
                return
            if self.counting:
                self.bytes += len(data)
            conn.receive_data(data)
            while (msg := conn.next_event()) is not NEED_DATA:
                if self.counting and isinstance(msg, Event) and msg.action_id is None:
                    self.names[msg.name] += 1
                    if msg.name == "DeviceStateChange":
                        self.devices[msg.get("Device") or ""] += 1


def no_ami(config: str) -> str:
    """The e2e bridge config without its [ami] section (no session of its own)."""
    head, _, rest = config.partition("[ami]\n")
    return head + rest[rest.index("\n\n") + 2:]


def one(variant: str, rate: int, seconds: float, path: str, workdir: Path,
        bridge_ami: bool = False, profile: bool = False,
        read_pause: str | None = None) -> dict[str, Any]:
    from harness.asterisk import DEFAULT_CONF_SRC, Asterisk
    from harness.sipp import SippUas, run_uac

    pjsip = (DEFAULT_CONF_SRC / "pjsip.conf").read_text() + STATIC_PJSIP
    extra = {"pjsip.conf": pjsip, "tenants/bench-static.conf": STATIC_DIALPLAN,
             "rtp.conf": RTP_CONF}
    if variant == "narrow":
        extra["manager.d/ami-bridge.conf"] = SHIPPED.read_text() + NARROW_FILTERS
    elif variant not in ("none", "shipped"):
        extra["manager.d/ami-bridge.conf"] = Path(variant).read_text()
    ast = Asterisk(conf_src=DEFAULT_CONF_SRC, name="bench-census", agi_port=AGI_PORT,
                   extra_files=extra)
    trunk = "bench-static-trunk" if path == "static" else "acme-trunk"
    bridge = None
    if path == "routed":  # the bridge routes; the census session is the only AMI one
        workdir.mkdir(parents=True, exist_ok=True)
        cfg = workdir / f"bridge-{variant.replace('/', '_')}.toml"
        text = ACME_CONFIG.format(port=AGI_PORT, control=cfg.with_suffix(".sock"))
        cfg.write_text(text if bridge_ami else no_ami(text))
        # Ready includes the AMI resync when the config keeps its [ami] section.
        bridge = BridgeServer("census-bridge", cfg, AGI_PORT, workdir / "bridge.log",
                              env=None if read_pause is None
                              else {"AMI_BRIDGE_AMI_READ_PAUSE": read_pause})
    with ast, SippUas(5071, "bench-agent"), SippUas(5073, "bench-operator"):
        if bridge is not None:
            bridge.start()
        session = None
        if variant != "none":
            session = Session("ami-bridge", "ami-bridge-secret")
            session.start()
            time.sleep(1.0)
        run_uac(from_user=trunk, dnis="1000", calls=rate, rate=rate,
                hold_ms=HOLD_MS, port=UAC_PORT, timeout_s=40)  # warm-up, not counted
        time.sleep(1.0)
        if session is not None:
            session.counting = True
        assert ast.pid is not None
        pids = tree(ast.pid)
        b_pids = tree(bridge.pid) if bridge is not None else []
        c0 = sum(cpu_seconds(p) for p in pids)
        b0 = sum(cpu_seconds(p) for p in b_pids)
        main0 = cpu_seconds(b_pids[0]) if b_pids else 0.0
        sw0 = [switches(p) for p in b_pids]
        spies = []
        if profile and b_pids:
            import shutil
            import subprocess
            spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            for i, pid in enumerate(b_pids[:2]):
                outp = workdir / f"census_profile_{'bridge' if i == 0 else 'vts'}.txt"
                spies.append((outp, subprocess.Popen(
                    [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                     "--rate", "500", "--format", "raw", "--nonblocking", "-o", str(outp)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
        w0 = time.monotonic()
        stats = run_uac(from_user=trunk, dnis="1000",
                        calls=int(rate * seconds), rate=rate, hold_ms=HOLD_MS,
                        port=UAC_PORT, timeout_s=seconds + 30)
        time.sleep(1.5)  # the last hang-ups' events
        wall = time.monotonic() - w0
        cpu = sum(cpu_seconds(p) for p in pids) - c0
        bcpu = sum(cpu_seconds(p) for p in b_pids) - b0
        main_cpu = (cpu_seconds(b_pids[0]) - main0) if b_pids else 0.0
        sw = [switches(p) - s0 for p, s0 in zip(b_pids, sw0, strict=True)]
        for outp, spy_proc in spies:
            spy_proc.wait(60)
            if outp.exists():
                from bench.agi_load import top_frames
                outp.with_suffix(".top.txt").write_text(top_frames(outp.read_text()))
        taskprocessors = ast.rx("core show taskprocessors")
        if bridge is not None:
            bridge.stop()
        if session is not None:
            session.counting = False
            session.stop_at = time.monotonic()
            session.sock.close()
    ok = max(stats.successful, 1)
    out: dict[str, Any] = {
        "bench": "ami-census", "variant": variant, "path": path, "rate": rate,
        "calls": int(rate * seconds),
        "successful": stats.successful, "failed": stats.failed, "wall_s": round(wall, 2),
        "asterisk_cpu_ms_per_call": round(cpu / ok * 1000, 3),
        "bridge_cpu_ms_per_call": round(bcpu / ok * 1000, 3) if bridge else None,
        "bridge_main_cpu_ms_per_call": round(main_cpu / ok * 1000, 3) if bridge else None,
        # the bridge's VTS processes (its process tree but the main process)
        "vts_cpu_ms_per_call": round((bcpu - main_cpu) / ok * 1000, 3) if bridge else None,
        "bridge_ami": bridge_ami, "read_pause": read_pause,
        # voluntary context switches (= wake-ups from epoll) per call: main, VTS ...
        "wakeups_per_call": [round(x / ok, 1) for x in sw],
        "taskprocessors": [" ".join(line.split()) for line in taskprocessors.splitlines()
                           if "manager" in line],
    }
    if session is not None:
        out["events_per_call"] = round(sum(session.names.values()) / ok, 2)
        out["bytes_per_call"] = round(session.bytes / ok)
        out["by_name"] = {k: round(v / ok, 2) for k, v in session.names.most_common()}
        out["dsc_by_device"] = {k: round(v / ok, 2) for k, v in session.devices.most_common()}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ami_census")
    p.add_argument("--rate", type=int, default=120)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--variants", default="none,shipped,narrow")
    p.add_argument("--path", choices=("static", "routed"), default="static",
                   help="routed: acme-trunk -> AGI -> a bridge without [ami] -> VTS")
    p.add_argument("--bridge-ami", action="store_true",
                   help="routed: the bridge holds its own AMI session ([ami] kept)")
    p.add_argument("--profile", action="store_true", help="py-spy the bridge and its VTS")
    p.add_argument("--read-pause", default=None,
                   help="comma-separated AMI_BRIDGE_AMI_READ_PAUSE values, one run each")
    p.add_argument("--reps", type=int, default=1)
    args = p.parse_args(argv)
    workdir = REPO / "bench" / ".run" / time.strftime("%Y%m%d-%H%M%S") / "ami-census"
    for rep in range(args.reps):
        for variant in args.variants.split(","):
            for pause in (args.read_pause.split(",") if args.read_pause else [None]):
                result = one(variant, args.rate, args.seconds, args.path, workdir,
                             bridge_ami=args.bridge_ami, profile=args.profile,
                             read_pause=pause)
                result["rep"] = rep
                result["machine"] = machine()
                print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
