"""`ami-bridge calltest` without Asterisk: case derivation, the AMI follower, the SIPp
scenario text, the entries, the report and the command line's exit statuses.

The placing of calls is tested against the sandbox (tests/integration/test_calltest.py).
"""

from __future__ import annotations

import datetime as dt
import io
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ami_bridge import cli
from ami_bridge.calltest.cases import NO_RULE, Case, Plan, derive, device_of
from ami_bridge.calltest.entries import Entry, EntryError, parse_entry
from ami_bridge.calltest.follow import Follower, percentile
from ami_bridge.calltest.run import Placed, placements, report
from ami_bridge.calltest.scenario import CallLine, injection_csv, scenario_xml
from ami_bridge.tenant_config import TenantConfig, VenueConfig, parse_tenant
from ami_bridge.validation import failer
from tests.unit.test_core_purity import FORBIDDEN, _imports

ROOT = Path(__file__).resolve().parents[2]
BERLIN = ZoneInfo("Europe/Berlin")
# A Tuesday, 10:30 in Berlin.
TUESDAY_MORNING = dt.datetime(2026, 12, 1, 10, 30, tzinfo=BERLIN)
PAI = {"v-venue": Entry("v-venue", "v-trunk", pai=True)}

BASE = {
    "timezone": "Europe/Berlin",
    "holidays": ["2026-12-25"],
    "targets": ["9"],
    "external_prefixes": ["+49"],
    "outbound": "PJSIP/{number}@v-carrier",
    "extensions": {"1001": "PJSIP/v-agent", "1002": "PJSIP/v-agent2",
                   "operator": "PJSIP/v-operator"},
    "queues": {"sales": {"members": ["PJSIP/v-agent", "PJSIP/v-agent2"]}},
    "venues": {"v-venue": {"vts": "v"}},
}


def tenant(rules: list[dict[str, Any]], **extra: Any) -> tuple[dict[str, TenantConfig],
                                                               list[VenueConfig]]:
    raw = {**BASE, **extra, "rules": rules}
    parsed, venues = parse_tenant("v", raw, fail=failer("v/tenant.toml"), prefix="",
                                  router_timeout=2.0, redirect_limit=4)
    return {"v": parsed}, list(venues.values())


def plan_of(rules: list[dict[str, Any]], now: dt.datetime = TUESDAY_MORNING,
            entries: dict[str, Entry] = PAI, **extra: Any) -> Plan:
    tenants, venues = tenant(rules, **extra)
    return derive(tenants, venues, entries, now)


def cases(plan: Plan) -> dict[str, Case]:
    return {c.rule: c for c in plan.cases}


def skipped(plan: Plan) -> dict[str, str]:
    return {s.rule: s.why for s in plan.skipped}


# -- derivation ---------------------------------------------------------------------------

def test_each_rule_gets_a_call_that_it_matches_and_no_earlier_rule_does() -> None:
    plan = plan_of([
        {"name": "withheld", "ani_withheld": True, "targets": ["operator"]},
        {"name": "sales", "dnis_prefix": "1", "targets": ["1001"]},
        {"name": "vip", "ani_prefix": "+4930", "targets": ["queue:sales"]},
        {"name": "rest", "action": "default"},
    ], venues={"v-venue": {"vts": "v", "default_targets": ["1002"]}})
    found = cases(plan)
    assert list(found) == ["withheld", "sales", "vip", "rest"]
    assert found["withheld"].ani == "anonymous"
    assert found["withheld"].expected == {"PJSIP/v-operator"}
    assert found["sales"].dnis == "100" and found["sales"].ani != "anonymous"
    assert found["sales"].expected == {"PJSIP/v-agent"}
    assert found["vip"].ani.startswith("+4930") and not found["vip"].dnis.startswith("1")
    assert found["vip"].expected == {"PJSIP/v-agent", "PJSIP/v-agent2"}
    assert found["rest"].expected == {"PJSIP/v-agent2"}  # the venue's default_targets
    assert "default_targets" in found["rest"].why
    assert plan.skipped == ()


