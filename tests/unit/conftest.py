"""Fixtures of the unit tests that need a PostgreSQL server, and their marker.

One throw-away server (harness/postgres.py, about a second to boot) for the whole test
session, started by the first test that asks for it; each test takes a fresh database of
its own from it (`PostgresServer.create_database`, about 0.1 s). A server that cannot
start fails those tests with the reason: they never skip.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.postgres import PostgresServer


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
