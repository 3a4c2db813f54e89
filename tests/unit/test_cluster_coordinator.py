"""The cluster apply coordinator over fake nodes: all or none, and errors that name nodes."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from ami_bridge.cluster.apply import DEFAULT_TIMEOUTS, ClusterResult, Reply, Timeouts, cluster_apply

TENANTS = {"acme": "[venues.acme-venue]\nvts = \"acme\"\n"}
SHORT = Timeouts(prepare=0.05, commit=0.05, abort=0.05, finish=0.05)


class FakeNode:
    """Records every call in a shared journal; answers as scripted per phase. A node
    that committed and is then aborted says it rolled back, and counts as unchanged."""

    def __init__(self, name: str, journal: list[str], **script: Reply | str) -> None:
        self._name = name
        self.journal = journal
        self.script = script  # phase -> Reply, or "hang"
        self.committed = False
        self.got: Mapping[str, str] | None = None

    @property
    def name(self) -> str:
        return self._name

    async def _answer(self, phase: str) -> Reply:
        self.journal.append(f"{phase} {self._name}")
        answer = self.script.get(phase, Reply(True))
        if answer == "hang":
            await asyncio.Event().wait()
        assert isinstance(answer, Reply)
        return answer

    async def prepare(self, tx: str, coordinator: str, tenants: Mapping[str, str]) -> Reply:
        self.got = tenants
        return await self._answer("prepare")

    async def commit(self, tx: str) -> Reply:
        reply = await self._answer("commit")
        self.committed = reply.ok
        return reply

    async def abort(self, tx: str) -> Reply:
        reply = await self._answer("abort")
        if reply.ok and self.committed:
            self.committed = False
            return Reply(True, detail="rolled back")
        return reply if not reply.ok else Reply(True, detail="released")

    async def finish(self, tx: str) -> Reply:
        return await self._answer("finish")


def run(nodes: list[FakeNode], timeouts: Timeouts = DEFAULT_TIMEOUTS) -> ClusterResult:
    return asyncio.run(cluster_apply(nodes, coordinator="a", tenants=TENANTS, tx="a-1",
                                     timeouts=timeouts))


def test_all_nodes_ok_prepare_then_commit_then_finish_in_name_order() -> None:
    journal: list[str] = []
    nodes = [FakeNode(n, journal, commit=Reply(True, changed=(f"{n}.conf",)))
             for n in ("c", "a", "b")]
    result = run(nodes)
    assert result.ok, result.message
    assert journal == ["prepare a", "prepare b", "prepare c", "commit a", "commit b",
                       "commit c", "finish a", "finish b", "finish c"]
    assert dict(result.changed) == {"a": ("a.conf",), "b": ("b.conf",), "c": ("c.conf",)}
    assert all(node.got == TENANTS and node.committed for node in nodes)


def test_unreachable_node_at_prepare_changes_no_node_and_is_named() -> None:
    journal: list[str] = []
    nodes = [FakeNode("a", journal),
             FakeNode("b", journal, prepare=Reply(False, "http://127.0.0.2:7461: "
                                                  "Connection refused", reached=False)),
             FakeNode("c", journal)]
    result = run(nodes)
    assert not result.ok
    assert not any(n.startswith("commit") for n in journal)
    assert sorted(n for n in journal if n.startswith("abort")) == ["abort a", "abort b",
                                                                    "abort c"]
    assert "no node changed" in result.message
    assert "node b: unreachable: http://127.0.0.2:7461: Connection refused" in result.message
    assert "node a:" not in result.message and "node c:" not in result.message


def test_every_refusing_node_is_named_with_its_reason() -> None:
    journal: list[str] = []
    findings = "conf check refused the new dialplan; nothing changed:\n/etc/x.conf:2: S601"
    nodes = [FakeNode("a", journal, prepare=Reply(False, findings)),
             FakeNode("b", journal),
             FakeNode("c", journal, prepare=Reply(False, "tenant.toml: vts: no [vts.carol]"))]
    result = run(nodes)
    assert not result.ok
    assert "  node a: conf check refused" in result.message
    assert "\n    /etc/x.conf:2: S601" in result.message  # findings indented under the node
    assert "  node c: tenant.toml: vts: no [vts.carol]" in result.message
    assert not any(n.startswith("commit") for n in journal)


def test_busy_node_stops_the_prepare_there() -> None:
    journal: list[str] = []
    nodes = [FakeNode("a", journal),
             FakeNode("b", journal, prepare=Reply(False, "held by apply c-9 from node c",
                                                  busy=True)),
             FakeNode("c", journal)]
    result = run(nodes)
    assert not result.ok
    assert "prepare c" not in journal  # the other apply holds c in the same order
    assert "node b: busy: held by apply c-9 from node c" in result.message
    assert set(journal) >= {"abort a", "abort b"}


def test_commit_failure_rolls_back_the_committed_nodes_and_names_the_failing_one() -> None:
    journal: list[str] = []
    nodes = [FakeNode("a", journal), FakeNode("b", journal),
             FakeNode("c", journal, commit=Reply(False, "apply failed, rolled back: AMI "
                                                 "login as 'ami-bridge-reload' refused"))]
    result = run(nodes)
    assert not result.ok
    assert result.message.startswith("cluster apply failed at commit on node c: apply "
                                     "failed, rolled back: AMI login"), result.message
    assert journal[-3:] == ["abort c", "abort b", "abort a"]
    assert "  node a: rolled back" in result.message
    assert "  node b: rolled back" in result.message
    assert not any(node.committed for node in nodes)
    assert not any(n.startswith("finish") for n in journal)


def test_a_rollback_that_fails_is_said_loudly() -> None:
    journal: list[str] = []
    nodes = [FakeNode("a", journal, abort=Reply(False, "rollback failed: reload refused")),
             FakeNode("b", journal, commit=Reply(False, "reload failed"))]
    result = run(nodes)
    assert not result.ok
    assert "node a: ROLLBACK FAILED: rollback failed: reload refused" in result.message


def test_a_node_that_hangs_is_timed_out_at_prepare() -> None:
    journal: list[str] = []
    nodes = [FakeNode("a", journal), FakeNode("b", journal, prepare="hang")]
    result = run(nodes, SHORT)
    assert not result.ok
    assert "node b: unreachable: no answer within 0.05 s" in result.message
    assert "abort b" in journal  # its prepare may land late: it is released too


def test_a_node_that_hangs_at_commit_rolls_everything_back() -> None:
    journal: list[str] = []
    nodes = [FakeNode("a", journal), FakeNode("b", journal, commit="hang")]
    result = run(nodes, SHORT)
    assert not result.ok
    assert "failed at commit on node b: unreachable: no answer within 0.05 s" \
        in result.message
    assert "  node a: rolled back" in result.message
    assert not nodes[0].committed


def test_a_finish_that_fails_does_not_undo_the_apply() -> None:
    journal: list[str] = []
    nodes = [FakeNode("a", journal), FakeNode("b", journal, finish=Reply(False, "gone",
                                                                         reached=False))]
    result = run(nodes)
    assert result.ok
    assert not any(n.startswith("abort") for n in journal)
