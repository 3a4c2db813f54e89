"""`conf render`: deterministic fragments, in sync with what the repository ships, and
true to the dialplan contract (ami_bridge.agi.variables) the bridge answers by."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ami_bridge import config as config_mod
from ami_bridge.agi import variables as contract
from ami_bridge.agi_adapter import commands_for
from ami_bridge.calls import Disposition, caller_data
from ami_bridge.cli import main
from ami_bridge.dialplan.lint import check
from ami_bridge.dialplan.parser import OverlaySource, Section, Step, parse_text
from ami_bridge.dialplan.render import VENUE_PATTERN, render_tree, write_tree
from ami_bridge.namespace import TARGET_KINDS
from ami_bridge.tenants.messages import Target

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "bridge.toml"


def test_shipped_fragments_are_what_the_example_config_renders(
        capsys: pytest.CaptureFixture[str]) -> None:
    # asterisk-conf/ami-bridge/ is rendered, committed, and used by the tests and demo.
    assert main(["conf", "render", "--config", str(EXAMPLE), "--out",
                 str(ROOT / "asterisk-conf"), "--check"]) == 0, capsys.readouterr().out


def test_render_is_deterministic_and_rewrites_only_changes(tmp_path: Path) -> None:
    cfg = config_mod.load(EXAMPLE)
    first, second = render_tree(cfg), render_tree(config_mod.load(EXAMPLE))
    assert first == second
    assert sorted(first) == ["ami-bridge/extensions.conf", "ami-bridge/queues.conf",
                             "ami-bridge/tenants/acme.conf", "ami-bridge/tenants/globex.conf",
                             "ami-bridge/voicemail.conf"]
    assert write_tree(first, tmp_path) == sorted(first)
    assert write_tree(first, tmp_path) == []
    assert not list(tmp_path.rglob(".*"))  # no temp files left behind


def test_venue_contract_and_tenant_resources() -> None:
    acme = render_tree(config_mod.load(EXAMPLE))["ami-bridge/tenants/acme.conf"]
    assert "[acme-venue]" in acme
    assert "AGI(${AB_AGI_URL}/route,${AB_LAST},${DIALSTATUS})" in acme
    # a route, unless a bridge that cannot route now answered and another is configured
    assert ('(asked),GotoIf($["${AGISTATUS}" = "SUCCESS" & "${AB_ACTION}" = "route" & '
            '("${AB_CAUSE}" != "no-vts" & "${AB_CAUSE}" != "stopping" | '
            '"${AB_AGI_URL_${AB_AGI_NEXT}}" = "")]?:other)') in acme
    assert "Gosub(acme-${AB_CTX_${AB_KIND}},${AB_TARGET},1)" in acme
    assert "Set(CHANNEL(language)=en)" in acme
    assert "GROUP_COUNT(acme@ami-bridge-tenant)} > 50" in acme
    # caller-controlled digits reach the carrier only through FILTER
    assert "Dial(PJSIP/${FILTER(0-9+,${EXTEN})}@acme-carrier,${AB_DIAL_TIMEOUT})" in acme
    assert "globex" not in acme


def test_render_refuses_a_broken_config(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "bridge.toml"
    broken.write_text('[bridge]\ntenants_dir = "nowhere"\n')
    assert main(["conf", "render", "--config", str(broken), "--out", str(tmp_path)]) == 2
    assert "bridge.tenants_dir" in capsys.readouterr().err
    assert not (tmp_path / "ami-bridge").exists()


# -- the venue against the contract --------------------------------------------------------

def substitute(text: str, variables: dict[str, str]) -> str:
    """Asterisk's ${NAME} substitution, innermost first (nested names included)."""
    inner = re.compile(r"\$\{([A-Za-z0-9_]*)\}")
    while (found := inner.search(text)) is not None:
        text = text[:found.start()] + variables.get(found.group(1), "") + text[found.end():]
    return text


def rendered_acme() -> tuple[list[Step], set[str]]:
    text = render_tree(config_mod.load(EXAMPLE))["ami-bridge/tenants/acme.conf"]
    dialplan = parse_text(text, Path("acme.conf"))
    assert dialplan.problems == ()
    steps = [s for s in dialplan.statements if isinstance(s, Step) and s.context == "acme-venue"
             and s.pattern == VENUE_PATTERN]  # the call's path (h, i, t are not calls)
    contexts = {s.name for s in dialplan.statements if isinstance(s, Section)}
    return steps, contexts


