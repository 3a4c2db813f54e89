"""The fair end-to-end protocol shared by the drivers and bridge-cost benchmarks.

Contract. A benchmark that compares variants of the SIPp -> Asterisk -> (bridge) path
(bench/README.md, "The e2e order effect") uses these pieces instead of its own:
- `Boots`: the sandbox Asterisk, its lock taken once for the whole run and kept between
  boots, a fresh boot per variant and repetition from a config directory of the
  variant's choosing (`conf_src`: this checkout's asterisk-conf/ or a baseline's), with
  e2e-cps's static trunk and widened RTP range added (`static_files`), and fresh SIPp
  callees (agent 5071, operator 5073) with each boot: after a probe far above the knee
  a long-lived UAS carried the overload into the next variant (120/s failing on a
  fresh Asterisk right after a 400/s probe, passing when run first);
- `rotated`: the variant order of each repetition (A B C, then B C A, C A B ...);
- `Boots.probe`: one SIPp step at a rate (e2e-cps `_step`: 0 failed calls and the
  offered rate kept), tried once more when it fails (single steps vary by ~15 %), every
  attempt emitted as a `kind = "step"` record; before each attempt `settle` waits until
  the calls have drained and Asterisk, the bridge and the callees are idle again, so a
  probe does not pay for the backlog of the one before (`settle_s` in the record);
- `knee`: the highest passing rate of a grid above the CPU step's rate, by bisection;
- `spread`: median, min, max and the per-repetition values of one figure.
A variant without a bridge passes `NoBridge()` (its CPU reads as 0).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import Progress, emit, median, tree, tree_cpu
from bench.e2e_cps import RTP_CONF, STATIC_DIALPLAN, STATIC_PJSIP, _drain, _step

# The protocol's minimum (issue 14): fewer repetitions give medians that do not compare.
REPS = 3
# The callees' SIPp ports (tests/sipp, pjsip.conf's acme-agent and acme-operator).
CALLEE_PORTS = {"agent": 5071, "operator": 5073}
# A UAS quit waits for its calls to end; after an overload some never do (it is killed).
CALLEE_STOP_S = 3.0
# Settling between probes: idle = the measured processes together below IDLE_CORES of a
# core over one SETTLE_WINDOW_S window (an idle Asterisk with its bridge used ~0.02
# here); after SETTLE_TIMEOUT_S the probe runs anyway and the record shows it.
SETTLE_TIMEOUT_S = 20.0
SETTLE_WINDOW_S = 0.5
IDLE_CORES = 0.1
STATIC_TRUNK = "bench-static-trunk"
ROUTED_TRUNK = "acme-trunk"

Measure = Callable[[Any, Any, str, int, float], dict[str, Any]]


def rotated(variants: tuple[str, ...], rep: int) -> list[str]:
    """The order of repetition `rep`: A B C, then B C A, then C A B ..."""
    k = rep % len(variants)
    return [*variants[k:], *variants[:k]]


def grid(lo: int, hi: int, res: int) -> list[int]:
    return list(range(lo, hi + 1, res))


def find_knee(passes: Callable[[int], bool], rates: list[int]) -> int:
    """The highest rate of `rates` (ascending) for which `passes(rate)` holds, by
    bisection, taking the rate before the first one as passed and past the last as
    failed (the search assumes one threshold; noise is what the repetitions are for)."""
    good, bad = -1, len(rates)
    while bad - good > 1:
        mid = (good + bad) // 2
        if passes(rates[mid]):
            good = mid
        else:
            bad = mid
    return rates[good] if good >= 0 else 0


def knee(passes: Callable[[int], bool], rates: list[int], *, cpu_rate: int,
         cpu_passed: bool) -> int:
    """The knee over the grid rates above `cpu_rate`, the CPU step counting as the first
    passed rate: 0 when the CPU step failed, `cpu_rate` when nothing above it passed."""
    if not cpu_passed:
        return 0
    return find_knee(passes, [r for r in rates if r > cpu_rate]) or cpu_rate


def spread(values: list[float]) -> dict[str, Any]:
    """Median, min, max and the values themselves (in rep order)."""
    if not values:
        return {"median": None, "min": None, "max": None, "each": []}
    return {"median": round(median(values), 3), "min": min(values), "max": max(values),
            "each": values}


def static_files(conf_src: Path) -> dict[str, str]:
    """The files every boot adds to `conf_src`: e2e-cps's static trunk and its venue,
    and the widened RTP range (bench/e2e_cps.py RTP_CONF)."""
    pjsip = (conf_src / "pjsip.conf").read_text() + STATIC_PJSIP
    return {"pjsip.conf": pjsip, "tenants/bench-static.conf": STATIC_DIALPLAN,
            "rtp.conf": RTP_CONF}


def estimated_probes(rates: list[int], cpu_rate: int) -> int:
    """SIPp steps per variant and repetition for the progress bar: the CPU step and
    ~log2 of the grid above it (retries come on top)."""
    return 1 + max(1, len([r for r in rates if r > cpu_rate]).bit_length())


class NoBridge:
    """A variant's bridge when none runs (static): its CPU reads as 0."""

    running = False

    def stop(self) -> None:
        pass


