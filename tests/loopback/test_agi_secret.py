"""Only Asterisk starts route requests: with `[bridge] agi_secret_file`, a local process
that reaches the FastAGI port but does not know the secret Asterisk's AGI URL carries gets
the default route, and neither the intermediary nor any VTS hears of its session
(security issue, property 2). Plays the hostile local process over real TCP against the
whole daemon with a real VTS process."""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path

import pytest

from ami_bridge import config as config_mod
from ami_bridge.daemon import Bridge
from tests.loopback.test_agi_server import agi_call, env, free_port, with_bridge, write_config

ROUTE_1001 = 'EXEC MSet "AB_KIND=extension,AB_TARGET=1001,AB_ACTION=route"'
UNAUTHORISED = 'EXEC MSet "AB_CAUSE=unauthorised,AB_ACTION=default"'


def _secret_file(tmp_path: Path, mode: int = 0o600, text: str | None = None) -> Path:
    path = tmp_path / "agi.secret"
    path.write_text((text if text is not None else secrets.token_urlsafe(24)) + "\n")
    path.chmod(mode)
    return path


def test_a_session_without_the_secret_reaches_no_vts(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    port, secret_file = free_port(), _secret_file(tmp_path)
    secret = secret_file.read_text().strip()
    path = write_config(tmp_path, port, f'agi_secret_file = "{secret_file}"')

    async def body(bridge: Bridge) -> None:
        assert bridge.intermediary is not None
        # The hostile local process: the right venue, no secret / a wrong / a near one.
        for script in ("route", f"{secrets.token_urlsafe(24)}/route", f"{secret[:-1]}/route",
                       f"{secret}/route/x", f"{secret}"):
            assert await agi_call(port, env(agi_network_script=script)) == [UNAUTHORISED]
        assert bridge.intermediary.counters.requests == 0  # nothing reached routing
        # Asterisk, which knows it, still routes.
        assert await agi_call(port, env(agi_network_script=f"{secret}/route")) == [ROUTE_1001]
        assert bridge.intermediary.counters.requests == 1

    with caplog.at_level(logging.WARNING):
        asyncio.run(with_bridge(path, body))
    refusals = [r.getMessage() for r in caplog.records if "without the route script" in
                r.getMessage()]
    assert len(refusals) == 1  # rate-limited: one line per peer per 10 s
    assert secret not in caplog.text and secret[:-1] not in caplog.text


def test_a_secret_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, free_port(),
                        f'agi_secret_file = "{_secret_file(tmp_path, 0o644)}"')
    with pytest.raises(config_mod.ConfigError, match=r"bridge\.agi_secret_file.*mode 644"):
        config_mod.load(path)


@pytest.mark.parametrize("text", ["short", "x" * 30 + "\n" + "y" * 30, "a b" * 12, ""])
def test_a_weak_or_malformed_secret_is_refused(tmp_path: Path, text: str) -> None:
    path = write_config(tmp_path, free_port(),
                        f'agi_secret_file = "{_secret_file(tmp_path, text=text)}"')
    with pytest.raises(config_mod.ConfigError, match=r"bridge\.agi_secret_file"):
        config_mod.load(path)
