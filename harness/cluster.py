"""Several sandbox Asterisks and several bridges on this machine: the scale-out harness.

Contract. :class:`Cluster` starts `size` sandbox Asterisks (slots `first_slot`.. of
:mod:`harness.asterisk`, each on 127.0.0.N; by default from slot 2, so a cluster test
does not queue behind the single-Asterisk tests of slot 1) and as many bridges (FastAGI
on 127.0.0.1:``AGI_PORT_BASE + slot``, clear of the usual 4573), bridge *i* holding
Asterisk *i*'s AMI session. Each Asterisk's venues ask its own bridge first and the
others after, in order (`AB_AGI_URL`, `AB_AGI_URL_2`, ...: the venue failover,
docs/scale-out.md). Each Asterisk has its own `systemname` (:func:`system_name`), so no
two nodes' calls share a uniqueid. Each bridge runs the example tenants
(examples/bridge.toml, as :func:`harness.demo.demo_config`), with its control socket and
state in its own directory. With `postgres`, one throw-away
PostgreSQL (:mod:`harness.postgres`) holds the personal store of every bridge
(`[store] backend = "postgresql"`); without it each bridge keeps its own SQLite file.
With `api`, each bridge also serves the personal router's HTTP API (and the workstation
WebSocket) on 127.0.0.1:``API_PORT_BASE + slot`` with its own operator token
(:attr:`Node.api`, :attr:`Node.operator_token`): a cluster's bridges offer pops only
with an `[api]` (docs/scale-out.md).
:meth:`Cluster.phones` starts a SIPp UAS per destination on every Asterisk's address.
With `trace`, each Asterisk also writes its dialplan trace (verbose 3, millisecond
timestamps) to ``log/full``, which :func:`read_trace` turns into the route requests each
call made (which bridge URL, when) and the AMI logins and logoffs: the facts the
scale-out tests count, taken from Asterisk rather than guessed.
Everything is a harness child (:mod:`harness.procs`); `stop()` (the context manager's
exit) stops bridges, phones, Asterisks and PostgreSQL, and leaves no process behind.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Self

from harness.asterisk import DEFAULT_CONF_SRC, Asterisk
from harness.bridge import BridgeProcess
from harness.demo import demo_config
from harness.postgres import PostgresServer
from harness.sipp import SippUas

# The example config's FastAGI listener, which each bridge's config replaces.
EXAMPLE_AGI_PORT = 4573
# The bridge of slot N listens on 127.0.0.1:AGI_PORT_BASE+N: clear of 4573, where the
# single-Asterisk tests' bridges listen.
AGI_PORT_BASE = 4580
# The bridge of slot N serves its HTTP API on 127.0.0.1:API_PORT_BASE+N (with `api`):
# clear of 8088 (the [api] default) and of the sandbox Asterisks' HTTP (8089 on 127.0.0.N).
API_PORT_BASE = 8180
DEFAULT_FIRST_SLOT = 2
# Destination name -> SIPp UAS port, as in asterisk-conf/pjsip.conf (the same on every
# slot's address).
PHONE_PORTS: Mapping[str, int] = {"acme-agent": 5071, "globex-agent": 5072,
                                  "acme-operator": 5073, "globex-operator": 5074}


# asterisk-conf/logger.conf plus a `full` file of verbose messages (the dialplan trace at
# verbose 3: one line per executed priority), with milliseconds in every timestamp.
TRACE_LOGGER = """[general]
dateformat = %F %T.%3q

