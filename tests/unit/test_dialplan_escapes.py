"""`conf check` refuses what it cannot prove stays inside the tenant, and lints queues.conf.

Each family has one hostile fixture under tests/data/dialplan/hostile/; a line marked
`; EXPECT CODE` must produce exactly that finding, and no other line any finding.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from ami_bridge.dialplan import findings as codes
from ami_bridge.dialplan.allow import Allowance, parse_allowance
from ami_bridge.dialplan.findings import Finding
from ami_bridge.dialplan.lint import check
from ami_bridge.dialplan.parser import DialplanReadError, OverlaySource

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = ROOT / "tests" / "data" / "dialplan" / "hostile"
TENANTS = ("acme", "globex")
ACME = Path("tenants/acme.conf")
_EXPECT_RE = re.compile(r";\s*EXPECT\s+([A-Z]+\d+)")


def expected(path: Path) -> list[tuple[int, str]]:
    lines = path.read_text().splitlines()
    return [(number, m.group(1)) for number, line in enumerate(lines, start=1)
            if (m := _EXPECT_RE.search(line))]


def got(found: list[Finding]) -> list[tuple[int, str]]:
    return [(f.line, f.code) for f in found]


def lint(text: str, **kw: Any) -> list[Finding]:
    return check([ACME], tenants=TENANTS, source=OverlaySource({ACME: text}), **kw)


@pytest.mark.parametrize("family", ["channels", "handlers", "shared", "host", "agi"])
def test_each_hostile_fragment_is_refused_line_by_line(family: str) -> None:
    path = HOSTILE / family / "acme.conf"
    want = expected(path)
    assert want, "the fixture marks what it expects"
    found = check([path], tenants=TENANTS)
    assert all(f.file == path for f in found)
    assert sorted(set(got(found))) == sorted(want), "\n".join(map(str, found))
    for finding in found:
        assert len(finding.message) > 40 and str(finding).startswith(f"{path}:")


def test_queue_members_outside_the_tenant_are_refused() -> None:
    path = HOSTILE / "queues" / "queues.conf"
    found = check([path], tenants=TENANTS)
    assert sorted(set(got(found))) == sorted(expected(path)), "\n".join(map(str, found))
    by_line = {f.line: f.message for f in found}
    inherited = next(n for n, c in expected(path) if c == codes.CROSS_MEMBER)
    assert "inherited by [acme-support] from template [acme-tpl]" in by_line[inherited]
    assert any("tenant globex's" in m and "ring another tenant's phones" in m
               for m in by_line.values())


def test_rendered_tree_with_its_queues_is_clean() -> None:
    conf = ROOT / "asterisk-conf"
    assert check([conf / "extensions.conf"], tenants=TENANTS, config_dir=conf) == []
    assert check([conf / "ami-bridge" / "queues.conf"], tenants=TENANTS) == []


def test_queues_conf_beside_extensions_conf_is_read_with_config_dir() -> None:
    source = OverlaySource({
        Path("etc/extensions.conf"): "[acme-a]\nexten => s,1,NoOp()\n",
        Path("etc/queues.conf"): "[acme-sales]\nmember => PJSIP/globex-agent\n",
    })
    found = check([Path("etc/extensions.conf")], tenants=TENANTS, source=source,
                  config_dir=Path("etc"))
    assert [(f.file, f.line, f.code) for f in found] == [
        (Path("etc/queues.conf"), 2, codes.CROSS_MEMBER)]
    # Without config_dir only what is named is read; a named queues.conf must exist.
    assert check([Path("etc/extensions.conf")], tenants=TENANTS, source=source) == []
    with pytest.raises(DialplanReadError):
        check([Path("etc/nope/queues.conf")], tenants=TENANTS, source=source)


def test_queue_in_another_tenants_file_and_queue_context_shared() -> None:
    source = OverlaySource({Path("tenants/acme.conf"): "", Path("q/queues.conf"):
                            '#include "globex.conf"\n',
                            Path("q/globex.conf"): "[acme-sales]\ncontext = platform-exit\n"})
    found = check([Path("q/queues.conf")], tenants=TENANTS, source=source,
                  file_owners={Path("q/globex.conf"): "globex"},
                  shared=frozenset({"platform-exit"}))
    assert got(found) == [(1, codes.FOREIGN_FILE)]


# --- the allow-list -------------------------------------------------------------------

def test_allow_list_is_per_code_subject_and_tenant() -> None:
    text = ("[acme-a]\nexten => s,1,System(/usr/local/bin/night-mode)\n"
            " same => n,Dial(PJSIP/carrier)\n")
    assert got(lint(text)) == [(2, codes.HOST_COMMAND), (3, codes.CROSS_ENDPOINT)]
    everyone = [Allowance(codes.HOST_COMMAND, "system"), Allowance(codes.CROSS_ENDPOINT,
                                                                   "PJSIP/carrier")]
    assert lint(text, allow=everyone) == []
    acme_only = [parse_allowance("S603 System", tenant="acme")]
    assert got(lint(text, allow=acme_only)) == [(3, codes.CROSS_ENDPOINT)]
    globex_only = [parse_allowance("S603 *", tenant="globex")]
    assert got(lint(text, allow=globex_only))[0] == (2, codes.HOST_COMMAND)


def test_allow_list_covers_queue_members_and_settings() -> None:
    source = OverlaySource({Path("queues.conf"): "[acme-sales]\nmember => PJSIP/carrier\n",
                            ACME: "[globals]\nACME_NIGHT = 1\n"})
    files = [Path("queues.conf"), ACME]
    assert got(check(files, tenants=TENANTS, source=source)) == [
        (2, codes.CROSS_MEMBER), (2, codes.SHARED_STATE)]
    allow = [parse_allowance("Q701 PJSIP/carrier", "acme"),
             parse_allowance("S602 globals/ACME_*", "acme")]
    assert check(files, tenants=TENANTS, source=source, allow=allow) == []


@pytest.mark.parametrize(("entry", "message"), [
    ("X301 globex-internal", "not a code that can be allowed"),
    ("S603", "no subject"),
    ("", "not a code"),
])
def test_bad_allow_entries_say_why(entry: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_allowance(entry)


def test_agi_addresses_name_the_bridge() -> None:
    text = "[acme-a]\nexten => s,1,AGI(agi://10.0.0.5/lookup)\n"
    assert got(lint(text)) == [(2, codes.FOREIGN_AGI)]
    assert lint(text, agi_addresses=frozenset({("10.0.0.5", 4573)})) == []


# --- the rules in detail --------------------------------------------------------------

@pytest.mark.parametrize("line", [
    "exten => s,1,Set(GLOBAL(AB_AGI_URL)=agi://10.6.6.6)",
    "exten => s,1,ExecIf($[1]?Set(GLOBAL(AB_AGI_URL)=agi://10.6.6.6))",
])
def test_global_agi_url_write_names_the_danger(line: str) -> None:
    [finding] = lint(f"[acme-a]\n{line}\n")
    assert finding.code == codes.SHARED_STATE
    assert "every venue's AGI(${AB_AGI_URL}/route) of every tenant" in finding.message


@pytest.mark.parametrize("line", [
    "exten => s,1,Set(AB_AGI_URL_2=agi://10.6.6.6)",
    "exten => s,1,MSet(X=1,__ab_agi_url_3=agi://10.6.6.6)",
    "exten => s,1,Set(AB_AGI_URL_=agi://10.6.6.6)",
])
def test_a_tenant_cannot_name_the_failover_bridges(line: str) -> None:
    # The venue failover asks ${AB_AGI_URL_${AB_AGI_NEXT}}: whoever sets one of these
    # names decides where a call goes when the first bridge does not answer.
    [finding] = lint(f"[acme-a]\n{line}\n")
    assert finding.code == codes.FOREIGN_AGI


def test_the_failover_request_is_the_bridges_own_and_only_in_that_form() -> None:
    ok = "[acme-a]\nexten => s,1,AGI(${AB_AGI_URL_${AB_AGI_NEXT}}/route,${AB_LAST})\n"
    assert lint(ok) == []
    for url in ("${AB_AGI_URL_${X}}/route", "${AB_AGI_URL_2}${X}/route",
                "${AB_AGI_URL_${AB_AGI_NEXT}}${X}/route"):
        assert got(lint(f"[acme-a]\nexten => s,1,AGI({url})\n")) == [(2, codes.FOREIGN_AGI)]


def test_a_variable_assigned_unbounded_anywhere_is_unbounded_everywhere() -> None:
    clean = ("[acme-a]\nexten => s,1,Set(PEER=agent)\n"
             " same => n,Dial(PJSIP/acme-${PEER})\n")
    assert lint(clean) == []
    # globex's fragment may set it too, for channels that reach acme (inheritance).
    dirty = clean + "[acme-b]\nexten => s,1,Set(__PEER=${ARG1})\n"
    assert got(lint(dirty)) == [(3, codes.DYNAMIC_CHANNEL)]
    # The bridge's own variables lose their trust the same way.
    text = ("[acme-a]\nexten => s,1,Dial(Local/${AB_TARGET}@acme-internal)\n")
    assert lint(text) == []
    assert got(lint(text + " same => n,Set(AB_TARGET=${X})\n")) == [
        (2, codes.DYNAMIC_CHANNEL)]


def test_one_finding_per_dial_string_problem() -> None:
    # T401 already says it: no S601 on the same line.
    assert got(lint("[acme-a]\nexten => _X.,1,Dial(PJSIP/${EXTEN})\n")) == [
        (2, codes.TAINTED_DIAL)]
    assert got(lint("[acme-a]\nexten => s,1,Dial(Local/s@${CTX})\n")) == [
        (2, codes.DYNAMIC_TARGET)]


def test_escapes_in_shared_and_platform_contexts_are_the_operators() -> None:
    text = "[platform-tools]\nexten => s,1,System(/usr/local/bin/rotate)\n"
    platform = Path("extensions.conf")
    found = check([platform], tenants=TENANTS, shared=frozenset({"platform-tools"}),
                  source=OverlaySource({platform: text}))
    assert found == []


def test_channel_selectors_accept_the_tenants_own_channels() -> None:
    text = ("[acme-a]\nexten => s,1,ChannelRedirect(PJSIP/acme-agent-00000001,acme-a,s,1)\n"
            " same => n,ChanSpy(PJSIP/acme-)\n same => n,PickupChan(PJSIP/acme-agent&"
            "PJSIP/globex-agent)\n same => n,SoftHangup(PJSIP/acme)\n")
    assert got(lint(text)) == [(4, codes.CROSS_ENDPOINT), (5, codes.CROSS_ENDPOINT)]


def test_queue_names_of_member_applications_are_crossings() -> None:
    text = ("[acme-a]\nexten => s,1,AddQueueMember(globex-sales,PJSIP/acme-agent)\n"
            " same => n,RemoveQueueMember(globex-sales,PJSIP/acme-agent)\n"
            " same => n,AddQueueMember(acme-sales,PJSIP/globex-agent)\n")
    assert got(lint(text)) == [(2, codes.CROSS_QUEUE), (3, codes.CROSS_QUEUE),
                               (4, codes.CROSS_ENDPOINT)]


def test_a_wrapped_call_is_reported_once() -> None:
    found = lint("[acme-a]\nexten => s,1,ExecIf($[1]?Set(X=${SHELL(id)}))\n")
    assert got(found) == [(2, codes.HOST_COMMAND)] and len(found) == 1


# -- AB_DIAL: a personal venue's `phones` (the bridge writes the tenant's own devices) ----

PHONES = """[acme-personal]
exten => 2101,1,MSet(AB_ACTION=,AB_DIAL=)
 same => n,Dial(${AB_DIAL},${AB_DIAL_TIMEOUT})
"""


def test_the_bridge_written_ab_dial_may_be_a_whole_dial_string() -> None:
    assert got(lint(PHONES)) == []


@pytest.mark.parametrize("assignment", [
    "Set(AB_DIAL=PJSIP/globex-agent)", "MSet(AB_DIAL=PJSIP/acme-agent)",
    "Set(__AB_DIAL=${CALLERID(num)})"])
def test_ab_dial_set_by_any_dialplan_line_is_a_run_time_channel_again(assignment: str) -> None:
    """One line anywhere giving AB_DIAL a value (even the tenant's own device) and the
    linter can no longer tell the bridge's value from it."""
    text = PHONES + f" same => n,{assignment}\n"
    # caller data in it is reported as taint (T401), which says it for that line
    assert {code for line, code in got(lint(text)) if line == 3} & {
        codes.DYNAMIC_CHANNEL, codes.TAINTED_DIAL}
