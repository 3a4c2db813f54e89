"""Bridge configuration: one TOML file (plus tenant files) loaded once into frozen dataclasses.

Every error names the file, the key and the bad value (`ConfigError`). Components get
their settings as keyword arguments from these objects and never read globals. The
tenants' routing protocols are validated here with the same parser the VTS runtime
uses (`ami_bridge.tenants.routing.parse_protocol`), so a bad rule stops the load, not a call.

Files (ami_bridge.conffiles): the main file (`-c/--config`, `$AMI_BRIDGE_CONFIG` or
/etc/ami-bridge/bridge.toml), then its `conf.d/*.toml` merged in name order; relative
paths anywhere in them resolve against the main file's directory.

Layout (see examples/bridge.toml, docs/configuration.md):

    [bridge]          agi_listen, router_timeout, max_pending_per_vts, redirect_limit,
                      max_route_requests, control_socket, tenants_dir, agi_* (the
                      listener's peers, session cap and deadlines: _agi_policy),
                      agi_secret_file, dialplan_allow
    [vts.NAME]        command (optional: any-language VTS), grace_period, restart knobs
                      (restart_initial, restart_factor, restart_maximum, stable_after,
                      flap_window, flap_max, flap_cooldown); one no venue names is refused
    [tenants.NAME]    a tenant inline (ami_bridge.tenant_config), or one file per tenant:
    <tenants_dir>/NAME/tenant.toml   the same keys at top level
    [shared]          contexts, endpoints, trunks every tenant may use (operator's)
    [operator]        contexts the operator's own dialplan holds (no tenant may reach them)
    [owners.NAME]     contexts, endpoints granted to one tenant besides its `NAME-` ones
    [ari]             url, username, password_file, app: the ARI driver's connection
                      (ami_bridge.drivers.ari_settings)
    [cluster]         node, listen, secret_file, [cluster.nodes]: the other bridges that
                      `ctl apply` changes with this one (ami_bridge.cluster.settings)

Every context, endpoint, trunk, queue member and prompt directory a tenant names must be
its own or shared (ami_bridge.ownership); the check runs here, in the one loader that
`check`, `run`, `reload`, `conf render` and `ctl apply` all use.
"""

from __future__ import annotations

import ipaddress
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ami_bridge import conffiles
from ami_bridge.agi.limits import ListenerPolicy, is_loopback
from ami_bridge.cluster.settings import ClusterConfig, parse_cluster
from ami_bridge.dialplan.allow import Allowance, parse_allowance
from ami_bridge.drivers.ari_settings import AriConfig, parse_ari
from ami_bridge.metrics.settings import MetricsConfig, parse_metrics
from ami_bridge.namespace import TENANT_NAME_RE as NAME_RE
from ami_bridge.ownership import (
    Owners,
    check_tenant,
    check_tenant_names,
    device_owners,
    parse_owners,
)
from ami_bridge.personal.settings import ApiConfig, StoreConfig, parse_api, parse_store
from ami_bridge.supervision import confine
from ami_bridge.supervision.restart_policy import RestartSettings
from ami_bridge.tenant_config import (
    DEFAULT_REDIRECT_LIMIT,
    QueueConfig,
    TenantConfig,
    VenueConfig,
    parse_tenant,
)
from ami_bridge.validation import (
    ConfigError,
    Fail,
    count,
    failer,
    listen,
    no_unknown,
    positive,
    secret_file,
    table,
)

__all__ = ["AmiConfig", "BridgeConfig", "ConfigError", "QueueConfig", "TenantConfig", "VenueConfig",
           "VtsConfig", "load", "parse"]

DEFAULT_AGI_PORT = 4573  # the FastAGI port Asterisk assumes for agi:// URLs
DEFAULT_ROUTER_TIMEOUT = 2.0
DEFAULT_MAX_PENDING_PER_VTS = 2000
# Route requests one call may make in all (re-entries after busy/no answer included):
# a last guard against a VTS that routes a call round a loop of failing targets forever.
DEFAULT_MAX_ROUTE_REQUESTS = 16
DEFAULT_CONTROL_SOCKET = "/run/ami-bridge/control.sock"
# How a VTS of the shipped runtime starts: forked from the fork server, which shares one
# imported runtime among all (ami_bridge.supervision.forkserver; bench/README.md),
# or exec'd as its own interpreter. Read at start only.
VTS_SPAWN_MODES = ("fork", "exec")
DEFAULT_VTS_SPAWN = "fork"
TENANT_FILE = "tenant.toml"


