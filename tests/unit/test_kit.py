"""`ami-bridge conf init DIR` (ami_bridge.kit): what it writes, and that the kit has one
source, the repository's own files."""

from __future__ import annotations

import re
import stat
from collections.abc import Callable
from itertools import count
from pathlib import Path

import pytest

from ami_bridge import config as config_mod
from ami_bridge import kit
from ami_bridge.cli import main

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "ami_bridge" / "kit" / "files"
# The kit's only own file; everything else is a symlink into the repository.
OWN = {"asterisk/modules-required.txt"}
# The shipped path -> the repository file it is.
SOURCES = {"bridge.toml": "examples/bridge.toml", "README.md": "asterisk-conf/README.md"}


def fake_token(prefix: str = "T") -> Callable[[int], str]:
    numbers = count()
    return lambda nbytes: f"{prefix}{next(numbers):02d}" + "x" * 30


def repo_path(rel: str) -> Path:
    if rel in SOURCES:
        return ROOT / SOURCES[rel]
    for prefix, source in [("tenants.d/", "examples/tenants.d/"), ("docs/", "docs/"),
                           ("asterisk/manager.d/", "asterisk-conf/manager.d/")]:
        if rel.startswith(prefix):
            return ROOT / source / rel.removeprefix(prefix)
    raise AssertionError(f"{rel}: not a repository file")


def test_the_kit_is_the_repository_files_not_a_copy() -> None:
    shipped = kit.shipped()
    for rel, text in shipped.items():
        if rel in OWN:
            continue
        assert text == repo_path(rel).read_text(encoding="utf-8"), rel
    # One copy: everything but the kit's own file is a symlink into the repository.
    assert {e.name for e in FILES.iterdir() if not e.is_symlink()} == {"asterisk"}
    assert {e.name for e in (FILES / "asterisk").iterdir() if not e.is_symlink()} == {
        "modules-required.txt"}
    # Every repository file the guide and the tenants need is shipped.
    assert {"bridge.toml", "README.md", "tenants.d/acme/tenant.toml",
            "tenants.d/globex/tenant.toml", "asterisk/manager.d/ami-bridge.conf",
            "asterisk/manager.d/ami-bridge-reload.conf", "docs/configuration.md",
            "docs/security.md", "docs/dialplan-lint.md"} <= set(shipped)
    assert {p.name for p in (ROOT / "docs").glob("*.md")} == {
        r.removeprefix("docs/") for r in shipped if r.startswith("docs/")}


def test_every_doc_the_guide_cites_is_shipped() -> None:
    shipped = kit.shipped()
    cited = set(re.findall(r"\bdocs/[a-z-]+\.md", shipped["README.md"]))
    assert cited and cited <= set(shipped)


def test_fresh_secrets_replace_the_sandbox_ones_consistently() -> None:
    files = {f.path: f for f in kit.kit_files(fake_token())}
    for f in files.values():
        for old in kit.SANDBOX_AMI_SECRETS:
            assert old not in f.text, f.path
    ami, reload_ = "T00" + "x" * 30, "T01" + "x" * 30
    assert f"secret = {ami}" in files["asterisk/manager.d/ami-bridge.conf"].text
    assert f"secret = {reload_}" in files["asterisk/manager.d/ami-bridge-reload.conf"].text
    bridge = files["bridge.toml"].text
    assert f'secret = "{ami}"' in bridge and f'reload_secret = "{reload_}"' in bridge
    agi = "T02" + "x" * 30
    assert files["agi.secret"].text == agi + "\n"
    include = files["asterisk/extensions-include.conf"].text
    assert f"\nAB_AGI_URL=agi://127.0.0.1:4573/{agi}\n" in include
    assert '\n#include "ami-bridge/extensions.conf"\n' in include
    assert include.index("\n[globals]\n") < include.index("\nAB_AGI_URL=")


def test_two_inits_never_share_a_secret() -> None:
    one, two = ({f.path: f.text for f in kit.kit_files()} for _ in range(2))
    assert one["agi.secret"] != two["agi.secret"]
    assert one["bridge.toml"] != two["bridge.toml"]


def test_conf_init_writes_a_config_that_loads(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "etc"
    assert main(["conf", "init", str(target)]) == 0
    out = capsys.readouterr().out.splitlines()
    written = sorted(p.relative_to(target).as_posix() for p in target.rglob("*")
                     if p.is_file())
    assert sorted(out) == sorted(f"wrote {target / p}" for p in written)
    assert {"bridge.toml", "agi.secret", "README.md", "asterisk/modules-required.txt",
            "asterisk/extensions-include.conf"} <= set(written)
    for name, mode in [("bridge.toml", 0o600), ("agi.secret", 0o600),
                       ("asterisk/manager.d/ami-bridge.conf", 0o640),
                       ("README.md", 0o644)]:
        assert stat.S_IMODE((target / name).stat().st_mode) == mode, name
    cfg = config_mod.load(target / "bridge.toml")
    assert cfg.agi_secret == (target / "agi.secret").read_text().strip()
    assert set(cfg.tenants) == {"acme", "globex"}


def test_conf_init_refuses_to_overwrite_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "asterisk").mkdir()
    (tmp_path / "asterisk" / "modules-required.txt").write_text("mine\n")
    assert main(["conf", "init", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'asterisk' / 'modules-required.txt'} exists" in err
    assert "nothing written" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["asterisk", "modules-required.txt"]
    assert main(["conf", "init", "--force", str(tmp_path)]) == 0
    assert (tmp_path / "asterisk" / "modules-required.txt").read_text() != "mine\n"


def test_conf_init_into_an_unwritable_place_is_an_io_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["conf", "init", str(blocker / "sub")]) == 2
    assert f"cannot write {blocker / 'sub'}" in capsys.readouterr().err


# Where each application and function of the rendered dialplan comes from (Asterisk 22
# source tree); None: the core (main/pbx_*.c), always there.
PROVIDER = {
    "AGI": "res_agi.so", "Dial": "app_dial.so", "Queue": "app_queue.so",
    "VoiceMail": "app_voicemail.so", "Gosub": "app_stack.so", "Return": "app_stack.so",
    "CHANNEL": "func_channel.so", "GROUP": "func_groupcount.so",
    "GROUP_COUNT": "func_groupcount.so", "IF": "func_logic.so",
    "DIALPLAN_EXISTS": "func_dialplan.so", "FILTER": "func_strings.so",
    "Set": None, "MSet": None, "Goto": None, "GotoIf": None, "NoOp": None, "Hangup": None,
    "Busy": None, "Congestion": None,
}


def test_modules_required_covers_the_rendered_dialplan() -> None:
    listed = {line.split()[0] for line in
              kit.shipped()["asterisk/modules-required.txt"].splitlines()
              if line.strip() and not line.startswith("#")}
    used = set()
    for path in (ROOT / "asterisk-conf" / "ami-bridge").rglob("*.conf"):
        text = "\n".join(line.split(";")[0] for line in path.read_text().splitlines())
        used |= set(re.findall(r"\b([A-Z][A-Za-z_]*)\(", text))  # n(label) is no app
    unknown = used - set(PROVIDER)
    assert not unknown, f"add these to PROVIDER and modules-required.txt: {unknown}"
    assert {m for a, m in PROVIDER.items() if a in used and m} <= listed
    # The treatments the bridge sends over AGI (agi/wire.py) and the PJSIP channels.
    assert {"app_playback.so", "res_musiconhold.so", "chan_pjsip.so", "pbx_config.so",
            "bridge_simple.so"} <= listed
