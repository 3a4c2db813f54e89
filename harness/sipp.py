"""SIPp in the sandbox root: a UAS per phone, a UAC per carrier trunk, and their counters.

Contract. SIPp runs as short-lived harness children (:func:`harness.procs.spawn`: they die
with the harness) chrooted into the sandbox, each in its own working directory
``<root>/run/ami-bridge/sipp/<name>/`` that holds its scenario (copied from
``tests/sipp/``), its log, and the files SIPp writes there. :class:`SippUas` plays an
agent's or operator's phone on one port and :func:`run_uac` / :func:`start_uac` play a
carrier trunk; both report :class:`SippStats`: SIPp's final statistics dump
(``-trace_stat``) and its per-message counts (``-trace_counts``: how many 486, 503, ...
each scenario step received), written when SIPp quits gracefully. A phone or trunk of
another Asterisk slot (:func:`harness.asterisk.slot_host`) binds that slot's address
(`host`) and its working directory is named for it, so the same phones of two slots run
side by side.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import IO, Any, Self

from harness.asterisk import (
    ASTERISK_SIP,
    DEFAULT_HOST,
    INSIDE_RUN_DIR,
    REPO_ROOT,
    SandboxError,
    check_name,
    fresh_dir,
    require_ready,
    sandbox_root,
)
from harness.procs import pids_in_root, spawn, tail, terminate, udp_bound

SIPP_SCENARIO_DIR = REPO_ROOT / "tests" / "sipp"
SIPP_BIN = "/usr/bin/sipp"
DEFAULT_UAC_PORT = 5090
# How long a started SIPp may take to bind its SIP port.
SIPP_BIND_TIMEOUT_S = 5.0
# Grace for SIPp processes left by an earlier run of the same working directory.
STALE_GRACE_S = 5.0
# What SIPp names the -trace_counts file in its working directory.
COUNTS_GLOB = "*_counts.csv"

_NO_FILES: Mapping[str, str] = MappingProxyType({})
_EMPTY_COUNTS: Mapping[str, int] = MappingProxyType({})
_RECV_RE = re.compile(r"^\d+_(?P<what>[^_]+)_Recv$")


def _last_row(text: str, what: str) -> dict[str, str]:
    """Header and last data line of a SIPp ';'-separated CSV dump, as a mapping."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        raise SandboxError(f"SIPp {what} file has no data line: {text[:200]!r}")
    header = lines[0].rstrip(";").split(";")
    values = lines[-1].rstrip(";").split(";")
    return dict(zip(header, values, strict=False))


@dataclass(frozen=True)
class SippStats:
    """SIPp's cumulative counters (-trace_stat) and per-step message counts (-trace_counts)."""

    successful: int
    failed: int
    total: int
    raw: Mapping[str, str]
    counts: Mapping[str, int] = field(default_factory=lambda: _EMPTY_COUNTS)

    @classmethod
    def from_csv(cls, text: str, counts_text: str | None = None) -> SippStats:
        raw = _last_row(text, "statistics")
        counts: Mapping[str, int] = _EMPTY_COUNTS
        if counts_text is not None:
            row = _last_row(counts_text, "message counts")
            try:
                counts = MappingProxyType({k: int(v) for k, v in row.items()
                                           if k not in ("CurrentTime", "ElapsedTime")})
            except ValueError as exc:
                raise SandboxError(f"SIPp message counts not understood ({exc}): {row}") from exc
        try:
            return cls(
                successful=int(raw["SuccessfulCall(C)"]),
                failed=int(raw["FailedCall(C)"]),
                total=int(raw["TotalCallCreated"]),
                raw=MappingProxyType(raw),
                counts=counts,
            )
        except (KeyError, ValueError) as exc:
            raise SandboxError(f"SIPp statistics line not understood ({exc}): {raw}") from exc

    def received(self, message: str) -> int:
        """How many `message` (a response code such as "486", or a request name) the
        scenario's receive steps took in, summed over the steps that expect it."""
        return sum(n for key, n in self.counts.items()
                   if (m := _RECV_RE.match(key)) is not None and m.group("what") == message)

    @property
    def response_time_s(self) -> float:
        """Mean INVITE -> 200 OK time over all calls (SIPp's ResponseTime1(C)), seconds."""
        text = self.raw.get("ResponseTime1(C)", "")
        try:
            hours, minutes, seconds, micros = (int(part) for part in text.split(":"))
        except ValueError:
            raise SandboxError(f"SIPp response time not understood: {text!r}") from None
        return hours * 3600 + minutes * 60 + seconds + micros / 1e6

    @property
    def failure_reasons(self) -> dict[str, int]:
        """Non-zero Failed*(C) counters, e.g. {'FailedTimeoutOnRecv': 3}."""
        return {
            key[: -len("(C)")]: int(value)
            for key, value in self.raw.items()
            if key.startswith("Failed") and key.endswith("(C)") and value not in ("", "0")
        }