@dataclass(frozen=True)
class VtsConfig:
    name: str
    command: tuple[str, ...]  # empty: the shipped runtime (python -m ami_bridge.tenants.worker)
    grace_period: float
    tenants: tuple[str, ...]  # filled in from the venues that map to this VTS
    restart: RestartSettings = field(default_factory=RestartSettings)  # restarts, flapping
    # How the VTS is confined (its mode resolved against [bridge] confine, so a change of
    # either restarts it on reload): ami_bridge/supervision/confine.py, docs/confinement.md.
    confinement: confine.VtsConfinement = field(default_factory=confine.VtsConfinement)


@dataclass(frozen=True)
class AmiConfig:
    host: str
    port: int
    username: str
    secret: str = field(repr=False)  # never printed
    # The separate login that may reload modules (conf apply); None: apply can't reload.
    reload_username: str | None = None
    reload_secret: str = field(default="", repr=False)


@dataclass(frozen=True)
class BridgeConfig:
    path: Path
    agi_host: str
    agi_port: int
    router_timeout: float
    max_pending_per_vts: int
    tenants: Mapping[str, TenantConfig]
    venues: Mapping[str, VenueConfig]
    vts: Mapping[str, VtsConfig]
    redirect_limit: int = DEFAULT_REDIRECT_LIMIT
    max_route_requests: int = DEFAULT_MAX_ROUTE_REQUESTS
    control_socket: str = DEFAULT_CONTROL_SOCKET
    tenants_dir: Path | None = None
    ami: AmiConfig | None = None  # None: no AMI session (routing works without events)
    asterisk_conf_dir: Path | None = None  # where `ctl apply` writes rendered fragments
    vts_spawn: str = DEFAULT_VTS_SPAWN  # VTS_SPAWN_MODES
    confine: str = confine.DEFAULT_MODE  # [bridge] confine (each VTS resolves its own)
    owners: Owners = field(default_factory=Owners)  # grants and [shared] (ownership.py)
    # Device -> its one owning tenant, for agent state; shared devices are nobody's.
    devices: Mapping[str, str] = field(default_factory=dict)
    agi_policy: ListenerPolicy = field(default_factory=ListenerPolicy)  # FastAGI peers, limits
    # The route-request secret Asterisk's AGI URL carries (None: none; a warning at start).
    agi_secret: str | None = None
    # Lint escapes the operator allows every tenant (`conf check`, `conf render`, `ctl apply`).
    dialplan_allow: tuple[Allowance, ...] = ()
    # The personal router: its HTTP API (None: not served) and its store.
    api: ApiConfig | None = None
    store: StoreConfig = field(default_factory=StoreConfig)
    fragments: tuple[Path, ...] = ()  # the conf.d/*.toml merged into `path`, in order
    metrics: MetricsConfig | None = None  # [metrics]: None, no endpoint (ami_bridge.metrics)
    ari: AriConfig | None = None  # [ari]: None, no ARI connection (ami_bridge.drivers.ari)
    # [cluster]: None, a single node (ami_bridge.cluster.settings; cluster apply).
    cluster: ClusterConfig | None = None

    @property
    def personal(self) -> bool:
        """Whether any tenant routes calls by its users' own rules (needs the store)."""
        return any(t.personal is not None for t in self.tenants.values())


def load(path: Path, *, tenant_texts: Mapping[str, str] | None = None) -> BridgeConfig:
    """The config of the main file `path` merged with its conf.d fragments.
    `tenant_texts` (tenant name -> tenant.toml text): the tenant files of `tenants_dir`
    as a cluster apply would write them, read instead of the ones on disk."""
    raw, files = conffiles.read(path)
    return parse(raw, path=path, files=files, tenant_texts=tenant_texts)


