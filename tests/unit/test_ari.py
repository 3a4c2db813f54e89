"""The ARI driver's pure parts: a StasisStart becomes the environment a FastAGI session
gives (hostile caller data included), `[ari]` is validated with file and key, an ari
venue renders `Stasis()` checked by STASISSTATUS, and the linter accepts that venue and
refuses a tenant's Stasis() to any other application (S605)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ami_bridge.agi import variables as contract
from ami_bridge.agi_adapter import commands_for, disposition_pairs
from ami_bridge.calls import Disposition, caller_data
from ami_bridge.config import ConfigError, load
from ami_bridge.dialplan import findings as codes
from ami_bridge.dialplan.lint import check
from ami_bridge.dialplan.parser import OverlaySource
from ami_bridge.dialplan.render import render_tenant, render_tree, route_request
from ami_bridge.drivers import ari_events as ev
from ami_bridge.drivers.ari_settings import DEFAULT_URL
from ami_bridge.status import degraded, render
from ami_bridge.tenants.messages import Target
from harness.bridge import ready_problem

HOSTILE_NAMES = ["Eve\nAGI: x", 'Eve "the" \\ quote', "Eve\r\n\r\nEXEC System rm", "x" * 10_240,
                 "Ève ☎ \x00 nul"]


def start_event(**channel: Any) -> str:
    base: dict[str, Any] = {
        "id": "1795965255.3", "name": "PJSIP/acme-trunk-00000001", "language": "fr",
        "caller": {"name": "Alice", "number": "+4930123"},
        "dialplan": {"context": "acme-venue", "exten": "+4930999", "priority": 5}}
    base.update(channel)
    return json.dumps({"type": "StasisStart", "application": "ami-bridge",
                       "args": ["queue:sales", "BUSY"], "channel": base})


def test_a_stasis_start_gives_the_fastagi_environment() -> None:
    event = ev.parse(start_event())
    assert isinstance(event, ev.StasisStart)
    assert event.channel_id == "1795965255.3"
    assert dict(event.env) == {
        "agi_channel": "PJSIP/acme-trunk-00000001", "agi_uniqueid": "1795965255.3",
        "agi_language": "fr", "agi_callerid": "+4930123", "agi_calleridname": "Alice",
        "agi_context": "acme-venue", "agi_extension": "+4930999", "agi_priority": "5",
        "agi_arg_1": "queue:sales", "agi_arg_2": "BUSY"}
    # The routing core reads it exactly as it reads a FastAGI session's.
    call = caller_data(event.env)
    assert (call.ani, call.dnis, call.uniqueid) == ("+4930123", "+4930999", "1795965255.3")
    assert call.previous is not None and call.previous.target == Target("queue", "sales")
    assert contract.agi_arg(contract.AB_LAST) == "agi_arg_1"


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_caller_data_is_only_data(name: str) -> None:
    event = ev.parse(start_event(caller={"name": name, "number": name}))
    assert isinstance(event, ev.StasisStart)
    assert event.env["agi_calleridname"] == name
    call = caller_data(event.env)
    assert call.ani_name == name[:80] and len(call.ani) <= 80


@pytest.mark.parametrize("text", [
    "", "not json", "[]", '{"type": "StasisStart"}', '{"type": "StasisStart", "channel": 5}',
    start_event(id="../../asterisk/modules"), start_event(id="x" * 200),
    start_event(id="a b"), json.dumps({"type": "ChannelDtmfReceived", "digit": "4; rm",
                                       "channel": {"id": "1.2"}}),
    json.dumps({"type": "PlaybackFinished", "playback": {"id": "a/b"}}),
    json.dumps({"type": "ChannelVarset", "channel": {"id": "1.2"}}),
    b"\xff\xfe",
])
def test_what_the_driver_does_not_act_on_is_none(text: str | bytes) -> None:
    assert ev.parse(text) is None


def test_odd_fields_give_empty_strings_not_errors() -> None:
    event = ev.parse(start_event(caller=["x"], dialplan={"context": 7, "exten": None},
                                 name=True))
    assert isinstance(event, ev.StasisStart)
    assert event.env["agi_calleridname"] == "" and event.env["agi_context"] == "7"
    assert event.env["agi_extension"] == "" and event.env["agi_channel"] == ""


@pytest.mark.parametrize(("kind", "expected"), [
    ("StasisEnd", ev.ChannelGone("1.2", "StasisEnd")),
    ("ChannelHangupRequest", ev.ChannelGone("1.2", "ChannelHangupRequest")),
    ("ChannelDestroyed", ev.ChannelGone("1.2", "ChannelDestroyed")),
])
def test_channel_gone_events(kind: str, expected: ev.AriEvent) -> None:
    assert ev.parse(json.dumps({"type": kind, "channel": {"id": "1.2"}})) == expected


def test_dtmf_and_playback_events() -> None:
    assert ev.parse(json.dumps({"type": "ChannelDtmfReceived", "digit": "#",
                                "channel": {"id": "1.2"}})) == ev.Dtmf("1.2", "#")
    assert ev.parse(json.dumps({"type": "PlaybackFinished", "playback": {"id": "ab12"}})) \
        == ev.PlaybackFinished("ab12")


def test_every_driver_writes_the_same_pairs() -> None:
    disposition = Disposition("route", target=Target("queue", "sales"), dial_timeout=15)
    pairs = disposition_pairs(disposition)
    assert pairs == [("AB_KIND", "queue"), ("AB_TARGET", "sales"), ("AB_DIAL_TIMEOUT", "15"),
                     ("AB_ACTION", "route")]
    assert commands_for(disposition) == [
        b'EXEC MSet "AB_KIND=queue,AB_TARGET=sales,AB_DIAL_TIMEOUT=15,AB_ACTION=route"\n']
    # A value the wire refuses is refused for ARI too: the default route instead.
    unsafe = Disposition("reject", cause="busy,AB_ACTION=route\n")
    assert disposition_pairs(unsafe) == [("AB_CAUSE", "unsafe-value"), ("AB_ACTION", "default")]


# -- [ari] ---------------------------------------------------------------------------------

BRIDGE = """
[bridge]
control_socket = "/run/x.sock"
[vts.acme]
[tenants.acme]
targets = ["1001"]
[tenants.acme.venues.acme-venue]
vts = "acme"
driver = "{driver}"
[[tenants.acme.rules]]
name = "r"
targets = ["1001"]
"""


def write(tmp_path: Path, ari: str, *, driver: str = "ari", mode: int = 0o600) -> Path:
    secret = tmp_path / "ari.secret"
    secret.write_text("s3cret-password\n")
    secret.chmod(mode)
    path = tmp_path / "bridge.toml"
    path.write_text(BRIDGE.format(driver=driver) + ari)
    return path


def test_ari_settings_and_defaults(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, '[ari]\npassword_file = "ari.secret"\n'))
    assert cfg.ari is not None
    assert (cfg.ari.url, cfg.ari.username, cfg.ari.app) == (DEFAULT_URL, "ami-bridge",
                                                            "ami-bridge")
    assert cfg.ari.password == "s3cret-password"
    assert "s3cret" not in repr(cfg.ari)
    assert DEFAULT_URL.endswith(":8089")  # 8088 is the personal API's default


@pytest.mark.parametrize(("ari", "fragment"), [
    ('[ari]\nurl = "ws://127.0.0.1:8089"\npassword_file = "ari.secret"\n', "ari.url"),
    ('[ari]\nurl = "http://127.0.0.1:8089/ari"\npassword_file = "ari.secret"\n', "ari.url"),
    ('[ari]\nurl = "http://u:p@127.0.0.1:8089"\npassword_file = "ari.secret"\n', "ari.url"),
    ('[ari]\napp = "other,app"\npassword_file = "ari.secret"\n', "ari.app"),
    ('[ari]\nusername = ""\npassword_file = "ari.secret"\n', "ari.username"),
    ('[ari]\n', "ari.password_file: is required"),
    ('[ari]\npassword = "x"\npassword_file = "ari.secret"\n', "ari.password: unknown key"),
    ('', 'venue acme-venue has driver = "ari"'),
])
def test_bad_ari_settings_name_the_key(tmp_path: Path, ari: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=r"bridge\.toml: ") as info:
        load(write(tmp_path, ari))
    assert fragment in str(info.value)


def test_a_password_file_others_can_read_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"ari\.password_file.*mode 644"):
        load(write(tmp_path, '[ari]\npassword_file = "ari.secret"\n', mode=0o644))


# -- the venue and the linter ----------------------------------------------------------------

def test_route_request_of_each_driver() -> None:
    assert route_request("v", "fastagi")[0] == "AGI(${AB_AGI_URL}/route,${AB_LAST},${DIALSTATUS})"
    assert route_request("v", "ari") == ("Stasis(ami-bridge,${AB_LAST},${DIALSTATUS})",
                                         '"${STASISSTATUS}" = "SUCCESS"')
    assert route_request("v", "ari", stasis_app="pbx-1")[0].startswith("Stasis(pbx-1,")


def rendered(tmp_path: Path, app: str = "") -> str:
    extra = f'app = "{app}"\n' if app else ""
    cfg = load(write(tmp_path, f'[ari]\npassword_file = "ari.secret"\n{extra}'))
    return render_tree(cfg)["ami-bridge/tenants/acme.conf"]


def lint(text: str, **kw: Any) -> list[tuple[int, str]]:
    file = Path("tenants/acme.conf")
    found = check([file], tenants=("acme",), source=OverlaySource({file: text}), **kw)
    return [(f.line, f.code) for f in found]


def test_an_ari_venue_renders_stasis_checked_by_stasisstatus_and_lints_clean(
        tmp_path: Path) -> None:
    acme = rendered(tmp_path)
    assert " same => n,Stasis(ami-bridge,${AB_LAST},${DIALSTATUS})" in acme
    assert '$["${STASISSTATUS}" = "SUCCESS" & "${AB_ACTION}" = "route"]?:other' in acme
    assert "AGI(" not in acme and "AGISTATUS" not in acme
    assert lint(acme) == []  # no V502 either: nothing asks ${AB_AGI_URL}
    pbx = rendered(tmp_path, app="pbx-1")
    assert "Stasis(pbx-1," in pbx
    assert lint(pbx, stasis_app="pbx-1") == []
    assert (codes.FOREIGN_STASIS in {c for _, c in lint(pbx)})  # default app: pbx-1 is not it


@pytest.mark.parametrize("line", [
    "exten => 1,1,Stasis(other-app,x)",
    "exten => 1,1,Stasis(${APP})",
    "exten => 1,1,Stasis(ami-bridge-2)",
    "exten => 1,1,ExecIf($[1]?Stasis(evil))",
])
def test_stasis_to_another_application_is_refused(line: str) -> None:
    found = lint(f"[acme-x]\n{line}\n")
    assert (2, codes.FOREIGN_STASIS) in found


def test_stasis_without_a_status_check_is_a_venue_without_fallback() -> None:
    found = lint("[acme-v]\nexten => _X.,1,Stasis(ami-bridge,,)\n same => n,Hangup()\n")
    assert found == [(2, codes.NO_AGISTATUS)]
    ok = lint("[acme-v]\nexten => _X.,1,Stasis(ami-bridge,,)\n"
              ' same => n,GotoIf($["${STASISSTATUS}" = "SUCCESS"]?:f)\n same => n(f),Hangup()\n')
    assert ok == []


def test_status_shows_the_ari_websocket() -> None:
    base: dict[str, Any] = {"version": "1", "pid": 1, "uptime_s": 5.0}
    assert "ARI" not in render(base) and degraded(base) == []
    up = {**base, "ari": {"connected": True, "reconnects": 2, "calls": 7, "requests": 29}}
    assert "ARI      connected, 2 reconnects, 7 calls, 29 requests" in render(up)
    down = {**base, "ari": {"connected": False}}
    assert "ARI      NOT CONNECTED" in render(down)
    assert degraded(down) == ["ARI WebSocket not connected (ari venues take their fallback)"]


def test_a_personal_venue_on_ari_renders_stasis_and_lints_clean() -> None:
    example = load(Path(__file__).resolve().parents[2] / "examples" / "bridge.toml")
    acme = example.tenants["acme"]
    assert acme.personal is not None
    acme = replace(acme, personal=replace(acme.personal, driver="ari"))
    venues = [v for v in example.venues.values() if v.tenant == "acme"]
    text = render_tenant(acme, venues)
    personal = text[text.index(f"[{acme.personal.context}]"):]
    assert "Stasis(ami-bridge,${AB_LAST},${DIALSTATUS})" in personal
    assert '"${STASISSTATUS}" = "SUCCESS"' in personal and "AGI(" not in personal
    found = lint(text)
    assert not [c for _, c in found if c in (codes.NO_AGISTATUS, codes.FOREIGN_STASIS)]


def test_the_harness_waits_for_the_ari_websocket() -> None:
    status: dict[str, Any] = {"vts": {"acme": {"connected": True}}}
    assert ready_problem(status, vts=["acme"], ami=False) is None
    assert "ARI WebSocket not connected" in (ready_problem(status, vts=["acme"], ami=False,
                                                           ari=True) or "")
    status["ari"] = {"connected": True}
    assert ready_problem(status, vts=["acme"], ami=False, ari=True) is None
