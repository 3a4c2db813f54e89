"""`ami-bridge conf show`: the effective bridge config, as TOML or JSON, secrets masked.

Contract. `show(path)` loads the config exactly as `run` does (the main file, its
`conf.d/*.toml` merged in: ami_bridge.conffiles; validated by config.parse, so a refused
config raises ConfigError and prints nothing) and prints one document in the layout of
the input: the merged keys as written, the tenant files of `tenants_dir` as
`[tenants.NAME]`, and the values the loader fills in for keys left out (`[bridge]`,
`[vts.NAME]`, `[ami]`, `[api]`, `[store]`, and each tenant's and venue's scalar keys),
with relative paths resolved against the main file's directory. Sections this module
does not know are shown as written. Masking happens in one place, `mask`, on the whole
document before it is printed: the value of every key named like a secret (`secret`,
`reload_secret`, `*_token`, `*password`), the password of a PostgreSQL DSN (key=value or
URI form; a DSN that cannot be read is masked whole) and of any URL with a user, and then
every string that still holds a secret value the loader read (AMI secrets, the AGI
secret, the operator token, the cluster secret, a DSN password) has it replaced: a
secret put under a key that does not look like one is masked too. `*_file` keys show a
path, never the content.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from ami_bridge import conffiles
from ami_bridge import config as config_mod
from ami_bridge.supervision import confine

MASK = "********"
# Keys whose value is a secret wherever they appear (a `*_file` key holds a path).
SECRET_KEY_RE = re.compile(r"(?:^|_)(?:secret|password|passwd|token)$", re.IGNORECASE)
DSN_KEY = "dsn"
# libpq keys that carry a secret in a connection string (libpq's "Parameter Key Words").
DSN_SECRET_KEYS = frozenset({"password", "sslpassword"})
# A libpq key=value connection string: `key = value` pairs, a value bare (backslash
# escapes) or single-quoted (backslash escapes inside).
_DSN_PAIR_RE = re.compile(r"\s*([A-Za-z_]+)\s*=\s*('(?:[^'\\]|\\.)*'|(?:[^\s'\\]|\\.)+)\s*")
# A secret shorter than this is not searched for inside other strings: replacing "ab"
# everywhere would garble the output and protect nothing (the config refuses such
# AGI secrets and tokens; an AMI secret that short is the operator's to change).
MIN_SCRUB_LENGTH = 6


def show(path: Path, *, as_json: bool = False) -> str:
    """The effective config of main file `path`, masked, as TOML text (or JSON)."""
    raw, files = conffiles.read(path)
    cfg = config_mod.parse(raw, path=path, files=files)
    doc = mask(effective(raw, cfg), secrets=known_secrets(cfg))
    if as_json:
        return json.dumps(doc, indent=2, default=_json_default, ensure_ascii=False) + "\n"
    header = [f"# ami-bridge conf show: the effective config of {path}"]
    header += [f"#   merged: {fragment}" for fragment in files.fragments]
    header += [f"#   tenant {t.name}: {t.source}" for t in cfg.tenants.values()
               if t.source != str(path)]
    header.append(f"# secrets masked as {MASK!r}; defaults filled in")
    return "\n".join(header) + "\n" + to_toml(doc)


# -- the effective document ----------------------------------------------------------------

def effective(raw: Mapping[str, Any], cfg: config_mod.BridgeConfig) -> dict[str, Any]:
    """`raw` (merged, as read) with the loader's defaults and resolved paths filled in."""
    doc: dict[str, Any] = copy.deepcopy(dict(raw))
    base = cfg.path.parent
    bridge = doc.setdefault("bridge", {})
    policy = cfg.agi_policy
    bridge.update({
        "agi_listen": f"{cfg.agi_host}:{cfg.agi_port}",
        "router_timeout": cfg.router_timeout,
        "max_pending_per_vts": cfg.max_pending_per_vts,
        "redirect_limit": cfg.redirect_limit,
        "max_route_requests": cfg.max_route_requests,
        "control_socket": cfg.control_socket,
        confine.BRIDGE_KEY: bridge.get(confine.BRIDGE_KEY, confine.DEFAULT_MODE),
        "vts_spawn": cfg.vts_spawn,
        "dialplan_allow": bridge.get("dialplan_allow", []),
        "agi_allow_remote": bridge.get("agi_allow_remote", False),
        "agi_allowed_peers": [str(n) for n in policy.allowed_peers],
        "agi_max_sessions_per_peer": policy.max_sessions_per_peer,
        "agi_environment_timeout": policy.environment_timeout,
        "agi_reply_timeout": policy.reply_timeout,
        "agi_session_timeout": policy.session_timeout,
    })
    _resolve(bridge, ("agi_secret_file",), base)
    for key, value in (("tenants_dir", cfg.tenants_dir),
                       ("asterisk_conf_dir", cfg.asterisk_conf_dir)):
        if value is not None:
            bridge[key] = str(value)
    for name, vts in cfg.vts.items():
        section = doc["vts"][name]
        restart = vts.restart
        section.update({
            "command": list(vts.command), "grace_period": vts.grace_period,
            "restart_initial": restart.initial, "restart_factor": restart.factor,
            "restart_maximum": restart.maximum, "stable_after": restart.stable_after,
            "flap_window": restart.flap_window, "flap_max": restart.flap_max,
            "flap_cooldown": restart.flap_cooldown,
        })
        if vts.confinement.mode is not None:
            section[confine.BRIDGE_KEY] = vts.confinement.mode
    if cfg.ami is not None:
        ami = doc["ami"]
        ami.update({"host": cfg.ami.host, "port": cfg.ami.port})
        _resolve(ami, ("secret_file", "reload_secret_file"), base)
    if cfg.api is not None:
        api, host = doc["api"], cfg.api.host
        api.update({"listen": f"[{host}]:{cfg.api.port}" if ":" in host
                    else f"{host}:{cfg.api.port}", "token_ttl": cfg.api.token_ttl})
        _resolve(api, ("tls_cert", "tls_key", "operator_token_file"), base)
    if cfg.cluster is not None:
        _resolve(doc["cluster"], ("secret_file",), base)
    store = doc.setdefault("store", {})
    store.update({"backend": cfg.store.backend, "path": str(cfg.store.path),
                  "trace_max_age": cfg.store.trace_max_age,
                  "trace_max_rows": cfg.store.trace_max_rows})
    doc["tenants"] = _tenants(doc.get("tenants", {}), cfg)
    return doc