def parse(raw: Mapping[str, Any], *, path: Path, files: conffiles.Sources | None = None,
          tenant_texts: Mapping[str, str] | None = None) -> BridgeConfig:
    """`raw` (read from `path`, merged as `files` says if given) validated; errors name
    the file that wrote the key."""
    fail = files.failer() if files is not None else failer(path)
    no_unknown(raw, {"bridge", "vts", "tenants", "ami", "shared", "owners", "api", "store",
                     "operator", "metrics", "ari", "cluster"}, "", fail)
    bridge = table(raw, "bridge", fail)
    no_unknown(bridge, {"agi_listen", "router_timeout", "max_pending_per_vts", "redirect_limit",
                        "max_route_requests", "control_socket", "tenants_dir",
                        "asterisk_conf_dir", "dialplan_allow", "agi_secret_file",
                        confine.BRIDGE_KEY, "vts_spawn", *_AGI_KEYS}, "bridge", fail)
    vts_spawn = bridge.get("vts_spawn", DEFAULT_VTS_SPAWN)
    if vts_spawn not in VTS_SPAWN_MODES:
        raise fail("bridge.vts_spawn", f"must be one of "
                   f"{', '.join(repr(m) for m in VTS_SPAWN_MODES)}, got {vts_spawn!r}")
    bridge_mode = confine.parse_mode(bridge, "bridge", fail) or confine.DEFAULT_MODE
    host, port = listen(bridge.get("agi_listen", f"127.0.0.1:{DEFAULT_AGI_PORT}"),
                        "bridge.agi_listen", fail)
    router_timeout = positive(bridge, "router_timeout", DEFAULT_ROUTER_TIMEOUT, "bridge", fail)
    redirect_limit = count(bridge, "redirect_limit", DEFAULT_REDIRECT_LIMIT, "bridge", fail)
    control_socket = bridge.get("control_socket", DEFAULT_CONTROL_SOCKET)
    if not isinstance(control_socket, str) or not control_socket.startswith("/"):
        raise fail("bridge.control_socket", f"must be an absolute path, got {control_socket!r}")
    tenants_dir = _tenants_dir(bridge, path, fail)

    vts_raw = table(raw, "vts", fail)
    tenants: dict[str, TenantConfig] = {}
    venues: dict[str, VenueConfig] = {}
    sources = [(name, traw, fail, f"tenants.{name}", str(path))
               for name, traw in table(raw, "tenants", fail).items()]
    if tenants_dir is not None:
        sources += _tenant_files(tenants_dir) if tenant_texts is None \
            else _tenant_texts(tenants_dir, tenant_texts)
    cluster = parse_cluster(raw, path, fail)
    if cluster is not None and tenants_dir is None:
        raise fail("cluster", "needs [bridge] tenants_dir: the tenant files `ctl apply` "
                   "sends to every node live there")
    check_tenant_names((tname, tfail, prefix or "name") for tname, _, tfail, prefix, _ in sources)
    owners = parse_owners(raw, (tname for tname, *_ in sources), fail)
    for tname, traw, tfail, prefix, source in sources:
        if not isinstance(traw, Mapping):
            raise tfail(prefix or tname, "must be a table")
        if tname in tenants:
            raise tfail(prefix or "name", f"tenant {tname!r} is declared twice (also in "
                        f"{tenants[tname].source})")
        tenant, tvenues = parse_tenant(tname, traw, fail=tfail, prefix=prefix,
                                       router_timeout=router_timeout,
                                       redirect_limit=redirect_limit, source=source)
        check_tenant(tenant, tvenues, owners=owners, fail=tfail, prefix=prefix, config_path=path)
        tenants[tname] = tenant
        for context, venue in tvenues.items():
            vkey = f"{prefix}.venues.{context}" if prefix else f"venues.{context}"
            if context in venues:
                raise tfail(vkey, f"venue already belongs to tenant {venues[context].tenant!r}; "
                            "a venue belongs to exactly one tenant")
            if venue.vts not in vts_raw:
                raise tfail(f"{vkey}.vts", f"no [vts.{venue.vts}] section"
                            + ("" if tfail is fail else f" in {path}"))
            venues[context] = venue
            if venue.driver == "asyncagi" and "ami" not in raw:
                # Its calls would wait out the venue's bound and all take the fallback.
                raise tfail(f"{vkey}.driver", "'asyncagi' asks over the bridge's AMI session: "
                            "add an [ami] section" + ("" if tfail is fail else f" to {path}"))

    ari = parse_ari(raw, path, fail)
    asks_ari = sorted(c for c, v in venues.items() if v.driver == "ari")
    if asks_ari and ari is None:
        raise fail("ari", f"venue {asks_ari[0]} has driver = \"ari\" but the bridge config "
                   "has no [ari] section (url, username, password_file): its calls would "
                   "all take the venue's fallback")
    return BridgeConfig(
        path=path, agi_host=host, agi_port=port, router_timeout=router_timeout,
        max_pending_per_vts=count(bridge, "max_pending_per_vts", DEFAULT_MAX_PENDING_PER_VTS,
                                  "bridge", fail),
        tenants=tenants, venues=venues, vts=_vts(vts_raw, venues, fail, bridge_mode),
        vts_spawn=vts_spawn, confine=bridge_mode,
        redirect_limit=redirect_limit,
        max_route_requests=count(bridge, "max_route_requests", DEFAULT_MAX_ROUTE_REQUESTS,
                                 "bridge", fail),
        control_socket=control_socket, tenants_dir=tenants_dir,
        ami=_ami(raw, path, fail),
        asterisk_conf_dir=_directory(bridge, "asterisk_conf_dir", path, fail),
        owners=owners, devices=device_owners(tenants.values(), owners),
        dialplan_allow=_dialplan_allow(bridge, fail),
        agi_secret=_agi_secret(bridge, path, fail),
        agi_policy=_agi_policy(bridge, host, venues, router_timeout, fail),
        api=parse_api(raw, path, fail), store=parse_store(raw, path, fail),
        fragments=files.fragments if files is not None else (),
        metrics=parse_metrics(raw, fail),
        ari=ari, cluster=cluster,
    )


