"""`conf check`: the shipped dialplan is clean; crossings, taint and venue rules refuse."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from ami_bridge.dialplan import findings as codes
from ami_bridge.dialplan.check import run_check
from ami_bridge.dialplan.findings import Finding
from ami_bridge.dialplan.lint import check
from ami_bridge.dialplan.parser import OverlaySource

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "dialplan"
TENANTS = ("acme", "globex")
ACME = Path("tenants/acme.conf")
PLATFORM = Path("extensions.conf")


def lint(text: str, file: Path = ACME, tenants: tuple[str, ...] = TENANTS,
         **kw: Any) -> list[Finding]:
    return check([file], tenants=tenants, source=OverlaySource({file: text}), **kw)


def got(found: list[Finding]) -> list[tuple[int, str]]:
    return [(f.line, f.code) for f in found]


def line_of(path: Path, marker: str) -> int:
    lines = path.read_text().splitlines()
    return next(i for i, line in enumerate(lines, start=1) if marker in line)


# --- the shipped dialplan and the acceptance cases ------------------------------------

def test_shipped_dialplan_is_clean() -> None:
    assert check([ROOT / "asterisk-conf/extensions.conf"], tenants=TENANTS) == []


def test_shipped_dialplan_of_the_routing_core_is_clean() -> None:
    assert check([DATA / "shipped/extensions.conf"], tenants=TENANTS) == []
    # and its venues really are exercised: AGI, Gosub into acme-${AB_KIND}, GotoIfs
    out = io.StringIO()
    assert run_check([DATA / "shipped/extensions.conf"], tenants=TENANTS, out=out) == 0
    assert out.getvalue().startswith("conf check: clean")


def test_acceptance_cases_are_refused_with_file_and_line() -> None:
    acme = DATA / "acceptance/tenants/acme.conf"
    found = check([DATA / "acceptance/extensions.conf"], tenants=TENANTS)
    assert [(f.file, f.line, f.code) for f in found] == [
        (acme, line_of(acme, "MARK include"), codes.CROSS_INCLUDE),
        (acme, line_of(acme, "MARK goto"), codes.CROSS_JUMP),
        (acme, line_of(acme, "MARK dial"), codes.TAINTED_DIAL),
    ]
    include, goto, dial = (f.message for f in found)
    assert "[globex-internal] of tenant globex" in include
    assert "'Goto(globex-venue,s,1)'" in goto and "tenant acme's [acme-venue]" in goto
    assert "'PJSIP/${EXTEN}'" in dial and "${EXTEN}" in dial and "FILTER" in dial


def test_run_check_prints_ci_lines_and_exits_1() -> None:
    out = io.StringIO()
    path = DATA / "acceptance/extensions.conf"
    assert run_check([path], tenants=TENANTS, out=out) == 1
    lines = out.getvalue().splitlines()
    acme = DATA / "acceptance/tenants/acme.conf"
    assert lines[0].startswith(f"{acme}:{line_of(acme, 'MARK include')}: X301 ")
    assert [line.split(":")[1] for line in lines[:3]] == sorted(
        (line.split(":")[1] for line in lines[:3]), key=int)
    assert lines[-1] == "conf check: 3 findings in 1 file (tenants: acme, globex)"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"paths": [], "tenants": TENANTS}, "no dialplan files"),
    ({"tenants": ()}, "no tenants"),
    ({"tenants": ("acme", "bad name")}, "bad tenant name"),
    ({"tenants": TENANTS, "owners": {"x": "initech"}}, "not a known tenant"),
    ({"tenants": TENANTS, "paths": [DATA / "nope.conf"]}, "cannot read"),
])
def test_run_check_usage_and_io_errors_exit_2(kwargs: dict[str, Any], message: str) -> None:
    out = io.StringIO()
    args: dict[str, Any] = {"paths": [DATA / "shipped/extensions.conf"], **kwargs}
    assert run_check(args.pop("paths"), out=out, **args) == 2
    assert message in out.getvalue() and out.getvalue().startswith("conf check: error:")


def test_finding_prints_as_a_ci_line() -> None:
    assert str(Finding(Path("a/b.conf"), 7, "X302", "why")) == "a/b.conf:7: X302 why"
    assert set(codes.CODES) >= {codes.CROSS_JUMP, codes.TAINTED_DIAL, codes.NO_AGISTATUS}


# --- crossings ------------------------------------------------------------------------

CROSSINGS = [
    ("include => globex-internal,9:00-17:00,mon-fri,*,*", codes.CROSS_INCLUDE),
    ("switch => Loopback/${EXTEN}@globex-internal", codes.CROSS_INCLUDE),
    ("exten => s,1,Goto(globex-venue,s,1)", codes.CROSS_JUMP),
    ("exten => s,1,GotoIf($[${X} = 1]?globex-venue,s,1)", codes.CROSS_JUMP),
    ("exten => s,1,GotoIf($[${X} = 1]?ok:globex-venue,s,1)", codes.CROSS_JUMP),
    ("exten => s,1,GotoIfTime(9:00-17:00,mon-fri,*,*?globex-venue,s,1)", codes.CROSS_JUMP),
    ("exten => s,1,Gosub(globex-internal,2001,1(a,b))", codes.CROSS_JUMP),
    ("exten => s,1,GosubIf($[1]?globex-internal,2001,1(x):acme-a,s,1)", codes.CROSS_JUMP),
    ("exten => s,1,Macro(dialout,1)", codes.CROSS_JUMP),
    ("exten => s,1,ChannelRedirect(PJSIP/acme-agent-00000001,globex-venue,s,1)",
     codes.CROSS_JUMP),
    ("exten => s,1,Originate(PJSIP/acme-agent,exten,globex-venue,s,1)", codes.CROSS_JUMP),
    ("exten => s,1,Dial(PJSIP/acme-agent,20,G(globex-venue^s^1))", codes.CROSS_JUMP),
    ("exten => s,1,Dial(PJSIP/acme-agent,20,U(globex-sub^arg))", codes.CROSS_JUMP),
    ("exten => s,1,Dial(PJSIP/acme-agent,20,b(globex-pre^s^1(x)))", codes.CROSS_JUMP),
    ("exten => s,1,Queue(acme-sales,F(globex-venue^s^1))", codes.CROSS_JUMP),
    ("exten => s,1,Queue(acme-sales,,,,,,globex-sub)", codes.CROSS_JUMP),
    ("exten => s,1,BackGround(hello,,,globex-menu)", codes.CROSS_JUMP),
    ("exten => s,1,DISA(no-password,globex-internal)", codes.CROSS_JUMP),
    ("exten => s,1,Pickup(2001@globex-internal)", codes.CROSS_JUMP),
    ("exten => s,1,ExecIf($[1]?Goto(globex-venue,s,1))", codes.CROSS_JUMP),
    ('exten => s,1,Originate(Local/s@acme-a,app,Goto,"globex-venue,s,1")', codes.CROSS_JUMP),
    ("exten => s,1,Dial(Local/2001@globex-internal/n,20)", codes.CROSS_LOCAL),
    ("exten => s,1,Dial(PJSIP/acme-agent&Local/2001@globex-internal)", codes.CROSS_LOCAL),
    ("exten => s,1,Originate(Local/2001@globex-internal,app,Playback,hello)",
     codes.CROSS_LOCAL),
    ("exten => s,1,AddQueueMember(acme-sales,Local/2001@globex-internal/n)",
     codes.CROSS_LOCAL),
    ("exten => s,1,Set(CHAN=Local/2001@globex-internal)", codes.CROSS_LOCAL),
    ("exten => s,1,Dial(Local/2001)", codes.CROSS_LOCAL),  # context "default": unowned
    ("exten => s,1,Queue(globex-sales)", codes.CROSS_QUEUE),
]


@pytest.mark.parametrize(("line", "code"), CROSSINGS)
def test_crossing_into_another_tenant_is_refused(line: str, code: str) -> None:
    found = lint(f"[acme-a]\n{line}\n")
    assert got(found) == [(2, code)], found


@pytest.mark.parametrize("line", [
    "include => acme-b",
    "exten => s,1,Goto(acme-b,s,1)",
    "exten => s,1,Goto(ask)",
    "exten => s,1,Goto(s,ask)",
    "exten => s,1,GotoIf($[${X} = 1]?acme-b,s,1:ok)",
    "exten => s,1,Gosub(acme-internal,${AB_TARGET},1)",
    "exten => s,1,Dial(Local/${AB_TARGET}@acme-internal/n,20)",
    "exten => s,1,Dial(PJSIP/acme-agent,20,G(acme-b^s^1)U(acme-sub))",
    "exten => s,1,Queue(acme-sales,,,,${AB_DIAL_TIMEOUT})",
    "exten => s,1,Queue(sales)",  # no tenant prefix: queues.conf is not read
    "exten => s,1,NoOp(Local/2001@globex-internal is only printed)",
    "exten => s,1,Pickup(2001@PICKUPMARK)",
])
def test_own_targets_are_accepted(line: str) -> None:
    assert lint(f"[acme-a]\n{line}\n") == []


def test_shared_targets_are_allowed() -> None:
    text = ("[acme-a]\ninclude => platform-moh\n"
            "exten => s,1,Goto(platform-voicemail,s,1)\n"
            " same => n,Dial(Local/s@platform-voicemail)\n")
    shared = frozenset({"platform-moh", "platform-voicemail"})
    assert lint(text, shared=shared) == []
    assert got(lint(text)) == [(2, codes.CROSS_INCLUDE), (3, codes.CROSS_JUMP),
                               (4, codes.CROSS_LOCAL)]


def test_shared_context_may_not_lead_into_a_tenant_nor_live_in_a_tenant_file() -> None:
    text = "[platform-vm]\nexten => s,1,Goto(acme-a,s,1)\n"
    shared = frozenset({"platform-vm"})
    found = lint(text, file=PLATFORM, shared=shared)
    assert got(found) == [(2, codes.CROSS_JUMP)]
    assert "shared context [platform-vm]" in found[0].message
    assert got(lint("[platform-vm]\nexten => s,1,NoOp()\n", shared=shared)) == [
        (1, codes.FOREIGN_FILE)]


# --- dynamic targets ------------------------------------------------------------------

@pytest.mark.parametrize("line", [
    "exten => s,1,Gosub(acme-${AB_KIND},${AB_TARGET},1)",
    "exten => s,1,Goto(acme-${KIND},s,1)",
    "exten => s,1,Dial(Local/s@acme-${AB_KIND}/n)",  # the bridge's: no '&' in it
    "exten => s,1,Goto(${FILTER(0-9,${X})},1)",  # cannot hold a comma
])
def test_dynamic_targets_pinned_to_the_tenant_prefix_are_accepted(line: str) -> None:
    assert lint(f"[acme-a]\n{line}\n") == []


@pytest.mark.parametrize("line", [
    "exten => s,1,Goto(${X},s,1)",
    "exten => s,1,Gosub(${CTX},s,1)",
    "exten => s,1,Goto(${TARGET},1)",  # "globex-venue,s" in TARGET names a context
    "exten => s,1,Goto(${TARGET})",
    "exten => s,1,Goto(acme${X},s,1)",  # "acme" without its "-" pins nothing
    "exten => s,1,Goto(ac${X},s,1)",
    "exten => s,1,Dial(Local/s@${CTX})",
    "exten => s,1,Queue(${QUEUE})",
    "include => ${TENANT}-internal",
    "exten => s,1,GotoIf($[1]?${A},s,1)",
])
def test_unpinned_dynamic_targets_are_refused(line: str) -> None:
    found = lint(f"[acme-a]\n{line}\n")
    assert got(found) == [(2, codes.DYNAMIC_TARGET)], found


def test_comma_shift_is_explained() -> None:
    [finding] = lint("[acme-a]\nexten => s,1,Goto(${TARGET},1)\n")
    assert "comma" in finding.message and "'${TARGET}'" in finding.message


def test_prefix_shared_with_a_longer_tenant_name_is_not_pinned() -> None:
    text = "[acme-a]\nexten => s,1,Gosub(acme-${KIND},s,1)\n"
    tenants = ("acme", "acme-corp")
    assert got(lint(text, tenants=tenants)) == [(2, codes.DYNAMIC_TARGET)]
    corp = Path("tenants/acme-corp.conf")
    ok = "[acme-corp-a]\nexten => s,1,Gosub(acme-corp-${KIND},s,1)\n"
    assert lint(ok, file=corp, tenants=tenants, owners={"acme-corp-a": "acme-corp"}) == []


def test_explicit_owner_inside_the_prefix_unpins_it() -> None:
    text = "[acme-a]\nexten => s,1,Gosub(acme-${KIND},s,1)\n"
    assert got(lint(text, owners={"acme-leased": "globex"})) == [(2, codes.DYNAMIC_TARGET)]


# --- caller-controlled data in dial strings -------------------------------------------

@pytest.mark.parametrize("line", [
    "exten => _X.,1,Dial(PJSIP/${EXTEN})",
    "exten => _X.,1,Dial(PJSIP/${EXTEN:1}@acme-carrier,20)",
    "exten => s,1,Dial(PJSIP/${CALLERID(num)})",
    "exten => s,1,Dial(PJSIP/${CALLERID(name)})",
    "exten => s,1,Dial(PJSIP/${CALLERID(dnid)})",
    "exten => s,1,Dial(PJSIP/${PJSIP_HEADER(read,X-Target)})",
    "exten => s,1,Dial(SIP/${SIP_HEADER(X-Target)})",
    "exten => s,1,Dial(PJSIP/${CHANNEL(pjsip,call-id)})",
    "exten => s,1,Dial(PJSIP/${CHANNEL(exten)})",
    "exten => _X.,1,Dial(PJSIP/${FILTER(0-9&,${EXTEN})})",
    r"exten => _X.,1,Dial(PJSIP/${FILTER(0-9\,,${EXTEN})})",
    "exten => _X.,1,Dial(PJSIP/${FILTER(${ALLOWED},${EXTEN})})",
    "exten => _X.,1,Dial(PJSIP/${TOUPPER(${EXTEN})})",
    "exten => _X.,1,Dial(PJSIP/${FILTER(0-9,${EXTEN})}${EXTEN})",
    "exten => _X.,1,Originate(PJSIP/${EXTEN},app,Playback,hello)",
    "exten => _X.,1,Queue(${EXTEN})",
    "exten => _X.,1,AddQueueMember(acme-sales,PJSIP/${EXTEN})",
    "exten => _X.,1,ChanSpy(PJSIP/${EXTEN})",
    "exten => _X.,1,ExecIf($[1]?Dial(PJSIP/${EXTEN}))",
    "exten => _[0-9a-z&]XX,1,Dial(PJSIP/${EXTEN})",
    "exten => _X!,1,Dial(PJSIP/${EXTEN})",
])
def test_caller_data_in_a_dial_string_is_refused(line: str) -> None:
    found = lint(f"[acme-a]\n{line}\n")
    assert codes.TAINTED_DIAL in [f.code for f in found], found
    assert all(f.line == 2 for f in found)


@pytest.mark.parametrize("line", [
    "exten => _X.,1,Dial(PJSIP/acme-${FILTER(0-9,${EXTEN})})",
    "exten => _+X.,1,Dial(PJSIP/${FILTER(0-9+,${EXTEN})}@acme-carrier,20)",
    "exten => _XXXX,1,Dial(PJSIP/acme-${EXTEN})",
    "exten => _[1-5]XX,1,Dial(PJSIP/acme-${EXTEN})",
    "exten => _NXXNXXXXXX,1,Dial(PJSIP/${EXTEN}@acme-carrier)",
    "exten => 1001,1,Dial(PJSIP/acme-${EXTEN})",
    "exten => _X.,1,Dial(PJSIP/acme-agent,20)",
    "exten => _X.,1,Dial(PJSIP/acme-${LEN(${EXTEN})})",
    "exten => _X.,1,Dial(PJSIP/acme-agent,${EXTEN})",  # the timeout is no dial string
    "exten => _X.,1,NoOp(${EXTEN} ${CALLERID(all)})",
    "exten => s,1,Set(CALLERID(num)=${EXTEN})",
])
def test_filtered_or_safe_values_in_dial_strings_are_accepted(line: str) -> None:
    assert lint(f"[acme-a]\n{line}\n") == []


@pytest.mark.parametrize("line", [
    # No caller data, but the endpoint is not pinned to acme-: any endpoint of those
    # characters (another tenant's included, if it is named so) is dialled.
    "exten => _X.,1,Dial(PJSIP/${FILTER(0-9,${EXTEN})})",
    "exten => _XXXX,1,Dial(PJSIP/${EXTEN})",
    "exten => 1001,1,Dial(PJSIP/${EXTEN})",
    # Not caller data, yet a value nothing bounds: it may hold '&PJSIP/globex-agent'.
    "exten => s,1,Dial(PJSIP/acme-${CHANNEL(language)})",
])
def test_safe_values_that_leave_the_endpoint_open_are_dynamic_channels(line: str) -> None:
    assert got(lint(f"[acme-a]\n{line}\n")) == [(2, codes.DYNAMIC_CHANNEL)]


def test_taint_flows_through_set_within_the_context() -> None:
    text = ("[acme-a]\n"
            "exten => _X.,1,Set(NUM=${EXTEN})\n"
            " same => n,MSet(A=x,WHO=${CALLERID(num)})\n"
            " same => n,Set(__NUM2=pre${NUM})\n"
            " same => n,Set(SAFE=${FILTER(0-9,${NUM})})\n"
            " same => n,Dial(PJSIP/acme-${SAFE})\n"
            " same => n,Dial(PJSIP/acme-${A})\n"
            " same => n,Dial(PJSIP/${NUM2})\n"
            "exten => s,1,Dial(PJSIP/${WHO})\n"
            "exten => _XX,1,Dial(PJSIP/${CUT(NUM,-,1)})\n")
    found = lint(text)
    assert got(found) == [(8, codes.TAINTED_DIAL), (9, codes.TAINTED_DIAL),
                          (10, codes.TAINTED_DIAL)]
    assert "set from ${NUM} at tenants/acme.conf:4" in found[0].message


def test_taint_does_not_leak_between_contexts() -> None:
    text = ("[acme-a]\nexten => _X.,1,Set(NUM=${EXTEN})\n"
            "[acme-b]\nexten => s,1,Dial(PJSIP/${NUM})\n")
    # Not T401 (taint is followed within a context only), but the value is not
    # bounded anywhere in the dialplan, so the channel is a run-time one.
    assert got(lint(text)) == [(4, codes.DYNAMIC_CHANNEL)]


def test_safe_pattern_set_is_clean_and_order_does_not_matter() -> None:
    text = ("[acme-a]\nexten => s,1,Dial(PJSIP/${B})\n"
            "exten => _XXXX,1,Set(A=${EXTEN})\n"
            "exten => _X.,1,Set(B=${A}${EXTEN})\n")
    found = lint(text)
    assert got(found) == [(2, codes.TAINTED_DIAL)]
    assert "${B}" in found[0].message and "set from ${EXTEN}" in found[0].message


# --- ownership ------------------------------------------------------------------------

def test_context_without_owner_is_refused() -> None:
    found = lint("[sales]\nexten => s,1,NoOp()\n", file=PLATFORM)
    assert got(found) == [(1, codes.NO_OWNER)]
    assert "'acme-', 'globex-'" in found[0].message


def test_explicit_owners_mapping_and_callable() -> None:
    text = "[sales]\nexten => s,1,Goto(acme-b,s,1)\n"
    assert lint(text, file=PLATFORM, owners={"sales": "acme"}) == []
    assert lint(text, file=PLATFORM, owners=lambda c: "acme" if c == "sales" else None) == []
    found = lint(text, file=PLATFORM, owners={"sales": "globex"})
    assert got(found) == [(2, codes.CROSS_JUMP)]


def test_ambiguous_owner_needs_an_explicit_answer() -> None:
    text = "[acme-corp-a]\nexten => s,1,NoOp()\n"
    tenants = ("acme", "acme-corp")
    assert got(lint(text, file=PLATFORM, tenants=tenants)) == [(1, codes.AMBIGUOUS_OWNER)]
    assert lint(text, file=PLATFORM, tenants=tenants,
                owners={"acme-corp-a": "acme-corp"}) == []


def test_context_in_another_tenants_file_is_refused() -> None:
    found = lint("[globex-a]\nexten => s,1,NoOp()\n")
    assert got(found) == [(1, codes.FOREIGN_FILE)]
    assert "tenant acme's file" in found[0].message


def test_context_split_over_two_tenants_files() -> None:
    source = OverlaySource({
        PLATFORM: '#include "tenants/*.conf"\n',
        Path("tenants/acme.conf"): "[orphan]\nexten => 1,1,NoOp()\n",
        Path("tenants/globex.conf"): "[orphan](+)\nexten => 2,1,NoOp()\n"
                                     "[globex-a]\nexten => 1,1,NoOp()\n",
    })
    found = check([PLATFORM], tenants=TENANTS, source=source)
    assert [(f.file.name, f.line, f.code) for f in found] == [
        ("acme.conf", 1, codes.NO_OWNER), ("globex.conf", 1, codes.FOREIGN_FILE)]


def test_file_owners_mapping_names_a_tenants_file() -> None:
    path = Path("rendered/one.conf")
    text = "[globex-a]\nexten => s,1,NoOp()\n"
    assert lint(text, file=path) == []
    found = lint(text, file=path, file_owners={path: "acme"})
    assert got(found) == [(1, codes.FOREIGN_FILE)]


def test_general_and_globals_are_not_contexts() -> None:
    text = "[general]\nstatic=yes\n[globals]\nX=Local/1@globex-a\n"
    assert lint(text, file=PLATFORM) == []


def test_templates_are_checked_where_inherited() -> None:
    text = ("[tpl](!)\nexten => s,1,Goto(globex-venue,s,1)\n"
            "[acme-a](tpl)\nexten => 1,1,NoOp()\n")
    found = lint(text, file=PLATFORM)
    assert got(found) == [(2, codes.CROSS_JUMP)]
    assert "inherited by [acme-a] from template [tpl]" in found[0].message


# --- the venue contract and duplicates ------------------------------------------------

VENUE = ("[acme-venue]\nexten => _X.,1,AGI({url},${{AB_LAST}})\n"
         " same => n,{check}\n same => n,Hangup()\n"
         "exten => s,1,GotoIf($[\"${{AGISTATUS}}\" != \"SUCCESS\"]?fallback)\n")
GLOBALS = "[globals]\nAB_AGI_URL=agi://127.0.0.1:4573\n"


def lint_venue(text: str) -> list[Finding]:
    """The tenant's file with the platform's [globals] its ${AB_AGI_URL} needs (V502)."""
    return check([PLATFORM, ACME], tenants=TENANTS,
                 source=OverlaySource({ACME: text, PLATFORM: GLOBALS}))


@pytest.mark.parametrize("url", ["${AB_AGI_URL}/route", "agi://127.0.0.1:4573/route"])
def test_route_without_agistatus_check_is_refused(url: str) -> None:
    found = lint_venue(VENUE.format(url=url, check="NoOp(${AGISTATUS})"))
    assert got(found) == [(2, codes.NO_AGISTATUS)]
    assert "AGISTATUS" in found[0].message and url in found[0].message


@pytest.mark.parametrize("check_line", [
    'GotoIf($["${AGISTATUS}" != "SUCCESS"]?fallback)',
    'ExecIf($["${AGISTATUS}" != "SUCCESS"]?Gosub(acme-internal,operator,1))',
    'Set(OK=${IF($["${AGISTATUS}" = "SUCCESS"]?1:0)})',
])
def test_route_with_agistatus_check_is_accepted(check_line: str) -> None:
    assert lint_venue(VENUE.format(url="${AB_AGI_URL}/route", check=check_line)) == []


def test_other_agi_scripts_need_no_check() -> None:
    assert lint("[acme-a]\nexten => s,1,AGI(agi://127.0.0.1/lookup)\n") == []


def test_duplicate_priorities_are_reported() -> None:
    text = ("[acme-a]\nexten => s,1,NoOp()\n same => n,NoOp()\n"
            "[acme-a](+)\nexten => s,1,NoOp()\nexten => t,1,NoOp()\n")
    assert got(lint(text)) == [(5, codes.DUPLICATE_PRIORITY)]


def test_findings_are_sorted_and_unique() -> None:
    text = ("[acme-a]\nexten => s,1,ExecIf($[1]?Dial(Local/1@globex-a))\n"
            "exten => t,1,Goto(globex-a,s,1)\n")
    found = lint(text)
    assert found == sorted(set(found))
    assert got(found) == [(2, codes.CROSS_LOCAL), (3, codes.CROSS_JUMP)]
