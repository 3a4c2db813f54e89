"""Fixtures for integration tests against the sandbox Asterisk 22 and SIPp.

Policy: a test marked `asterisk` FAILS (never skips) when the sandbox is missing or the
run lacks root, so a broken environment cannot pass as green; `make test` provisions the
sandbox first. `asterisk` is one Asterisk per test module whose venues ask the FastAGI
server at 127.0.0.1:`AGI_PORT` (4573, as in examples/bridge.toml; a test that wants a
bridge listens on `asterisk.agi_port`). `driver` runs a module's tests once per routing
driver of tests/integration/drivers.py (ids `[fastagi]`, ...): that module's Asterisk
gets the example venues rendered for the driver once, not per test. `uas` gives each
test four fresh SIPp UASes, so their counters are per test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.asterisk import DEFAULT_CONF_SRC, Asterisk, sandbox_ready, sandbox_root
from harness.bridge import BridgeProcess
from harness.sipp import SippUas
from tests.integration.drivers import DRIVERS, Driver, use_driver

AGI_PORT = 4573
# Destination name -> SIPp UAS port, as in asterisk-conf/pjsip.conf.
UAS_PORTS = {
    "acme-agent": 5071,
    "globex-agent": 5072,
    "acme-operator": 5073,
    "globex-operator": 5074,
}


def _sandbox_problem() -> str | None:
    if os.geteuid() != 0:
        return "integration tests need root (chroot into the sandbox); run them as root"
    if not sandbox_ready():
        return (
            f"sandbox not provisioned at {sandbox_root()}; "
            "run `sudo scripts/provision-sandbox` (make test does it first)"
        )
    return None


@pytest.fixture(autouse=True)
def _require_sandbox(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("asterisk") is not None:
        problem = _sandbox_problem()
        if problem is not None:
            pytest.fail(problem, pytrace=False)


@pytest.fixture(scope="module")
def asterisk(request: pytest.FixtureRequest) -> Iterator[Asterisk]:
    problem = _sandbox_problem()
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    name = "it-" + request.module.__name__.rsplit(".", 1)[-1].replace("_", "-")
    with Asterisk(conf_src=DEFAULT_CONF_SRC, name=name, agi_port=AGI_PORT) as ast:
        yield ast


@pytest.fixture(scope="module", params=DRIVERS, ids=str)
def driver(request: pytest.FixtureRequest, asterisk: Asterisk) -> Iterator[Driver]:
    """Each driver in turn; pytest groups a module's tests by it, so the re-render and
    `dialplan reload` happen once per driver (and the shipped fragments come back)."""
    with use_driver(asterisk, request.param) as chosen:
        yield chosen


@pytest.fixture
def uas() -> Iterator[dict[str, SippUas]]:
    started: dict[str, SippUas] = {}
    try:
        for name, port in UAS_PORTS.items():
            started[name] = SippUas(port, name)
            started[name].start()
        yield started
    finally:
        errors = []
        for phone in started.values():
            try:
                phone.stop()
            except Exception as exc:  # stop them all, report the first failure
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def run_bridge(asterisk: Asterisk, tmp_path: Path) -> Iterator[Any]:
    started: list[BridgeProcess] = []

    def start(config: Path, **kwargs: Any) -> BridgeProcess:
        process = BridgeProcess(config, log_path=tmp_path / "bridge.log", **kwargs)
        started.append(process)
        process.start()
        return process

    yield start
    for process in started:
        process.stop()
