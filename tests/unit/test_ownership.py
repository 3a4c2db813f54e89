"""Ownership (ami_bridge/ownership.py, enforced by config.load): attacks by a tenant admin.

A hostile tenant admin writes its own tenant file. Each attack of the security issue is
tried on a copy of the example tree (examples/bridge.toml + tenants.d/) and must be
refused at load, by `ami-bridge check` and by `conf render` (which then writes nothing),
with a message naming the tenant file, the key, the value and the real owner. The
operator's `[shared]` and `[owners.T]` in the bridge config are the only ways to widen
what a tenant may name.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ami_bridge import config as config_mod
from ami_bridge.ami_link import devices_of
from ami_bridge.cli import main
from ami_bridge.config import ConfigError
from ami_bridge.ownership import Owners, Use, check_rendered_queues, dial_use

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """A copy of examples/ (bridge.toml and tenants.d/); returns the bridge config path."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    return tmp_path / "examples" / "bridge.toml"


def tenant_file(bridge: Path, tenant: str) -> Path:
    return bridge.parent / "tenants.d" / tenant / "tenant.toml"


def edit(bridge: Path, tenant: str, old: str, new: str) -> Path:
    path = tenant_file(bridge, tenant)
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def add_to_bridge(bridge: Path, text: str) -> None:
    bridge.write_text(bridge.read_text(encoding="utf-8") + "\n" + text, encoding="utf-8")


def refused(bridge: Path, *fragments: str) -> str:
    with pytest.raises(ConfigError) as info:
        config_mod.load(bridge)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# -- the examples still load ----------------------------------------------------------------

def test_the_examples_own_everything_they_name(tree: Path) -> None:
    cfg = config_mod.load(tree)
    assert set(cfg.tenants) == {"acme", "globex"}
    # every device has its one owner, and the AMI link uses exactly that mapping
    assert cfg.devices == {"PJSIP/acme-agent": "acme", "PJSIP/acme-operator": "acme",
                           **{f"PJSIP/acme-desk{n}": "acme" for n in (1, 2, 3)},
                           "PJSIP/globex-agent": "globex", "PJSIP/globex-operator": "globex"}
    assert devices_of(cfg) == cfg.devices


# -- attacks from the security issue ------------------------------------------------------------

@pytest.mark.parametrize(("member", "kind", "name", "owner"), [
    ("Local/1001@globex-internal", "context", "globex-internal", "tenant globex's"),
    ("Local/2001@Globex-Internal", "context", "Globex-Internal", "tenant globex's"),
    ("PJSIP/globex-agent", "endpoint", "PJSIP/globex-agent", "tenant globex's"),
    ("PJSIP/GLOBEX-agent", "endpoint", "PJSIP/GLOBEX-agent", "tenant globex's"),
    ("PJSIP/1001@globex-carrier", "trunk", "PJSIP/globex-carrier", "tenant globex's"),
    ("Local/1001@default", "context", "default", "no tenant's (the operator's)"),
    ("Local/1001", "context", "default", "no tenant's (the operator's)"),
    ("PJSIP/reception", "endpoint", "PJSIP/reception", "no tenant's (the operator's)"),
])
def test_a_queue_member_of_another_owner_is_refused(tree: Path, member: str, kind: str,
                                                    name: str, owner: str) -> None:
    path = edit(tree, "acme", 'members = ["PJSIP/acme-agent"]',
                f'members = ["PJSIP/acme-agent", "{member}"]')
    message = refused(tree, f"{path}: queues.sales.members: {member!r} reaches {kind} "
                      f"{name!r}, which is {owner}")
    assert "[owners.acme]" in message and "[shared]" in message  # how to do it right


def test_another_tenants_endpoint_as_an_extension_is_refused(tree: Path) -> None:
    path = edit(tree, "acme", '1002 = "PJSIP/acme-agent"', '1002 = "PJSIP/globex-agent"')
    refused(tree, f"{path}: extensions.1002: 'PJSIP/globex-agent' reaches endpoint "
            "'PJSIP/globex-agent', which is tenant globex's")


def test_another_tenants_endpoint_as_a_device_is_refused(tree: Path) -> None:
    # the old "first tenant wins": acme would have received globex's agent state
    path = edit(tree, "acme", "[extensions]", 'devices = ["PJSIP/globex-agent"]\n\n[extensions]')
    refused(tree, f"{path}: devices: 'PJSIP/globex-agent' reaches endpoint "
            "'PJSIP/globex-agent', which is tenant globex's")