def test_the_chosen_call_rings_elsewhere_when_the_rule_is_not_in_force() -> None:
    found = cases(plan_of([
        {"name": "withheld", "ani_withheld": True, "targets": ["operator"]},
        {"name": "sales", "dnis_prefix": "1", "targets": ["1001"]},
        {"name": "rest", "action": "default"},
    ]))
    # Any other number defaults to the operator too: only the sales number tells.
    assert (found["withheld"].dnis, found["withheld"].ani) == ("100", "anonymous")


def test_default_without_default_targets_rings_the_operator_and_unmatched_calls_are_a_case(
) -> None:
    found = cases(plan_of([{"name": "sales", "dnis": "100", "targets": ["1001"]}]))
    assert found[NO_RULE].expected == {"PJSIP/v-operator"}
    assert found[NO_RULE].dnis != "100"


def test_reject_external_and_stateful_strategies() -> None:
    found = cases(plan_of([
        {"name": "block", "ani": "+4930666", "action": "reject", "cause": "congestion"},
        {"name": "out", "dnis": "77", "targets": ["external:+4930123"]},
        {"name": "rr", "dnis": "78", "targets": ["1001", "1002"], "strategy": "round_robin"},
        {"name": "split", "dnis": "79", "targets": ["1001", "operator"], "strategy": "split",
         "weights": [1, 1]},
    ]))
    assert found["block"].expected == {"reject:congestion"}
    assert found["out"].expected == {"PJSIP/v-carrier"}
    assert found["rr"].expected == {"PJSIP/v-agent", "PJSIP/v-agent2"}
    assert found["split"].expected == {"PJSIP/v-agent", "PJSIP/v-operator"}


def test_time_windows_and_holidays_in_the_tenants_timezone_now() -> None:
    rules = [{"name": "office", "days": ["mon", "tue"], "hours": "09:00-17:00",
              "targets": ["1001"]},
             {"name": "holiday", "holiday": True, "targets": ["1002"]},
             {"name": "rest", "targets": ["operator"]}]
    morning = plan_of(rules)
    assert "office" in cases(morning)
    assert "not now" in skipped(morning)["holiday"]
    # 20:30 Berlin is 19:30 UTC: the window is closed, whatever the UTC clock says.
    evening = plan_of(rules, now=dt.datetime(2026, 12, 1, 19, 30, tzinfo=dt.UTC))
    assert "not now" in skipped(evening)["office"] and "Europe/Berlin" in skipped(
        evening)["office"]
    christmas = plan_of(rules, now=dt.datetime(2026, 12, 25, 12, 0, tzinfo=BERLIN))
    assert cases(christmas)["holiday"].expected == {"PJSIP/v-agent2"}


def test_rules_that_cannot_be_placed_or_known_are_skipped_with_why() -> None:
    plan = plan_of([
        {"name": "menu", "action": "treatment", "prompt": "welcome", "collect_digits": 1,
         "dnis": "50"},
        {"name": "pressed", "digits": "1", "targets": ["1001"]},
        {"name": "agents", "agents_available": True, "dnis": "51", "targets": ["1001"]},
        {"name": "idle", "dnis": "52", "strategy": "longest_idle", "targets": ["1001"]},
        {"name": "hand", "dnis": "53", "targets": ["9"]},
        {"name": "all", "targets": ["1001"]},
        {"name": "shadowed", "dnis": "54", "targets": ["1002"]},
    ])
    why = skipped(plan)
    assert "treatment" in why["menu"]
    assert "digits" in why["pressed"]
    assert "agent state" in why["agents"] and "agent state" in why["idle"]
    assert "hand-written" in why["hand"]
    assert "earlier rule" in why["shadowed"] and "'all'" in why["shadowed"]
    assert list(cases(plan)) == ["all"]


def test_a_fixed_caller_number_skips_rules_that_need_their_own() -> None:
    entries = {"v-venue": parse_entry("v-venue=v-trunk")}
    plan = plan_of([{"name": "withheld", "ani_withheld": True, "targets": ["operator"]},
                    {"name": "rest", "targets": ["1001"]}], entries=entries)
    assert "'v-trunk'" in skipped(plan)["withheld"]
    assert cases(plan)["rest"].ani == "v-trunk"