def _ami(raw: Mapping[str, Any], path: Path, fail: Fail) -> AmiConfig | None:
    if "ami" not in raw:
        return None
    ami = table(raw, "ami", fail)
    no_unknown(ami, {"host", "port", "username", "secret", "secret_file", "reload_username",
                     "reload_secret", "reload_secret_file"}, "ami", fail)
    host, port = ami.get("host", "127.0.0.1"), ami.get("port", 5038)
    if not isinstance(host, str) or not host:
        raise fail("ami.host", f"must be a host name or address, got {host!r}")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise fail("ami.port", f"must be a TCP port, got {port!r}")
    username = ami.get("username")
    if not isinstance(username, str) or not username or not username.isprintable():
        raise fail("ami.username", f"must be the manager user name, got {username!r}")
    secret = _secret(ami, "secret", path, fail)
    reload_username = ami.get("reload_username")
    if reload_username is not None and (not isinstance(reload_username, str)
                                        or not reload_username.isprintable()):
        raise fail("ami.reload_username", f"must be a manager user name, got {reload_username!r}")
    reload_secret = _secret(ami, "reload_secret", path, fail) if reload_username else ""
    return AmiConfig(host=host, port=port, username=username, secret=secret,
                     reload_username=reload_username, reload_secret=reload_secret)


def _secret(ami: Mapping[str, Any], key: str, path: Path, fail: Fail) -> str:
    if (key in ami) == (f"{key}_file" in ami):
        raise fail("ami", f"give exactly one of {key}, {key}_file")
    if f"{key}_file" in ami:
        secret_path = path.parent / str(ami[f"{key}_file"])
        try:
            secret = secret_path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise fail(f"ami.{key}_file", f"cannot read {str(secret_path)!r}: "
                       f"{exc.strerror}") from None
    else:
        secret = ami[key]
    if not isinstance(secret, str) or not secret or not secret.isprintable():
        raise fail(f"ami.{key}", "must be a non-empty printable string (value not shown)")
    return secret


def _tenants_dir(bridge: Mapping[str, Any], path: Path, fail: Fail) -> Path | None:
    return _directory(bridge, "tenants_dir", path, fail)


def _directory(bridge: Mapping[str, Any], key: str, path: Path, fail: Fail) -> Path | None:
    value = bridge.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise fail(f"bridge.{key}", f"must be a directory path, got {value!r}")
    directory = (path.parent / value).resolve()
    if not directory.is_dir():
        raise fail(f"bridge.{key}", f"{str(directory)!r} is not a directory")
    return directory


def _tenant_files(directory: Path) -> list[tuple[str, Any, Fail, str, str]]:
    found = []
    for entry in sorted(directory.iterdir()):
        tenant_file = entry / TENANT_FILE
        if entry.name.startswith(".") or not tenant_file.is_file():
            continue  # staging directories and anything else that is not a tenant
        found.append((entry.name, conffiles.read_toml(tenant_file), failer(tenant_file), "",
                      str(tenant_file)))
    return found


