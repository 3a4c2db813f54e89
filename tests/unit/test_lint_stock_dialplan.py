"""`conf check`, `conf render` and `ctl apply`'s lint on the stock Debian dialplan, and the
AGI URL check (V502, V503).

The fixture (tests/fixtures/debian/) is an operator's existing extensions.conf that the
bridge did not write. With the operator's bridge config naming its contexts and the
guide's lines appended (`[globals] AB_AGI_URL` and the `#include`), the tree is clean;
without the config every stock context is unowned. Venues asking `${AB_AGI_URL}` need
it set in `[globals]` (V502) and, when the bridge config is known, set to the bridge's
own listener and secret (V503): otherwise every call silently takes the fallback.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ami_bridge import config as config_mod
from ami_bridge.apply import lint as apply_lint
from ami_bridge.cli import main
from ami_bridge.dialplan import findings as codes
from ami_bridge.dialplan.lint import BridgeAgi, check
from ami_bridge.dialplan.parser import OverlaySource
from ami_bridge.dialplan.render import render_tree

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "debian"
STOCK = FIXTURE / "extensions.conf"
BRIDGE = FIXTURE / "bridge.toml"
# asterisk-conf/README.md, step 3: what the operator appends to extensions.conf.
GUIDE_LINES = ('[globals]\nAB_AGI_URL=agi://127.0.0.1:4573        ; where the venues find '
               'the bridge\n#include "ami-bridge/extensions.conf"\n')
SECRET = "k9Qw-secret_route-0123456789"


def stock_tree(conf: Path, *, append: str = GUIDE_LINES) -> Path:
    """Asterisk's config directory: the stock extensions.conf with `append` added."""
    conf.mkdir(parents=True, exist_ok=True)
    shutil.copy(STOCK, conf / "extensions.conf")
    with (conf / "extensions.conf").open("a", encoding="utf-8") as ext:
        ext.write("\n" + append)
    return conf


def test_the_fixture_is_the_unchanged_debian_file() -> None:
    text = STOCK.read_text(encoding="utf-8")
    assert "[dundi-e164-canonical]" in text and "AB_AGI_URL" not in text
    assert "ami-bridge" not in text