[logfiles]
console => notice,warning,error
messages => notice,warning,error
full => verbose,notice,warning,error
"""
TRACE_FILE = "full"
TRACE_VERBOSE = 3  # pbx.c logs each "Executing [exten@context:priority]" at verbose 3
_STAMP = r"^\[(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})\]"
_EXEC_RE = re.compile(_STAMP + r" VERBOSE\[\d+\]\[(?P<call>C-[0-9a-fA-F]+)\] pbx\.c: "
                      r"Executing \[(?P<exten>[^@\]]*)@(?P<context>[^:\]]*):\d+\] "
                      r'(?P<app>\w+)\("[^"]*", "(?P<args>.*)"\) in new stack$', re.MULTILINE)
_MANAGER_RE = re.compile(_STAMP + r" VERBOSE\[\d+\] manager\.c: Manager '(?P<user>[^']+)' "
                         r"logged (?P<what>on|off) from", re.MULTILINE)
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
OPERATOR_TOKEN_FILE = "operator.token"


@dataclass(frozen=True)
class Step:
    """One executed dialplan priority of a call, from an Asterisk trace."""

    at: datetime
    call: str  # Asterisk's call id (C-0000002a): every channel of one call
    context: str
    app: str
    args: str


@dataclass(frozen=True)
class Trace:
    """What an Asterisk's trace says: every executed step, and when a manager user
    logged on or off (a bridge's AMI session: a SIGKILLed bridge's logoff is its death
    as this Asterisk saw it)."""

    steps: tuple[Step, ...]
    logins: tuple[tuple[datetime, str, str], ...]  # (when, user, "on" | "off")

    def route_requests(self) -> list[Step]:
        """The FastAGI route requests (`AGI(agi://.../route,...)`), in order."""
        return [s for s in self.steps if s.app == "AGI" and "/route" in s.args]

    def logoffs(self, user: str) -> list[datetime]:
        return [at for at, who, what in self.logins if who == user and what == "off"]


def read_trace(text: str) -> Trace:
    """Parse an Asterisk `full` log written with :data:`TRACE_LOGGER`."""
    steps = tuple(Step(datetime.strptime(m["at"], _TIME_FORMAT), m["call"], m["context"],
                       m["app"], m["args"]) for m in _EXEC_RE.finditer(text))
    logins = tuple((datetime.strptime(m["at"], _TIME_FORMAT), m["user"], m["what"])
                   for m in _MANAGER_RE.finditer(text))
    return Trace(steps, logins)


class ClusterError(RuntimeError):
    """The cluster harness was used in a way it cannot honour."""


@dataclass(frozen=True)
class Node:
    """One Asterisk and the bridge next to it; `index` counts from 0."""

    index: int
    asterisk: Asterisk
    bridge: BridgeProcess
    api: str | None = None  # the bridge's API base URL (a Cluster started with `api`)
    operator_token: str | None = None  # its operator's bearer token (the same file's)

    def trace(self) -> Trace:
        """This node's Asterisk trace so far (a Cluster started with `trace`)."""
        path = self.asterisk.instance_dir / "log" / TRACE_FILE
        return read_trace(path.read_text(errors="replace") if path.exists() else "")


def system_name(cluster: str, index: int) -> str:
    """Asterisk `index`'s systemname: its uniqueids ("scale-1-1795986887.10") differ from
    every other node's, though two Asterisks started in one second count alike."""
    return f"{cluster}-{index + 1}"


def agi_port(slot: int) -> int:
    return AGI_PORT_BASE + slot


def api_port(slot: int) -> int:
    return API_PORT_BASE + slot


def failover_order(index: int, slots: list[int]) -> list[str]:
    """The AGI URLs Asterisk `index` asks, nearest first: its own bridge, then the next
    ones round the ring (so the survivors share a dead bridge's calls across nodes)."""
    size = len(slots)
    return [f"agi://127.0.0.1:{agi_port(slots[(index + step) % size])}"
            for step in range(size)]