class Boots:
    """The sandbox Asterisk of one benchmark run: the lock held from the first boot to
    `stop`, a fresh boot per `boot` call."""

    def __init__(self, *, bench: str, name: str, agi_port: int, step_s: float,
                 sink: Any, bar: Progress) -> None:
        from harness.asterisk import DEFAULT_CONF_SRC, Asterisk

        self.bench, self.name, self.step_s, self.sink, self.bar = (bench, name, step_s,
                                                                   sink, bar)
        self.ast = Asterisk(conf_src=DEFAULT_CONF_SRC, name=name, agi_port=agi_port,
                            extra_files=static_files(DEFAULT_CONF_SRC))
        self.callees: list[Any] = []
        self.records: list[dict[str, Any]] = []
        # The first boot waits for the sandbox lock (other runs' tests): not bench time.
        self.lock_wait_s: float | None = None

    def boot(self, conf_src: Path, files: dict[str, str]) -> float:
        """A fresh Asterisk from `conf_src` plus `files` (relative paths -> text), and
        fresh callees."""
        from harness.sipp import SippUas

        self._stop_callees()
        self.ast.stop(keep_lock=True)
        self.ast.conf_src = conf_src
        self.ast.extra_files = dict(files)
        started = time.monotonic()
        self.ast.start()
        if self.lock_wait_s is None:
            self.lock_wait_s = round(time.monotonic() - started
                                     - (self.ast.boot_time_s or 0.0), 1)
        for role, port in CALLEE_PORTS.items():
            uas = SippUas(port, f"{self.name}-{role}")
            uas.start()
            self.callees.append(uas)
        return self.ast.boot_time_s or 0.0

    def _stop_callees(self) -> None:
        from harness.asterisk import SandboxError

        callees, self.callees = self.callees, []
        for uas in callees:
            with contextlib.suppress(SandboxError):  # not done in time: killed
                uas.stop(CALLEE_STOP_S)

    def stop(self) -> None:
        try:
            self._stop_callees()
        finally:
            self.ast.stop()

    def settle(self, bridge: Any) -> float:
        """Wait until no call is left and Asterisk, the bridge (with its VTS) and the
        callees are idle; the seconds waited."""
        started = time.monotonic()
        _drain(self.ast, SETTLE_TIMEOUT_S)
        pids = [*tree(self.ast.pid), *(tree(bridge.pid) if bridge.running else []),
                *(uas.pid for uas in self.callees if uas.pid is not None)]
        while time.monotonic() - started < SETTLE_TIMEOUT_S:
            before = tree_cpu(pids)
            time.sleep(SETTLE_WINDOW_S)
            after = tree_cpu(pids)
            if sum(after[p] - before[p] for p in pids) / SETTLE_WINDOW_S < IDLE_CORES:
                break
        return round(time.monotonic() - started, 2)

    def probe(self, bridge: Any, variant: str, rep: int, rate: int, purpose: str, *,
              trunk: str, measure: Measure = _step) -> dict[str, Any]:
        """One SIPp step at `rate` (tried once more if it fails); the last attempt's
        figures. `measure(ast, bridge, trunk, rate, step_s)` runs the step."""
        r: dict[str, Any] = {}
        for attempt in range(2):
            settle_s = self.settle(bridge)
            r = measure(self.ast, bridge, trunk, rate, self.step_s)
            rec = {"bench": self.bench, "kind": "step", "variant": variant, "rep": rep,
                   "purpose": purpose, "attempt": attempt, "step_s": self.step_s,
                   "settle_s": settle_s, **r}
            self.records.append(rec)
            emit(rec, sink=self.sink)
            self.bar.log(f"{self.bench} {variant} rep {rep} {purpose} {rate}/s: failed "
                         f"{r['failed']}, achieved {r['achieved_cps']}/s, Asterisk "
                         f"{r['asterisk_cpu_ms_per_call']} ms/call, bridge "
                         f"{r['bridge_cpu_ms_per_call']} ms/call")
            if r["passed"]:
                break
        self.bar.step(f"{variant} {rate}/s {'ok' if r['passed'] else 'failed'}")
        return r