def test_without_the_operator_s_config_every_stock_context_is_unowned(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conf", "check", "--tenant", "acme", "--tenant", "globex", str(STOCK)]) == 1
    out = capsys.readouterr().out
    assert out.count(f" {codes.NO_OWNER} ") == 28
    assert f" {codes.TAINTED_DIAL} " in out  # [outbound-freenum2], line 434


def test_with_the_operator_s_config_the_stock_file_is_clean(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conf", "check", "--config", str(BRIDGE), str(STOCK)]) == 0
    assert "conf check: clean" in capsys.readouterr().out


def test_render_then_check_the_stock_tree_with_the_guide_s_lines(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = stock_tree(tmp_path / "asterisk")
    assert main(["conf", "render", "--config", str(BRIDGE), "--out", str(conf)]) == 0
    assert (conf / "ami-bridge" / "tenants" / "acme.conf").is_file()
    capsys.readouterr()
    assert main(["conf", "check", "--config", str(BRIDGE), "--asterisk-conf", str(conf)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("conf check: clean"), out
    assert "0 finding" not in out and " finding" not in out


def test_ctl_apply_s_lint_accepts_the_stock_tree(tmp_path: Path) -> None:
    conf = stock_tree(tmp_path / "asterisk")
    cfg = config_mod.load(BRIDGE)
    assert apply_lint(render_tree(cfg), conf, cfg) == []


def test_a_tenant_context_that_goes_to_an_operator_context_is_refused(tmp_path: Path) -> None:
    conf = stock_tree(tmp_path / "asterisk", append=GUIDE_LINES + '#include "tenants/*.conf"\n')
    (conf / "tenants").mkdir()
    (conf / "tenants" / "acme.conf").write_text(
        "[acme-internal]\nexten => 1999,1,Goto(demo,s,1)\n", encoding="utf-8")
    cfg = config_mod.load(BRIDGE)
    found = apply_lint(render_tree(cfg), conf, cfg)
    assert len(found) == 1, found
    assert f"tenants/acme.conf:2: {codes.CROSS_JUMP} " in found[0]
    assert "[demo] which is the operator's ([operator] contexts)" in found[0]


def test_the_stock_dialplan_without_the_url_is_refused(tmp_path: Path) -> None:
    conf = stock_tree(tmp_path / "asterisk", append='#include "ami-bridge/extensions.conf"\n')
    cfg = config_mod.load(BRIDGE)
    found = apply_lint(render_tree(cfg), conf, cfg)
    assert found and all(f" {codes.NO_AGI_URL} " in f for f in found), found
    assert "no [globals] of the loaded files sets AB_AGI_URL" in found[0]


# -- V502 / V503 on small dialplans -----------------------------------------------------------

ACME = Path("tenants/acme.conf")
PLATFORM = Path("extensions.conf")
VENUE = ("[acme-venue]\nexten => _X.,1,AGI(${AB_AGI_URL}/route)\n"
         ' same => n,GotoIf($["${AGISTATUS}" != "SUCCESS"]?fallback)\n')
LISTEN = frozenset({("127.0.0.1", 4573)})


def lint(globals_text: str, bridge: BridgeAgi | None = None, venue: str = VENUE) -> list[str]:
    files = {PLATFORM: globals_text, ACME: venue}
    found = check([PLATFORM, ACME], tenants=("acme",), source=OverlaySource(files),
                  bridge_agi=bridge)
    return [f"{f.file}:{f.line}: {f.code}" for f in found]


def test_no_url_is_v502_at_the_first_route_request() -> None:
    assert lint("[general]\nstatic=yes\n") == [f"{ACME}:2: {codes.NO_AGI_URL}"]
    assert lint("[globals]\nOTHER=1\n", BridgeAgi(LISTEN)) == [f"{ACME}:2: {codes.NO_AGI_URL}"]


def test_a_dialplan_without_route_requests_needs_no_url() -> None:
    assert lint("", venue="[acme-a]\nexten => s,1,AGI(${AB_AGI_URL}/lookup)\n") == []


@pytest.mark.parametrize("url", ["agi://127.0.0.1:4573", "agi://127.0.0.1", "agi://127.0.0.1/"])
def test_the_bridge_s_own_listener_is_accepted(url: str) -> None:
    assert lint(f"[globals]\nAB_AGI_URL={url}\n", BridgeAgi(LISTEN)) == []


@pytest.mark.parametrize("url", ["agi://127.0.0.1:4574", "agi://10.0.0.5:4573",
                                 "agi://${HOST}:4573", "agis://127.0.0.1:4573", "nonsense"])
def test_another_address_is_v503_when_the_config_is_known(url: str) -> None:
    text = f"[globals]\nX=1\nAB_AGI_URL={url}\n"
    assert lint(text, BridgeAgi(LISTEN)) == [f"{PLATFORM}:3: {codes.WRONG_AGI_URL}"]
    assert lint(text) == []  # conf check without --config does not know the listener


def test_the_last_globals_assignment_counts() -> None:
    text = "[globals]\nAB_AGI_URL=agi://127.0.0.1:4573\n[globals]\nAB_AGI_URL=agi://10.0.0.5\n"
    assert lint(text, BridgeAgi(LISTEN)) == [f"{PLATFORM}:4: {codes.WRONG_AGI_URL}"]


def test_a_listener_on_every_address_is_reached_through_any() -> None:
    wildcard = BridgeAgi(frozenset({("0.0.0.0", 4573)}))
    assert lint("[globals]\nAB_AGI_URL=agi://192.0.2.7:4573\n", wildcard) == []
    assert lint("[globals]\nAB_AGI_URL=agi://192.0.2.7:4000\n", wildcard) == [
        f"{PLATFORM}:2: {codes.WRONG_AGI_URL}"]


def test_the_route_request_secret_must_be_the_url_s_path() -> None:
    ok = f"[globals]\nAB_AGI_URL=agi://127.0.0.1:4573/{SECRET}\n"
    assert lint(ok, BridgeAgi(LISTEN, SECRET)) == []
    for text in ("[globals]\nAB_AGI_URL=agi://127.0.0.1:4573\n",
                 f"[globals]\nAB_AGI_URL=agi://127.0.0.1:4573/{SECRET}x\n"):
        assert lint(text, BridgeAgi(LISTEN, SECRET)) == [f"{PLATFORM}:2: {codes.WRONG_AGI_URL}"]
    assert lint(ok, BridgeAgi(LISTEN)) == [f"{PLATFORM}:2: {codes.WRONG_AGI_URL}"]


def test_the_secret_is_never_quoted() -> None:
    files = {PLATFORM: f"[globals]\nAB_AGI_URL=agi://127.0.0.1:4573/{SECRET}x\n", ACME: VENUE}
    found = check([PLATFORM, ACME], tenants=("acme",), source=OverlaySource(files),
                  bridge_agi=BridgeAgi(LISTEN, SECRET))
    assert [f.code for f in found] == [codes.WRONG_AGI_URL]
    assert SECRET not in str(found[0]) and "secret" in found[0].message
    assert SECRET not in repr(BridgeAgi(LISTEN, SECRET))


def test_conf_check_with_a_config_checks_the_url(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    conf = stock_tree(tmp_path / "asterisk",
                      append=GUIDE_LINES.replace("4573", "4999"))
    assert main(["conf", "render", "--config", str(BRIDGE), "--out", str(conf)]) == 1
    assert f" {codes.WRONG_AGI_URL} AB_AGI_URL='agi://127.0.0.1:4999'" in capsys.readouterr().out
    assert not (conf / "ami-bridge").exists()  # refused: nothing written
    assert main(["conf", "check", "--tenant", "acme", "--tenant", "globex", "--operator", "*i*",
                 "--asterisk-conf", str(conf)]) == 2  # '*i*' reaches 'globex-'