def bridge_config(directory: Path, etc: Path, *, port: int, host: str,
                  store_dsn: str | None, api_port: int | None = None) -> Path:
    """examples/bridge.toml for one bridge: its FastAGI port, its Asterisk's AMI
    address, its own control socket and state; the shared PostgreSQL store if any; with
    `api_port`, an `[api]` on 127.0.0.1:api_port whose operator token is in
    ``directory/operator.token`` (0600, as the bridge requires)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = demo_config(directory, etc)
    text = path.read_text(encoding="utf-8")
    for old, new in ((f'agi_listen = "127.0.0.1:{EXAMPLE_AGI_PORT}"',
                      f'agi_listen = "127.0.0.1:{port}"'),
                     ('host = "127.0.0.1"', f'host = "{host}"')):
        if old not in text:
            raise ClusterError(f"examples/bridge.toml no longer has {old!r}")
        text = text.replace(old, new, 1)
    if store_dsn is not None:
        start = text.index("[store]")
        end = text.index("\n", text.index("path = ", start))
        text = (text[:start] + f'[store]\nbackend = "postgresql"\ndsn = "{store_dsn}"'
                + text[end:])
    if api_port is not None:
        token = directory / OPERATOR_TOKEN_FILE
        token.write_text(secrets.token_urlsafe(32) + "\n", encoding="utf-8")
        token.chmod(0o600)
        text += (f'\n[api]\nlisten = "127.0.0.1:{api_port}"\n'
                 f'operator_token_file = "{token}"\n')
    path.write_text(text, encoding="utf-8")
    return path


class Cluster:
    """`size` Asterisks and bridges (and one PostgreSQL with `postgres`); a context
    manager. `directory`: where bridge configs and logs go (a test's tmp_path)."""

    def __init__(self, directory: Path, *, size: int = 2, postgres: bool = False,
                 name: str = "cluster", trace: bool = False, api: bool = False,
                 first_slot: int = DEFAULT_FIRST_SLOT) -> None:
        if not 2 <= size <= 4:
            raise ClusterError(f"cluster size {size}: 2 to 4 nodes")
        self.slots = list(range(first_slot, first_slot + size))
        self.directory = directory
        self.size = size
        self.name = name
        self.trace = trace
        self.api = api
        self.store_dsn: str | None = None  # the shared store's DSN, once started
        self.postgres: PostgresServer | None = PostgresServer() if postgres else None
        self.nodes: list[Node] = []
        self._phones: list[tuple[tuple[int, str], SippUas]] = []
        self._stack = contextlib.ExitStack()

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        dsn = None
        if self.postgres is not None:
            self._stack.enter_context(self.postgres)
            dsn = self.store_dsn = self.postgres.create_database()
        for index in range(self.size):
            slot = self.slots[index]
            _own, *others = failover_order(index, self.slots)
            asterisk = Asterisk(conf_src=DEFAULT_CONF_SRC, name=f"{self.name}-{index + 1}",
                                slot=slot, agi_port=agi_port(slot),
                                agi_failover=others,
                                verbose=TRACE_VERBOSE if self.trace else 0,
                                systemname=system_name(self.name, index),
                                extra_files={"logger.conf": TRACE_LOGGER} if self.trace
                                else {})
            self._stack.callback(asterisk.stop)
            asterisk.start()
            node_dir = self.directory / f"bridge-{index + 1}"
            port = api_port(slot) if self.api else None
            config = bridge_config(node_dir, asterisk.instance_dir / "etc",
                                   port=agi_port(slot), host=asterisk.host, store_dsn=dsn,
                                   api_port=port)
            bridge = BridgeProcess(config, log_path=node_dir / "bridge.log")
            self._stack.callback(bridge.stop)
            bridge.start()
            token = ((node_dir / OPERATOR_TOKEN_FILE).read_text(encoding="utf-8").strip()
                     if port is not None else None)
            self.nodes.append(Node(index, asterisk, bridge,
                                   api=f"http://127.0.0.1:{port}" if port else None,
                                   operator_token=token))

    def phones(self) -> dict[tuple[int, str], SippUas]:
        """A fresh SIPp UAS per destination on every node's address, keyed by (node
        index, destination name); stopped by `stop_phones` (or the cluster's stop)."""
        started: dict[tuple[int, str], SippUas] = {}
        for node in self.nodes:
            for phone, port in PHONE_PORTS.items():
                uas = SippUas(port, f"{self.name}-{phone}", host=node.asterisk.host)
                self._phones.append(((node.index, phone), uas))
                uas.start()
                started[(node.index, phone)] = uas
        return started

    def stop_phones(self) -> dict[tuple[int, str], int]:
        """Stop the phones; how many calls each answered and completed."""
        counts: dict[tuple[int, str], int] = {}
        phones, self._phones = self._phones, []
        for key, uas in phones:
            counts[key] = uas.stop().successful
        return counts

    def stop(self) -> None:
        """Phones, then bridges and Asterisks (last started first), then PostgreSQL."""
        errors: list[BaseException] = []
        for _, uas in self._phones:
            try:
                uas.stop()
            except Exception as exc:  # stop them all, report the first failure
                errors.append(exc)
        self._phones = []
        self._stack.close()
        self.nodes = []
        if errors:
            raise errors[0]

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
