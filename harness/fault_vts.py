"""A VTS that misbehaves on purpose, for tests and demos: `python -m harness.fault_vts`.

The shipped runtime (`ami_bridge.tenants.worker`) with its decision hook overridden:
`--behaviour rules` answers as the runtime does, `silent` never answers (the bridge's
router timer must fire), `late` answers `--late-by` seconds late (after the default
route: the bridge must refuse the reply), `foreign-target` routes every call to
`--foreign-target` (a bare value is an extension; outside the tenant's namespace the
bridge must refuse it). `--record FILE` appends every message received from the bridge
to FILE, one JSON object per line, so a test can assert what a VTS was told where the
VTS is. None of this ships in the product's runtime.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TextIO

from ami_bridge.namespace import KIND_EXTENSION
from ami_bridge.tenants import messages as m
from ami_bridge.tenants.protocol import JsonObject
from ami_bridge.tenants.worker import Worker, run

BEHAVIOURS = ("rules", "silent", "late", "foreign-target")


class FaultVts(Worker):
    events = None  # every event kind (protocol 2.1 subscription): tests read them all

    def __init__(self, *, name: str, done: asyncio.Future[None], behaviour: str,
                 late_by: float, foreign_target: m.Target, record: TextIO | None) -> None:
        super().__init__(name=name, done=done)
        self.behaviour = behaviour
        self.late_by = late_by
        self.foreign_target = foreign_target
        self._record = record

    def on_message(self, raw: JsonObject) -> None:
        if self._record is not None:
            self._record.write(json.dumps(raw, separators=(",", ":")) + "\n")
            self._record.flush()
        super().on_message(raw)

    def decide(self, handle: str) -> m.Disposition | None:
        if self.behaviour == "silent":
            return None
        if self.behaviour == "foreign-target":
            return m.RouteTo(handle, self.foreign_target)
        answer = super().decide(handle)
        if self.behaviour == "late" and answer is not None:
            asyncio.get_running_loop().call_later(self.late_by, self.send, answer)
            return None
        return answer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.fault_vts",
        description="A VTS built on ami-bridge's runtime that simulates faults (tests, demos).")
    parser.add_argument("--vts", required=True, help="the VTS name from the bridge config")
    parser.add_argument("--behaviour", choices=BEHAVIOURS, default="rules",
                        help="rules (default): evaluate the tenants' routing protocols; "
                        "silent: never answer; late: answer --late-by seconds late; "
                        "foreign-target: route every call to --foreign-target")
    parser.add_argument("--late-by", type=float, default=5.0,
                        help="seconds to delay answers with --behaviour late")
    parser.add_argument("--foreign-target", default="2001",
                        help="target (KIND:VALUE, or a bare extension) used with "
                        "--behaviour foreign-target")
    parser.add_argument("--record", metavar="FILE",
                        help="append every message received from the bridge to FILE "
                        "(one JSON object per line)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    try:
        foreign = m.Target.parse(args.foreign_target, bare=KIND_EXTENSION)
    except ValueError as exc:
        parser.error(f"--foreign-target: {exc}")
    record = open(args.record, "a", encoding="utf-8") if args.record else None  # noqa: SIM115
    try:
        return run(args.vts, args.log_level, lambda done: FaultVts(
            name=args.vts, done=done, behaviour=args.behaviour, late_by=args.late_by,
            foreign_target=foreign, record=record))
    finally:
        if record is not None:
            record.close()


if __name__ == "__main__":
    sys.exit(main())
