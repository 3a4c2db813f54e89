"""The status module's pure parts: the recent-errors ring buffer and the formatting."""

from __future__ import annotations

import logging

import pytest

from ami_bridge import status as status_mod


def test_ring_buffer_keeps_the_newest_warnings_and_errors_only() -> None:
    recent = status_mod.RecentLog(capacity=3)
    logger = logging.getLogger("test.recent")
    logger.addHandler(recent)
    logger.propagate = False
    try:
        logger.setLevel(logging.DEBUG)
        logger.info("routine")
        for n in range(5):
            logger.warning("warning %d", n)
        try:
            raise OSError("disk full")
        except OSError:
            logger.exception("store failed")
    finally:
        logger.removeHandler(recent)
        logger.propagate = True
    records = recent.records()
    assert [r["message"] for r in records] == [
        "warning 3", "warning 4", "store failed: OSError('disk full')"]
    assert [r["level"] for r in records] == ["WARNING", "WARNING", "ERROR"]
    assert records[0]["logger"] == "test.recent"


def test_a_huge_message_is_cut() -> None:
    recent = status_mod.RecentLog()
    recent.handle(logging.makeLogRecord({"msg": "x" * 10_000, "levelno": logging.ERROR,
                                         "levelname": "ERROR"}))
    assert len(recent.records()[0]["message"]) == status_mod.MAX_MESSAGE_CHARS


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "-"), (0, "0s"), (59.9, "59s"), (61, "1m01s"), (3600 * 2 + 300, "2h05m"),
    (86400 * 3 + 3600 * 4 + 5, "3d4h")])
def test_duration(seconds: float | None, text: str) -> None:
    assert status_mod.duration(seconds) == text


def test_version_comes_from_the_installed_distribution() -> None:
    from importlib import metadata

    assert status_mod.version() == metadata.version("ami-bridge")


def test_cli_version_is_the_installed_one(capsys: pytest.CaptureFixture[str]) -> None:
    from ami_bridge.cli import main

    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out == f"ami-bridge {status_mod.version()}\n"