def test_venues_without_an_entry_and_personal_venues_are_skipped_whole() -> None:
    tenants, venues = tenant([{"name": "all", "targets": ["1001"]}])
    plan = derive(tenants, venues, {}, TUESDAY_MORNING)
    assert plan.cases == () and "--entry" in plan.skipped[0].why


def test_derivation_is_repeatable_round_robin_cursors_untouched() -> None:
    rules = [{"name": "rr", "targets": ["1001", "1002"], "strategy": "round_robin"}]
    assert plan_of(rules) == plan_of(rules)


def test_device_of_a_dial_string() -> None:
    assert device_of("PJSIP/acme-agent") == "PJSIP/acme-agent"
    assert device_of("PJSIP/+4930123@acme-carrier") == "PJSIP/acme-carrier"


# -- following calls over AMI ------------------------------------------------------------

def _channel(marker: str, uniqueid: str, linkedid: str | None = None) -> dict[str, str]:
    return {"CallerIDName": marker, "Uniqueid": uniqueid, "Linkedid": linkedid or uniqueid,
            "Channel": "PJSIP/v-trunk-00000001"}


def test_follower_takes_the_first_real_dial_of_each_test_call() -> None:
    follow = Follower(["m-0", "m-1", "m-2"])
    follow.feed("Newchannel", _channel("someone else", "9.1"), 0.0)
    follow.feed("Newchannel", _channel("m-0", "1.1"), 1.0)
    follow.feed("Newchannel", _channel("m-1", "1.2"), 1.1)
    follow.feed("Newchannel", _channel("m-2", "1.3"), 1.2)
    # the callee's leg carries the caller's name too: not a second call
    follow.feed("Newchannel", _channel("m-0", "1.4", linkedid="1.1"), 1.3)
    follow.feed("DialBegin", {"Linkedid": "1.1", "DestChannel": "Local/1001@x-00000001;1"},
                1.01)
    follow.feed("DialBegin", {"Linkedid": "1.1",
                              "DestChannel": "PJSIP/v-agent-0000000a"}, 1.02)
    follow.feed("DialBegin", {"Linkedid": "1.1",
                              "DestChannel": "PJSIP/v-operator-0000000b"}, 1.5)
    follow.feed("DialBegin", {"Linkedid": "9.1", "DestChannel": "PJSIP/v-x-0000000c"}, 1.5)
    follow.feed("Hangup", {"Uniqueid": "1.1", "Linkedid": "1.1", "Cause": "16"}, 2.0)
    follow.feed("Hangup", {"Uniqueid": "1.2", "Linkedid": "1.2", "Cause": "17"}, 1.15)
    first, rejected, silent = (follow.observation(m) for m in ("m-0", "m-1", "m-2"))
    assert first is not None and rejected is not None and silent is not None
    assert first.actual == "PJSIP/v-agent"
    assert first.latency == pytest.approx(0.02)
    assert rejected.actual == "reject:busy" and rejected.latency == pytest.approx(0.05)
    assert silent.actual == "(no dial seen)" and silent.latency is None
    assert follow.ended() == {"m-0", "m-1"}
    assert follow.observation("someone else") is None


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 11)]
    assert percentile(values, 0.5) == 5.0
    assert percentile(values, 0.9) == 9.0
    assert percentile(values, 0.99) == 10.0
    assert percentile([3.0], 0.5) == 3.0
    with pytest.raises(ValueError):
        percentile([], 0.5)


# -- SIPp text, entries -----------------------------------------------------------------

def test_scenario_is_xml_and_sends_pai_only_when_asked() -> None:
    with_pai = scenario_xml(ring_ms=500, wait_ms=8000, pai=True)
    root = ET.fromstring(with_pai.split("\n", 2)[2])  # past the XML and DOCTYPE lines
    sends = [s.text or "" for s in root.iter("send")]
    assert sends[0].strip().startswith("INVITE") and "P-Asserted-Identity" in sends[0]
    assert any(s.strip().startswith("CANCEL") for s in sends)
    assert '<pause milliseconds="500" />' in with_pai and 'timeout="8000"' in with_pai
    assert "P-Asserted-Identity" not in scenario_xml(ring_ms=1, wait_ms=1, pai=False)


