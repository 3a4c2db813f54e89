"""Fixtures shared by the loopback tests that confine a VTS for real (test_confine.py,
test_forkserver.py): the host's confinement runtime, and listeners a confined process
must not reach."""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from ami_bridge.supervision import confine


@pytest.fixture(scope="module")
def rt() -> confine.Runtime:
    runtime = confine.runtime()
    reason = confine.cannot_confine(confine.host_facts()) or confine.probe(runtime)
    if reason is not None:
        pytest.fail(f"this machine cannot confine a VTS: {reason}. These tests need root and "
                    "bubblewrap (apt-get install bubblewrap); CI has both.", pytrace=False)
    return runtime


@pytest.fixture
def listeners() -> Iterator[dict[str, Any]]:
    """A TCP listener on the host's loopback and an abstract Unix socket, both open."""
    tcp = socket.create_server(("127.0.0.1", 0))
    abstract_name = f"ami-bridge-test-{secrets.token_hex(8)}"
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind("\0" + abstract_name)
    abstract.listen()
    for s in (tcp, abstract):
        s.setblocking(False)
    yield {"tcp": tcp, "abstract": abstract, "abstract_name": abstract_name}
    tcp.close()
    abstract.close()


def never_connected(listener: socket.socket) -> bool:
    """No connection is waiting on the non-blocking `listener`."""
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False
