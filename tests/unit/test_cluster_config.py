"""`[cluster]` in the bridge config: parsed as docs/configuration.md says, errors that
name the key and the bad value, and a bridge without it unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ami_bridge import config as config_mod
from ami_bridge.cluster.settings import ClusterConfig

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s" * 43
CLUSTER = """
[cluster]
node = "a"
listen = "127.0.0.1:7461"
secret_file = "cluster.secret"
[cluster.nodes]
b = "http://127.0.0.2:7461"
c = "https://bridge-c.example:7461/"
"""


def write(tmp_path: Path, cluster: str = CLUSTER, *, mode: int = 0o600,
          tenants_dir: bool = True) -> Path:
    if not (tmp_path / "tenants.d").exists():
        shutil.copytree(ROOT / "examples" / "tenants.d", tmp_path / "tenants.d")
    secret = tmp_path / "cluster.secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(mode)
    path = tmp_path / "bridge.toml"
    path.write_text(("[bridge]\ntenants_dir = \"tenants.d\"\n" if tenants_dir else "")
                    + "[vts.acme]\n[vts.globex]\n" + cluster)
    return path


def error(path: Path) -> str:
    with pytest.raises(config_mod.ConfigError) as info:
        config_mod.load(path)
    return str(info.value)


def test_cluster_is_parsed(tmp_path: Path) -> None:
    cfg = config_mod.load(write(tmp_path))
    assert cfg.cluster == ClusterConfig(node="a", host="127.0.0.1", port=7461, secret=SECRET,
                                        nodes={"b": "http://127.0.0.2:7461",
                                               "c": "https://bridge-c.example:7461"})
    assert SECRET not in repr(cfg.cluster)


def test_no_cluster_section_is_a_single_node(tmp_path: Path) -> None:
    assert config_mod.load(write(tmp_path, "")).cluster is None


@pytest.mark.parametrize(("section", "key", "words"), [
    (CLUSTER.replace('node = "a"', 'node = "A b"'), "cluster.node", "'A b'"),
    (CLUSTER.replace('node = "a"\n', ""), "cluster.node", "None"),
    (CLUSTER.replace('"127.0.0.1:7461"', '"7461"'), "cluster.listen", "HOST:PORT"),
    (CLUSTER.replace('listen = "127.0.0.1:7461"\n', ""), "cluster.listen", "missing"),
    (CLUSTER.replace('secret_file = "cluster.secret"\n', ""), "cluster.secret_file",
     "missing"),
    (CLUSTER.replace('"cluster.secret"', '"nowhere"'), "cluster.secret_file",
     "cannot read"),
    (CLUSTER + 'a = "http://127.0.0.3:7461"\n', "cluster.nodes.a", "this node's own name"),
    (CLUSTER + 'd = "http://127.0.0.2:7461"\n', "cluster.nodes.d", "node 'b' too"),
    (CLUSTER + 'd = "http://127.0.0.1:7461"\n', "cluster.nodes.d", "node 'a' too"),
    (CLUSTER.replace('"http://127.0.0.2:7461"', '"http://127.0.0.2"'), "cluster.nodes.b",
     "port is required"),
    (CLUSTER.replace('"http://127.0.0.2:7461"', '"ftp://127.0.0.2:7461"'),
     "cluster.nodes.b", "ftp://"),
    (CLUSTER.replace('"http://127.0.0.2:7461"', '"http://127.0.0.2:7461/x"'),
     "cluster.nodes.b", "no path"),
    (CLUSTER.replace('"http://127.0.0.2:7461"', '"http://127.0.0.2:99999"'),
     "cluster.nodes.b", "99999"),
    (CLUSTER.replace('"http://127.0.0.2:7461"', "7461"), "cluster.nodes.b", "7461"),
    (CLUSTER + 'B_ = "http://127.0.0.9:7461"\n', "cluster.nodes.B_", "must match"),
    (CLUSTER.replace('node = "a"', 'node = "a"\npeers = []'), "cluster.peers",
     "unknown key"),
])
def test_errors_name_the_key_and_the_value(tmp_path: Path, section: str, key: str,
                                           words: str) -> None:
    message = error(write(tmp_path, section))
    assert f"{tmp_path / 'bridge.toml'}: {key}: " in message, message
    assert words in message, message


def test_a_secret_others_can_read_is_refused(tmp_path: Path) -> None:
    message = error(write(tmp_path, mode=0o644))
    assert "cluster.secret_file" in message and "readable by others" in message
    assert SECRET not in message


def test_a_short_secret_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path)
    (tmp_path / "cluster.secret").write_text("short\n")
    message = error(path)
    assert "cluster.secret_file" in message and "43 to 256" in message


def test_cluster_needs_the_tenants_dir_it_ships(tmp_path: Path) -> None:
    path = write(tmp_path, tenants_dir=False)
    path.write_text(path.read_text().replace("[vts.acme]\n[vts.globex]\n", ""))
    message = error(path)
    assert "cluster: needs [bridge] tenants_dir" in message


def test_tenant_texts_replace_the_files_on_disk_and_errors_name_their_future_path(
        tmp_path: Path) -> None:
    path = write(tmp_path)
    texts = {"acme": (tmp_path / "tenants.d" / "acme" / "tenant.toml").read_text()}
    with pytest.raises(config_mod.ConfigError) as info:
        config_mod.load(path, tenant_texts=texts)  # globex gone: [vts.globex] is idle
    assert "vts.globex" in str(info.value)
    texts["globex"] = "this is = not toml ["
    with pytest.raises(config_mod.ConfigError) as info:
        config_mod.load(path, tenant_texts=texts)
    assert str(info.value).startswith(f"{tmp_path / 'tenants.d' / 'globex' / 'tenant.toml'}: "
                                      "not valid TOML")
    texts["globex"] = (tmp_path / "tenants.d" / "globex" / "tenant.toml").read_text()
    assert sorted(config_mod.load(path, tenant_texts=texts).tenants) == ["acme", "globex"]


def test_conf_show_masks_the_cluster_secret_and_resolves_its_file(tmp_path: Path) -> None:
    from ami_bridge import confshow

    path = write(tmp_path)
    cfg = config_mod.load(path)
    assert SECRET in confshow.known_secrets(cfg)
    raw = {"cluster": {"secret_file": "cluster.secret", "note": SECRET}}
    shown = confshow.mask(raw, secrets=confshow.known_secrets(cfg))
    assert SECRET not in str(shown)


def test_the_bus_names_a_bridge_by_its_node_and_a_fresh_random_part(tmp_path: Path) -> None:
    from ami_bridge.daemon import bus_id

    cfg = config_mod.load(write(tmp_path))
    first, again = bus_id(cfg), bus_id(cfg)
    assert cfg.cluster is not None and first.startswith(f"{cfg.cluster.node}:")
    assert first != again  # a restarted bridge is a new sender (its sequence starts at 1)
    single = bus_id(config_mod.load(write(tmp_path / "single", "")))
    assert ":" not in single and len(single) == 12