class _Sipp:
    """One SIPp process in the root, with its scenario, log and statistics in `workdir`."""

    def __init__(
        self,
        *,
        root: Path,
        workdir_name: str,
        scenario: str,
        port: int,
        substitutions: Mapping[str, str] = _NO_FILES,
        host: str = DEFAULT_HOST,
    ) -> None:
        if host != DEFAULT_HOST:
            workdir_name = f"{workdir_name}-{host}"
        check_name(workdir_name)
        self.host = host
        self.substitutions = dict(substitutions)
        self.root = root
        self.port = port
        self.inside_dir = f"{INSIDE_RUN_DIR}/sipp/{workdir_name}"
        self.workdir = root / self.inside_dir.lstrip("/")
        self.scenario = scenario
        self.log_path = self.workdir / "sipp.log"
        self._stats_path = self.workdir / "stats.csv"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, extra_args: list[str], *, wait_bound: bool) -> None:
        require_ready(self.root)
        stale = pids_in_root(self.root, f"{self.inside_dir}/")
        if stale:
            terminate(stale, STALE_GRACE_S)
        fresh_dir(self.workdir)
        text = (SIPP_SCENARIO_DIR / self.scenario).read_text()
        for marker, replacement in self.substitutions.items():
            if marker not in text:
                raise SandboxError(f"{self.scenario}: marker {marker!r} not found")
            text = text.replace(marker, replacement)
        (self.workdir / self.scenario).write_text(text)
        d = self.inside_dir
        argv = [
            SIPP_BIN,
            "-sf", f"{d}/{self.scenario}",
            "-i", self.host, "-p", str(self.port),
            # Media port in the SDP, distinct per SIPp so several can run at once.
            "-mp", str(self.port + 10000),
            "-nostdin",
            "-trace_stat", "-stf", f"{d}/stats.csv",
            # Written to the working directory (SIPp has no option to name it).
            "-trace_counts",
            "-trace_err",
            *extra_args,
        ]  # fmt: skip
        self._log = self.log_path.open("wb")
        self._proc = spawn(argv, root=self.root, cwd=d, stdin=subprocess.DEVNULL,
                           stdout=self._log, stderr=subprocess.STDOUT)
        if wait_bound:
            self._wait_bound()

    def _wait_bound(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + SIPP_BIND_TIMEOUT_S
        while not udp_bound(self.port, self.host):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise SandboxError(
                    f"SIPp did not bind {self.host}:{self.port}; tail of {self.log_path}:\n"
                    f"{tail(self.log_path)}"
                )
            time.sleep(0.02)

    def wait(self, timeout_s: float) -> SippStats:
        """Wait for SIPp to exit by itself and read its final statistics."""
        assert self._proc is not None
        try:
            rc = self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise SandboxError(
                f"SIPp on port {self.port} still running after {timeout_s} s; killed. "
                f"Tail of {self.log_path}:\n{tail(self.log_path)}"
            ) from None
        self._close_log()
        # 0: all calls succeeded, 1: some failed; anything else is SIPp itself failing.
        if rc not in (0, 1) or not self._stats_path.exists():
            raise SandboxError(
                f"SIPp on port {self.port} exited with {rc}; tail of {self.log_path}:\n"
                f"{tail(self.log_path)}"
            )
        counts = sorted(self.workdir.glob(COUNTS_GLOB))
        return SippStats.from_csv(self._stats_path.read_text(),
                                  counts[-1].read_text() if counts else None)

    def quit(self, timeout_s: float) -> SippStats:
        """Graceful quit (SIGUSR1: no new calls, let current ones end), final statistics."""
        assert self._proc is not None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGUSR1)
        return self.wait(timeout_s)

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class SippUas:
    """A SIPp UAS (tests/sipp/uas.xml) answering every call on 127.0.0.1:`port`.

    A context manager; `stop()` returns how many calls it answered and completed.
    `scenario` picks another callee from tests/sipp/: uas_busy.xml answers 486 Busy
    Here, uas_noanswer.xml rings until the call is cancelled (both count each call they
    took to its end as successful). `host`: the address of its Asterisk's slot.
    """

    def __init__(self, port: int, name: str, *, root: Path | None = None,
                 scenario: str = "uas.xml", host: str = DEFAULT_HOST) -> None:
        self.port = port
        self.name = name
        self._sipp = _Sipp(root=root or sandbox_root(), workdir_name=f"uas-{name}",
                           scenario=scenario, port=port, host=host)
        self.stats: SippStats | None = None

    @property
    def log_path(self) -> Path:
        return self._sipp.log_path

    @property
    def pid(self) -> int | None:
        return self._sipp.pid

    def start(self) -> None:
        self._sipp.start([], wait_bound=True)

    def stop(self, timeout_s: float = 30.0) -> SippStats:
        if self.stats is None:
            self.stats = self._sipp.quit(timeout_s)
        return self.stats

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.stats is None:
            try:
                self.stop()
            except SandboxError:
                self._sipp.kill()
                if exc is None:
                    raise


