"""The bridge config's `[cluster]` section: this node's name, where the other nodes reach
it, the shared secret, and every other node's base URL (docs/configuration.md).

Absent: a single node, everything as without it (`ctl apply` changes this bridge only).
Present: `ctl apply` on any node applies the tenant files to every node or to none
(ami_bridge.cluster.apply). Node names are unique (this node's own name may not appear
among `[cluster.nodes]`), URLs are `http(s)://HOST:PORT` with nothing after the port and
no two nodes share one, and the secret file follows the rule of every other secret file
(one line, readable by its owner only: ami_bridge.validation.secret_file). Errors name
the key and the bad value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ami_bridge.validation import Fail, listen, no_unknown, secret_file, table

# A node's name: a DNS-label-like word, so it reads well in an error and a log line.
NODE_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")  # fullmatch
# The shared secret: at least 256 bits of a URL-safe alphabet (it signs requests that
# rewrite the dialplan of every node, a longer-lived key than the AGI URL's).
CLUSTER_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{43,256}")  # fullmatch
SECRET_WHAT = ("one line of 43 to 256 characters A-Z a-z 0-9 _ - (e.g. `python3 -c "
               "'import secrets; print(secrets.token_urlsafe(32))'`), the same on every node")
URL_SCHEMES = ("http", "https")


@dataclass(frozen=True)
class ClusterConfig:
    node: str  # this bridge's unique name in the cluster
    host: str  # [cluster] listen: where the other nodes reach this one
    port: int
    secret: str = field(repr=False)  # never printed
    # Every OTHER node: name -> base URL (http(s)://host:port, no trailing slash).
    nodes: Mapping[str, str] = field(default_factory=dict)


def parse_cluster(raw: Mapping[str, Any], path: Path, fail: Fail) -> ClusterConfig | None:
    if "cluster" not in raw:
        return None
    cluster = table(raw, "cluster", fail)
    no_unknown(cluster, {"node", "listen", "secret_file", "nodes"}, "cluster", fail)
    node = cluster.get("node")
    if not isinstance(node, str) or not NODE_RE.fullmatch(node):
        raise fail("cluster.node", f"must be this node's name matching {NODE_RE.pattern}, "
                   f"got {node!r}")
    if "listen" not in cluster:
        raise fail("cluster.listen", "missing: HOST:PORT where the other nodes reach this one")
    host, port = listen(cluster["listen"], "cluster.listen", fail)
    if "secret_file" not in cluster:
        raise fail("cluster.secret_file", "missing: the file holding the secret every node "
                   "shares (relative to the config file)")
    secret = secret_file(cluster, "secret_file", "cluster", path, CLUSTER_SECRET_RE, fail,
                         what=SECRET_WHAT)
    assert secret is not None  # the key is present
    nodes_raw = table(cluster, "nodes", fail, "cluster")
    nodes: dict[str, str] = {}
    seen: dict[tuple[str, int], str] = {(host.strip("[]").lower(), port): node}
    for name, url in nodes_raw.items():
        key = f"cluster.nodes.{name}"
        if not NODE_RE.fullmatch(name):
            raise fail(key, f"node name {name!r} must match {NODE_RE.pattern}")
        if name == node:
            raise fail(key, f"is this node's own name ([cluster] node = {node!r}); list "
                       "only the OTHER nodes here")
        base, where = _url(url, key, fail)
        if where in seen:
            raise fail(key, f"{url!r} is the address of node {seen[where]!r} too; every "
                       "node needs its own")
        seen[where] = name
        nodes[name] = base
    return ClusterConfig(node=node, host=host, port=port, secret=secret, nodes=nodes)


def _url(value: Any, key: str, fail: Fail) -> tuple[str, tuple[str, int]]:
    """`http(s)://HOST:PORT` -> (the URL without a trailing slash, (host, port))."""
    expected = f"expected http://HOST:PORT or https://HOST:PORT, got {value!r}"
    if not isinstance(value, str):
        raise fail(key, expected)
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise fail(key, expected) from None
    if parts.scheme not in URL_SCHEMES or not parts.hostname or port is None \
            or parts.path not in ("", "/") or parts.query or parts.fragment \
            or parts.username is not None:
        raise fail(key, expected + " (the port is required; no path, user or query)")
    return value.rstrip("/"), (parts.hostname.lower(), port)
