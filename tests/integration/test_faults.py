"""The short variants of the fault run (harness/faults, docs/reliability.md).

Each scenario of `make test-faults` in its short form: 6-10 s (its `short_s`: long enough
for its fault to happen, twice where it repeats, with calls before and after it) at
10 + 10 calls/s on one Asterisk boot shared by the module, a fresh bridge per scenario,
the faults on acme's side. Every one must end with no failed call (calls Asterisk drops
in its own restart apart), no leaked descriptor, thread, child process or task in the
bridge, no VTS outliving its bridge and no channel left in Asterisk; each also checks
that its fault really happened and had the effect it is there for. Response times are
recorded, not asserted (the run's p99 lives in docs/reliability.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ami_bridge.tenants.worker import REFUSAL_LINES_PER_INTERVAL
from harness.asterisk import Asterisk
from harness.faults import rig
from harness.faults.scenarios import (
    BY_NAME,
    SHORT_NAMES,
    SHORT_RATE,
    FaultResult,
    run_scenario,
)
from tests.integration.conftest import _sandbox_problem

pytestmark = pytest.mark.asterisk


@pytest.fixture(scope="module")
def fault_asterisk() -> Iterator[Asterisk]:
    problem = _sandbox_problem()
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    asterisk = rig.boot_asterisk(name="it-test-faults")
    try:
        yield asterisk
    finally:
        asterisk.stop()


def run_short(name: str, asterisk: Asterisk, tmp_path: Path) -> FaultResult:
    tmp_path.chmod(0o755)  # the confined VTS runs as its own uid
    result = run_scenario(BY_NAME[name], short=True, run_id="pytest", workdir=tmp_path,
                          asterisk=asterisk)
    assert result.problems == [], result.to_json()
    # The load really ran: at least 3/4 of the calls both trunks were to place.
    assert result.placed >= 0.75 * 2 * SHORT_RATE * BY_NAME[name].short_s
    assert result.channels_after == 0
    for tenant, calls in result.calls.items():
        assert calls.successful + calls.failed == calls.placed, (tenant, calls)
    if name not in ("asterisk-restart", "bridge-kill", "bridge-term"):
        # Faults on acme's side only: the untouched tenant's calls all routed by its VTS.
        assert result.arrived["globex-operator"] == 0
        assert result.calls["globex"].successful == result.calls["globex"].placed
    return result


def expect(name: str, result: FaultResult) -> None:
    """What each fault must have done (it happened, and it was felt where it should)."""
    f, counters = result.faults, result.bridge_counters
    defaulted = counters.get("defaulted", {})
    if name == "soak":
        assert result.default_routed == 0 and counters["routed"] == result.placed
    elif name == "vts-kill":
        assert f["vts_sigkill"] >= 2
        assert sum(defaulted.values()) == result.arrived["acme-operator"] > 0
    elif name == "vts-stop":
        assert f["vts_sigstop"] == 1
        assert result.arrived["acme-operator"] > 0  # default-routed while stopped
        # The resumed VTS's late answers are refused, and summarised in its log.
        assert counters["refused"] > 0
        # At most a few lines per 10 s interval the refusals span, each counting the ones
        # it stands for.
        lines = result.log["late_refusal_lines"]
        assert 1 <= lines <= 3 * REFUSAL_LINES_PER_INTERVAL < counters["refused"], result.log
    elif name == "ami-drop":
        assert f["ami_kick"] >= 2 and result.default_routed == 0
    elif name == "asterisk-restart":
        assert f["core_restart"] == 1
        # The restart was felt, and each failure is of a kind Asterisk's own: a call it
        # had up and hung up, or a call it refused (503) while stopping and booting.
        assert result.asterisk_dropped > 0
        assert set(result.failed_by_cause) <= {"FailedUnexpectedMessage",
                                               "FailedTimeoutOnRecv"}, result.failed_by_cause
    elif name == "bridge-kill":
        assert f["bridge_sigkill"] == 1 and result.orphans == 0
    elif name == "bridge-term":
        assert f["bridge_sigterm"] == 1 and f["term_exited"]
        assert f["pending_at_sigterm"] > 0  # the late VTS kept calls pending
    elif name == "cancel-bye":
        assert counters["abandoned"] > 0
        assert result.calls["acme"].failed == 0
    elif name == "agi-burst":
        assert f["burst"] == 1
        assert result.calls["acme"].placed > result.calls["globex"].placed


@pytest.mark.parametrize("name", SHORT_NAMES)
def test_fault_scenario_short(name: str, fault_asterisk: Asterisk, tmp_path: Path) -> None:
    expect(name, run_short(name, fault_asterisk, tmp_path))
