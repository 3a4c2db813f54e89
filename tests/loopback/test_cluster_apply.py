"""Cluster apply between real participants: each node with its own config dir, tenant
files and Asterisk conf dir (scripted Asterisk callbacks), node B reached over the real
signed HTTP endpoint on loopback. All or none, the lock, and the rollback."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Mapping
from pathlib import Path

import pytest

from ami_bridge import config as config_mod
from ami_bridge.apply import ApplyResult, Undo, apply_config, revert
from ami_bridge.cluster import peers
from ami_bridge.cluster.apply import Node, Participant, cluster_apply

ROOT = Path(__file__).resolve().parents[2]
SECRET = "k" * 43
CAROL = ('[extensions]\n3001 = "PJSIP/carol-agent"\noperator = "PJSIP/carol-agent"\n'
         '[venues.carol-venue]\nvts = "carol"\n')


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Steps:
    """A bridge's side with a scripted Asterisk: the real render/lint/write of apply."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.config = config_mod.load(path)
        self.journal: list[str] = []
        self.fail_reload = False

    def current(self) -> config_mod.BridgeConfig:
        return self.config

    async def load(self, tenants: Mapping[str, str]) -> config_mod.BridgeConfig:
        return config_mod.load(self.path, tenant_texts=tenants)

    async def _swap(self, cfg: config_mod.BridgeConfig) -> None:
        self.config = cfg
        self.journal.append(f"swap {','.join(sorted(cfg.tenants))}")

    async def _reload(self) -> None:
        self.journal.append("reload")
        if self.fail_reload:  # the first reload only: the rollback's goes through
            self.fail_reload = False
            raise RuntimeError("Asterisk said no")

    async def _missing(self, contexts: list[str]) -> list[str]:
        return []

    async def apply(self, new: config_mod.BridgeConfig) -> ApplyResult:
        return await apply_config(current=self.config, new=new, swap_bridge=self._swap,
                                  reload_asterisk=self._reload, missing_contexts=self._missing)

    async def revert(self, undo: Undo) -> None:
        await revert(undo, swap_bridge=self._swap, reload_asterisk=self._reload)


def make_node(root: Path, name: str, port: int = 7461) -> Path:
    """A node's own directory: bridge.toml, tenants.d, Asterisk etc, cluster.secret."""
    root.mkdir()
    shutil.copytree(ROOT / "asterisk-conf", root / "etc")
    shutil.copytree(ROOT / "examples" / "tenants.d", root / "tenants.d")
    secret = root / "cluster.secret"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    other = "b" if name == "a" else "a"
    path = root / "bridge.toml"
    path.write_text(f'[bridge]\ntenants_dir = "tenants.d"\nasterisk_conf_dir = "{root / "etc"}"'
                    f'\n[vts.acme]\n[vts.globex]\n[cluster]\nnode = "{name}"\n'
                    f'listen = "127.0.0.1:{port}"\nsecret_file = "cluster.secret"\n'
                    f'[cluster.nodes]\n{other} = "http://127.0.0.1:{port + 1}"\n')
    return path


def add_carol(path: Path) -> None:
    """The operator's edits on the coordinator: carol's tenant file and, on every node,
    her VTS (made after the node's config was loaded: an idle VTS is refused)."""
    carol = path.parent / "tenants.d" / "carol"
    carol.mkdir()
    (carol / "tenant.toml").write_text(CAROL)


def add_vts(path: Path) -> None:
    path.write_text(path.read_text().replace("[vts.globex]\n", "[vts.globex]\n[vts.carol]\n"))


def fragments(path: Path) -> dict[str, str]:
    etc = path.parent / "etc" / "ami-bridge"
    return {str(p.relative_to(etc)): p.read_text() for p in etc.rglob("*.conf")}


def tenant_texts(path: Path) -> dict[str, str]:
    tenants = path.parent / "tenants.d"
    return {p.parent.name: p.read_text() for p in tenants.glob("*/tenant.toml")}