class SippUac:
    """A running SIPp UAC started by :func:`start_uac`; `wait()` gives its statistics."""

    def __init__(self, sipp: _Sipp, timeout_s: float) -> None:
        self._sipp = sipp
        self._timeout_s = timeout_s

    @property
    def log_path(self) -> Path:
        return self._sipp.log_path

    @property
    def workdir(self) -> Path:
        """Where SIPp writes its files (statistics, -trace_rtt dumps), seen from the host."""
        return self._sipp.workdir

    def wait(self) -> SippStats:
        # SIPp's own -timeout fires first; the margin covers its final dump and exit.
        return self._sipp.wait(self._timeout_s + 10.0)

    def kill(self) -> None:
        self._sipp.kill()


_DTMF_MARKER = "<!-- ami-bridge:dtmf"
_DTMF_RE = re.compile(r"[0-9*#A-D]{1,90}")
# One SIP INFO per digit, as sent by most phones configured for dtmf_mode=info.
_DTMF_INFO = """
  <send retrans="500">
    <![CDATA[
      INFO sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[$from_user]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} INFO
      Contact: <sip:[$from_user]@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: application/dtmf-relay
      Content-Length: [len]

      Signal={digit}
      Duration=100
    ]]>
  </send>
  <recv response="200" />
  <pause milliseconds="100" />
"""


def _dtmf_info_requests(digits: str) -> str:
    if not _DTMF_RE.fullmatch(digits):
        raise SandboxError(f"bad DTMF string {digits!r}: 1 to 90 of 0-9 * # A-D")
    blocks = [_DTMF_INFO.format(cseq=2 + i, digit=d) for i, d in enumerate(digits)]
    return "".join(blocks) + _DTMF_MARKER


def start_uac(
    *,
    from_user: str,
    dnis: str,
    calls: int,
    rate: float,
    hold_ms: int = 200,
    port: int = DEFAULT_UAC_PORT,
    timeout_s: float = 60.0,
    dtmf: str | None = None,
    root: Path | None = None,
    scenario: str = "uac.xml",
    substitutions: Mapping[str, str] = _NO_FILES,
    extra_args: Sequence[str] = (),
    target: str = ASTERISK_SIP,
    host: str = DEFAULT_HOST,
) -> SippUac:
    """Start placing `calls` calls at `rate` calls/s from trunk `from_user` to `dnis`.

    With `dtmf`, each answered call keys those digits as SIP INFO, 100 ms apart, before
    its hold time (tests/sipp/uac_dtmf.xml). `scenario` picks another caller from
    tests/sipp/: uac_cancel.xml hangs up after `hold_ms` while still ringing (an
    abandon), uac_reject.xml succeeds only when the call is rejected (486 or 503; which
    one is in `SippStats.received`). `substitutions` rewrite the scenario's text (each
    marker must occur), e.g. its `<pause />` into a random one; `extra_args` go to SIPp
    as they are (e.g. `-trace_rtt`). `target`: the Asterisk to call (its `sip`), `host`:
    the address the trunk calls from (its slot's).
    """
    if dtmf is not None:
        scenario = "uac_dtmf.xml"
        substitutions = {**substitutions, _DTMF_MARKER: _dtmf_info_requests(dtmf)}
    sipp = _Sipp(
        root=root or sandbox_root(),
        workdir_name=f"uac-{port}",
        scenario=scenario,
        port=port,
        substitutions=substitutions,
        host=host,
    )
    args = [
        target,
        "-s", dnis,
        "-set", "from_user", from_user,
        "-m", str(calls),
        "-r", f"{rate:g}",
        "-d", str(hold_ms),
        "-timeout", f"{timeout_s:g}s",
        *extra_args,
    ]  # fmt: skip
    sipp.start(args, wait_bound=False)
    return SippUac(sipp, timeout_s)


def run_uac(**options: Any) -> SippStats:
    """Place the calls (the keyword arguments of :func:`start_uac`) and return SIPp's
    final counters."""
    return start_uac(**options).wait()
