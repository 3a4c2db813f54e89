"""Only Asterisk starts route requests, on the real Asterisk 22 (security issue, property
2): the venue's AGI URL carries the route-request secret (`AB_AGI_URL=agi://HOST:PORT/
SECRET`, so Asterisk sends `agi_network_script: SECRET/route`), the bridge checks it,
and a local process that opens FastAGI sessions into a tenant's venue while real calls
flow reaches no VTS: every call is routed, and the VTS saw exactly the real calls."""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.asterisk import DEFAULT_CONF_SRC, Asterisk
from harness.sipp import SippUas, start_uac
from tests.integration.conftest import AGI_PORT, _sandbox_problem
from tests.integration.helpers import arrived, of_type, records, write_config

pytestmark = pytest.mark.asterisk
SECRET = secrets.token_urlsafe(24)
CALLS = 20


@pytest.fixture(scope="module")
def asterisk() -> Iterator[Asterisk]:
    problem = _sandbox_problem()
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    with Asterisk(conf_src=DEFAULT_CONF_SRC, name="it-agi-secret", agi_port=AGI_PORT,
                  agi_secret=SECRET) as ast:
        yield ast


def _posing_as_asterisk(script: str) -> str:
    """One FastAGI session as a local process would open it: acme's venue, a made-up
    call; returns the bridge's first command."""
    env = (f"agi_network: yes\nagi_network_script: {script}\nagi_request: agi://x/{script}\n"
           "agi_channel: PJSIP/acme-trunk-0000dead\nagi_context: acme-venue\n"
           "agi_extension: 100\nagi_callerid: 4930999\nagi_uniqueid: 1.999\n\n")
    with socket.create_connection(("127.0.0.1", AGI_PORT), timeout=10) as sock:
        sock.sendall(env.encode())
        reply = sock.makefile("rb").readline().decode().strip()
        sock.sendall(b"200 result=1\n")
    return reply


def test_calls_route_with_the_secret_and_a_poser_reaches_no_vts(
        asterisk: Asterisk, uas: dict[str, SippUas], run_bridge: Callable[..., object],
        tmp_path: Path) -> None:
    secret_file = tmp_path / "agi.secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace(
        "[bridge]\n", f'[bridge]\nagi_secret_file = "{secret_file}"\n', 1))
    run_bridge(config)
    uac = start_uac(from_user="acme-trunk", dnis="100", calls=CALLS, rate=10, port=5081)
    posers = [_posing_as_asterisk(script) for script in
              ("route", f"{secrets.token_urlsafe(24)}/route", f"{SECRET[:-2]}/route")]
    stats = uac.wait()
    assert (stats.successful, stats.failed) == (CALLS, 0), stats.failure_reasons
    assert posers == ['EXEC MSet "AB_CAUSE=unauthorised,AB_ACTION=default"'] * 3
    got = arrived(uas)
    assert got["acme-agent"] == CALLS and got["acme-operator"] == 0
    requests = of_type(records(tmp_path / "acme.jsonl"), "route_request")
    assert len(requests) == CALLS  # the real calls, and nothing of the posers
    assert all(r["call"]["uniqueid"] != "1.999" for r in requests)
    assert asterisk.channel_count() == 0
