"""ami-replay: the bridge's AMI handling without Asterisk, in µs per event and per call.

`python -m bench.ami_replay [--calls N] [--agents N] [--reps N] [--profile FILE]`

The per-call event stream is the one call of `tests/data/ami/real_session.ami` (a raw
Asterisk 22.10 capture: acme-trunk -> acme-venue -> Dial operator, answered, hung up)
reduced to what the shipped `ami-bridge` manager user receives: unsolicited events
(no ActionID) whose name passes the eventfilters of asterisk-conf/manager.d/
ami-bridge.conf (17 events: 2 Newchannel, DialBegin, 3 Newstate, DialEnd, 2 BridgeEnter,
2 BridgeLeave, 2 Hangup, 5 DeviceStateChange). `--extra-devices` adds
the DeviceStateChange events of devices no tenant owns that a real system sends as
well (the `Queue:` custom states, other tenants' trunks); `--trunk-dsc 0` drops the
trunk's own DeviceStateChange events (what a Device eventfilter would do). Each call is
repeated with fresh Uniqueids, Linkedids, channel sequence numbers and bridge ids.

The bytes go through the real code path of one AMI read: `AmiConnection.receive_data`
/ `next_event` in 64 KiB chunks, `AmiClient._handle` (list-action check) ->
`AmiLink._on_event` -> `CallTracker.handle` -> the real
`Intermediary.forward_call_event` / `forward_agent_state` into a fake VTS link that
encodes each message with `ami_bridge.tenants.protocol.encode` (what `VtsLink.send` does before
writing). `--events agent_state` attaches the fake VTS with that subscription (protocol
2.1, what the shipped runtime asks for); without it the VTS gets every kind. Process CPU
time, best of `--reps`.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import re
import sys
import time
import tomllib
from pathlib import Path
from typing import Any, ClassVar

from bench.common import REPO

CORPUS = REPO / "tests" / "data" / "ami" / "real_session.ami"
FILTERED = frozenset({
    "FullyBooted", "Shutdown", "Newchannel", "Newstate", "DialBegin", "DialEnd",
    "BridgeEnter", "BridgeLeave", "LocalBridge", "Hold", "Unhold",
    "BlindTransfer", "AttendedTransfer", "Hangup", "DeviceStateChange",
    "QueueMemberStatus", "QueueMemberPause", "QueueMemberAdded", "QueueMemberRemoved"})
CHUNK = 64 * 1024

CONFIG = """
[bridge]
agi_listen = "127.0.0.1:4699"

[ami]
host = "127.0.0.1"
port = 5038
username = "ami-bridge"
secret = "x"

[vts.replay]

[tenants.acme]
targets = ["1001", "operator"]
devices = [{devices}]
rules = [{{ name = "all", targets = ["1001"] }}]

[tenants.acme.venues.acme-venue]
vts = "replay"
"""


def call_template(*, trunk_dsc: bool = True, extra_devices: int = 0) -> list[bytes]:
    """The blocks of the captured call that the bridge's manager user receives."""
    raw = CORPUS.read_bytes()
    _, _, rest = raw.partition(b"\r\n")
    out: list[bytes] = []
    for block in rest.split(b"\r\n\r\n"):
        if not block.startswith(b"Event: "):
            continue
        name = block[7:block.index(b"\r\n")].decode()
        if name not in FILTERED or name == "FullyBooted" or b"\r\nActionID:" in block:
            continue
        if name.startswith("QueueMember"):
            continue  # the capture's QueuePause actions, not part of a call
        if name == "DeviceStateChange":
            if b"Queue:" in block:
                continue
            if not trunk_dsc and b"-trunk\r\n" in block:
                continue
        out.append(block + b"\r\n\r\n")
    for i in range(extra_devices):  # devices no tenant owns: queues' custom states ...
        device = ("Queue:acme-support_avail", "Queue:acme-support_pause_PJSIP/acme-agent",
                  "PJSIP/globex-trunk")[i % 3]
        state = ("INUSE", "NOT_INUSE")[i % 2]
        out.insert(len(out) // 2, (
            f"Event: DeviceStateChange\r\nPrivilege: call,all\r\nDevice: {device}\r\n"
            f"State: {state}\r\n\r\n").encode())
    return out


_UID = re.compile(rb"1795657017\.([01])")
_SEQ = re.compile(rb"-0000000([01])\b")
_BRIDGE = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def stream(calls: int, template: list[bytes]) -> bytes:
    """`calls` copies of the call, each with fresh ids, back to back."""
    blob = b"".join(template)
    parts = [b"Asterisk Call Manager/11.0.0\r\n"]
    for n in range(calls):
        one = _UID.sub(lambda m, n=n: b"1800000000.%d" % (2 * n + int(m.group(1))), blob)
        one = _SEQ.sub(lambda m, n=n: b"-%08x" % (2 * n + int(m.group(1))), one)
        one = _BRIDGE.sub(b"%08x-0000-4000-8000-000000000000" % n, one)
        parts.append(one)
    return b"".join(parts)


