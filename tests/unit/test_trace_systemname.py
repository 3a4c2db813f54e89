"""Route traces are stored by Asterisk's uniqueid: with the shared (PostgreSQL) store
several Asterisks may write them, and their uniqueids are unique only with a systemname.
The bridge says so once, and only where it matters (the shared store)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ami_bridge import config as config_mod
from ami_bridge.personal.model import TraceRecord
from ami_bridge.personal.service import PersonalService, unnamed_uniqueid


def service(tmp_path: Path, store: str) -> PersonalService:
    path = tmp_path / "bridge.toml"
    path.write_text(f"""
[bridge]
agi_listen = "127.0.0.1:4573"
control_socket = "{tmp_path}/control.sock"

{store}

[vts.acme]

[tenants.acme]
timezone = "Europe/Berlin"

[tenants.acme.extensions]
1011 = "PJSIP/acme-desk1"
operator = "PJSIP/acme-operator"

[tenants.acme.personal]
context = "acme-personal"
vts = "acme"

[tenants.acme.personal.numbers]
2101 = "1011"
""")
    return PersonalService(config_mod.load(path), lambda: {})


def trace(uniqueid: str) -> TraceRecord:
    return TraceRecord(tenant="acme", uniqueid=uniqueid, at=1_800_000_000.0,
                       venue="acme-personal", user_id="", request=1, previous="",
                       outcome="route", rule="", why="")


def test_a_uniqueid_without_a_systemname_is_told_apart() -> None:
    assert unnamed_uniqueid("1795986862.246")
    assert not unnamed_uniqueid("pbx1-1795986862.246")
    assert not unnamed_uniqueid("scale-2-1795986862.10")


def test_the_shared_store_warns_once_of_uniqueids_without_a_systemname(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    shared = service(tmp_path, '[store]\nbackend = "postgresql"\ndsn = "host=/nonexistent"')
    with caplog.at_level(logging.WARNING, logger="ami_bridge.personal.service"):
        shared.record(trace("pbx1-1795986862.1"))
        assert caplog.records == []
        shared.record(trace("1795986862.2"))
        shared.record(trace("1795986862.3"))
    [said] = caplog.records
    assert "1795986862.2" in said.getMessage() and "systemname" in said.getMessage()


def test_a_single_nodes_sqlite_store_says_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    alone = service(tmp_path, f'[store]\npath = "{tmp_path}/personal.sqlite3"')
    with caplog.at_level(logging.WARNING, logger="ami_bridge.personal.service"):
        alone.record(trace("1795986862.2"))
    assert caplog.records == []