def _resolve(section: dict[str, Any], keys: Iterable[str], base: Path) -> None:
    """Relative file keys as the loader reads them: against the main file's directory."""
    for key in keys:
        value = section.get(key)
        if isinstance(value, str) and value:
            section[key] = str(base / value)


def _tenants(inline: Mapping[str, Any], cfg: config_mod.BridgeConfig) -> dict[str, Any]:
    tenants: dict[str, Any] = {}
    for name, tenant in cfg.tenants.items():
        raw = copy.deepcopy(dict(inline[name])) if name in inline \
            else conffiles.read_toml(Path(tenant.source))
        for key, value in (("timezone", tenant.timezone), ("prompts", tenant.prompts),
                           ("moh_class", tenant.moh_class), ("language", tenant.language),
                           ("channel_limit", tenant.channel_limit),
                           ("operator", tenant.operator)):
            raw.setdefault(key, value)
        for context, venue in raw.get("venues", {}).items():
            parsed = cfg.venues[context]
            venue.update({"router_timeout": parsed.router_timeout,
                          "redirect_limit": parsed.redirect_limit})
        tenants[name] = raw
    return tenants


# -- masking -----------------------------------------------------------------------------

def known_secrets(cfg: config_mod.BridgeConfig) -> frozenset[str]:
    """Every secret value the loader read, wherever it came from (inline or a file)."""
    found = {cfg.agi_secret or ""}
    if cfg.ami is not None:
        found |= {cfg.ami.secret, cfg.ami.reload_secret}
    if cfg.api is not None:
        found.add(cfg.api.operator_token or "")
    if cfg.cluster is not None:
        found.add(cfg.cluster.secret)
    found |= set(_dsn_secrets(cfg.store.dsn))
    return frozenset(s for s in found if len(s) >= MIN_SCRUB_LENGTH)


