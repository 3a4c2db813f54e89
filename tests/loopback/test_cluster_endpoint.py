"""The cluster endpoint attacked over real HTTP on loopback: without the secret, with a
wrong one, replayed, out of time, oversize or malformed, a request reaches no node."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Mapping
from typing import Any

import aiohttp

from ami_bridge.cluster import peers, signing
from ami_bridge.cluster.apply import Reply

SECRET = "k" * 43


class Recorder:
    name = "b"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def prepare(self, tx: str, coordinator: str, tenants: Mapping[str, str]) -> Reply:
        self.calls.append(("prepare", tx))
        return Reply(True)

    async def commit(self, tx: str) -> Reply:
        self.calls.append(("commit", tx))
        return Reply(True, changed=("ami-bridge/tenants/carol.conf",))

    async def abort(self, tx: str) -> Reply:
        self.calls.append(("abort", tx))
        return Reply(True, detail="released")

    async def finish(self, tx: str) -> Reply:
        self.calls.append(("finish", tx))
        return Reply(True)


async def attack(requests: list[dict[str, Any]]) -> tuple[list[tuple[int, str]], Recorder]:
    """Each request: op, body (bytes), headers (or sign=True / secret / now)."""
    node = Recorder()
    runner = await peers.serve(node, SECRET, host="127.0.0.1", port=0)
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    answers = []
    try:
        async with aiohttp.ClientSession() as session:
            for req in requests:
                path = peers.PATH_PREFIX + req.get("op", "commit")
                body = req.get("body", b'{"tx": "a-1"}')
                headers = req.get("headers") or {}
                if req.get("sign"):
                    headers = signing.headers(req.get("secret", SECRET),
                                              now=req.get("now", time.time()), method="POST",
                                              path=path, body=body)
                async with session.post(base + path, data=io.BytesIO(body),
                                        headers=headers) as resp:
                    answer = await resp.json(content_type=None)
                    answers.append((resp.status, str(answer.get("error"))))
    finally:
        await runner.cleanup()
    return answers, node


def test_refused_without_secret_wrong_secret_replay_stale_and_oversize() -> None:
    signed = signing.headers(SECRET, now=time.time(), method="POST",
                             path=peers.PATH_PREFIX + "commit", body=b'{"tx": "a-1"}')
    big = b'{"tx": "a-1", "pad": "' + b"x" * peers.MAX_BODY_BYTES + b'"}'
    answers, node = asyncio.run(attack([
        {},  # no secret at all
        {"sign": True, "secret": "w" * 43},  # a wrong one
        {"headers": signed},  # accepted once ...
        {"headers": signed},  # ... and refused when replayed
        {"sign": True, "now": time.time() - 3600},  # an hour old
        {"sign": True, "body": big},  # over the bound
        {"sign": True, "body": b"[1, 2]"},  # signed but not a request
        {"sign": True, "op": "drop-tables"},
    ]))
    statuses = [status for status, _ in answers]
    assert statuses == [401, 401, 200, 401, 401, 413, 400, 404], answers
    assert "unsigned request" in answers[0][1]
    assert "signature does not match" in answers[1][1]
    assert "replayed request" in answers[3][1]
    assert "s behind this node's clock" in answers[4][1]
    assert node.calls == [("commit", "a-1")]  # only the one good request got through


def test_remote_node_round_trip_and_its_failures_are_named() -> None:
    async def scenario() -> list[Reply]:
        node = Recorder()
        runner = await peers.serve(node, SECRET, host="127.0.0.1", port=0)
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            async with peers.client_session() as session:
                good = peers.RemoteNode("b", url, SECRET, session)
                wrong = peers.RemoteNode("b", url, "w" * 43, session)
                replies = [await good.prepare("a-1", "a", {"carol": "x = 1\n"}),
                           await good.commit("a-1"), await wrong.commit("a-1")]
        finally:
            await runner.cleanup()
        async with peers.client_session() as session:
            replies.append(await peers.RemoteNode("b", url, SECRET, session).prepare(
                "a-2", "a", {}))  # the endpoint is gone now
        assert node.calls == [("prepare", "a-1"), ("commit", "a-1")]
        return replies

    prepared, committed, refused, gone = asyncio.run(scenario())
    assert prepared == Reply(True)
    assert committed == Reply(True, changed=("ami-bridge/tenants/carol.conf",))
    assert not refused.ok and refused.reached
    assert refused.error.startswith("HTTP 401: signature does not match"), refused.error
    assert not gone.ok and not gone.reached and "http://127.0.0.1:" in gone.error

