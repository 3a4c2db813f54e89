"""docker/: checked without a Docker engine (these machines have none).

The compose file is validated by Debian's docker-compose (`make docker-compose` installs
it): `config -q` resolves the file, its anchors, service references and build paths with
no engine (DOCKER_HOST points nowhere here, to prove it), and a broken copy is refused,
so the check can fail. The pieces the files name (scripts, scenarios, COPY sources, the
bridge user's uid) must exist and agree, and the init script's edits of the bridge.toml
that `conf init` writes must take effect: it is run against temporary directories and
the result loaded as the bridge would.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ami_bridge import config as config_mod

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"


def compose_config(path: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is missing: run `make docker-compose` (Debian's package)",
                    pytrace=False)
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    return subprocess.run([exe, "-f", str(path), "config", "-q"], capture_output=True,
                          text=True, timeout=60, check=False, env=env, cwd=path.parent)


def test_compose_file_is_valid_without_an_engine() -> None:
    done = compose_config(COMPOSE)
    assert done.returncode == 0, done.stderr


def test_a_broken_compose_file_is_refused(tmp_path: Path) -> None:
    text = COMPOSE.read_text()
    assert text.count('network_mode: "service:asterisk"') >= 2
    assert text.count("context: ..\n") >= 3
    # Outside docker/, with the build contexts made absolute (they must exist): the
    # copy passes, and fails once one service names a network of a service that is not.
    text = text.replace("context: ..\n", f"context: {ROOT}\n")
    same = tmp_path / "same.yaml"
    same.write_text(text)
    assert compose_config(same).returncode == 0
    broken = tmp_path / "broken.yaml"
    broken.write_text(text.replace('network_mode: "service:asterisk"',
                                   'network_mode: "service:nosuch"', 1))
    done = compose_config(broken)
    assert done.returncode != 0
    assert "nosuch" in done.stderr


def test_what_the_docker_files_name_exists_and_agrees() -> None:
    compose = COMPOSE.read_text()
    bridge = (DOCKER / "Dockerfile").read_text()
    asterisk = (DOCKER / "asterisk.Dockerfile").read_text()
    for dockerfile in (bridge, asterisk):
        for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile, re.M):
            *sources, _dest = line.split()
            for source in sources:
                assert source == "." or (ROOT / source).exists(), source
    for script in ("bridge-init.sh", "asterisk-entrypoint.sh"):
        assert os.access(DOCKER / script, os.X_OK), script
    uid = re.search(r"^ARG UID=(\d+)$", bridge, re.M)
    assert uid is not None
    assert f"/run/ami-bridge:uid={uid.group(1)},gid={uid.group(1)}," in compose
    assert "USER ami-bridge" in bridge
    for target in ("sipp", "asterisk"):
        assert f" AS {target}\n" in asterisk and f"target: {target}" in compose


def test_the_init_script_prepares_a_config_the_bridge_loads(tmp_path: Path) -> None:
    etc = tmp_path / "etc-ami-bridge"
    bin_dir = Path(sys.executable).parent  # this interpreter's ami-bridge
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
           "AMI_BRIDGE_ETC": str(etc), "AMI_BRIDGE_OWNER": f"{os.getuid()}:{os.getgid()}"}
    script = str(DOCKER / "bridge-init.sh")
    for _ in range(2):  # the second `up` keeps the config (and its secrets)
        done = subprocess.run(["sh", script], capture_output=True, text=True,
                              timeout=60, check=False, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
    cfg = config_mod.load(etc / "bridge.toml")
    view = etc / "asterisk-view"
    assert cfg.asterisk_conf_dir == view.resolve()
    assert {v.confinement.mode for v in cfg.vts.values()} == {"off"}
    assert (view / "ami-bridge" / "extensions.conf").is_file()
    assert (view / "extensions.conf").read_text() == (
        etc / "asterisk" / "extensions-include.conf").read_text()
    assert cfg.agi_secret == (etc / "agi.secret").read_text().strip()
    # The compose file mounts the fragments where asterisk_conf_dir expects them.
    compose = COMPOSE.read_text()
    assert compose.count("- fragments:/etc/ami-bridge/asterisk-view/ami-bridge\n") == 2
    assert "- fragments:/etc/asterisk/ami-bridge\n" in compose


def test_the_asterisk_entrypoint_adds_the_bridge_once(tmp_path: Path) -> None:
    conf = tmp_path / "etc-asterisk"
    conf.mkdir()
    stock = {"extensions.conf": "[general]\nstatic=yes\n\n[globals]\n\n[default]\n",
             "queues.conf": "[general]\n", "voicemail.conf": "[general]\n",
             "manager.conf": "[general]\nenabled = yes\n"}
    for name, text in stock.items():
        (conf / name).write_text(text)
    etc = tmp_path / "etc-ami-bridge"
    subprocess.run([Path(sys.executable).parent / "ami-bridge", "conf", "init", str(etc)],
                   check=True, capture_output=True)
    env = {**os.environ, "AMI_BRIDGE_KIT": str(etc / "asterisk"), "ASTERISK_ETC": str(conf),
           "ASTERISK_GROUP": str(os.getgid())}
    for _ in range(2):  # every container start runs it
        done = subprocess.run(["sh", str(DOCKER / "asterisk-entrypoint.sh"),
                               "--prepare-only"], capture_output=True, text=True,
                              timeout=60, check=False, env=env)
        assert done.returncode == 0, done.stderr
    ext = (conf / "extensions.conf").read_text()
    assert ext.startswith(stock["extensions.conf"])
    assert ext.count('#include "ami-bridge/extensions.conf"') == 1
    assert ext.count("\nAB_AGI_URL=agi://127.0.0.1:4573/") == 1
    for name, line in [("queues.conf", '#include "ami-bridge/queues.conf"'),
                       ("voicemail.conf", '#include "ami-bridge/voicemail.conf"'),
                       ("manager.conf", '#include "manager.d/*.conf"')]:
        assert (conf / name).read_text().count(line) == 1, name
    for name in ("ami-bridge.conf", "ami-bridge-reload.conf"):
        copied = conf / "manager.d" / name
        assert copied.read_text() == (etc / "asterisk" / "manager.d" / name).read_text()
        assert copied.stat().st_mode & 0o777 == 0o640
