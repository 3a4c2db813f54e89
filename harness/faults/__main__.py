"""`python -m harness.faults run [--short] [--only NAME]` and `python -m harness.faults report`.

`run` appends one JSON line per scenario (and one for the hostile-input families) to
the results file (default bench/results/faults.jsonl), all tagged with the same run id,
and prints a table; it exits 1 when a scenario missed a target. `report` rewrites
docs/reliability.md from the latest run in that file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path

from harness.asterisk import REPO_ROOT, SandboxError, sandbox_ready
from harness.bridge import BridgeError
from harness.faults import families, report
from harness.faults.scenarios import BY_NAME, SCENARIOS, FaultResult, run_scenario

RESULTS = REPO_ROOT / "bench" / "results" / "faults.jsonl"
DOC = REPO_ROOT / "docs" / "reliability.md"


def table(results: list[FaultResult]) -> str:
    header = ["scenario", "placed", "failed", "ast-dropped", "default", "p99 acme/globex ms",
              "leaks", "channels", "ok"]
    rows = [header]
    for r in results:
        p99 = "/".join(f"{c.response_p99_ms:.0f}" if c.response_p99_ms is not None else "-"
                       for c in r.calls.values())
        leaks = ",".join(f"{k}{v:+d}" for k, v in r.leaks.items()) + (
            f",orphans+{r.orphans}" if r.orphans else "")
        rows.append([r.scenario, str(r.placed), str(r.failed), str(r.asterisk_dropped),
                     str(r.default_routed), p99, leaks, str(r.channels_after),
                     "yes" if r.ok else "NO: " + "; ".join(r.problems)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
                     for row in rows)


def run(args: argparse.Namespace) -> int:
    if not sandbox_ready():
        print("faults: the sandbox is not provisioned (make sandbox)", file=sys.stderr)
        return 2
    names = args.only or [s.name for s in SCENARIOS]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        print(f"faults: unknown scenario(s) {unknown}; known: {list(BY_NAME)}", file=sys.stderr)
        return 2
    run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + ("-short" if args.short else "")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    results: list[FaultResult] = []
    with tempfile.TemporaryDirectory(prefix="abf-") as tmp:
        for name in names:
            print(f"faults: {name} ...", file=sys.stderr, flush=True)
            try:
                result = run_scenario(BY_NAME[name], short=args.short, run_id=run_id,
                                      workdir=Path(tmp) / name)
            except (SandboxError, BridgeError) as exc:
                print(f"faults: {name} could not run: {exc}", file=sys.stderr)
                return 1
            results.append(result)
            _append(args.results, result.to_json())
            print(f"faults: {name}: {'ok' if result.ok else result.problems}",
                  file=sys.stderr, flush=True)
    if not args.no_families:
        print("faults: counting the hostile-input families (pytest) ...", file=sys.stderr)
        _append(args.results, {"run": run_id, "families": families.run_families()})
    print(table(results))
    return 0 if all(r.ok for r in results) else 1


def _append(path: Path, record: dict[str, object]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record, separators=(",", ":")) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.faults",
                                     description="The fault run of docs/reliability.md.")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run the scenarios, append results, print a table")
    run_p.add_argument("--short", action="store_true",
                       help="the short variants (6-10 s at 10 + 10 calls/s), as in make test")
    run_p.add_argument("--only", action="append", metavar="NAME",
                       help=f"run only this scenario (repeatable): {', '.join(BY_NAME)}")
    run_p.add_argument("--results", type=Path, default=RESULTS,
                       help=f"JSON lines file to append to (default {RESULTS})")
    run_p.add_argument("--no-families", action="store_true",
                       help="do not run the hostile-input test families")
    rep_p = sub.add_parser("report", help="regenerate docs/reliability.md from the latest run")
    rep_p.add_argument("--results", type=Path, default=RESULTS)
    rep_p.add_argument("--out", type=Path, default=DOC)
    args = parser.parse_args(argv)
    if args.command == "run":
        return run(args)
    text = report.render(report.latest_run(args.results))
    args.out.write_text(text, encoding="utf-8")
    print(f"faults: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
