"""The asyncagi venue shape: rendered from `driver = "asyncagi"` (venue and personal
venue), bounded by TIMEOUT(absolute) with a `T` extension into the fallback, accepted by
the linter (no AB_AGI_URL needed; V501 still asked), while AGI to a foreign server is
still refused. A FastAGI venue renders byte-identical to before."""

from __future__ import annotations

import shutil
from pathlib import Path

from ami_bridge import config as config_mod
from ami_bridge.dialplan import findings as codes
from ami_bridge.dialplan.lint import check
from ami_bridge.dialplan.parser import OverlaySource
from ami_bridge.dialplan.render import ASYNC_AGI_GRACE_S, render_tree

ROOT = Path(__file__).resolve().parents[2]
TENANTS = ("acme", "globex")
ACME = Path("tenants/acme.conf")


def example(tmp_path: Path, *, venue: bool = True, personal: bool = False) -> Path:
    """The example config with acme's venue and/or personal venue on AsyncAGI."""
    shutil.copytree(ROOT / "examples", tmp_path / "ex")
    tenant = tmp_path / "ex/tenants.d/acme/tenant.toml"
    text = tenant.read_text()
    if venue:
        text = text.replace("[venues.acme-venue]\n", '[venues.acme-venue]\ndriver = "asyncagi"\n')
    if personal:
        text = text.replace("[personal]\n", '[personal]\ndriver = "asyncagi"\n')
    tenant.write_text(text)
    return tmp_path / "ex/bridge.toml"


def acme(config: Path) -> str:
    return render_tree(config_mod.load(config))["ami-bridge/tenants/acme.conf"]


def test_fastagi_venues_render_as_before(tmp_path: Path) -> None:
    shipped = (ROOT / "asterisk-conf/ami-bridge/tenants/acme.conf").read_text()
    assert acme(example(tmp_path, venue=False)) == shipped
    globex = render_tree(config_mod.load(example(tmp_path / "b")))
    assert globex["ami-bridge/tenants/globex.conf"] == (
        ROOT / "asterisk-conf/ami-bridge/tenants/globex.conf").read_text()


def test_the_asyncagi_venue_asks_over_ami_within_a_bound(tmp_path: Path) -> None:
    text = acme(example(tmp_path))
    venue = text[text.index("[acme-venue]"):text.index("[acme-internal]")]
    bound = 2 + ASYNC_AGI_GRACE_S  # the example's router_timeout 1.5 s, rounded up
    assert "AB_AGI_URL" not in venue
    assert (" same => n(ask),MSet(AB_ACTION=,AB_DIAL_TIMEOUT=20)\n"
            f" same => n,Set(TIMEOUT(absolute)={bound})\n"
            " same => n,AGI(agi:async,${AB_LAST},${DIALSTATUS})\n"
            " same => n,Set(TIMEOUT(absolute)=0)\n"
            ' same => n,GotoIf($["${AGISTATUS}" = "SUCCESS" & "${AB_ACTION}" = "route"]'
            "?:other)\n") in venue
    assert ("exten => T,1,Gosub(acme-internal,operator,1)\n same => n,Hangup()\n"
            in venue)


def test_the_asyncagi_personal_venue_goes_back_to_the_number_on_timeout(
        tmp_path: Path) -> None:
    text = acme(example(tmp_path, venue=False, personal=True))
    personal = text[text.index("[acme-personal]"):]
    assert "exten => T,1,Goto(acme-personal,${AB_ASKED},fallback)" in personal
    assert " same => n,Set(AB_ASKED=2101)\n same => n,Set(TIMEOUT(absolute)=" in personal
    assert personal.count("AGI(agi:async,${AB_LAST},${DIALSTATUS})") == personal.count(
        "Set(AB_ASKED=") == 3


def test_the_rendered_asyncagi_tree_lints_clean(tmp_path: Path) -> None:
    conf = tmp_path / "asterisk"
    shutil.copytree(ROOT / "asterisk-conf", conf)
    files = render_tree(config_mod.load(example(tmp_path, personal=True)))
    for relative, text in files.items():
        (conf / relative).write_text(text)
    assert check([conf / "extensions.conf"], tenants=TENANTS) == []


def lint(text: str) -> list[tuple[int, str]]:
    found = check([ACME], tenants=TENANTS, source=OverlaySource({ACME: text}))
    return [(f.line, f.code) for f in found]


def test_agi_async_is_the_bridge_but_foreign_agi_is_still_refused() -> None:
    venue = ("[acme-venue]\n"
             "exten => _X.,1,AGI({url},${{AB_LAST}})\n"
             ' same => n,GotoIf($["${{AGISTATUS}}" = "SUCCESS"]?ok)\n'
             " same => n(ok),Hangup()\n")
    assert lint(venue.format(url="agi:async")) == []
    assert lint(venue.format(url="AGI:ASYNC")) == []
    assert lint(venue.format(url="agi://evil.example/route")) == [(2, codes.FOREIGN_AGI)]
    assert lint(venue.format(url="agi:async${X}")) == [(2, codes.FOREIGN_AGI)]
    assert lint(venue.replace("AGI(", "EAGI(").format(url="agi:async")) == [
        (2, codes.FOREIGN_AGI)]


def test_an_asyncagi_route_request_must_still_test_agistatus() -> None:
    found = lint("[acme-venue]\nexten => _X.,1,AGI(agi:async,${AB_LAST})\n"
                 " same => n,Hangup()\n")
    assert found == [(2, codes.NO_AGISTATUS)]
