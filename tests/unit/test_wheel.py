"""The wheel installed into a fresh virtualenv outside the repository (issue 13).

How, and why this is honest and fast: the wheel is built from the tree (`pip wheel
--no-deps --no-build-isolation`) and installed by pip (`pip --python VENV/bin/python
install --no-deps --no-index`: a real install, with its RECORD and the `ami-bridge`
console script) into a venv made with `--without-pip` in a temporary directory. The
dependencies (aiohttp, psycopg, ...) are not downloaded again: a `.pth` file puts the
repository .venv's site-packages at the END of the new venv's sys.path. That directory
holds no `ami_bridge` package (the repository is installed there in editable mode, by a
finder that only its own `.pth` activates, and a path line in a `.pth` does not run the
`.pth` files of the directory it adds), and the commands run from the temporary
directory, so `ami_bridge` can only come from the wheel; the first test checks so.
Every subcommand is found by walking the installed package's argparse parser, so a new
subcommand is covered without editing this file. About 10-20 s on this machine (mostly
one interpreter start per `--help`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Run inside the fresh venv: every command path of the installed parser, as JSON.
WALK = """
import argparse, json
from ami_bridge.cli import _parser

def walk(parser, path):
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, [*path, name])

print(json.dumps(list(walk(_parser(), []))))
"""


def clean_env() -> dict[str, str]:
    """This environment without what would put another ami_bridge (or its egg-info,
    which pip would take as already installed) on the path."""
    return {k: v for k, v in os.environ.items()
            if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}


class Venv:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.bin = path / "bin"

    def run(self, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        env = clean_env()
        env["PATH"] = f"{self.bin}:{env.get('PATH', '/usr/bin:/bin')}"
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=120,
                              check=False, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Venv]:
    tmp = tmp_path_factory.mktemp("wheel-venv")
    assert not tmp.resolve().is_relative_to(ROOT)
    dist = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(dist), str(ROOT)], check=True, cwd=tmp, env=clean_env())
    (wheel,) = dist.glob("ami_bridge-*.whl")
    env = Venv(tmp / "venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env.path)], check=True,
                   env=clean_env())
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env.bin / "python"),
                    "install", "-q", "--no-deps", "--no-index", "--no-cache-dir", str(wheel)],
                   check=True, cwd=tmp, env=clean_env())
    site = env.run(str(env.bin / "python"), "-c",
                   "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp)
    deps = sysconfig.get_path("purelib")  # the repository .venv's: aiohttp and friends
    (Path(site.stdout.strip()) / "zz_repo_deps.pth").write_text(deps + "\n")
    yield env


def test_the_package_comes_from_the_wheel(venv: Venv, tmp_path: Path) -> None:
    done = venv.run(str(venv.bin / "python"), "-c",
                    "import ami_bridge, aiohttp; print(ami_bridge.__file__)", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(venv.path)
    assert (venv.bin / "ami-bridge").is_file()
    (license_file,) = venv.path.glob("lib/python*/site-packages/ami_bridge-*.dist-info/"
                                     "licenses/LICENSE")
    assert license_file.read_text() == (ROOT / "LICENSE").read_text()


def test_conf_init_writes_the_drop_in_files(venv: Venv, tmp_path: Path) -> None:
    target = tmp_path / "etc-ami-bridge"
    done = venv.run("ami-bridge", "conf", "init", str(target), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    expected = {"bridge.toml", "agi.secret", "README.md", "tenants.d/acme/tenant.toml",
                "tenants.d/globex/tenant.toml", "asterisk/manager.d/ami-bridge.conf",
                "asterisk/manager.d/ami-bridge-reload.conf",
                "asterisk/extensions-include.conf", "asterisk/modules-required.txt",
                "docs/configuration.md", "docs/security.md"}
    written = {line.removeprefix(f"wrote {target}/") for line in done.stdout.splitlines()}
    assert expected <= written
    assert all((target / name).is_file() for name in written)
    # The guide and the manager users are the repository's, byte for byte (bar secrets).
    assert (target / "README.md").read_text() == (ROOT / "asterisk-conf" / "README.md"
                                                  ).read_text()
    assert (target / "tenants.d/acme/tenant.toml").read_text() == (
        ROOT / "examples/tenants.d/acme/tenant.toml").read_text()
    # The written config loads in the installed package (tenants, agi.secret).
    check = venv.run("ami-bridge", "check", "--config", str(target / "bridge.toml"),
                     cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert "venue acme-venue: tenant acme" in check.stdout
    again = venv.run("ami-bridge", "conf", "init", str(target), cwd=tmp_path)
    assert again.returncode == 1 and "nothing written" in again.stderr


def test_every_command_has_its_own_help(venv: Venv, tmp_path: Path) -> None:
    walked = venv.run(str(venv.bin / "python"), "-c", WALK, cwd=tmp_path)
    assert walked.returncode == 0, walked.stderr
    paths: list[list[str]] = json.loads(walked.stdout)
    assert [] in paths and ["conf", "init"] in paths and ["run"] in paths
    assert len(paths) > 15
    bad = []
    for path in paths:
        done = venv.run("ami-bridge", *path, "--help", cwd=tmp_path)
        usage = " ".join(["usage: ami-bridge", *path])
        if done.returncode != 0 or not done.stdout.startswith(usage):
            bad.append(f"{' '.join(path) or '(top)'}: exit {done.returncode}, "
                       f"{(done.stdout or done.stderr)[:120]!r}")
    assert bad == []