async def two_nodes(tmp_path: Path, *, b_up: bool = True, b_reload_fails: bool = False
                    ) -> tuple[str, dict[str, Steps], dict[str, dict[str, str]]]:
    """Carol added on A, [vts.carol] on both; apply from A with B over HTTP (or down)."""
    paths = {"a": make_node(tmp_path / "a", "a"), "b": make_node(tmp_path / "b", "b")}
    steps = {name: Steps(path) for name, path in paths.items()}
    steps["b"].fail_reload = b_reload_fails
    before = {name: fragments(path) | tenant_texts(path) for name, path in paths.items()}
    add_carol(paths["a"])
    for path in paths.values():
        add_vts(path)
    clock = asyncio.get_running_loop().time
    local = Participant(node="a", steps=steps["a"], clock=clock)
    remote_b = Participant(node="b", steps=steps["b"], clock=clock)
    runner = await peers.serve(remote_b, SECRET, host="127.0.0.1", port=0) if b_up else None
    port = runner.addresses[0][1] if runner is not None else _closed_port()
    try:
        async with peers.client_session() as session:
            nodes: list[Node] = [local, peers.RemoteNode("b", f"http://127.0.0.1:{port}",
                                                         SECRET, session)]
            result = await cluster_apply(nodes, coordinator="a", tx="a-1",
                                         tenants=tenant_texts(paths["a"]))
    finally:
        if runner is not None:
            await runner.cleanup()
    after = {name: fragments(path) | tenant_texts(path) for name, path in paths.items()}
    unchanged = {name: after[name] for name in paths if after[name] == before[name]}
    return result.message if not result.ok else "ok", steps, unchanged


def _closed_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_change_lands_on_both_nodes(tmp_path: Path) -> None:
    outcome, steps, unchanged = asyncio.run(two_nodes(tmp_path))
    assert outcome == "ok"
    assert unchanged == {}
    for name in ("a", "b"):
        assert sorted(steps[name].config.tenants) == ["acme", "carol", "globex"]
        assert steps[name].journal == ["swap acme,carol,globex", "reload"]
    assert (tmp_path / "b" / "tenants.d" / "carol" / "tenant.toml").read_text() == CAROL
    assert (tmp_path / "b" / "etc" / "ami-bridge" / "tenants" / "carol.conf").is_file()


def test_node_b_down_changes_no_node_and_names_b(tmp_path: Path) -> None:
    outcome, steps, unchanged = asyncio.run(two_nodes(tmp_path, b_up=False))
    assert outcome.startswith("cluster apply refused at prepare; no node changed:\n"
                              "  node b: unreachable: http://127.0.0.1:"), outcome
    assert set(unchanged) == {"b"}
    assert steps["a"].journal == [] and steps["b"].journal == []
    # A's own files: only the tenant file the operator added; no fragment written.
    assert not (tmp_path / "a" / "etc" / "ami-bridge" / "tenants" / "carol.conf").exists()


def test_a_commit_that_fails_on_b_rolls_a_back(tmp_path: Path) -> None:
    outcome, steps, unchanged = asyncio.run(two_nodes(tmp_path, b_reload_fails=True))
    assert outcome.startswith("cluster apply failed at commit on node b: apply failed, "
                              "rolled back: Asterisk said no"), outcome
    assert "  node a: rolled back" in outcome
    assert set(unchanged) == {"b"}
    assert sorted(steps["a"].config.tenants) == ["acme", "globex"]
    assert steps["a"].journal == ["swap acme,carol,globex", "reload", "swap acme,globex",
                                  "reload"]
    a = tmp_path / "a"
    assert not (a / "etc" / "ami-bridge" / "tenants" / "carol.conf").exists()
    assert '#include "ami-bridge/tenants/carol.conf"' not in (
        a / "etc" / "ami-bridge" / "extensions.conf").read_text()
    assert (a / "tenants.d" / "carol" / "tenant.toml").read_text() == CAROL  # the source


def participant(tmp_path: Path, clock: Clock) -> tuple[Participant, Steps, Path]:
    path = make_node(tmp_path / "a", "a")
    steps = Steps(path)
    add_vts(path)
    return Participant(node="a", steps=steps, clock=clock, hold=60.0), steps, path