def test_another_tenants_trunk_as_the_outbound_route_is_refused(tree: Path) -> None:
    path = edit(tree, "acme", "@acme-carrier", "@globex-carrier")
    refused(tree, f"{path}: outbound: 'PJSIP/{{number}}@globex-carrier' goes out through "
            "trunk 'PJSIP/globex-carrier', which is tenant globex's")


@pytest.mark.parametrize("outbound", ["PJSIP/{number}", "PJSIP/acme-carrier@{number}",
                                      "PJSIP/{number}@acme-carrier@x", "PJSIP/{number}@"])
def test_an_outbound_route_must_name_its_trunk(tree: Path, outbound: str) -> None:
    path = edit(tree, "acme", "PJSIP/{number}@acme-carrier", outbound)
    refused(tree, f"{path}: outbound: {outbound!r} must name its trunk after one '@'")


@pytest.mark.parametrize(("venue", "owner"), [
    ("globex-internal", "tenant globex's"), ("globex-venue", "tenant globex's"),
    ("default", "no tenant's (the operator's)"), ("from-pstn", "no tenant's (the operator's)"),
])
def test_a_venue_named_after_a_context_it_does_not_own_is_refused(
        tree: Path, venue: str, owner: str) -> None:
    path = edit(tree, "acme", "[venues.acme-venue]", f"[venues.{venue}]")
    refused(tree, f"{path}: venues.{venue}: venue {venue!r} is {owner} context")


@pytest.mark.parametrize("kind", ["internal", "queues", "outbound"])
def test_a_venue_named_like_the_tenants_rendered_contexts_is_refused(tree: Path,
                                                                    kind: str) -> None:
    path = edit(tree, "acme", "[venues.acme-venue]", f"[venues.acme-{kind}]")
    refused(tree, f"{path}: venues.acme-{kind}: venue 'acme-{kind}' is the name of the "
            f"tenant's rendered {kind} context")


def test_two_tenants_naming_one_unowned_device_are_refused(tree: Path) -> None:
    # "first tenant wins" is gone: an endpoint outside both prefixes is nobody's
    edit(tree, "acme", "[extensions]", 'devices = ["PJSIP/reception"]\n\n[extensions]')
    edit(tree, "globex", "[extensions]", 'devices = ["PJSIP/reception"]\n\n[extensions]')
    refused(tree, f"{tenant_file(tree, 'acme')}: devices: 'PJSIP/reception' reaches "
            "endpoint 'PJSIP/reception', which is no tenant's")


@pytest.mark.parametrize("dial", ["PJSIP/a@b@c", "PJSIP/acme-x@"])
def test_unclear_dial_strings_are_refused(tree: Path, dial: str) -> None:
    path = edit(tree, "acme", '1002 = "PJSIP/acme-agent"', f'1002 = "{dial}"')
    refused(tree, f"{path}: extensions.1002: {dial!r}: ")


# -- prompts stay in the tenant's own sound directory -------------------------------------------

@pytest.mark.parametrize("prompts", ["acme", "acme/en", "tenants/acme", "tenants/acme/en"])
def test_prompts_in_the_tenants_own_directory_load(tree: Path, prompts: str) -> None:
    edit(tree, "acme", 'language = "en"', f'language = "en"\nprompts = "{prompts}"')
    assert config_mod.load(tree).tenants["acme"].prompts == prompts


@pytest.mark.parametrize(("prompts", "why"), [
    ("tenants/globex", "overlaps tenant globex's sound directory 'tenants/globex'"),
    ("globex/en", "overlaps tenant globex's sound directory 'globex'"),
    ("tenants", "overlaps tenant globex's sound directory 'tenants/globex'"),
    ("sounds/acme", "is not under the tenant's own sound directory ('acme' or "
                    "'tenants/acme')"),
    ("../globex", "must be a sound directory"),
    ("/var/lib/asterisk/sounds/tenants/globex", "must be a sound directory"),
    ("tenants/acme/../../globex", "must be a sound directory"),
])
def test_prompts_outside_the_tenants_own_directory_are_refused(
        tree: Path, prompts: str, why: str) -> None:
    path = edit(tree, "acme", 'language = "en"', f'language = "en"\nprompts = "{prompts}"')
    refused(tree, f"{path}: prompts: ", why, repr(prompts))


# -- what the operator shares and grants ---------------------------------------------------------

