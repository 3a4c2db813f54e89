"""The AMI link binds a call to its venue when its route request arrives, with or
without an AMI session: during a resync the bind waits for the resync's end (else a
channel newer than the CoreShowChannels snapshot would end at once as lost), and while
the session is down at most MAX_UNSYNCED_BINDS binds wait for the next resync."""

from __future__ import annotations

import asyncio
import copy
import logging
from pathlib import Path
from typing import Any

import pytest

from ami_bridge import ami_link
from ami_bridge import config as config_mod
from ami_bridge.ami.protocol import Event
from ami_bridge.ami_link import AmiLink
from ami_bridge.config import AmiConfig
from ami_bridge.intermediary import Intermediary
from tests.unit.test_intermediary import RAW, FakeClock


class FakeClient:
    """An AMI client whose list actions answer nothing, and can run code meanwhile."""

    def __init__(self) -> None:
        self.connected = False
        self.during_list: list[Any] = []

    async def send_list_action(self, action: str, **_: str) -> tuple[Event, list[Event]]:
        while self.during_list:
            self.during_list.pop(0)()
        await asyncio.sleep(0)
        return Event(name="ListComplete", fields=()), []


def link() -> tuple[AmiLink, FakeClient]:
    cfg = config_mod.parse(copy.deepcopy(RAW), path=Path("test.toml"))
    settings = AmiConfig(host="127.0.0.1", port=1, username="u", secret="s")
    new = AmiLink(settings=settings, config=cfg,
                  intermediary=Intermediary(config=cfg, clock=FakeClock()))
    client = FakeClient()
    new.client = client  # type: ignore[assignment]
    return new, client


def test_a_bind_during_a_resync_waits_for_its_end() -> None:
    amilink, client = link()
    seen_during: list[object] = []
    client.during_list.append(lambda: amilink.call_entered("1.1", "acme-venue", "acme"))
    client.during_list.append(lambda: seen_during.append(amilink.tracker.owner("1.1")))
    asyncio.run(amilink._resync())
    assert seen_during == [None]  # not bound while the snapshot was being read...
    assert amilink.tracker.owner("1.1") == ("acme-venue", "acme")  # ...but right after


def test_binds_without_a_session_are_capped(monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(ami_link, "MAX_UNSYNCED_BINDS", 3)
    amilink, _client = link()
    with caplog.at_level(logging.WARNING):
        for i in range(5):
            amilink.call_entered(f"1.{i}", "acme-venue", "acme")
    assert [amilink.tracker.owner(f"1.{i}") is not None for i in range(5)] == [
        True, True, True, False, False]
    assert len([r for r in caplog.records if "later ones get no call events" in r.message]) == 1
    asyncio.run(amilink._resync())  # the count starts again after a resync
    amilink.call_entered("1.9", "acme-venue", "acme")
    assert amilink.tracker.owner("1.9") == ("acme-venue", "acme")