def test_a_second_apply_is_refused_while_one_holds_the_node_until_it_expires(
        tmp_path: Path) -> None:
    clock = Clock()
    node, steps, path = participant(tmp_path, clock)
    texts = tenant_texts(path) | {"carol": CAROL}

    async def scenario() -> None:
        assert (await node.prepare("a-1", "a", texts)).ok
        second = await node.prepare("b-2", "b", texts)
        assert not second.ok and second.busy
        assert second.error == ("node a is held by apply a-1 from node a since 0 s (lock "
                                "expires within 60 s); try again")
        clock.now += 61
        assert (await node.prepare("b-2", "b", texts)).ok  # the first one's lock expired
        late = await node.commit("a-1")
        assert not late.ok and "is not prepared here" in late.error
        assert (await node.commit("b-2")).ok
        assert node.holder == "b-2"  # until the coordinator says finish
        assert (await node.finish("b-2")).ok
        assert node.holder is None

    asyncio.run(scenario())
    assert sorted(steps.config.tenants) == ["acme", "carol", "globex"]


def test_prepare_refuses_a_bad_tenant_file_and_writes_nothing(tmp_path: Path) -> None:
    node, steps, path = participant(tmp_path, Clock())
    before = fragments(path) | tenant_texts(path)
    bad = CAROL.replace('vts = "carol"', 'vts = "carol"\nrouter_timeout = -1')

    async def scenario() -> None:
        reply = await node.prepare("a-1", "a", tenant_texts(path) | {"carol": bad})
        assert not reply.ok and not reply.busy
        assert str(path.parent / "tenants.d" / "carol" / "tenant.toml") in reply.error
        assert "venues.carol-venue.router_timeout" in reply.error
        assert node.holder is None
        reply = await node.prepare("a-2", "a", {"../evil": CAROL})
        assert not reply.ok and "'../evil'" in reply.error

    asyncio.run(scenario())
    assert fragments(path) | tenant_texts(path) == before
    assert steps.journal == []


def test_abort_after_commit_puts_everything_back(tmp_path: Path) -> None:
    node, steps, path = participant(tmp_path, Clock())
    before = fragments(path) | tenant_texts(path)
    old = tenant_texts(path)
    texts = old | {"carol": CAROL, "acme": old["acme"] + "\n# changed\n"}

    async def scenario() -> None:
        assert (await node.prepare("a-1", "a", texts)).ok
        assert (await node.commit("a-1")).ok
        assert tenant_texts(path) == texts
        reply = await node.abort("a-1")
        assert (reply.ok, reply.detail) == (True, "rolled back")
        assert (await node.abort("a-1")).detail == "nothing held"

    asyncio.run(scenario())
    assert fragments(path) | tenant_texts(path) == before
    assert not (path.parent / "tenants.d" / "carol").exists()
    assert sorted(steps.config.tenants) == ["acme", "globex"]


@pytest.mark.parametrize("op", ["commit", "abort", "finish"])
def test_phases_of_an_unknown_transaction_change_nothing(tmp_path: Path, op: str) -> None:
    node, steps, _ = participant(tmp_path, Clock())
    reply = asyncio.run(getattr(node, op)("x-1"))
    assert reply.ok == (op != "commit")
    assert steps.journal == []


def test_of_two_concurrent_applies_one_wins_and_the_other_is_refused_with_words(
        tmp_path: Path) -> None:
    paths = {"a": make_node(tmp_path / "a", "a"), "b": make_node(tmp_path / "b", "b")}
    steps = {name: Steps(path) for name, path in paths.items()}
    for path in paths.values():
        add_vts(path)
    texts = tenant_texts(paths["a"]) | {"carol": CAROL}

    async def scenario() -> list[str]:
        clock = asyncio.get_running_loop().time
        nodes: list[Node] = [Participant(node=n, steps=steps[n], clock=clock) for n in "ab"]
        results = await asyncio.gather(
            cluster_apply(nodes, coordinator="a", tenants=texts, tx="a-1"),
            cluster_apply(list(reversed(nodes)), coordinator="b", tenants=texts, tx="b-1"))
        return [r.message if not r.ok else "ok" for r in results]

    outcomes = asyncio.run(scenario())
    assert outcomes.count("ok") == 1, outcomes
    refused = next(o for o in outcomes if o != "ok")
    assert refused.startswith("cluster apply refused at prepare; no node changed:\n  node a: "
                              "busy: node a is held by apply "), refused
    for name in "ab":
        assert sorted(steps[name].config.tenants) == ["acme", "carol", "globex"]