class FakeLink:
    """What VtsLink.send costs before the socket: one encoded frame per message."""

    def __init__(self) -> None:
        from ami_bridge.tenants.messages import to_wire
        from ami_bridge.tenants.protocol import encode
        self.encode = lambda message: encode(to_wire(message))
        self.frames = 0
        self.bytes = 0
        self.kinds: dict[str, int] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    def send(self, message: Any) -> None:
        self.frames += 1
        self.bytes += len(self.encode(message))
        kind = str(getattr(message, "kind", None) or message.TYPE)
        self.kinds[kind] = self.kinds.get(kind, 0) + 1


class _Flag:
    def set(self) -> None:
        pass


class _Session:
    lists: ClassVar[dict[str, Any]] = {}
    booted = greeted = _Flag()
    held = None  # after the resync: events go to on_event at once

    def end(self, reason: str) -> None:
        raise RuntimeError(reason)


def build(agents: int, events: tuple[str, ...] | None = None) -> tuple[Any, FakeLink]:
    from ami_bridge.ami_link import AmiLink
    from ami_bridge.config import parse
    from ami_bridge.intermediary import Intermediary

    devices = ["PJSIP/acme-agent", "PJSIP/acme-operator",
               *(f"PJSIP/acme-a{i}" for i in range(agents))]
    text = CONFIG.format(devices=", ".join(json.dumps(d) for d in devices))
    config = parse(tomllib.loads(text), path=Path("/tmp/ami-replay.toml"))
    loop = asyncio.new_event_loop()
    intermediary = Intermediary(config=config, clock=loop)
    assert config.ami is not None
    link = AmiLink(settings=config.ami, config=config, intermediary=intermediary)
    fake = FakeLink()
    fake.loop = loop  # closed by `replay` when done
    intermediary.attach_vts("replay", fake, events=events)
    # The resync's DeviceStateList: every agent device known and idle, sent once.
    from ami_bridge.ami.protocol import Event
    link.tracker.resync([], [Event(name="DeviceStateChange", fields=(
        ("Event", "DeviceStateChange"), ("Device", d), ("State", "NOT_INUSE")))
        for d in devices])
    link._send_agent_changes()
    fake.frames = fake.bytes = 0
    fake.kinds.clear()
    return link, fake


def replay(data: bytes, agents: int,
           events: tuple[str, ...] | None = None) -> tuple[float, int, FakeLink, Any]:
    from ami_bridge.ami.protocol import NEED_DATA, AmiConnection

    link, fake = build(agents, events)
    client = link.client
    session = _Session()
    conn = AmiConnection()
    events = 0
    t0 = time.process_time()
    for i in range(0, len(data), CHUNK):
        conn.receive_data(data[i:i + CHUNK])
        while (msg := conn.next_event()) is not NEED_DATA:
            client._handle(session, msg)  # type: ignore[arg-type]
            events += 1
    cpu = time.process_time() - t0
    if fake.loop is not None:
        fake.loop.close()
    return cpu, events - 1, fake, link


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ami_replay")
    p.add_argument("--calls", type=int, default=5000)
    p.add_argument("--agents", type=int, default=0,
                   help="extra agent devices of the tenant (not in the events)")
    p.add_argument("--extra-devices", type=int, default=0,
                   help="DeviceStateChange per call of devices no tenant owns")
    p.add_argument("--trunk-dsc", type=int, default=1, help="0: drop the trunk's DSC events")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--events", default=None,
                   help="the VTS's subscription, comma-separated (protocol 2.1; the shipped "
                        "runtime: agent_state); default: none sent, every kind (2.0)")
    p.add_argument("--profile", default=None, help="write a cProfile of one rep here")
    p.add_argument("--label", default="")
    args = p.parse_args(argv)
    template = call_template(trunk_dsc=bool(args.trunk_dsc),
                             extra_devices=args.extra_devices)
    data = stream(args.calls, template)
    wanted = None if args.events is None else tuple(filter(None, args.events.split(",")))
    best = None
    for _ in range(args.reps):
        cpu, events, fake, link = replay(data, args.agents, wanted)
        best = cpu if best is None else min(best, cpu)
    assert best is not None
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        replay(data, args.agents, wanted)
        prof.disable()
        prof.dump_stats(args.profile)
    result = {
        "bench": "ami-replay", "label": args.label, "calls": args.calls,
        "events_per_call": round(events / args.calls, 2), "agents": args.agents + 2,
        "extra_devices": args.extra_devices, "trunk_dsc": bool(args.trunk_dsc),
        "vts_events": args.events,
        "us_per_call": round(best / args.calls * 1e6, 1),
        "us_per_event": round(best / events * 1e6, 2),
        "frames_per_call": round(fake.frames / args.calls, 2),
        "frame_bytes_per_call": round(fake.bytes / args.calls),
        "frames_by_kind": {k: round(v / args.calls, 2) for k, v in sorted(fake.kinds.items())},
        "live_calls_left": len(link.tracker.calls()),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
