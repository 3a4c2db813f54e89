"""Bridge configuration (ami_bridge/config.py): the example loads; every error says where.

Errors must name the file, the dotted key and the bad value (docs/configuration.md).
Most tests mutate a deep copy of examples/bridge.toml and call `parse`; `load` is used
for the file-level failures (unreadable file, invalid TOML) with files under tmp_path.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import math
import random
import tomllib
from pathlib import Path
from typing import Any

import pytest

from ami_bridge.config import (
    DEFAULT_AGI_PORT,
    DEFAULT_MAX_PENDING_PER_VTS,
    DEFAULT_ROUTER_TIMEOUT,
    BridgeConfig,
    ConfigError,
    VenueConfig,
    VtsConfig,
    load,
    parse,
)
from ami_bridge.supervision.confine import VtsConfinement
from ami_bridge.tenants.routing import CallInfo, parse_protocol

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "bridge.toml"

# A VTS with no confine keys is confined ([bridge] confine defaults to "required").
CONFINED = VtsConfinement(mode="required")

def _inline_example() -> dict[str, Any]:
    """The example config with its tenant files inlined as [tenants.NAME] tables."""
    raw = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    directory = EXAMPLE.parent / raw["bridge"].pop("tenants_dir")
    raw["tenants"] = {d.name: tomllib.loads((d / "tenant.toml").read_text(encoding="utf-8"))
                      for d in sorted(directory.iterdir()) if (d / "tenant.toml").is_file()}
    return raw


EXAMPLE_RAW = _inline_example()
PATH = Path("/etc/ami-bridge/bridge.toml")


def example() -> dict[str, Any]:
    return copy.deepcopy(EXAMPLE_RAW)


def config_error(raw: dict[str, Any], *fragments: str, path: Path = PATH) -> str:
    with pytest.raises(ConfigError) as info:
        parse(raw, path=path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def load_text(tmp_path: Path, text: str) -> BridgeConfig:
    path = tmp_path / "bridge.toml"
    path.write_text(text, encoding="utf-8")
    return load(path)


# -- the example -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cfg() -> BridgeConfig:
    return load(EXAMPLE)


def test_example_bridge_section(cfg: BridgeConfig) -> None:
    assert cfg.path == EXAMPLE
    assert (cfg.agi_host, cfg.agi_port) == ("127.0.0.1", 4573)
    assert cfg.router_timeout == 2.0
    assert cfg.max_pending_per_vts == 2000


def test_example_venues_map_to_tenant_and_vts(cfg: BridgeConfig) -> None:
    assert cfg.venues == {
        "acme-personal": VenueConfig(context="acme-personal", tenant="acme", vts="acme",
                                     router_timeout=1.5, personal=True),
        "acme-venue": VenueConfig(context="acme-venue", tenant="acme", vts="acme",
                                  router_timeout=1.5, default_targets=("operator",)),
        "globex-personal": VenueConfig(context="globex-personal", tenant="globex",
                                       vts="globex", router_timeout=2.0, personal=True),
        "globex-venue": VenueConfig(context="globex-venue", tenant="globex", vts="globex",
                                    router_timeout=2.0),
    }


def test_example_vts_tenants_filled_in(cfg: BridgeConfig) -> None:
    assert cfg.vts == {
        "acme": VtsConfig(name="acme", command=(), grace_period=3.0, tenants=("acme",),
                          confinement=CONFINED),
        "globex": VtsConfig(name="globex", command=(), grace_period=3.0, tenants=("globex",),
                            confinement=CONFINED),
    }


def test_example_tenants(cfg: BridgeConfig) -> None:
    acme, globex = cfg.tenants["acme"], cfg.tenants["globex"]
    assert set(cfg.tenants) == {"acme", "globex"}
    assert acme.name == "acme"
    assert acme.timezone == "Europe/Berlin"
    unplugged = {"9", "91", "92", "93", "94", "95"}  # hand-written extensions
    desks = {"1011", "1012", "1013"}  # users bind to them (personal router)
    assert acme.targets == frozenset({"1001", "1002", "operator"} | unplugged | desks)
    assert dict(acme.extensions) == {"1001": "PJSIP/acme-agent", "1002": "PJSIP/acme-agent",
                                     **{d: f"PJSIP/acme-desk{d[-1]}" for d in sorted(desks)},
                                     "operator": "PJSIP/acme-operator"}
    assert acme.personal is not None and acme.personal.numbers == {
        "2101": "1011", "2102": "1012", "2103": "1013"}
    assert acme.holidays == ("2026-12-25",)
    assert [r["name"] for r in acme.rules] == ["withheld-to-operator", "sales",
                                                "everything-else"]
    assert globex.timezone == "America/New_York"
    assert globex.targets == frozenset({"2001", "2002", "operator"} | unplugged)
    assert globex.holidays == ()
    assert [r["name"] for r in globex.rules] == ["support"]


def test_example_rules_run_in_the_vts_parser(cfg: BridgeConfig) -> None:
    """The validated raw rules are what the VTS runtime parses and evaluates."""
    acme = cfg.tenants["acme"]
    protocol = parse_protocol(acme.rules, timezone=acme.timezone, holidays=acme.holidays)
    now, rng = dt.datetime(2026, 1, 5, 12, tzinfo=dt.UTC), random.Random(0)

    def route(ani: str, dnis: str) -> tuple[str, str, str]:
        d = protocol.evaluate(CallInfo(ani=ani, dnis=dnis), now, rng)
        return d.action, d.target.value if d.target else "", d.rule

    assert route("anonymous", "100") == ("route", "operator", "withheld-to-operator")
    assert route("+4930555", "100") == ("route", "1001", "sales")
    assert route("+4930555", "200") == ("default", "", "everything-else")


def test_example_is_frozen(cfg: BridgeConfig) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.router_timeout = 5.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.venues["acme-venue"].router_timeout = 5.0  # type: ignore[misc]


def test_venue_without_override_follows_the_global_timeout() -> None:
    raw = example()
    raw["bridge"]["router_timeout"] = 5
    cfg = parse(raw, path=PATH)
    assert cfg.router_timeout == 5.0
    assert isinstance(cfg.router_timeout, float)
    assert cfg.venues["globex-venue"].router_timeout == 5.0
    assert cfg.venues["acme-venue"].router_timeout == 1.5  # its own override still wins


def test_defaults() -> None:
    cfg = parse({}, path=PATH)
    assert cfg.path == PATH
    assert (cfg.agi_host, cfg.agi_port) == ("127.0.0.1", DEFAULT_AGI_PORT)
    assert cfg.router_timeout == DEFAULT_ROUTER_TIMEOUT
    assert cfg.max_pending_per_vts == DEFAULT_MAX_PENDING_PER_VTS
    assert (cfg.tenants, cfg.venues, cfg.vts) == ({}, {}, {})


def test_tenant_defaults() -> None:
    cfg = parse({"tenants": {"bare": {}}}, path=PATH)
    bare = cfg.tenants["bare"]
    assert (bare.timezone, bare.targets, bare.holidays, bare.rules) == (
        "UTC", frozenset(), (), ())


def test_one_vts_serving_several_tenants() -> None:
    raw = example()
    raw["tenants"]["globex"]["venues"]["globex-venue"]["vts"] = "acme"
    raw["tenants"]["globex"]["venues"]["globex-lobby"] = {"vts": "acme"}
    raw["tenants"]["globex"]["personal"]["vts"] = "acme"
    raw["vts"]["acme"] = {"command": ["/opt/vts/run", "--fast"], "grace_period": 1}
    del raw["vts"]["globex"]  # nothing maps to it any more
    cfg = parse(raw, path=PATH)
    assert cfg.vts["acme"].tenants == ("acme", "globex")
    assert cfg.vts["acme"].command == ("/opt/vts/run", "--fast")
    assert cfg.vts["acme"].grace_period == 1.0
    assert set(cfg.vts) == {"acme"}
    assert cfg.venues["globex-lobby"] == VenueConfig(
        context="globex-lobby", tenant="globex", vts="acme", router_timeout=2.0)


def test_an_idle_vts_is_refused_naming_its_section() -> None:
    raw = example()
    raw["tenants"]["globex"]["venues"]["globex-venue"]["vts"] = "acme"
    raw["tenants"]["globex"]["personal"]["vts"] = "acme"
    config_error(raw, "vts.globex: no venue maps to VTS 'globex'")
    raw = example()
    raw["vts"]["spare"] = {}
    config_error(raw, "vts.spare: no venue maps to VTS 'spare'")


def test_a_vts_only_a_personal_context_maps_to_is_used() -> None:
    raw = example()
    raw["tenants"]["globex"]["personal"]["vts"] = "concierge"
    raw["vts"]["concierge"] = {}
    assert parse(raw, path=PATH).vts["concierge"].tenants == ("globex",)


def test_vts_tenants_are_sorted() -> None:
    names = ["zeta", "alpha", "mid", "beta", "omega", "kappa"]
    raw: dict[str, Any] = {"vts": {"shared": {}}, "tenants": {
        name: {"venues": {f"{name}-in": {"vts": "shared"}}} for name in names}}
    assert parse(raw, path=PATH).vts["shared"].tenants == tuple(sorted(names))


@pytest.mark.parametrize(("listen", "host", "port"), [
    ("0.0.0.0:4573", "0.0.0.0", 4573), ("localhost:1", "localhost", 1),
    ("[::1]:65535", "[::1]", 65535), ("agi.example.net:4574", "agi.example.net", 4574),
])
def test_agi_listen_accepted(listen: str, host: str, port: int) -> None:
    # Off loopback the listener needs its peers named (tests/unit/test_agi_listener.py).
    remote = {"agi_allow_remote": True, "agi_allowed_peers": ["10.0.0.5"]}
    cfg = parse({"bridge": {"agi_listen": listen, **remote}}, path=PATH)
    assert (cfg.agi_host, cfg.agi_port) == (host, port)


def test_load_from_toml_text(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, """
[bridge]
agi_listen = "127.0.0.1:5000"
[vts.one]
command = ["./my-vts"]
[tenants.t1]
timezone = "Asia/Tokyo"
targets = ["100"]
holidays = [2026-01-01, "2026-01-02"]   # a TOML date and a string
[tenants.t1.venues.t1-in]
vts = "one"
[[tenants.t1.rules]]
name = "all"
targets = ["100"]
""")
    assert cfg.path == tmp_path / "bridge.toml"
    assert cfg.agi_port == 5000
    assert cfg.tenants["t1"].holidays == ("2026-01-01", "2026-01-02")
    assert cfg.vts["one"] == VtsConfig(name="one", command=("./my-vts",), grace_period=3.0,
                                       tenants=("t1",), confinement=CONFINED)


# -- errors: structure -------------------------------------------------------------------

@pytest.mark.parametrize("key", ["bridges", "tenant", "global", "Bridge"])
def test_unknown_top_level_key(key: str) -> None:
    raw = example()
    raw[key] = {}
    message = config_error(raw, f"{PATH}: {key}: unknown key")
    assert ("(allowed: ami, api, ari, bridge, cluster, metrics, operator, owners, shared, store, "
            "tenants, vts)") in message


@pytest.mark.parametrize(("section", "key", "dotted"), [
    (("bridge",), "agi_port", "bridge.agi_port"),
    (("tenants", "acme"), "timezon", "tenants.acme.timezon"),
    (("tenants", "acme"), "venue", "tenants.acme.venue"),
    (("tenants", "acme", "venues", "acme-venue"), "timeout",
     "tenants.acme.venues.acme-venue.timeout"),
    (("vts", "acme"), "cmd", "vts.acme.cmd"),
])
def test_unknown_nested_key(section: tuple[str, ...], key: str, dotted: str) -> None:
    raw = example()
    table = raw
    for part in section:
        table = table[part]
    table[key] = "x"
    config_error(raw, f"{PATH}: {dotted}: unknown key")


def test_unknown_key_in_a_tenant() -> None:
    raw = example()
    raw["tenants"]["globex"]["timezon"] = "Europe/Paris"
    message = config_error(raw, "tenants.globex.timezon")
    assert message == (f"{PATH}: tenants.globex.timezon: unknown key "
                       "(allowed: channel_limit, devices, extensions, external_prefixes, holidays, "
                       "language, moh_class, operator, outbound, personal, prompts, queues, rules, "
                       "targets, timezone, venues)")


def test_venue_claimed_by_two_tenants() -> None:
    raw = example()
    raw["tenants"]["globex"]["venues"]["acme-venue"] = {"vts": "globex"}
    # acme-venue carries acme's prefix: globex's claim is refused before the duplicate is.
    config_error(raw, "tenants.globex.venues.acme-venue: venue 'acme-venue' is tenant "
                 "acme's context")


def test_venue_naming_a_missing_vts() -> None:
    raw = example()
    raw["tenants"]["acme"]["venues"]["acme-venue"]["vts"] = "acmee"
    message = config_error(raw, "tenants.acme.venues.acme-venue.vts", "acmee")
    assert message == f"{PATH}: tenants.acme.venues.acme-venue.vts: no [vts.acmee] section"


@pytest.mark.parametrize("vts", [None, 5, ["acme"]])
def test_venue_without_a_vts_name(vts: Any) -> None:
    raw = example()
    venue = raw["tenants"]["acme"]["venues"]["acme-venue"]
    if vts is None:
        del venue["vts"]
    else:
        venue["vts"] = vts
    config_error(raw, "tenants.acme.venues.acme-venue.vts", repr(vts))


@pytest.mark.parametrize(("where", "dotted"), [
    (("bridge",), "bridge"), (("vts",), "vts"), (("tenants",), "tenants"),
    (("tenants", "acme"), "tenants.acme"), (("tenants", "acme", "venues"), "tenants.acme.venues"),
    (("tenants", "acme", "venues", "acme-venue"), "tenants.acme.venues.acme-venue"),
    (("vts", "acme"), "vts.acme"),
])
def test_sections_must_be_tables(where: tuple[str, ...], dotted: str) -> None:
    raw = example()
    table = raw
    for part in where[:-1]:
        table = table[part]
    table[where[-1]] = 5
    config_error(raw, f"{PATH}: {dotted}: must be a table")


@pytest.mark.parametrize(("kind", "name"), [
    ("tenants", "Acme"), ("tenants", "1acme"), ("tenants", "ac me"), ("tenants", ""),
    ("tenants", "a" * 64), ("vts", "ACME"), ("vts", "_x"),
])
def test_bad_names(kind: str, name: str) -> None:
    raw = example()
    raw[kind][name] = {}
    config_error(raw, f"{kind}.{name}: name {name!r} must match")


@pytest.mark.parametrize("context", ["bad context", "-venue", "ven.ue", "v" * 81, "", "ven\u00fce"])
def test_bad_venue_context(context: str) -> None:
    raw = example()
    raw["tenants"]["acme"]["venues"][context] = {"vts": "acme"}
    config_error(raw, f"tenants.acme.venues.{context}: {context!r} is not a safe")


@pytest.mark.parametrize(("kind", "name"), [("tenants", "acme\n"), ("vts", "acme\n"),
                                            ("context", "acme-venue\n")])
def test_names_with_trailing_newline(kind: str, name: str) -> None:
    raw = example()
    if kind == "context":
        raw["tenants"]["globex"]["venues"][name] = {"vts": "globex"}
    else:
        raw[kind][name] = {}
    config_error(raw, repr(name))


# -- errors: values ----------------------------------------------------------------------

@pytest.mark.parametrize("value", [0, 0.0, -1, -0.5, True, "2", None, [2]])
def test_non_positive_router_timeout(value: Any) -> None:
    raw = example()
    raw["bridge"]["router_timeout"] = value
    config_error(raw, f"{PATH}: bridge.router_timeout: must be a positive number",
                 f"got {value!r}")


@pytest.mark.parametrize("value", [0, -1.5, False])
def test_non_positive_venue_router_timeout(value: Any) -> None:
    raw = example()
    raw["tenants"]["acme"]["venues"]["acme-venue"]["router_timeout"] = value
    config_error(raw, "tenants.acme.venues.acme-venue.router_timeout", f"got {value!r}")


@pytest.mark.parametrize("where", ["bridge", "venue", "grace_period"])
def test_nan_seconds(where: str) -> None:
    raw = example()
    if where == "bridge":
        raw["bridge"]["router_timeout"] = math.nan
    elif where == "venue":
        raw["tenants"]["acme"]["venues"]["acme-venue"]["router_timeout"] = math.nan
    else:
        raw["vts"]["acme"]["grace_period"] = math.nan
    config_error(raw, "nan")


@pytest.mark.parametrize("value", [0, -3, "3"])
def test_bad_grace_period(value: Any) -> None:
    raw = example()
    raw["vts"]["globex"]["grace_period"] = value
    config_error(raw, "vts.globex.grace_period", f"got {value!r}")


@pytest.mark.parametrize("value", [0, -5, True, 1.5, "10", None])
def test_bad_max_pending_per_vts(value: Any) -> None:
    raw = example()
    raw["bridge"]["max_pending_per_vts"] = value
    config_error(raw, "bridge.max_pending_per_vts: must be a positive integer", f"got {value!r}")


@pytest.mark.parametrize("value", [
    "4573", ":4573", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:agi",
    "127.0.0.1:-1", "127.0.0.1: 4573", "", 4573, None, ["127.0.0.1", 4573],
])
def test_bad_agi_listen(value: Any) -> None:
    raw = example()
    raw["bridge"]["agi_listen"] = value
    config_error(raw, f"{PATH}: bridge.agi_listen: expected HOST:PORT", f"got {value!r}")


def test_agi_listen_with_non_decimal_digits() -> None:
    raw = example()
    raw["bridge"]["agi_listen"] = "127.0.0.1:\u00b2"
    config_error(raw, "bridge.agi_listen")


@pytest.mark.parametrize("command", ["python -m my_vts", ["python", ""], [1], {"argv": []}])
def test_bad_vts_command(command: Any) -> None:
    raw = example()
    raw["vts"]["acme"]["command"] = command
    config_error(raw, "vts.acme.command: must be a list of non-empty strings", repr(command))


@pytest.mark.parametrize(("targets", "bad"), [
    (["1001", "10 01"], "'10 01'"), (["1001,1"], "'1001,1'"), (["x" * 65], "'" + "x" * 65),
    ("1001", "'1001'"), ([1001], "[1001]"),
])
def test_bad_tenant_targets(targets: Any, bad: str) -> None:
    raw = example()
    raw["tenants"]["acme"]["targets"] = targets
    config_error(raw, "tenants.acme.targets", bad)


def test_tenant_target_with_trailing_newline() -> None:
    raw = example()
    raw["tenants"]["acme"]["targets"] = ["1001", "1002", "operator", "x\n"]
    config_error(raw, "tenants.acme.targets", "'x\\n'")


# -- errors: rules -----------------------------------------------------------------------

def test_rule_routing_outside_the_tenant_targets() -> None:
    raw = example()
    raw["tenants"]["acme"]["rules"][1]["targets"] = ["2001"]
    message = config_error(raw, "tenants.acme.rules", "'sales'", "'2001'")
    # The example message of docs/configuration.md, word for word.
    assert message == (f"{PATH}: tenants.acme.rules: rule 'sales' routes to '2001', "
                       "which is not in tenants.acme.targets")


def test_rule_routing_to_another_tenants_target_is_refused() -> None:
    raw = example()
    raw["tenants"]["globex"]["rules"].append(
        {"name": "steal", "targets": ["2001", "1001"], "strategy": "round_robin"})
    config_error(raw, "tenants.globex.rules", "'steal'", "'1001'")


def test_tenant_without_targets_cannot_route() -> None:
    raw = example()
    del raw["tenants"]["globex"]["targets"]
    del raw["tenants"]["globex"]["extensions"]
    config_error(raw, "tenants.globex.rules", "'support'", "'2001'")


@pytest.mark.parametrize(("rule_change", "fragments"), [
    ({"action": "forward"}, ("rules[1].action", "'forward'")),
    ({"strategy": "random"}, ("rules[1].strategy", "'random'")),
    ({"hours": "9-17"}, ("rules[1].hours", "'9-17'")),
    ({"dnis_prefx": "1"}, ("rules[1]", "'dnis_prefx'")),
    ({"targets": []}, ("rules[1].targets",)),
    ({"targets": ["1001", "1002"], "strategy": "split", "weights": [1]},
     ("rules[1].weights", "[1]")),
    ({"name": "withheld-to-operator"}, ("rules", "'withheld-to-operator'", "already used")),
])
def test_rule_errors_stop_the_load(rule_change: dict[str, Any], fragments: tuple[str, ...]
                                   ) -> None:
    raw = example()
    raw["tenants"]["acme"]["rules"][1].update(rule_change)
    config_error(raw, f"{PATH}: tenants.acme.rules[1]", *fragments)


def test_unknown_timezone() -> None:
    raw = example()
    raw["tenants"]["globex"]["timezone"] = "America/Gotham"
    config_error(raw, "tenants.globex", "timezone", "'America/Gotham'")


def test_bad_holiday() -> None:
    raw = example()
    raw["tenants"]["acme"]["holidays"] = ["2026-12-25", "2026-12-32"]
    config_error(raw, "tenants.acme", "holidays[1]", "'2026-12-32'")


@pytest.mark.parametrize("rules", [{"name": "x"}, "rules", 5])
def test_rules_must_be_a_list(rules: Any) -> None:
    raw = example()
    raw["tenants"]["acme"]["rules"] = rules
    config_error(raw, "tenants.acme", "rules: must be a list")


@pytest.mark.parametrize(("change", "dotted"), [
    (("rules", 1, "action", "forward"), "tenants.acme.rules[1].action"),
    (("timezone", None, None, "Mars/Base"), "tenants.acme.timezone"),
    (("holidays", None, None, ["never"]), "tenants.acme.holidays[0]"),
])
def test_rule_errors_name_the_full_dotted_key(change: tuple[Any, ...], dotted: str) -> None:
    raw = example()
    key, index, subkey, value = change
    if index is None:
        raw["tenants"]["acme"][key] = value
    else:
        raw["tenants"]["acme"][key][index][subkey] = value
    config_error(raw, dotted)


def test_non_iterable_weights_stop_the_load_with_a_config_error() -> None:
    raw = example()
    raw["tenants"]["acme"]["rules"][1]["weights"] = 5
    config_error(raw, "tenants.acme", "weights")


# -- errors: the file --------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "[bridge\nagi_listen = '127.0.0.1:4573'\n",
    "[bridge]\nrouter_timeout = \n",
    "[bridge]\nrouter_timeout = 2.0\nrouter_timeout = 3.0\n",
    "[tenants.acme]\ntargets = [\"1001\"\n",
])
def test_invalid_toml_names_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not valid TOML: ")
    assert "(at " in message  # tomllib's position of the problem


def test_non_utf8_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes("[tenants.acme]\ntimezone = 'Europe/Z\u00fcrich'\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not valid TOML") as info:
        load(path)
    assert str(info.value).startswith(f"{path}: ")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "bridge.toml"
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == f"{path}: cannot read: No such file or directory"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}: cannot read: ")


def test_load_reports_parse_errors_with_the_loaded_path(tmp_path: Path) -> None:
    import shutil

    shutil.copytree(EXAMPLE.parent, tmp_path / "examples")
    tenant = tmp_path / "examples" / "tenants.d" / "acme" / "tenant.toml"
    tenant.write_text(tenant.read_text(encoding="utf-8").replace(
        "router_timeout = 1.5", "router_timeout = -1.5"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "examples" / "bridge.toml")
    # a tenant file's error names that file and the key inside it
    assert str(info.value) == (f"{tenant}: venues.acme-venue.router_timeout: "
                               "must be a positive number of seconds, got -1.5")


def test_config_errors_are_value_errors() -> None:
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("holidays", [5, "2026-12-25", {"x": 1}])
def test_holidays_that_are_not_a_list_are_a_config_error(holidays: object) -> None:
    raw = example()
    raw["tenants"]["acme"]["holidays"] = holidays
    config_error(raw, "tenants.acme.holidays: must be a list of ISO dates")


# -- the venue's driver --------------------------------------------------------------------

def test_venue_driver_defaults_to_fastagi_and_names_a_bad_one() -> None:
    cfg = parse(example(), path=PATH)
    assert {v.driver for v in cfg.venues.values()} == {"fastagi"}
    raw = example()
    raw["tenants"]["acme"]["venues"]["acme-venue"]["driver"] = "sip-info"
    config_error(raw, "tenants.acme.venues.acme-venue.driver",
                 "must be one of 'fastagi', 'asyncagi', 'ari'", "'sip-info'")
    raw = example()
    raw["tenants"]["acme"]["personal"]["driver"] = 7
    config_error(raw, "tenants.acme.personal.driver", "got 7")