def test_the_venue_catches_every_extension_and_ends_the_special_ones() -> None:
    text = render_tree(config_mod.load(EXAMPLE))["ami-bridge/tenants/acme.conf"]
    venue = [s for s in parse_text(text, Path("acme.conf")).statements
             if isinstance(s, Step) and s.context == "acme-venue"]
    assert {s.pattern for s in venue} == {"h", "i", "t", VENUE_PATTERN}
    assert [s.app for s in venue if s.pattern in ("i", "t")] == ["Gosub", "Hangup"] * 2
    # each special extension ends, or its next priority would be the catch-all's
    assert [s.app for s in venue if s.pattern == "h"] == ["NoOp", "Hangup"]


def test_the_venue_asks_the_route_script_with_the_contracts_arguments() -> None:
    steps, _ = rendered_acme()
    # the nearest bridge, then the failover cursor's (docs/scale-out.md)
    first, failover = [s for s in steps if s.app == "AGI"]
    assert first.args == (f"${{{contract.AB_AGI_URL}}}/{contract.ROUTE_SCRIPT}",
                          *(f"${{{v}}}" for v in contract.ROUTE_ARGS))
    next_url = f"${{{contract.AB_AGI_URL_FAILOVER}${{{contract.AB_AGI_NEXT}}}}}"
    assert failover.args == (f"{next_url}/{contract.ROUTE_SCRIPT}", *first.args[1:])
    # the intermediary reads them back under these AGI environment keys
    assert [contract.agi_arg(v) for v in contract.ROUTE_ARGS] == ["agi_arg_1", "agi_arg_2"]


@pytest.mark.parametrize("target", [Target("extension", "1001"), Target("queue", "sales"),
                                    Target("external", "+4930123")])
def test_a_route_reaches_the_context_of_its_kind_and_comes_back_as_the_same_target(
        target: Target) -> None:
    steps, contexts = rendered_acme()
    # the variables the bridge writes, from the one MSet it sends
    [command] = commands_for(Disposition(contract.ACTION_ROUTE, target=target))
    pairs = command.decode().split('"')[1].split(",")
    variables = dict(pair.split("=", 1) for pair in pairs)
    assert set(variables) <= contract.WRITABLE_VARIABLES
    for step in steps:  # the venue's own MSet()s, in order, up to the Gosub
        if step.app == "Gosub":
            break
        if step.app == "MSet":
            for pair in step.args:
                name, _, value = pair.partition("=")
                variables[name] = substitute(value, variables) if name not in (
                    contract.AB_ACTION, contract.AB_DIAL_TIMEOUT) else variables.get(name, "")
    gosub, fallback = [s for s in steps if s.app == "Gosub"]
    assert fallback.args[0] == contract.tenant_context("acme", "extension")
    [exists] = [s for s in steps if "DIALPLAN_EXISTS" in s.data]
    assert f"DIALPLAN_EXISTS({gosub.args[0]},{gosub.args[1]},1)" in exists.data
    context, exten = (substitute(a, variables) for a in gosub.args[:2])
    assert context == contract.tenant_context("acme", target.kind) and context in contexts
    assert exten == target.value
    # AB_LAST, passed back as the first route argument, is the same Target
    env = {contract.agi_arg(contract.AB_LAST): variables[contract.AB_LAST],
           contract.agi_arg(contract.DIALSTATUS): "NOANSWER"}
    previous = caller_data(env).previous
    assert previous is not None and previous.target == target


def test_every_kind_has_a_rendered_context_and_nothing_else_is_reachable() -> None:
    steps, contexts = rendered_acme()
    assert set(contract.KIND_CONTEXT) == set(TARGET_KINDS)
    for kind in TARGET_KINDS:
        assert contract.tenant_context("acme", kind) in contexts
    gosub = next(s for s in steps if s.app == "Gosub")
    unknown = substitute(gosub.args[0], {"AB_KIND": "internal"})  # version 1's spelling
    assert unknown == "acme-" and unknown not in contexts  # DIALPLAN_EXISTS: fallback


def test_the_rendered_tree_passes_the_linter() -> None:
    files = render_tree(config_mod.load(EXAMPLE))
    for name, text in files.items():
        if name.endswith(".conf") and "/tenants/" in name:
            # With the platform's [globals] AB_AGI_URL its venues need (V502).
            platform = Path("extensions.conf")
            source = OverlaySource({Path(name): text,
                                    platform: "[globals]\nAB_AGI_URL=agi://127.0.0.1:4573\n"})
            assert check([platform, Path(name)], tenants=("acme", "globex"),
                         source=source) == []