def _tenant_texts(directory: Path,
                  texts: Mapping[str, str]) -> list[tuple[str, Any, Fail, str, str]]:
    """Like `_tenant_files`, from texts named as the files they would be written to."""
    found = []
    for name, text in sorted(texts.items()):
        tenant_file = directory / name / TENANT_FILE
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{tenant_file}: not valid TOML: {exc}") from None
        found.append((name, raw, failer(tenant_file), "", str(tenant_file)))
    return found


def _confinement(vraw: Mapping[str, Any], key: str, bridge_mode: str,
                 fail: Fail) -> confine.VtsConfinement:
    settings = confine.parse_vts(vraw, key, fail)
    return replace(settings, mode=settings.mode or bridge_mode)


def _vts(vts_raw: Mapping[str, Any], venues: Mapping[str, VenueConfig],
         fail: Fail, bridge_mode: str = confine.DEFAULT_MODE) -> dict[str, VtsConfig]:
    vts: dict[str, VtsConfig] = {}
    for vname, vraw in vts_raw.items():
        key = f"vts.{vname}"
        if not NAME_RE.fullmatch(vname):
            raise fail(key, f"name {vname!r} must match {NAME_RE.pattern}")
        if not isinstance(vraw, Mapping):
            raise fail(key, "must be a table")
        no_unknown(vraw, {"command", "grace_period", *_RESTART_KEYS, *confine.VTS_KEYS}, key,
                   fail)
        command = vraw.get("command", [])
        if not isinstance(command, list) or not all(isinstance(c, str) and c for c in command):
            raise fail(f"{key}.command", f"must be a list of non-empty strings, got {command!r}")
        served = sorted({v.tenant for v in venues.values() if v.vts == vname})
        vts[vname] = VtsConfig(
            name=vname, command=tuple(command),
            grace_period=positive(vraw, "grace_period", 3.0, key, fail),
            tenants=tuple(served), restart=_restart(vraw, key, fail),
            confinement=_confinement(vraw, key, bridge_mode, fail),
        )
        if not served:
            # A VTS no venue maps to would run (and be restarted) for nothing; most often
            # a venue's `vts` is misspelt, or the tenant that used it was removed.
            raise fail(key, f"no venue maps to VTS {vname!r} (no tenant's venue or "
                       f"personal context has vts = {vname!r}); remove the section or "
                       "name it in a venue")
    return vts


# The restart knobs of a [vts.NAME] (docs/configuration.md; defaults: RestartSettings).
_RESTART_KEYS = {"restart_initial", "restart_factor", "restart_maximum", "stable_after",
                 "flap_window", "flap_max", "flap_cooldown"}


def _restart(vraw: Mapping[str, Any], key: str, fail: Fail) -> RestartSettings:
    default = RestartSettings()

    def seconds(name: str, value: float) -> float:
        return positive(vraw, name, value, key, fail)

    initial = seconds("restart_initial", default.initial)
    maximum = seconds("restart_maximum", default.maximum)
    if maximum < initial:
        raise fail(f"{key}.restart_maximum",
                   f"must be at least restart_initial ({initial:g}), got {maximum:g}")
    factor = vraw.get("restart_factor", default.factor)
    if isinstance(factor, bool) or not isinstance(factor, int | float) \
            or not 1 <= factor < math.inf:
        raise fail(f"{key}.restart_factor", f"must be a number >= 1, got {factor!r}")
    return RestartSettings(
        initial=initial, factor=float(factor), maximum=maximum,
        stable_after=seconds("stable_after", default.stable_after),
        flap_window=seconds("flap_window", default.flap_window),
        flap_max=count(vraw, "flap_max", default.flap_max, key, fail),
        flap_cooldown=seconds("flap_cooldown", default.flap_cooldown))


_AGI_KEYS = ("agi_allow_remote", "agi_allowed_peers", "agi_max_sessions_per_peer",
             "agi_environment_timeout", "agi_reply_timeout", "agi_session_timeout")


