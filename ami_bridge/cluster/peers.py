"""Node-to-node transport of a cluster apply: a small HTTP endpoint and its client.

Each node serves `POST /cluster/v1/{prepare,commit,abort,finish}` on `[cluster] listen`
(`serve`), a JSON object each way; `RemoteNode` is the coordinator's client for one other
node (an ami_bridge.cluster.apply.Node). Every request is signed with the shared secret
and refused unsigned, mis-signed, out of time or replayed (ami_bridge.cluster.signing);
a body over `MAX_BODY_BYTES` is refused before it is read. The endpoint does nothing but
hand the request to the node's `Participant`; answers are `{"ok", "error", "changed",
"detail", "busy"}`. The server speaks plain HTTP: across hosts, run it on a private
network or behind a TLS terminator and give the other nodes an `https://` URL
(docs/security.md).
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from aiohttp import web

from ami_bridge.cluster import signing
from ami_bridge.cluster.apply import Node, Reply

log = logging.getLogger(__name__)

PATH_PREFIX = "/cluster/v1/"
OPS = ("prepare", "commit", "abort", "finish")
# The largest request: a prepare carries every tenant file of the cluster. The examples'
# largest tenant file is 1.8 KB; 1,000 such tenants are 1.8 MB, so 4 MiB leaves room
# while a hostile peer cannot make a node buffer more.
MAX_BODY_BYTES = 4 * 1024 * 1024
CONNECT_TIMEOUT = 5.0  # a node that does not accept a TCP connection within this is down


def _reply_json(reply: Reply, status: int = 200) -> web.Response:
    return web.json_response({"ok": reply.ok, "error": reply.error,
                              "changed": list(reply.changed), "detail": reply.detail,
                              "busy": reply.busy}, status=status)


def make_app(node: Node, secret: str, *,
             wallclock: Callable[[], float] = time.time) -> web.Application:
    guard = signing.ReplayGuard()

    async def handle(request: web.Request) -> web.Response:
        op = request.match_info["op"]
        if op not in OPS:
            return _reply_json(Reply(False, f"unknown operation {op!r} ({', '.join(OPS)})"),
                               404)
        if (request.content_length or 0) > MAX_BODY_BYTES:
            return _reply_json(Reply(False, f"body over {MAX_BODY_BYTES} bytes"), 413)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _reply_json(Reply(False, f"body over {MAX_BODY_BYTES} bytes"), 413)
        why = signing.verify(secret, method=request.method, path=request.path, body=body,
                             timestamp=request.headers.get(signing.TIME_HEADER),
                             signature=request.headers.get(signing.SIGNATURE_HEADER),
                             now=wallclock(), guard=guard)
        if why is not None:
            log.warning("cluster request %s from %s refused: %s", request.path,
                        request.remote, why)
            return _reply_json(Reply(False, why), 401)
        try:
            payload = json.loads(body)
            tx = payload["tx"]
            if not isinstance(payload, dict) or not isinstance(tx, str):
                raise ValueError("tx must be a string")
            reply = await _dispatch(node, op, tx, payload)
        except (ValueError, KeyError, TypeError) as exc:
            return _reply_json(Reply(False, f"malformed {op} request: {exc}"), 400)
        return _reply_json(reply)

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post(PATH_PREFIX + "{op}", handle)
    return app


async def _dispatch(node: Node, op: str, tx: str, payload: Mapping[str, Any]) -> Reply:
    if op == "prepare":
        coordinator, tenants = payload["coordinator"], payload["tenants"]
        if not isinstance(coordinator, str) or not isinstance(tenants, dict) \
                or not all(isinstance(k, str) and isinstance(v, str)
                           for k, v in tenants.items()):
            raise ValueError("coordinator must be a string, tenants an object of strings")
        return await node.prepare(tx, coordinator, tenants)
    if op == "commit":
        return await node.commit(tx)
    if op == "abort":
        return await node.abort(tx)
    return await node.finish(tx)


async def serve(node: Node, secret: str, *, host: str, port: int) -> web.AppRunner:
    """Serve `node` on host:port until the runner is cleaned up."""
    runner = web.AppRunner(make_app(node, secret), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("cluster endpoint on %s:%d (node %s)", host, port, node.name)
    return runner


class RemoteNode:
    """Another node of the cluster, reached over HTTP (an ami_bridge.cluster.apply.Node).
    A node that cannot be reached, or answers garbage, is a `Reply` with reached=False;
    the coordinator's `Timeouts` bound each call."""

    def __init__(self, name: str, url: str, secret: str, session: aiohttp.ClientSession, *,
                 wallclock: Callable[[], float] = time.time) -> None:
        self._name = name
        self._url = url
        self._secret = secret
        self._session = session
        self._wallclock = wallclock

    @property
    def name(self) -> str:
        return self._name

    async def prepare(self, tx: str, coordinator: str, tenants: Mapping[str, str]) -> Reply:
        return await self._post("prepare", {"tx": tx, "coordinator": coordinator,
                                            "tenants": dict(tenants)})

    async def commit(self, tx: str) -> Reply:
        return await self._post("commit", {"tx": tx})

    async def abort(self, tx: str) -> Reply:
        return await self._post("abort", {"tx": tx})

    async def finish(self, tx: str) -> Reply:
        return await self._post("finish", {"tx": tx})

    async def _post(self, op: str, payload: Mapping[str, Any]) -> Reply:
        path = PATH_PREFIX + op
        body = json.dumps(payload).encode("utf-8")
        headers = signing.headers(self._secret, now=self._wallclock(), method="POST",
                                  path=path, body=body)
        headers["Content-Type"] = "application/json"
        try:
            # A stream, not bytes: aiohttp warns that a large bytes body blocks the loop.
            async with self._session.post(self._url + path, data=io.BytesIO(body),
                                          headers=headers) as response:
                answer = await response.json(content_type=None)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return Reply(False, f"{self._url}: {exc or type(exc).__name__}", reached=False)
        if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
            return Reply(False, f"{self._url}: HTTP {response.status} without a cluster "
                         "answer (is this the node's [cluster] listen?)", reached=False)
        error = str(answer.get("error") or "")
        if response.status != 200:
            error = f"HTTP {response.status}: {error}"
        changed = answer.get("changed") or []
        return Reply(ok=answer["ok"] and response.status == 200, error=error,
                     changed=tuple(str(c) for c in changed) if isinstance(changed, list)
                     else (), detail=str(answer.get("detail") or ""),
                     busy=answer.get("busy") is True)


def client_session() -> aiohttp.ClientSession:
    """The coordinator's session for one cluster apply."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(sock_connect=CONNECT_TIMEOUT))