def test_shared_names_may_be_used_by_every_tenant_and_belong_to_none(tree: Path) -> None:
    add_to_bridge(tree, '[shared]\ncontexts = ["shared-ivr"]\n'
                  'endpoints = ["PJSIP/reception"]\ntrunks = ["PJSIP/carrier"]\n')
    edit(tree, "acme", "@acme-carrier", "@carrier")
    edit(tree, "acme", 'members = ["PJSIP/acme-agent"]',
         'members = ["PJSIP/acme-agent", "PJSIP/reception", "Local/0@shared-ivr"]')
    edit(tree, "globex", "[extensions]", 'devices = ["PJSIP/reception"]\n'
         'outbound = "PJSIP/{number}@carrier"\n\n[extensions]')
    cfg = config_mod.load(tree)
    assert cfg.tenants["globex"].devices == ("PJSIP/reception",)
    # a shared device is nobody's: its agent state goes to no tenant
    assert "PJSIP/reception" not in cfg.devices and "Local/0@shared-ivr" not in cfg.devices
    assert cfg.owners.shared_contexts == frozenset({"shared-ivr"})


def test_a_shared_endpoint_is_not_a_shared_trunk(tree: Path) -> None:
    add_to_bridge(tree, '[shared]\nendpoints = ["PJSIP/reception"]\n')
    path = edit(tree, "acme", "@acme-carrier", "@reception")
    refused(tree, f"{path}: outbound: ", "trunk 'PJSIP/reception', which is no tenant's")


def test_a_shared_context_is_no_venue(tree: Path) -> None:
    add_to_bridge(tree, '[shared]\ncontexts = ["lobby"]\n')
    path = edit(tree, "acme", "[venues.acme-venue]", "[venues.lobby]")
    refused(tree, f"{path}: venues.lobby: venue 'lobby' is a shared context",
            "exactly one tenant")


def test_granted_names_belong_to_their_one_tenant(tree: Path) -> None:
    add_to_bridge(tree, '[owners.acme]\nendpoints = ["PJSIP/alice", "DAHDI/1"]\n'
                  'contexts = ["from-acme-pstn"]\n')
    edit(tree, "acme", "[venues.acme-venue]", "[venues.from-acme-pstn]\nvts = \"acme\"\n\n"
         "[venues.acme-venue]")
    edit(tree, "acme", '1002 = "PJSIP/acme-agent"', '1002 = "PJSIP/alice"\n1003 = "DAHDI/1"')
    cfg = config_mod.load(tree)
    assert cfg.venues["from-acme-pstn"].tenant == "acme"
    assert cfg.devices["PJSIP/alice"] == "acme" and cfg.devices["DAHDI/1"] == "acme"
    # ...and globex may not name them
    path = edit(tree, "globex", '2002 = "PJSIP/globex-agent"', '2002 = "PJSIP/alice"')
    refused(tree, f"{path}: extensions.2002: 'PJSIP/alice' reaches endpoint 'PJSIP/alice', "
            "which is tenant acme's")


@pytest.mark.parametrize(("text", "key", "why"), [
    ('[shared]\ncontexts = ["acme-ivr"]', "shared.contexts",
     "'acme-ivr' carries tenant acme's prefix 'acme-'"),
    ('[shared]\ntrunks = ["PJSIP/globex-carrier"]', "shared.trunks",
     "'PJSIP/globex-carrier' carries tenant globex's prefix"),
    ('[shared]\nendpoints = ["PJSIP/a@b"]', "shared.endpoints", "'PJSIP/a@b' is not valid"),
    ('[shared]\nqueues = ["x"]', "shared.queues", "unknown key"),
    ('[owners.initech]\nendpoints = ["PJSIP/x"]', "owners.initech", "no tenant 'initech'"),
    ('[owners.acme]\nendpoints = ["PJSIP/globex-agent"]', "owners.acme.endpoints",
     "'PJSIP/globex-agent' carries tenant globex's prefix"),
    ('[owners.acme]\nendpoints = ["PJSIP/x"]\n[owners.globex]\nendpoints = ["PJSIP/x"]',
     "owners.globex.endpoints", "'PJSIP/x' is already granted to tenant acme"),
    ('[shared]\ncontexts = ["lobby"]\n[owners.acme]\ncontexts = ["lobby"]',
     "owners.acme.contexts", "'lobby' is also in [shared]"),
    ('[owners.acme]\nqueues = ["x"]', "owners.acme.queues", "unknown key"),
])
def test_operator_declarations_that_would_give_a_name_two_owners(
        tree: Path, text: str, key: str, why: str) -> None:
    add_to_bridge(tree, text + "\n")
    refused(tree, f"{tree}: {key}: ", why)


