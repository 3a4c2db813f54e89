"""Intermediary semantics with scripted VTS links and responders (no sockets)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from ami_bridge import config as config_mod
from ami_bridge.intermediary import Disposition, Intermediary

RAW: dict[str, Any] = {
    "bridge": {"router_timeout": 0.2, "max_pending_per_vts": 3},
    "vts": {"acme": {}, "globex": {}},
    "tenants": {
        "acme": {"targets": ["1001", "operator"],
                 "venues": {"acme-venue": {"vts": "acme", "router_timeout": 0.1}}},
        "globex": {"targets": ["2001"], "venues": {"globex-venue": {"vts": "globex"}}},
    },
}


class Link:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if m["type"] == kind]


class Responder:
    def __init__(self) -> None:
        self.dispositions: list[Disposition] = []

    def dispose(self, disposition: Disposition) -> None:
        self.dispositions.append(disposition)


def env(venue: str, **extra: str) -> dict[str, str]:
    return {"agi_context": venue, "agi_extension": "100", "agi_callerid": "555",
            "agi_channel": "PJSIP/x", **extra}



def make_world() -> tuple[Intermediary, Link, Link]:
    inter = Intermediary(config=config_mod.parse(RAW, path=Path("test.toml")),
                         loop=asyncio.get_running_loop())
    acme, globex = Link(), Link()
    inter.attach_vts("acme", acme)
    inter.attach_vts("globex", globex)
    return inter, acme, globex


def disposition(handle: str, **fields: str) -> dict[str, Any]:
    return {"type": "disposition", "handle": handle, **fields}


def test_route_reaches_only_the_venues_vts() -> None:
    async def main() -> None:
        inter, acme, globex = make_world()
        r = Responder()
        handle = inter.route_request(env("acme-venue"), r)
        assert handle is not None
        assert [m["handle"] for m in acme.of_type("route_request")] == [handle]
        assert globex.sent == []
        req = acme.of_type("route_request")[0]
        assert req["tenant"] == "acme" and req["call"]["dnis"] == "100"
        assert "agi_channel" not in str(req)
        inter.on_vts_message("acme", disposition(handle, action="route", target="1001"))
        assert r.dispositions == [Disposition("route", target="1001")]
        assert inter.pending_count() == 0
    asyncio.run(main())


def test_unknown_venue_and_no_vts_default_at_once(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        inter, _acme, globex = make_world()
        r1, r2 = Responder(), Responder()
        assert inter.route_request(env("nobody-venue"), r1) is None
        assert r1.dispositions == [Disposition("default", cause="unknown-venue")]
        inter.detach_vts("globex")
        assert inter.route_request(env("globex-venue"), r2) is None
        assert r2.dispositions == [Disposition("default", cause="no-vts")]
        assert globex.of_type("route_request") == []
    with caplog.at_level(logging.WARNING):
        asyncio.run(main())
    assert "unknown venue 'nobody-venue'" in caplog.text


def test_silent_vts_times_out_then_late_reply_is_refused() -> None:
    async def main() -> None:
        inter, acme, _ = make_world()
        r = Responder()
        loop = asyncio.get_running_loop()
        started = loop.time()
        handle = inter.route_request(env("acme-venue"), r)
        assert handle is not None
        while not r.dispositions:
            await asyncio.sleep(0.01)
        waited = loop.time() - started
        assert r.dispositions == [Disposition("default", cause="timeout")]
        assert 0.1 <= waited < 1.0  # the venue's 0.1 s, not the global 0.2 s... roughly
        assert acme.of_type("event") == [
            {"type": "event", "handle": handle, "event": "default_routed", "reason": "timeout"}]
        inter.on_vts_message("acme", disposition(handle, action="route", target="1001"))
        [error] = acme.of_type("error")
        assert error["code"] == "not-pending" and "default:timeout" in error["message"]
        assert len(r.dispositions) == 1  # never acted on
    asyncio.run(main())


def test_duplicate_and_unknown_handles_are_refused() -> None:
    async def main() -> None:
        inter, acme, _ = make_world()
        r = Responder()
        handle = inter.route_request(env("acme-venue"), r)
        assert handle is not None
        inter.on_vts_message("acme", disposition(handle, action="route", target="1001"))
        inter.on_vts_message("acme", disposition(handle, action="route", target="1001"))
        inter.on_vts_message("acme", disposition("feedface", action="route", target="1001"))
        inter.on_vts_message("acme", {"type": "disposition", "action": "default"})
        codes = [e["code"] for e in acme.of_type("error")]
        assert codes == ["not-pending"] * 3
        assert len(r.dispositions) == 1
    asyncio.run(main())


def test_abandon_cancels_timer_and_tells_only_the_vts() -> None:
    async def main() -> None:
        inter, acme, globex = make_world()
        r = Responder()
        handle = inter.route_request(env("acme-venue"), r)
        assert handle is not None
        inter.abandon(handle)
        await asyncio.sleep(0.25)  # past the router timeout: no default route may fire
        assert r.dispositions == []
        assert acme.of_type("event") == [{"type": "event", "handle": handle,
                                          "event": "abandoned"}]
        assert globex.sent == []
        assert inter.pending_count() == 0
    asyncio.run(main())


def test_foreign_target_is_refused_and_default_routed(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        inter, acme, _ = make_world()
        r = Responder()
        handle = inter.route_request(env("acme-venue"), r)
        assert handle is not None
        inter.on_vts_message("acme", disposition(handle, action="route", target="2001"))
        assert r.dispositions == [Disposition("default", cause="refused")]
        [error] = acme.of_type("error")
        assert error["code"] == "invalid-disposition"
    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    assert "tenant globex" in caplog.text and "tenant acme" in caplog.text


def test_acting_on_another_tenants_handle_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        inter, acme, _globex = make_world()
        r = Responder()
        handle = inter.route_request(env("globex-venue"), r)
        assert handle is not None
        inter.on_vts_message("acme", disposition(handle, action="reject", cause="busy"))
        assert r.dispositions == []  # globex's VTS still decides its own call
        assert [e["code"] for e in acme.of_type("error")] == ["not-yours"]
        assert handle not in str(acme.sent)  # the refusal does not echo the handle
        inter.on_vts_message("globex", disposition(handle, action="route", target="2001"))
        assert r.dispositions == [Disposition("route", target="2001")]
    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    assert "tenant acme" in caplog.text and "tenant globex" in caplog.text


@pytest.mark.parametrize("bad", [
    {"action": "route", "target": "1001\nEXEC"}, {"action": "route", "target": "1001\n"},
    {"action": "route"}, {"action": "reject", "cause": "x"}, {"action": "dance"},
])
def test_invalid_dispositions_default_route(bad: dict[str, str]) -> None:
    async def main() -> None:
        inter, _acme, _ = make_world()
        r = Responder()
        handle = inter.route_request(env("acme-venue"), r)
        assert handle is not None
        inter.on_vts_message("acme", disposition(handle, **bad))
        assert r.dispositions == [Disposition("default", cause="refused")]
    asyncio.run(main())


def test_lost_vts_default_routes_its_calls_only() -> None:
    async def main() -> None:
        inter, _, _ = make_world()
        ra, rg = Responder(), Responder()
        inter.route_request(env("acme-venue"), ra)
        inter.route_request(env("globex-venue"), rg)
        inter.detach_vts("acme")
        assert ra.dispositions == [Disposition("default", cause="vts-lost")]
        assert rg.dispositions == []
        assert inter.pending_count("globex") == 1
    asyncio.run(main())


def test_pending_cap_per_vts() -> None:
    async def main() -> None:
        inter, _, _ = make_world()
        responders = [Responder() for _ in range(4)]
        handles = [inter.route_request(env("globex-venue"), r) for r in responders]
        assert handles[3] is None
        assert responders[3].dispositions == [Disposition("default", cause="vts-overloaded")]
        # another tenant is not affected by globex's backlog
        assert inter.route_request(env("acme-venue"), Responder()) is not None
    asyncio.run(main())


def test_reload_keeps_pending_calls() -> None:
    async def main() -> None:
        inter, _, _ = make_world()
        r = Responder()
        handle = inter.route_request(env("acme-venue"), r)
        assert handle is not None
        raw = {**RAW, "tenants": {**RAW["tenants"]}}
        raw["tenants"]["acme"] = {**RAW["tenants"]["acme"], "targets": ["1001", "1002"]}
        inter.reload(config_mod.parse(raw, path=Path("test.toml")))
        inter.on_vts_message("acme", disposition(handle, action="route", target="1002"))
        assert r.dispositions == [Disposition("route", target="1002")]
    asyncio.run(main())
