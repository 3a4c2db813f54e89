"""`ami-bridge conf show` (ami_bridge/confshow.py): the effective config, secrets masked.

The masking test writes a config holding every kind of secret the loader reads (inline,
in files, inside a PostgreSQL DSN in both its forms) and asserts that none of the known
values appears anywhere in either output. The TOML output must read back (tomllib) to the
same document as the JSON output.
"""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import pytest

from ami_bridge import cli, confshow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "bridge.toml"

AMI_SECRET = "ami-inline-Secret-4711"
RELOAD_SECRET = "reload-from-file-Secret-0815"
AGI_SECRET = "agiSecretFromFile_abcdefghijkl"
OPERATOR_TOKEN = "operatorTokenFromFile_0123456789abcdefXYZ"
PG_PASSWORD = "pg pass'word\\x"  # a space, a quote and a backslash: quoted in the DSN
PG_URI_PASSWORD = "uriPassw0rd"
PG_SSL_PASSWORD = "sslKeyPassphrase9"


def secret_file(path: Path, text: str) -> str:
    path.write_text(text + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path.name


def write_secret_tree(tmp_path: Path, dsn: str) -> Path:
    shutil.copytree(ROOT / "examples" / "tenants.d", tmp_path / "tenants.d")
    reload_file = secret_file(tmp_path / "reload.secret", RELOAD_SECRET)
    agi_file = secret_file(tmp_path / "agi.secret", AGI_SECRET)
    token_file = secret_file(tmp_path / "operator.token", OPERATOR_TOKEN)
    path = tmp_path / "bridge.toml"
    path.write_text(f"""
[bridge]
tenants_dir = "tenants.d"
agi_secret_file = "{agi_file}"
[ami]
username = "ami-bridge"
secret = "{AMI_SECRET}"
reload_username = "ami-bridge-reload"
reload_secret_file = "{reload_file}"
[api]
operator_token_file = "{token_file}"
[vts.acme]
[vts.globex]
""", encoding="utf-8")
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "50-store.toml").write_text(
        f'[store]\nbackend = "postgresql"\ndsn = {json.dumps(dsn)}\n', encoding="utf-8")
    return path


KEYWORD_DSN = ("host=/run/postgresql dbname=ami_bridge password='pg pass\\'word\\\\x' "
               f"sslpassword = {PG_SSL_PASSWORD} user=bridge")
URI_DSN = (f"postgresql://bridge:{PG_URI_PASSWORD}@db.example:5432/ami_bridge"
           f"?sslpassword={PG_SSL_PASSWORD}&sslmode=require")


@pytest.mark.parametrize("dsn", [KEYWORD_DSN, URI_DSN])
@pytest.mark.parametrize("as_json", [False, True])
def test_no_known_secret_appears_in_the_output(tmp_path: Path, dsn: str,
                                               as_json: bool) -> None:
    path = write_secret_tree(tmp_path, dsn)
    text = confshow.show(path, as_json=as_json)
    for secret in (AMI_SECRET, RELOAD_SECRET, AGI_SECRET, OPERATOR_TOKEN, PG_PASSWORD,
                   PG_URI_PASSWORD, PG_SSL_PASSWORD, "pg pass", "uriPassw0rd"):
        assert secret not in text, secret
    assert confshow.MASK in text
    doc = json.loads(text) if as_json else tomllib.loads(text)
    # What is not secret is still there: the paths of secret files, the DSN's host.
    assert doc["api"]["operator_token_file"] == str(tmp_path / "operator.token")
    assert doc["ami"]["reload_secret_file"] == str(tmp_path / "reload.secret")
    assert doc["bridge"]["agi_secret_file"] == str(tmp_path / "agi.secret")
    assert doc["ami"]["secret"] == confshow.MASK
    assert ("host=/run/postgresql" if dsn is KEYWORD_DSN else "db.example:5432") in \
        doc["store"]["dsn"]


def test_a_secret_under_a_harmless_key_is_masked_too(tmp_path: Path) -> None:
    """The scrub: a value the loader read as a secret is masked wherever it shows up."""
    path = write_secret_tree(tmp_path, KEYWORD_DSN)
    text = path.read_text(encoding="utf-8").replace(
        'reload_username = "ami-bridge-reload"', f'reload_username = "{RELOAD_SECRET}"')
    path.write_text(text, encoding="utf-8")
    assert RELOAD_SECRET not in confshow.show(path)


@pytest.mark.parametrize(("dsn", "kept", "gone"), [
    ("host=db password=hunter22 dbname=x", ["host=db", "dbname=x"], ["hunter22"]),
    ("password = 'a b c' host=db", ["host=db"], ["a b c"]),
    ("host=db password=unterminated' x", [], ["unterminated"]),  # unreadable: all masked
    ("postgres://u:p4ssw0rd@h/db", ["postgres://u:", "@h/db"], ["p4ssw0rd"]),
    ("postgresql:///db?host=/run&password=qwerty12", ["host=%2Frun"], ["qwerty12"]),
    ("", [], []),
])
def test_dsn_masking(dsn: str, kept: list[str], gone: list[str]) -> None:
    masked = confshow.mask_dsn(dsn)
    for text in kept:
        assert text in masked, masked
    for text in gone:
        assert text not in masked, masked


def test_toml_and_json_say_the_same(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    path = tmp_path / "examples" / "bridge.toml"
    assert tomllib.loads(confshow.show(path)) == json.loads(confshow.show(path, as_json=True))


def test_defaults_merges_and_tenant_files_are_filled_in(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    path = tmp_path / "examples" / "bridge.toml"
    (path.parent / "conf.d").mkdir()
    (path.parent / "conf.d" / "10-timeout.toml").write_text(
        "[bridge]\nrouter_timeout = 3.5\n[vts.acme]\nflap_max = 8\n", encoding="utf-8")
    text = confshow.show(path)
    assert f"#   merged: {path.parent / 'conf.d' / '10-timeout.toml'}" in text
    doc = tomllib.loads(text)
    bridge = doc["bridge"]
    assert bridge["router_timeout"] == 3.5  # the fragment's
    assert bridge["max_route_requests"] == 16  # a default the file leaves out
    assert bridge["agi_session_timeout"] == 120.0
    assert bridge["tenants_dir"] == str((path.parent / "tenants.d").resolve())
    assert doc["vts"]["acme"]["flap_max"] == 8 and doc["vts"]["globex"]["flap_max"] == 5
    assert doc["vts"]["globex"]["restart_initial"] == 0.1
    # The tenant files, with the venue's inherited router timeout.
    assert set(doc["tenants"]) == {"acme", "globex"}
    venue = doc["tenants"]["acme"]["venues"]["acme-venue"]
    assert venue["vts"] == "acme" and venue["router_timeout"] in (3.5, 1.5)
    assert doc["tenants"]["acme"]["rules"][0]["name"]  # an array of tables survives
    assert doc["store"]["backend"] == "sqlite"


def test_a_refused_config_prints_nothing_and_exits_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text("[bridge]\nrouter_timeout = 0\n", encoding="utf-8")
    assert cli.main(["conf", "show", "-c", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and f"{path}: bridge.router_timeout:" in err


@pytest.mark.parametrize("value", [
    {"a": 1, "b": [1, 2], "c": {"d": "x\"y\\z\n\x7f", "e": [{"f": 1}, {"f": 2, "g": {"h": 1}}]}},
    {"weird key": {"ü.x": True, "n": -0.5, "big": 10**15}},
    {"t": {}},
])
def test_to_toml_reads_back(value: dict[str, object]) -> None:
    assert tomllib.loads(confshow.to_toml(value)) == value
