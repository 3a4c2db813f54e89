"""Which files make the bridge config (ami_bridge/conffiles.py) and how the CLI finds them.

The main file comes from -c/--config, else $AMI_BRIDGE_CONFIG, else the default path, and
a missing one is reported with where its path came from. `conf.d/*.toml` next to it merge
in name order (tables key by key, values replaced whole); an error names the file that
wrote the key. `ctl` takes its action as a subcommand with its own --help.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ami_bridge import cli, conffiles
from ami_bridge import config as config_mod
from ami_bridge.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]

MAIN = """
[bridge]
router_timeout = 2.0
redirect_limit = 4
control_socket = "/run/ami-bridge/control.sock"
dialplan_allow = ["S603 System"]

[ami]
username = "ami-bridge"
secret = "from-main-secret"

[tenants.acme]
targets = ["1001", "1002"]
[tenants.acme.venues.acme-venue]
vts = "acme"

[vts.acme]
grace_period = 1.0
"""


def tree(tmp_path: Path, fragments: dict[str, str], main: str = MAIN) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(main, encoding="utf-8")
    if fragments:
        (tmp_path / "conf.d").mkdir()
    for name, text in fragments.items():
        (tmp_path / "conf.d" / name).write_text(text, encoding="utf-8")
    return path


def refused(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        config_mod.load(path)
    return str(info.value)


# -- where the main file is ----------------------------------------------------------------

def test_the_flag_beats_the_environment_which_beats_the_default() -> None:
    env = {conffiles.CONFIG_ENV: "/srv/env.toml"}
    assert conffiles.locate(Path("/srv/flag.toml"), env).path == Path("/srv/flag.toml")
    assert conffiles.locate(None, env).path == Path("/srv/env.toml")
    assert conffiles.locate(None, {}).path == Path("/etc/ami-bridge/bridge.toml")
    assert conffiles.locate(None, {conffiles.CONFIG_ENV: ""}).path == \
        conffiles.DEFAULT_CONFIG_PATH  # set but empty: as if unset
    assert not conffiles.locate(None, {}).given
    assert conffiles.locate(None, env).given


@pytest.mark.parametrize(("argv", "env", "origin"), [
    (["-c", "{missing}"], None, "given by -c/--config"),
    (["--config", "{missing}"], "/elsewhere.toml", "given by -c/--config"),
    ([], "{missing}", "given by $AMI_BRIDGE_CONFIG"),
    ([], None, "the default; give -c/--config or set $AMI_BRIDGE_CONFIG"),
])
def test_a_missing_config_names_its_path_and_where_it_came_from(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        argv: list[str], env: str | None, origin: str) -> None:
    missing = tmp_path / "nowhere" / "bridge.toml"
    monkeypatch.setattr(conffiles, "DEFAULT_CONFIG_PATH", missing)
    monkeypatch.delenv(conffiles.CONFIG_ENV, raising=False)
    if env is not None:
        monkeypatch.setenv(conffiles.CONFIG_ENV, env.format(missing=missing))
    for command in (["check"], ["conf", "show"], ["conf", "render", "--out", str(tmp_path)],
                    ["ctl", "status"], ["run"]):
        assert cli.main([*command, *(a.format(missing=missing) for a in argv)]) == 2, command
        err = capsys.readouterr().err
        assert f"{missing}: no such config file ({origin})" in err, (command, err)


def test_every_config_command_reads_the_environment_and_the_flag_wins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    good = tree(tmp_path, {})
    monkeypatch.setenv(conffiles.CONFIG_ENV, str(good))
    assert cli.main(["check"]) == 0
    assert "venue acme-venue: tenant acme, VTS acme" in capsys.readouterr().out
    assert cli.main(["conf", "show"]) == 0
    assert "[tenants.acme]" in capsys.readouterr().out
    assert cli.main(["check", "-c", str(tmp_path / "other.toml")]) == 2
    assert f"{tmp_path / 'other.toml'}: no such config file (given by -c/--config)" in \
        capsys.readouterr().err


def test_conf_check_without_a_config_still_lints_with_tenant_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conffiles, "DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    monkeypatch.delenv(conffiles.CONFIG_ENV, raising=False)
    dialplan = tmp_path / "extensions.conf"
    dialplan.write_text("[acme-venue]\nexten => _X.,1,Hangup()\n", encoding="utf-8")
    # The default path missing is "no config" here; a named one must exist.
    assert cli.main(["conf", "check", "--tenant", "acme", str(dialplan)]) in (0, 1)
    assert cli.main(["conf", "check", "-c", str(tmp_path / "absent.toml"),
                     "--tenant", "acme", str(dialplan)]) == 2


# -- ctl: subcommands ----------------------------------------------------------------------

@pytest.mark.parametrize("action", ["status", "reload", "apply"])
def test_each_ctl_action_has_its_own_help(action: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["ctl", action, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: ami-bridge ctl {action} "), out
    assert f"ctl {action}: " in out and "--socket" in out and "--config" in out


@pytest.mark.parametrize("argv", [
    ["ctl", "status", "--socket", "{sock}"], ["ctl", "--socket", "{sock}", "status"],
    ["ctl", "reload", "-c", "{cfg}"], ["ctl", "-c", "{cfg}", "reload"],
    ["ctl", "apply", "--config", "{cfg}"],
])
def test_ctl_takes_the_socket_or_config_before_or_after_the_action(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    sock = tmp_path / "control.sock"  # nobody listens: exit 1 after trying that path
    cfg = tree(tmp_path, {}, MAIN.replace("/run/ami-bridge/control.sock", str(sock)))
    assert cli.main([a.format(sock=sock, cfg=cfg) for a in argv]) == 1
    assert "cannot reach the bridge's control socket" in capsys.readouterr().err


def test_ctl_refuses_a_socket_and_a_config_together(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ctl", "-c", "x.toml", "status", "--socket", "/s"]) == 2
    assert "not both" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["ctl", "status", "-c", "x.toml", "--socket", "/s"])


def test_ctl_without_an_action_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["ctl", "--socket", "/s"])
    assert info.value.code == 2


# -- conf.d ---------------------------------------------------------------------------------

def test_fragments_merge_in_name_order_tables_by_key_values_whole(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tree(tmp_path, {
        "20-late.toml": '[bridge]\nrouter_timeout = 3.0\n',
        "10-early.toml": '[bridge]\nrouter_timeout = 9.0\nredirect_limit = 2\n'
                         'dialplan_allow = ["S604 SHELL"]\n'
                         '[tenants.globex]\ntargets = ["2001"]\n'
                         '[tenants.globex.venues.globex-venue]\nvts = "globex"\n'
                         '[vts.globex]\n',
        "30-tenant.toml": '[tenants.acme]\ntargets = ["1001"]\n[vts.acme]\nflap_max = 9\n',
        ".99-hidden.toml": "[bridge]\nrouter_timeout = 7.0\n",
        "40-notes.txt": "not toml at all [",
    })
    assert cli.main(["check", "-c", str(path)]) == 0
    assert capsys.readouterr().out.startswith(
        f"merged {tmp_path / 'conf.d' / '10-early.toml'}\n"
        f"merged {tmp_path / 'conf.d' / '20-late.toml'}\n"
        f"merged {tmp_path / 'conf.d' / '30-tenant.toml'}\nvenue ")
    cfg = config_mod.load(path)
    assert cfg.fragments == (tmp_path / "conf.d" / "10-early.toml",
                             tmp_path / "conf.d" / "20-late.toml",
                             tmp_path / "conf.d" / "30-tenant.toml")
    assert cfg.router_timeout == 3.0  # 20- after 10-; the dot file is skipped
    assert cfg.redirect_limit == 2  # a key only 10- sets; the main file's other keys stay
    assert [a.code for a in cfg.dialplan_allow] == ["S604"]  # an array is replaced whole
    assert cfg.control_socket == "/run/ami-bridge/control.sock"
    assert set(cfg.tenants) == {"acme", "globex"} and cfg.venues["globex-venue"].vts == "globex"
    assert cfg.tenants["acme"].targets == {"1001"}  # replaced, not appended
    assert cfg.venues["acme-venue"].vts == "acme"  # the table kept the main file's venues
    assert cfg.vts["acme"].restart.flap_max == 9 and cfg.vts["acme"].grace_period == 1.0


def test_no_conf_d_is_just_the_main_file(tmp_path: Path) -> None:
    cfg = config_mod.load(tree(tmp_path, {}))
    assert cfg.fragments == () and cfg.router_timeout == 2.0


def test_an_error_in_a_fragment_names_the_fragment_and_the_key(tmp_path: Path) -> None:
    fragment = tmp_path / "conf.d" / "10-timeouts.toml"
    path = tree(tmp_path, {fragment.name: "[bridge]\nrouter_timeout = -1\n"})
    assert refused(path).startswith(f"{fragment}: bridge.router_timeout: ")
    fragment.write_text("[bridge]\nrouter_timout = 1\n", encoding="utf-8")
    assert refused(path).startswith(f"{fragment}: bridge.router_timout: unknown key")
    fragment.write_text('[tenants.acme.venues.acme-venue]\nvts = "nope"\n', encoding="utf-8")
    assert refused(path).startswith(
        f"{fragment}: tenants.acme.venues.acme-venue.vts: no [vts.nope] section")
    fragment.write_text("[bridge\n", encoding="utf-8")
    assert refused(path).startswith(f"{fragment}: not valid TOML")
    # An error in the main file still names the main file.
    fragment.write_text("[bridge]\nrouter_timeout = 1.0\n", encoding="utf-8")
    path.write_text(MAIN.replace("redirect_limit = 4", "redirect_limit = 0"), encoding="utf-8")
    assert refused(path).startswith(f"{path}: bridge.redirect_limit: ")


def test_a_table_two_files_wrote_names_both(tmp_path: Path) -> None:
    fragment = tmp_path / "conf.d" / "50-ami.toml"
    path = tree(tmp_path, {fragment.name: '[ami]\nsecret_file = "ami.secret"\n'})
    assert refused(path).startswith(
        f"{path} + {fragment}: ami: give exactly one of secret, secret_file")


def test_a_fragment_cannot_swap_a_table_and_a_value(tmp_path: Path) -> None:
    fragment = tmp_path / "conf.d" / "10-bad.toml"
    path = tree(tmp_path, {fragment.name: 'ami = "none"\n'})
    message = refused(path)
    assert message.startswith(f"{fragment}: ami: is a value here but a table in {path}")
    fragment.write_text("[bridge.router_timeout]\nseconds = 3\n", encoding="utf-8")
    assert refused(path).startswith(f"{fragment}: bridge.router_timeout: is a table here "
                                    f"but a value in {path}")


def test_relative_paths_in_a_fragment_resolve_against_the_main_files_directory(
        tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples" / "tenants.d", tmp_path / "tenants.d")
    (tmp_path / "ami.secret").write_text("from-a-file\n", encoding="utf-8")
    main = MAIN.replace('secret = "from-main-secret"\n', "")
    main = main.split("[tenants.acme]")[0] + "[vts.globex]\n[vts.acme]\n"
    path = tree(tmp_path, {"10-paths.toml": '[bridge]\ntenants_dir = "tenants.d"\n'
                           '[ami]\nsecret_file = "ami.secret"\n'}, main)
    cfg = config_mod.load(path)
    assert cfg.tenants_dir == (tmp_path / "tenants.d").resolve()
    assert cfg.ami is not None and cfg.ami.secret == "from-a-file"
    assert set(cfg.tenants) == {"acme", "globex"}


def test_conf_d_must_be_a_directory(tmp_path: Path) -> None:
    path = tree(tmp_path, {})
    (tmp_path / "conf.d").write_text("", encoding="utf-8")
    assert refused(path).startswith(f"{tmp_path / 'conf.d'}: must be a directory")


def test_a_fragment_change_is_seen_by_the_next_load(tmp_path: Path) -> None:
    """`run`, SIGHUP, `ctl reload` and `ctl apply` all load through `config.load`."""
    path = tree(tmp_path, {"10-t.toml": "[bridge]\nrouter_timeout = 3.0\n"})
    assert config_mod.load(path).router_timeout == 3.0
    (tmp_path / "conf.d" / "10-t.toml").write_text("[bridge]\nrouter_timeout = 5.0\n",
                                                   encoding="utf-8")
    assert config_mod.load(path).router_timeout == 5.0


def test_sources_name_the_nearest_written_key() -> None:
    main, frag = Path("/m.toml"), Path("/conf.d/f.toml")
    sources = conffiles.Sources(main, (frag,), {"bridge": (main, frag),
                                                "tenants.acme.rules": (frag,)})
    assert sources.files_of("bridge.router_timeout") == (main, frag)
    assert sources.files_of("tenants.acme.rules[2].targets") == (frag,)
    assert sources.files_of("tenants.acme.targets") == (main,)
    assert sources.files_of("") == (main,)