def mask(doc: Any, *, secrets: Iterable[str] = ()) -> Any:
    """A copy of `doc` with every secret masked (see the module's contract)."""
    longest_first = sorted(set(secrets), key=len, reverse=True)

    def walk(value: Any, key: str) -> Any:
        if SECRET_KEY_RE.search(key) and value not in ("", None):
            return MASK  # whatever its type: a list or table of secrets is secret too
        if isinstance(value, Mapping):
            return {k: walk(v, str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, key) for v in value]
        if not isinstance(value, str):
            return value
        value = mask_dsn(value) if key.lower() == DSN_KEY else _mask_url(value)
        for secret in longest_first:
            value = value.replace(secret, MASK)
        return value

    return walk(doc, "")


def mask_dsn(dsn: str) -> str:
    """A libpq connection string with its password(s) masked; whole if unreadable."""
    if not dsn.strip():
        return dsn
    if "://" in dsn:
        return _mask_url(dsn, whole_if_odd=True)
    pairs = _dsn_pairs(dsn)
    if pairs is None:
        return MASK
    return " ".join(f"{k}={MASK if k.lower() in DSN_SECRET_KEYS else v}" for k, v in pairs)


def _dsn_pairs(dsn: str) -> list[tuple[str, str]] | None:
    pairs, at = [], 0
    while at < len(dsn):
        match = _DSN_PAIR_RE.match(dsn, at)
        if match is None or match.end() == at:
            return None
        pairs.append((match.group(1), match.group(2)))
        at = match.end()
    return pairs


def _dsn_secrets(dsn: str) -> list[str]:
    """The password values of a DSN (for the scrub), unquoted as libpq reads them."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        found = [parts.password or ""]
        return found + [v for k, v in parse_qsl(parts.query) if k.lower() in DSN_SECRET_KEYS]
    values = [v for k, v in _dsn_pairs(dsn) or [] if k.lower() in DSN_SECRET_KEYS]
    return [re.sub(r"\\(.)", r"\1", v[1:-1] if v.startswith("'") else v) for v in values]


def _mask_url(value: str, *, whole_if_odd: bool = False) -> str:
    """A URL's password (user:PASSWORD@host) and password query parameters masked."""
    if "://" not in value:
        return value
    try:
        parts = urlsplit(value)
        netloc, query = parts.netloc, parts.query
        if parts.password is not None:
            userinfo, _, host = netloc.rpartition("@")
            netloc = f"{userinfo.partition(':')[0]}:{MASK}@{host}"
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in DSN_SECRET_KEYS for k, _ in pairs):
            query = urlencode([(k, MASK if k.lower() in DSN_SECRET_KEYS else v)
                               for k, v in pairs], safe="*", quote_via=quote)
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        return MASK if whole_if_odd else value


# -- output ------------------------------------------------------------------------------

def _json_default(value: object) -> str:
    if isinstance(value, dt.date | dt.time | Path):
        return str(value) if isinstance(value, Path) else value.isoformat()
    raise TypeError(f"not JSON: {value!r}")


_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")


def to_toml(doc: Mapping[str, Any]) -> str:
    """`doc` as TOML that `tomllib` reads back to `doc` (tables, arrays of tables, inline
    tables inside arrays; None values left out, as TOML has no null)."""
    out: list[str] = []
    _table(out, [], doc, array=False)
    return "\n".join(out).lstrip("\n") + "\n"


def _is_table_array(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _table(out: list[str], path: list[str], table: Mapping[str, Any], *, array: bool) -> None:
    plain = [(k, v) for k, v in table.items()
             if v is not None and not isinstance(v, Mapping) and not _is_table_array(v)]
    nested = [(k, v) for k, v in table.items() if isinstance(v, Mapping)]
    arrays = [(k, v) for k, v in table.items() if _is_table_array(v)]
    dotted = ".".join(_key(p) for p in path)
    if array:
        out.append(f"\n[[{dotted}]]")
    elif path and (plain or not (nested or arrays)):
        out.append(f"\n[{dotted}]")
    out += [f"{_key(k)} = {_value(v)}" for k, v in plain]
    for key, value in nested:
        _table(out, [*path, key], value, array=False)
    for key, items in arrays:
        for item in items:
            _table(out, [*path, key], item, array=True)


def _key(key: str) -> str:
    return key if _BARE_KEY_RE.fullmatch(key) else _string(key)


def _string(text: str) -> str:
    # JSON's escapes are TOML's; TOML also wants DEL escaped, which JSON leaves raw.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if value == value and abs(value) != float("inf") \
            else ("nan" if value != value else ("inf" if value > 0 else "-inf"))
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()
                               if v is not None) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return _string(str(value))
