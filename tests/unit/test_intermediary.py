"""Intermediary semantics with scripted VTS links and responders (no sockets)."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ami_bridge import config as config_mod
from ami_bridge.intermediary import Disposition, Intermediary, Treatment

RAW: dict[str, Any] = {
    "bridge": {"router_timeout": 0.2, "max_pending_per_vts": 3},
    "vts": {"acme": {}, "globex": {}},
    "tenants": {
        "acme": {"targets": ["1001", "operator", "91", "92"], "queues": ["sales"],
                 "external_prefixes": ["+49"], "prompts": "acme", "moh_class": "acme-moh",
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
        self.treatments: list[Treatment] = []
        self.done: list[Callable[[str | None], None]] = []

    def dispose(self, disposition: Disposition) -> None:
        self.dispositions.append(disposition)

    def treat(self, treatment: Treatment, done: Callable[[str | None], None]) -> None:
        self.treatments.append(treatment)
        self.done.append(done)


def env(venue: str, **extra: str) -> dict[str, str]:
    return {"agi_context": venue, "agi_extension": "100", "agi_callerid": "555",
            "agi_channel": "PJSIP/x", **extra}



def make_world(raw: dict[str, Any] = RAW) -> tuple[Intermediary, Link, Link]:
    inter = Intermediary(config=config_mod.parse(raw, path=Path("test.toml")),
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


def with_venue(**venue: Any) -> dict[str, Any]:
    raw = copy.deepcopy(RAW)
    raw["tenants"]["acme"]["venues"]["acme-venue"].update(venue)
    return raw


def test_route_kinds_stay_in_the_tenants_namespace() -> None:
    async def main() -> None:
        inter, _acme, _ = make_world()
        cases = [({"queue": "sales"}, ("queues", "sales")),
                 ({"external": "+4930123"}, ("outbound", "+4930123")),
                 ({"queue": "support"}, None), ({"external": "+1212555"}, None),
                 ({"target": "1001", "queue": "sales"}, None)]
        for fields, expected in cases:
            r = Responder()
            handle = inter.route_request(env("acme-venue"), r)
            assert handle is not None
            inter.on_vts_message("acme", disposition(handle, action="route", **fields))
            [d] = r.dispositions
            got = (d.kind, d.target) if d.action == "route" else None
            assert got == expected, (fields, d)
    asyncio.run(main())


def test_treatment_keeps_the_call_pending_and_returns_digits() -> None:
    async def main() -> None:
        inter, acme, _ = make_world(with_venue(router_timeout=5.0))
        r = Responder()
        handle = inter.route_request(env("acme-venue"), r)
        assert handle is not None
        inter.on_vts_message("acme", disposition(handle, action="treatment", prompt="welcome",
                                                 collect_digits=4, timeout_ms=3000))
        [treatment] = r.treatments
        assert treatment == Treatment(prompt="acme/welcome", collect_digits=4, timeout_ms=3000)
        assert inter.pending_count() == 1 and r.dispositions == []
        # a second treatment while the first runs is refused, the call goes on
        inter.on_vts_message("acme", disposition(handle, action="treatment", moh=True))
        assert acme.of_type("error")[-1]["code"] == "treatment-busy"
        r.done[0]("1234")
        assert acme.of_type("event")[-1] == {"type": "event", "handle": handle,
                                             "event": "treatment_done", "ok": True,
                                             "digits": "1234"}
        inter.on_vts_message("acme", disposition(handle, action="treatment", moh=True))
        assert r.treatments[-1] == Treatment(moh_class="acme-moh")  # the tenant's own class
        inter.on_vts_message("acme", disposition(handle, action="route", target="1001"))
        assert r.dispositions == [Disposition("route", target="1001")]
    asyncio.run(main())


def test_treatment_timeout_is_bounded_by_the_router_timer() -> None:
    async def main() -> None:
        inter, _, _ = make_world(with_venue(router_timeout=1.0))
        r = Responder()
        handle = inter.route_request(env("acme-venue"), r)
        assert handle is not None
        inter.on_vts_message("acme", disposition(handle, action="treatment", prompt="p",
                                                 collect_digits=2, timeout_ms=60_000))
        assert r.treatments[0].timeout_ms < 1000
    asyncio.run(main())


@pytest.mark.parametrize("bad", [{"prompt": "../x"}, {"prompt": "a,b"}, {"moh": "yes"},
                                 {"prompt": "a", "collect_digits": 99}, {}])
def test_bad_treatments_are_refused(bad: dict[str, Any]) -> None:
    async def main() -> None:
        inter, _acme, _ = make_world(with_venue(router_timeout=5.0))
        r = Responder()
        handle = inter.route_request(env("acme-venue"), r)
        assert handle is not None
        inter.on_vts_message("acme", disposition(handle, action="treatment", **bad))
        assert r.treatments == []
        assert r.dispositions == [Disposition("default", cause="refused")]
    asyncio.run(main())


def test_default_targets_in_turn_then_reject() -> None:
    async def main() -> None:
        inter, _, _ = make_world(with_venue(default_targets=["91", "92"]))
        got = []
        for _ in range(3):  # the call comes back each time its default target failed
            r = Responder()
            handle = inter.route_request(env("acme-venue", agi_uniqueid="c1"), r)
            assert handle is not None
            inter.on_vts_message("acme", disposition(handle, action="default"))
            got += r.dispositions
        assert got == [Disposition("route", target="91", cause="vts"),
                       Disposition("route", target="92", cause="vts"),
                       Disposition("reject", cause="congestion")]
    asyncio.run(main())


def test_redirect_limit_is_reset_by_a_real_instruction() -> None:
    async def main() -> None:
        inter, _, _ = make_world(with_venue(default_targets=["91", "92", "operator"],
                                            redirect_limit=2))
        actions = []
        for reply in ["default", "default", "route", "default"]:
            r = Responder()
            handle = inter.route_request(env("acme-venue", agi_uniqueid="c2"), r)
            assert handle is not None
            fields = {"target": "1001"} if reply == "route" else {}
            inter.on_vts_message("acme", disposition(handle, action=reply, **fields))
            actions.append(r.dispositions[0].action)
        assert actions == ["route", "route", "route", "route"]
        # two defaults in a row are allowed, the third is not
        r = Responder()
        h = inter.route_request(env("acme-venue", agi_uniqueid="c3"), r)
        for _ in range(2):
            assert h is not None
            inter.on_vts_message("acme", disposition(h, action="default"))
            r = Responder()
            h = inter.route_request(env("acme-venue", agi_uniqueid="c3"), r)
        assert h is not None
        inter.on_vts_message("acme", disposition(h, action="default"))
        assert r.dispositions == [Disposition("reject", cause="congestion")]
    asyncio.run(main())


def test_route_requests_per_call_are_capped() -> None:
    async def main() -> None:
        raw = copy.deepcopy(RAW)
        raw["bridge"]["max_route_requests"] = 3
        inter, acme, _ = make_world(raw)
        for _ in range(3):
            r = Responder()
            handle = inter.route_request(env("acme-venue", agi_uniqueid="loop"), r)
            assert handle is not None
            inter.on_vts_message("acme", disposition(handle, action="route", target="1001"))
        r = Responder()
        assert inter.route_request(env("acme-venue", agi_uniqueid="loop"), r) is None
        assert r.dispositions == [Disposition("reject", cause="congestion")]
        assert len(acme.of_type("route_request")) == 3
    asyncio.run(main())


def test_previous_attempt_reaches_the_vts() -> None:
    async def main() -> None:
        inter, acme, _ = make_world()
        inter.route_request(env("acme-venue", agi_arg_1="internal/1001",
                                agi_arg_2="NOANSWER"), Responder())
        inter.route_request(env("acme-venue", agi_arg_1="bogus/1001",
                                agi_arg_2="NOANSWER"), Responder())
        first, second = acme.of_type("route_request")
        assert first["call"]["previous"] == {"kind": "internal", "target": "1001",
                                             "status": "NOANSWER"}
        assert "previous" not in second["call"]
    asyncio.run(main())