def _agi_policy(bridge: Mapping[str, Any], host: str, venues: Mapping[str, VenueConfig],
                router_timeout: float, fail: Fail) -> ListenerPolicy:
    """The FastAGI listener's policy. A listen address off loopback is refused unless
    the operator says so (`agi_allow_remote`) and names the Asterisk peers."""
    default = ListenerPolicy()
    allow_remote = bridge.get("agi_allow_remote", False)
    if not isinstance(allow_remote, bool):
        raise fail("bridge.agi_allow_remote", f"must be true or false, got {allow_remote!r}")
    peers = bridge.get("agi_allowed_peers", [])
    if not isinstance(peers, list) or not all(isinstance(p, str) for p in peers):
        raise fail("bridge.agi_allowed_peers", f"must be a list of addresses, got {peers!r}")
    networks = []
    for peer in peers:
        try:
            networks.append(ipaddress.ip_network(peer))  # strict: 10.0.0.5/24 is a typo
        except ValueError:
            raise fail("bridge.agi_allowed_peers", f"{peer!r} is not an IP address or "
                       "network (10.0.0.5, 10.0.0.0/24, fd00::5)") from None
    loopback = is_loopback(host)
    listen = bridge.get("agi_listen")
    if not loopback and not allow_remote:
        raise fail("bridge.agi_listen", f"{listen!r} is not a loopback address: any host "
                   "that reaches it could start route requests; set agi_allow_remote = true "
                   "and list the Asterisk servers in agi_allowed_peers to listen there")
    if not loopback and not networks:
        raise fail("bridge.agi_allowed_peers", f"must list the Asterisk servers that may "
                   f"connect when agi_listen is {listen!r} (not loopback), got {peers!r}")
    policy = ListenerPolicy(
        environment_timeout=positive(bridge, "agi_environment_timeout",
                                     default.environment_timeout, "bridge", fail),
        reply_timeout=positive(bridge, "agi_reply_timeout", default.reply_timeout, "bridge",
                               fail),
        session_timeout=positive(bridge, "agi_session_timeout", default.session_timeout,
                                 "bridge", fail),
        max_sessions_per_peer=count(bridge, "agi_max_sessions_per_peer",
                                    default.max_sessions_per_peer, "bridge", fail),
        allowed_peers=tuple(networks), loopback_allowed=loopback)
    # A session must outlive the wait it exists for, or calls would be cut before
    # their router timeout gives them the default route.
    longest = max([(router_timeout, "bridge.router_timeout")]
                  + [(v.router_timeout, f"venue {c}") for c, v in venues.items()])
    if policy.session_timeout <= longest[0]:
        raise fail("bridge.agi_session_timeout", f"{policy.session_timeout:g} s must exceed "
                   f"the longest router timeout ({longest[0]:g} s, {longest[1]})")
    return policy


def _dialplan_allow(bridge: Mapping[str, Any], fail: Fail) -> tuple[Allowance, ...]:
    """`[bridge] dialplan_allow`: the linter's escapes the operator allows (docs/dialplan-lint.md).
    Only the operator's file can hold it: a tenant file cannot allow itself anything."""
    raw = bridge.get("dialplan_allow", [])
    if not isinstance(raw, list) or not all(isinstance(e, str) for e in raw):
        raise fail("bridge.dialplan_allow", f"expected a list of strings, got {raw!r}")
    try:
        return tuple(parse_allowance(entry) for entry in raw)
    except ValueError as exc:
        raise fail("bridge.dialplan_allow", str(exc)) from None


# The route-request secret: long enough not to be guessed over a loopback port (128 bits
# of a URL-safe alphabet), short enough for a dialplan global; only characters that are
# plain in an AGI URL path and in Asterisk's dialplan.
AGI_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{22,128}")  # fullmatch


def _agi_secret(bridge: Mapping[str, Any], path: Path, fail: Fail) -> str | None:
    """`[bridge] agi_secret_file`: the secret Asterisk's venues put in the AGI URL
    (`AB_AGI_URL=agi://127.0.0.1:4573/SECRET`), so only Asterisk starts route requests.
    The file must be readable by its owner only: a VTS or a local user that could read
    it could pose as Asterisk."""
    return secret_file(bridge, "agi_secret_file", "bridge", path, AGI_SECRET_RE, fail,
                       what="one line of 22 to 128 characters A-Z a-z 0-9 _ - (e.g. "
                       "`python3 -c 'import secrets; print(secrets.token_urlsafe(24))'`)")
