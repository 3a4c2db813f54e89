"""The call mix of the fault run: SIPp trunks calling two tenants, SIPp phones answering.

Contract. A :class:`Caller` is one SIPp UAC (a carrier trunk of one tenant) placing
`rate` calls/s for `duration_s` (optionally starting `start_s` into the scenario), with
answered calls held `hold_ms` (or a random hold / a random CANCEL through a scenario
substitution). :class:`Load` starts the four phones of asterisk-conf/pjsip.conf (SIPp
UASes) and the callers, and `finish()` waits for every caller, stops the phones and
returns per tenant what SIPp counted (:class:`TenantCalls`: calls placed, successful,
failed by SIPp's own cause counters, rejected responses, response-time percentiles from
SIPp's per-call `-trace_rtt` dump, mean call length) and per phone how many calls
arrived there. Every figure is SIPp's; nothing is inferred.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.sipp import SippStats, SippUac, SippUas, start_uac

# asterisk-conf/pjsip.conf: the phones (destination -> SIPp UAS port).
PHONES = {"acme-agent": 5071, "globex-agent": 5072,
          "acme-operator": 5073, "globex-operator": 5074}
TENANTS = ("acme", "globex")
# SIPp's -timeout beyond the callers' own duration: the last calls' hold and retransmits
# (an INVITE retransmitted while Asterisk restarts lives up to 32 s, RFC 3261 timer B).
SIPP_TIMEOUT_MARGIN_S = 60.0
# Write every response time as it is measured (SIPp's default batches 200 of them).
RTT_ARGS = ("-trace_rtt", "-rtt_freq", "1")
# Which SIPp response codes the callers count as rejections (tests/sipp/uac.xml).
REJECT_CODES = ("486", "503", "480", "403", "404", "488", "500", "603")


@dataclass(frozen=True)
class Caller:
    tenant: str
    rate: float
    duration_s: float
    hold_ms: int
    port: int
    dnis: str = "100"
    start_s: float = 0.0
    scenario: str = "uac.xml"
    substitutions: Mapping[str, str] = field(default_factory=dict)
    label: str = ""

    @property
    def calls(self) -> int:
        return max(1, round(self.rate * self.duration_s))

    @property
    def name(self) -> str:
        return self.label or f"{self.tenant}-{self.scenario.removesuffix('.xml')}"


@dataclass(frozen=True)
class TenantCalls:
    """What one tenant's callers counted (SIPp's figures, summed over its callers)."""

    placed: int
    successful: int
    failed: int
    failed_by_cause: dict[str, int]
    rejected: dict[str, int]
    response_p50_ms: float | None
    response_p99_ms: float | None
    response_mean_ms: float | None
    call_length_mean_ms: float | None


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def rtt_values(workdir: Path) -> list[float]:
    """Response times (ms) from SIPp's `*_rtt.csv` dumps: `Date_ms;response_time_ms;rtd_no`."""
    values = []
    for path in sorted(workdir.glob("*_rtt.csv")):
        for line in path.read_text().splitlines()[1:]:
            parts = line.strip().split(";")
            if len(parts) >= 2:
                try:
                    values.append(float(parts[1]))
                except ValueError:
                    continue
    return values


def _duration_ms(text: str) -> float | None:
    """SIPp's `HH:MM:SS:uuuuuu` duration as milliseconds."""
    try:
        hours, minutes, seconds, micros = (int(p) for p in text.split(":"))
    except ValueError:
        return None
    return (hours * 3600 + minutes * 60 + seconds) * 1000 + micros / 1000


def summarise(runs: Sequence[tuple[SippStats, list[float]]]) -> TenantCalls:
    causes: dict[str, int] = {}
    rejected: dict[str, int] = {}
    rtts: list[float] = []
    lengths: list[tuple[int, float]] = []
    for stats, values in runs:
        for cause, n in stats.failure_reasons.items():
            if cause != "FailedCall":  # the total of the causes, not one
                causes[cause] = causes.get(cause, 0) + n
        for code in REJECT_CODES:
            if (n := stats.received(code)):
                rejected[code] = rejected.get(code, 0) + n
        rtts.extend(values)
        length = _duration_ms(stats.raw.get("CallLength(C)", ""))
        if length is not None and stats.successful:
            lengths.append((stats.successful, length))
    weight = sum(n for n, _ in lengths)
    return TenantCalls(
        placed=sum(s.total for s, _ in runs), successful=sum(s.successful for s, _ in runs),
        failed=sum(s.failed for s, _ in runs), failed_by_cause=causes, rejected=rejected,
        response_p50_ms=percentile(rtts, 50), response_p99_ms=percentile(rtts, 99),
        response_mean_ms=sum(rtts) / len(rtts) if rtts else None,
        call_length_mean_ms=sum(n * v for n, v in lengths) / weight if weight else None)


class Load:
    """The phones and the callers of one scenario; `finish()` gives what SIPp counted."""

    def __init__(self, callers: Sequence[Caller]) -> None:
        self.callers = list(callers)
        self._phones: dict[str, SippUas] = {}
        self._running: list[tuple[Caller, SippUac]] = []
        self._timers: list[threading.Timer] = []
        self._lock = threading.Lock()
        self._errors: list[BaseException] = []
        self.started_at = 0.0

    def start(self) -> None:
        for name, port in PHONES.items():
            phone = SippUas(port, f"faults-{name}")
            phone.start()
            self._phones[name] = phone
        self.started_at = time.monotonic()
        for caller in self.callers:
            if caller.start_s > 0:
                timer = threading.Timer(caller.start_s, self._start_caller, (caller,))
                timer.daemon = True
                self._timers.append(timer)
                timer.start()
            else:
                self._start_caller(caller)

    def add(self, caller: Caller) -> None:
        """Start one more caller now (a burst injected by a fault)."""
        self.callers.append(caller)
        self._start_caller(caller)

    def _start_caller(self, caller: Caller) -> None:
        try:
            uac = start_uac(from_user=f"{caller.tenant}-trunk", dnis=caller.dnis,
                            calls=caller.calls, rate=caller.rate, hold_ms=caller.hold_ms,
                            port=caller.port, scenario=caller.scenario,
                            substitutions=caller.substitutions,
                            timeout_s=caller.duration_s + SIPP_TIMEOUT_MARGIN_S,
                            extra_args=RTT_ARGS)
        except BaseException as exc:  # a timer thread: hand the error to finish()
            with self._lock:
                self._errors.append(exc)
            return
        with self._lock:
            self._running.append((caller, uac))

    def finish(self) -> tuple[dict[str, TenantCalls], dict[str, int]]:
        for timer in self._timers:
            timer.join()
        if self._errors:
            self.abort()
            raise self._errors[0]
        per_tenant: dict[str, list[tuple[SippStats, list[float]]]] = {t: [] for t in TENANTS}
        try:
            for caller, uac in self._running:
                stats = uac.wait()
                per_tenant.setdefault(caller.tenant, []).append((stats, rtt_values(uac.workdir)))
        finally:
            arrived = {name: phone.stop().successful for name, phone in self._phones.items()}
        return {t: summarise(runs) for t, runs in per_tenant.items()}, arrived

    def abort(self) -> None:
        for timer in self._timers:
            timer.cancel()
        for _, uac in self._running:
            uac.kill()
        for phone in self._phones.values():
            try:
                phone.stop(timeout_s=5.0)
            except Exception:  # already failing; leave no SIPp behind
                phone._sipp.kill()