def test_injection_file_is_sequential_and_refuses_header_breaking_values() -> None:
    text = injection_csv([CallLine("acme-trunk", "100", "calltest-ab-0", "anonymous")])
    assert text == "SEQUENTIAL\nacme-trunk;100;calltest-ab-0;anonymous;\n"
    with pytest.raises(ValueError, match="SIP header"):
        injection_csv([CallLine("a;b", "100", "m", "1")])


def test_entries() -> None:
    assert parse_entry("acme-venue=acme-trunk") == Entry("acme-venue", "acme-trunk")
    assert parse_entry("acme-venue=").from_user("+4930") == "+4930"
    assert parse_entry("acme-venue=acme-trunk", pai=True).fixed_ani is None
    for bad in ("acme-venue", "=x", "acme-venue=a b", "acme-venue=<x>"):
        with pytest.raises(EntryError, match="--entry"):
            parse_entry(bad)


# -- report and command line -------------------------------------------------------------

def test_report_flags_a_mismatch_and_a_call_never_seen() -> None:
    case = Case("v", "v-venue", "sales", "100", "+1", frozenset({"PJSIP/v-agent"}), "")
    plan = Plan((case,), ())
    calls = placements(plan, 3, "t")
    assert [p.marker for p in calls] == ["calltest-t-0", "calltest-t-1", "calltest-t-2"]
    follow = Follower([p.marker for p in calls])
    for n, dest in enumerate(["PJSIP/v-agent-00000001", "PJSIP/v-operator-00000002"]):
        follow.feed("Newchannel", _channel(f"calltest-t-{n}", f"{n}.0"), 0.0)
        follow.feed("DialBegin", {"Linkedid": f"{n}.0", "DestChannel": dest}, 0.004)
    out = io.StringIO()
    assert report(plan, calls, follow, out) == 1
    text = out.getvalue()
    assert text.count("MISMATCH") == 2 and "(call not seen)" in text
    assert "3 calls, 1 at their expected destination, 2 not" in text
    assert "p50 4 ms" in text
    out = io.StringIO()
    assert report(plan, [Placed(case, "calltest-t-0")], follow, out) == 0


def _config(tmp_path: Path) -> Path:
    text = (ROOT / "examples" / "bridge.toml").read_text(encoding="utf-8").replace(
        'tenants_dir = "tenants.d"', f'tenants_dir = "{ROOT / "examples" / "tenants.d"}"')
    path = tmp_path / "bridge.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_cli_lists_the_cases_of_the_example_tenants(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["calltest", "--config", str(_config(tmp_path)), "--pai", "--list",
                     "--entry", "acme-venue=acme-trunk", "--entry", "globex-venue=globex-trunk"])
    out = capsys.readouterr().out
    assert code == 0
    assert "withheld-to-operator" in out and "PJSIP/globex-agent" in out
    assert "skipped: acme acme-personal" in out


def test_cli_usage_and_config_errors_exit_2(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    config = str(_config(tmp_path))
    assert cli.main(["calltest", "--config", config]) == 2
    assert "--entry" in capsys.readouterr().err
    assert cli.main(["calltest", "--config", str(tmp_path / "missing.toml"),
                     "--entry", "acme-venue=acme-trunk"]) == 2
    assert "no such config file (given by -c/--config)" in capsys.readouterr().err
    entry = ["--entry", "acme-venue=acme-trunk"]
    for flag, value in (("--rate", "0"), ("--repeat", "0"), ("--ring-ms", "-1")):
        assert cli.main(["calltest", "--config", config, *entry, flag, value]) == 2
        assert flag in capsys.readouterr().err
    # Only personal venues entered: nothing to place.
    assert cli.main(["calltest", "--config", config, "--entry", "acme-personal=x"]) == 2
    assert "no case" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["cases", "entries", "follow", "scenario"])
def test_calltest_cores_do_no_io(module: str) -> None:
    imported = _imports(ROOT / "ami_bridge" / "calltest" / f"{module}.py")
    assert not imported & FORBIDDEN
