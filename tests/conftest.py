"""Hypothesis profiles, and the test PostgreSQL server.

AMI_BRIDGE_HYPOTHESIS_PROFILE=long loads one of 10,000 examples per property test (those
that fix no count of their own; the VTS message and tenant isolation properties take the
larger of it and their few hundred: `examples`).

One throw-away PostgreSQL server (harness/postgres.py, about a second to boot) for the
whole test session, started by the first test that asks for it (`postgres_server`); each
test takes a fresh database or schema of its own from it. A server that cannot start
fails those tests with the reason: they never skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from harness.postgres import PostgresServer

PROFILE_ENV = "AMI_BRIDGE_HYPOTHESIS_PROFILE"

settings.register_profile("long", max_examples=10_000, deadline=None, database=None)
if os.environ.get(PROFILE_ENV):
    settings.load_profile(os.environ[PROFILE_ENV])


def examples(ordinary: int) -> int:
    """Examples for a property that runs `ordinary` many in `make test`: the larger of
    that and the loaded profile's (10,000 under `long`). Read when the test module is
    imported, after this file loaded the profile."""
    return max(ordinary, settings.default.max_examples)



def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "postgres: starts a throw-away PostgreSQL server (harness/postgres.py; "
                   "server binaries from `make postgres`)")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
    except Exception as exc:
        server.stop()
        pytest.fail(f"the test PostgreSQL server did not start: {exc}")
    try:
        yield server
    finally:
        server.stop()