def test_tenant_names_that_carry_each_others_prefix_are_refused(tree: Path) -> None:
    (tree.parent / "tenants.d" / "acme-corp").mkdir()
    path = tree.parent / "tenants.d" / "acme-corp" / "tenant.toml"
    path.write_text("", encoding="utf-8")
    refused(tree, f"{path}: name: tenant name 'acme-corp' carries tenant acme's prefix")


# -- the commands: check and conf render refuse, and write nothing ------------------------------

def test_check_command_refuses_a_tenant_file_naming_another_tenants_member(
        tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = edit(tree, "acme", 'members = ["PJSIP/acme-agent"]',
                'members = ["Local/1001@globex-internal"]')
    assert main(["check", "--config", str(tree)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: queues.sales.members: 'Local/1001@globex-internal'" in err
    assert "tenant globex's" in err


def test_conf_render_refuses_and_writes_nothing(
        tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "etc"
    out.mkdir()
    path = edit(tree, "acme", "[venues.acme-venue]", "[venues.default]")
    assert main(["conf", "render", "--config", str(tree), "--out", str(out)]) == 2
    assert f"{path}: venues.default: venue 'default' is no tenant's" in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_conf_render_lints_before_it_writes(
        tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The config is clean but a hand-written fragment in OUT crosses into globex: what
    # render would write is refused together with it, and nothing is written.
    out = tmp_path / "etc"
    shutil.copytree(ROOT / "asterisk-conf", out)
    shutil.rmtree(out / "ami-bridge")
    (out / "tenants" / "acme.conf").write_text("[acme-internal]\ninclude => globex-internal\n")
    assert main(["conf", "render", "--config", str(tree), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert f"{out / 'tenants' / 'acme.conf'}:2:" in captured.out
    assert "nothing written" in captured.err
    assert not (out / "ami-bridge").exists()
    # and once the fragment is fixed, the same render writes the tree
    (out / "tenants" / "acme.conf").write_text("[acme-internal]\n")
    assert main(["conf", "render", "--config", str(tree), "--out", str(out)]) == 0
    assert (out / "ami-bridge" / "queues.conf").is_file()


def test_conf_check_uses_the_configs_shared_contexts_and_grants(
        tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add_to_bridge(tree, '[shared]\ncontexts = ["lobby"]\n'
                  '[owners.acme]\ncontexts = ["from-acme-pstn"]\n')
    dialplan = tmp_path / "extensions.conf"
    dialplan.write_text("[lobby]\nexten => s,1,Hangup()\n"
                        "[from-acme-pstn]\nexten => s,1,Goto(acme-internal,s,1)\n"
                        "[acme-internal]\nexten => s,1,Goto(lobby,s,1)\n")
    assert main(["conf", "check", "--config", str(tree), str(dialplan)]) == 0, \
        capsys.readouterr().out


# -- the pieces ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("dial", "use"), [
    ("PJSIP/acme-agent", Use("endpoint", "PJSIP/acme-agent")),
    ("PJSIP/1001@acme-carrier", Use("trunk", "PJSIP/acme-carrier")),
    ("SIP/alice", Use("endpoint", "SIP/alice")),
    ("IAX2/user@peer", Use("trunk", "IAX2/peer")),
    ("DAHDI/1", Use("endpoint", "DAHDI/1")),
    ("Local/1001@acme-internal", Use("context", "acme-internal")),
    ("Local/1001", Use("context", "default")),
])
def test_dial_use(dial: str, use: Use) -> None:
    assert dial_use(dial) == use


def test_rendered_queues_are_checked_member_by_member() -> None:
    owners = Owners(tenants=frozenset({"acme", "globex"}),
                    shared_endpoints=frozenset({"PJSIP/reception"}))
    text = ("; header\n\n[acme-sales]\nstrategy = ringall\nmember => PJSIP/acme-agent\n"
            "member => PJSIP/reception\nmember => Local/1@globex-internal,0\n\n"
            "[sales]\nmember => PJSIP/acme-agent\n")
    assert check_rendered_queues(text, owners=owners, where="q.conf") == [
        "q.conf:7: member 'Local/1@globex-internal' of tenant acme's queue reaches context "
        "'globex-internal', which is tenant globex's",
        "q.conf:9: queue [sales] belongs to no tenant",
    ]
