"""Operator-owned contexts (`[operator] contexts`, `conf check --operator`) and patterns.

The operator's hand-written dialplan is trusted: its contexts need no tenant, may reach
anything, and are held to no tenant rule; a tenant's context may reach only its own and
shared contexts, so a jump, include or Local channel into an operator context is a
finding. Names and patterns follow fnmatch, case-insensitively (docs/dialplan-lint.md);
a pattern that could match a tenant's name is refused before anything is linted.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

from ami_bridge import config as config_mod
from ami_bridge.cli import main
from ami_bridge.config import ConfigError
from ami_bridge.dialplan import findings as codes
from ami_bridge.dialplan.check import run_check
from ami_bridge.dialplan.findings import Finding
from ami_bridge.dialplan.globs import matches, may_start_with
from ami_bridge.dialplan.lint import check
from ami_bridge.dialplan.ownership import conflicts
from ami_bridge.dialplan.parser import OverlaySource

ROOT = Path(__file__).resolve().parents[2]
TENANTS = ("acme", "globex")
ACME = Path("tenants/acme.conf")
PLATFORM = Path("extensions.conf")
OPERATOR = frozenset({"default", "dundi-*", "trunk*"})


def lint(files: dict[Path, str], shared: frozenset[str] = frozenset()) -> list[Finding]:
    return check(list(files), tenants=TENANTS, source=OverlaySource(files),
                 operator=OPERATOR, shared=shared)


def got(found: list[Finding]) -> list[tuple[Path, int, str]]:
    return [(f.file, f.line, f.code) for f in found]


# -- patterns as documented -------------------------------------------------------------------

@pytest.mark.parametrize(("pattern", "name", "want"), [
    ("default", "default", True),
    ("default", "Default", True),  # Asterisk finds contexts case-insensitively
    ("default", "defaults", False),
    ("dundi-*", "dundi-e164-lookup", True),
    ("dundi-*", "dundi-", True),  # '*' matches nothing too
    ("dundi-*", "xdundi-e164", False),
    ("trunk?d", "trunkld", True),
    ("trunk?d", "trunklocal", False),
    ("[dp]emo", "demo", True),
    ("[dp]emo", "pemo", True),
    ("[!dp]emo", "demo", False),
    ("[!dp]emo", "memo", True),
    ("std*exten", "stdPrivacyexten", True),
])
def test_patterns_match_as_fnmatch_case_insensitively(pattern: str, name: str,
                                                       want: bool) -> None:
    assert matches(pattern, name) is want


@pytest.mark.parametrize(("pattern", "prefix", "want"), [
    ("*", "acme-", True),
    ("a*", "acme-", True),
    ("ac?e-x", "acme-", True),
    ("[a-c]cme*", "acme-", True),
    ("[!a]*", "acme-", False),
    ("[!a]*", "globex-", True),
    ("acme", "acme-", False),  # the name 'acme' itself is no 'acme-...' context
    ("acme-", "acme-", True),
    ("dundi-*", "acme-", False),
    ("*-venue", "acme-", True),
    ("ACME-*", "acme-", True),
])
def test_may_start_with_tells_whether_a_pattern_reaches_a_prefix(pattern: str, prefix: str,
                                                                 want: bool) -> None:
    assert may_start_with(pattern, prefix) is want


def test_conflicts_name_both_sides() -> None:
    assert conflicts(tenants={"acme"}, operator=OPERATOR, shared=frozenset(), owners={}) == []
    [wide] = conflicts(tenants={"acme"}, operator=frozenset({"*"}), shared=frozenset(),
                       owners={})
    assert "'*'" in wide and "tenant acme's 'acme-...'" in wide
    [granted] = conflicts(tenants={"acme"}, operator=frozenset({"ivr*"}), shared=frozenset(),
                          owners={"ivr-main": "acme"})
    assert "'ivr-main', granted to tenant acme" in granted
    [both] = conflicts(tenants={"acme"}, operator=frozenset({"dundi-*"}),
                       shared=frozenset({"dundi-e164"}), owners={})
    assert "'dundi-*'" in both and "'dundi-e164'" in both


# -- the linter's ownership rule ---------------------------------------------------------------

def test_operator_contexts_need_no_owner_and_are_not_held_to_tenant_rules() -> None:
    platform = ("[default]\n"
                "exten => _X.,1,Set(N=${EXTEN})\n"
                " same => n,Dial(PJSIP/${N})\n"  # T401 in a tenant's context
                " same => n,Goto(acme-venue,${EXTEN},1)\n"  # a DID into a venue
                " same => n,Goto(dundi-e164,s,1)\n"
                "include => acme-internal\n"
                "[dundi-e164]\nexten => s,1,Dial(Local/1@globex-internal)\n"
                "[unknown]\nexten => s,1,NoOp()\n")
    assert got(lint({PLATFORM: platform})) == [(PLATFORM, 9, codes.NO_OWNER)]


def test_without_the_operator_s_names_they_belong_to_no_tenant() -> None:
    found = check([PLATFORM], tenants=TENANTS,
                  source=OverlaySource({PLATFORM: "[default]\nexten => s,1,NoOp()\n"}))
    assert got(found) == [(PLATFORM, 1, codes.NO_OWNER)]
    assert "nor is it declared the operator's or shared" in found[0].message


@pytest.mark.parametrize(("line", "code"), [
    ("exten => s,1,Goto(default,s,1)", codes.CROSS_JUMP),
    ("exten => s,1,Gosub(trunkld,s,1)", codes.CROSS_JUMP),
    ("include => dundi-e164-lookup", codes.CROSS_INCLUDE),
    ("exten => s,1,Dial(Local/100@Default)", codes.CROSS_LOCAL),
])
def test_a_tenant_context_may_not_reach_an_operator_context(line: str, code: str) -> None:
    files = {ACME: f"[acme-internal]\n{line}\n",
             PLATFORM: "[default]\nexten => s,1,NoOp()\n[trunkld]\nexten => s,1,NoOp()\n"
                       "[dundi-e164-lookup]\nexten => s,1,NoOp()\n"}
    found = lint(files)
    assert got(found) == [(ACME, 2, code)]
    assert "the operator's ([operator] contexts)" in found[0].message
    assert "may reach only its own and shared contexts" in found[0].message


def test_a_shared_context_may_not_lead_into_an_operator_context() -> None:
    files = {PLATFORM: "[common]\nexten => s,1,Goto(default,s,1)\n"
                       "[default]\nexten => s,1,NoOp()\n"}
    found = lint(files, shared=frozenset({"comm*"}))
    assert got(found) == [(PLATFORM, 2, codes.CROSS_JUMP)]


def test_shared_patterns_are_reachable_by_every_tenant() -> None:
    files = {ACME: "[acme-internal]\nexten => s,1,Goto(common-ivr,s,1)\n",
             PLATFORM: "[common-ivr]\nexten => s,1,NoOp()\n"}
    assert got(lint(files)) == [(PLATFORM, 1, codes.NO_OWNER), (ACME, 2, codes.CROSS_JUMP)]
    assert lint(files, shared=frozenset({"common-*"})) == []


def test_an_operator_context_in_a_tenant_s_file_is_foreign() -> None:
    found = lint({ACME: "[default]\nexten => s,1,NoOp()\n"})
    assert got(found) == [(ACME, 1, codes.FOREIGN_FILE)]
    assert "operator context [default]" in found[0].message


def test_run_check_refuses_a_pattern_that_reaches_a_tenant() -> None:
    out = io.StringIO()
    assert run_check([PLATFORM], tenants=TENANTS, operator=frozenset({"g*"}), out=out,
                     source=OverlaySource({PLATFORM: ""})) == 2
    assert "operator context 'g*' matches tenant globex's 'globex-...' contexts" in \
        out.getvalue()
    out = io.StringIO()
    assert run_check([PLATFORM], tenants=TENANTS, operator=frozenset({"a b"}), out=out,
                     source=OverlaySource({PLATFORM: ""})) == 2
    assert "operator context 'a b' is not a context name or pattern" in out.getvalue()


def test_conf_check_operator_flag_mirrors_the_config(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "extensions.conf"
    path.write_text("[default]\nexten => s,1,NoOp()\n[dundi-x]\nexten => s,1,NoOp()\n")
    assert main(["conf", "check", "--tenant", "acme", str(path)]) == 1
    assert main(["conf", "check", "--tenant", "acme", "--operator", "default", str(path)]) == 1
    assert "[dundi-x] belongs to no tenant" in capsys.readouterr().out
    assert main(["conf", "check", "--tenant", "acme", "--operator", "default",
                 "--operator", "DUNDI-*", str(path)]) == 0
    assert main(["conf", "check", "--tenant", "acme", "--operator", "*", str(path)]) == 2


# -- the bridge config -------------------------------------------------------------------------

@pytest.fixture()
def bridge(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    return tmp_path / "examples" / "bridge.toml"


def with_bridge(bridge: Path, text: str) -> Path:
    bridge.write_text(bridge.read_text(encoding="utf-8") + "\n" + text, encoding="utf-8")
    return bridge


def test_the_config_reads_operator_and_shared_patterns(bridge: Path) -> None:
    cfg = config_mod.load(with_bridge(bridge, '[operator]\ncontexts = ["default", "dundi-*"]\n'
                                      '[shared]\ncontexts = ["common-*"]\n'))
    assert cfg.owners.operator_contexts == frozenset({"default", "dundi-*"})
    assert cfg.owners.is_operator("DUNDI-e164") and not cfg.owners.is_operator("acme-venue")


@pytest.mark.parametrize(("text", "fragments"), [
    ('[operator]\ncontexts = ["*-venue"]\n',
     ("operator.contexts", "'*-venue' matches tenant acme's 'acme-...' contexts")),
    ('[operator]\ncontexts = ["globex-ivr"]\n',
     ("operator.contexts", "'globex-ivr' is tenant globex's")),
    ('[operator]\ncontexts = ["ivr*"]\n[owners.acme]\ncontexts = ["ivr-main"]\n',
     ("operator.contexts", "'ivr-main', granted to tenant acme")),
    ('[operator]\ncontexts = ["common"]\n[shared]\ncontexts = ["comm*"]\n',
     ("operator.contexts", "shared context 'comm*' overlap")),
    ('[operator]\ncontexts = ["a b"]\n', ("operator.contexts", "'a b' is not valid")),
    ('[operator]\nendpoints = ["PJSIP/x"]\n',
     ("operator.endpoints: unknown key (allowed: contexts)",)),
    ('[shared]\ncontexts = ["acme*"]\n', ("shared.contexts", "'acme*' matches tenant acme's")),
])
def test_the_config_refuses_a_context_with_two_owners(bridge: Path, text: str,
                                                      fragments: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as info:
        config_mod.load(with_bridge(bridge, text))
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_a_tenant_file_may_not_name_an_operator_context(bridge: Path) -> None:
    tenant = bridge.parent / "tenants.d" / "acme" / "tenant.toml"
    text = tenant.read_text(encoding="utf-8")
    tenant.write_text(text.replace('1001 = "PJSIP/acme-agent"',
                                   '1001 = "Local/s@default"', 1), encoding="utf-8")
    assert 'Local/s@default' in tenant.read_text(encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        config_mod.load(with_bridge(bridge, '[operator]\ncontexts = ["default"]\n'))
    assert "context 'default', which is no tenant's (the operator's)" in str(info.value)
