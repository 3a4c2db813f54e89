"""The daemon's /metrics endpoint and its logs over real sockets (loopback, no Asterisk).

A whole `Bridge` with `[metrics]` and the shipped VTS: FastAGI calls played by the test
route and show up in a scrape; any other path is 404; a FastAGI port check (connect,
close) is logged at DEBUG only; the route-request secret never reaches a log record,
even at DEBUG where the environment is logged.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ami_bridge.daemon import Bridge
from tests.loopback.test_bridge import agi_call, free_port, with_bridge, write

ROUTE_1001 = 'EXEC MSet "AB_KIND=extension,AB_TARGET=1001,AB_ACTION=route"'


def with_metrics(tmp_path: Path, agi_port: int, metrics_port: int, bridge: str = "") -> Path:
    path = write(tmp_path, agi_port, more=f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
                 'alarm_window = 5\nalarm_min_calls = 2\n')
    if bridge:
        path.write_text(path.read_text().replace("[bridge]\n", f"[bridge]\n{bridge}\n", 1))
    return path


async def scrape(port: int, path: str = "/metrics") -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, \
            session.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, await response.text()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_routed_calls_show_in_a_scrape_and_other_paths_are_404(tmp_path: Path) -> None:
    agi_port, metrics_port = free_port(), free_port()

    async def body(bridge: Bridge) -> None:
        for _ in range(3):
            assert (await agi_call(agi_port, "acme-venue"))[0] == ROUTE_1001
        status, text = await scrape(metrics_port)
        assert status == 200
        got = samples(text)
        venue = {("tenant", "acme"), ("venue", "acme-venue")}
        assert got[("ami_bridge_route_requests_total", frozenset(venue))] == 3
        assert got[("ami_bridge_dispositions_total", frozenset(venue | {("kind", "route")}))] \
            == 3
        assert got[("ami_bridge_routing_latency_seconds_count", frozenset(venue))] == 3
        assert got[("ami_bridge_vts_connected", frozenset({("vts", "acme")}))] == 1
        assert got[("ami_bridge_vts_restarts_total", frozenset({("vts", "acme")}))] == 0
        assert got[("ami_bridge_alarm", frozenset(venue | {("alarm", "default_ratio")}))] == 0
        assert ("process_resident_memory_bytes", frozenset()) in got
        assert (await scrape(metrics_port, "/"))[0] == 404

    asyncio.run(with_bridge(with_metrics(tmp_path, agi_port, metrics_port), body))


def test_port_checks_log_at_debug_and_the_secret_never_reaches_a_record(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    agi_port, metrics_port = free_port(), free_port()
    secret = secrets.token_urlsafe(24)
    secret_file = tmp_path / "agi.secret"
    secret_file.write_text(secret + "\n")
    secret_file.chmod(0o600)
    config = with_metrics(tmp_path, agi_port, metrics_port,
                          bridge=f'agi_secret_file = "{secret_file}"')

    async def body(bridge: Bridge) -> None:
        for _ in range(3):  # a load balancer's or an operator's `nc -z`
            _, writer = await asyncio.open_connection("127.0.0.1", agi_port)
            writer.close()
            await writer.wait_closed()
        reader, writer = await asyncio.open_connection("127.0.0.1", agi_port)
        writer.write(f"agi_network: yes\nagi_network_script: {secret}/route\n"
                     f"agi_request: agi://127.0.0.1:{agi_port}/{secret}/route\n"
                     "agi_context: acme-venue\nagi_extension: 100\nagi_uniqueid: 7.1\n"
                     "agi_channel: PJSIP/t-1\n\n".encode())
        assert (await reader.readline()).decode().strip() == ROUTE_1001
        writer.write(b"200 result=1\n")
        assert await reader.read() == b""
        writer.close()
        await asyncio.sleep(0.05)  # the server sees the port checks' EOF

    with caplog.at_level(logging.DEBUG):
        asyncio.run(with_bridge(config, body))
    server = [r for r in caplog.records if r.name == "ami_bridge.agi.server"]
    assert [r for r in server if r.levelno >= logging.WARNING] == []
    checks = [r for r in server if "health check" in r.getMessage()]
    assert len(checks) == 3 and {r.levelno for r in checks} == {logging.DEBUG}
    assert any("'agi_network_script': '********/route'" in r.getMessage() for r in server)
    assert any(f"agi://127.0.0.1:{agi_port}/********/route" in r.getMessage() for r in server)
    assert not [r for r in caplog.records if secret in r.getMessage()]
    [call] = [r for r in caplog.records if r.name == "ami_bridge.call"]
    assert call.levelno == logging.INFO and "route extension:1001" in call.getMessage()
