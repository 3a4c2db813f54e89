"""Escapes: what a tenant's dialplan makes Asterisk do outside the tenant at run time.

`step_escapes(step, where)` reads one step of a tenant-owned context the way Asterisk
will run it (every call it makes, wrapped ones included, and every function any of its
arguments evaluates — even in `NoOp`) and returns an `Escape` for each thing it cannot
prove stays inside the tenant: a channel whose technology or endpoint is chosen at run
time, or that may gain a channel from an unbounded value (S601, see `channels`), a
channel to or of another tenant's or an unowned endpoint, `ChanSpy()` of everyone
included (X306); a write to state every tenant shares (S602): `GLOBAL()`,
`SHARED(var,channel)`, `DB()`/`DB_DELETE()`/`DBdeltree` outside the family named after
the tenant (`acme` or `acme-...`), a `GROUP()` value other than the tenant's (the
channel limits count groups); a host command or host file (S603): `System`,
`TrySystem`, `SHELL()`, `EVAL()` of a run-time string, `FILE()`, `ExternalIVR`,
`MixMonitor`'s post-command, an application chosen at run time; an AGI server other
than the bridge's own (S604): `AGI`/`EAGI`/Queue's AGI argument to anything but
`${AB_AGI_URL}` or `agi://` at one of the bridge's addresses (or `AGI(agi:async...)`,
an asyncagi venue's route request over the bridge's own AMI session), and any assignment
of `AB_AGI_URL` itself; an ARI application other than the bridge's own (S605): `Stasis()`
to any name but `[ari] app`, or to a name chosen at run time. `setting_escape` refuses
`[general]`/`[globals]` settings written in a tenant's file (they hold for every
tenant). The caller filters by the allow-list.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from ami_bridge.agi.variables import (
    AB_AGI_NEXT,
    AB_AGI_URL_FAILOVER,
    AB_DIAL,
    ASYNC_AGI,
    DEFAULT_STASIS_APP,
)
from ami_bridge.dialplan import findings as codes
from ami_bridge.dialplan.channels import Bounds, Channel, channel_list, unbounded
from ami_bridge.dialplan.ownership import Ownership
from ami_bridge.dialplan.parser import Setting, Step
from ami_bridge.dialplan.syntax import (
    expansions,
    is_dynamic,
    literal_prefix,
    split_function,
    split_top,
)
from ami_bridge.dialplan.targets import Call, calls

# res_agi.c's AGI_PORT: what `agi://host` without a port connects to (the same value
# as config.DEFAULT_AGI_PORT, not imported: this package does not load the config).
AGI_DEFAULT_PORT = 4573
# The bridge's FastAGI listener when nothing else is said: [bridge] agi_listen's default.
DEFAULT_AGI_ADDRESSES = frozenset({("127.0.0.1", AGI_DEFAULT_PORT)})
AGI_URL_VARIABLE = "AB_AGI_URL"
# The venue failover's URL (`${AB_AGI_URL_${AB_AGI_NEXT}}`, dialplan.render.failover):
# like AB_AGI_URL, operator-set globals (AB_AGI_URL_2, ...) that only the venue reads.
FAILOVER_URL_REFERENCE = "${" + AB_AGI_URL_FAILOVER + "${" + AB_AGI_NEXT + "}}"
# AB_AGI_URL and AB_AGI_URL_<anything>: a tenant writing one chooses which server the
# venue's route request (or its failover) asks. The cursor AB_AGI_NEXT the venue itself
# writes only picks among these names, so it needs no guard of its own.
_AGI_URL_NAME_RE = re.compile(rf"^{AGI_URL_VARIABLE}(?:_.*)?$", re.IGNORECASE | re.DOTALL)
# Application (lowercase) -> (index of its channel argument, how to read it): "dial"
# makes new channels ('&' list), "one" makes or names one, "select" names existing
# channels by name or prefix ('&' list for PickupChan).
CHANNEL_ARGS: dict[str, tuple[int, str]] = {
    "dial": (0, "dial"), "page": (0, "dial"), "retrydial": (3, "dial"),
    "originate": (0, "one"), "addqueuemember": (1, "one"), "removequeuemember": (1, "one"),
    "pausequeuemember": (1, "one"), "unpausequeuemember": (1, "one"),
    "channelredirect": (0, "select"), "bridge": (0, "select"), "chanspy": (0, "select"),
    "pickupchan": (0, "select"), "softhangup": (0, "select"),
}
_SHELL_APPS = frozenset({"system", "trysystem", "externalivr"})
_AGI_APPS = frozenset({"agi", "eagi", "deadagi"})
_AGI_RE = re.compile(r"agi://\[?([^/\]:]+)\]?(?::(\d+))?(?:/|$)", re.IGNORECASE)


@dataclass(frozen=True)
class Where:
    """What the rules know about the context a step runs in."""

    tenant: str
    ownership: Ownership
    bounds: Bounds
    agi_addresses: frozenset[tuple[str, int]] = DEFAULT_AGI_ADDRESSES
    stasis_app: str = DEFAULT_STASIS_APP  # the bridge's ARI application ([ari] app)


@dataclass(frozen=True)
class Escape:
    code: str
    subject: str  # what an Allowance matches
    message: str


def step_escapes(step: Step, where: Where) -> list[Escape]:
    found: list[Escape] = []
    made = calls(step)
    # Functions run wherever they are written, even in NoOp; the step's own data holds
    # the wrapped calls' data too, so it is scanned once.
    for name, args in functions(made[0].data if made else ""):
        found += _function(made[0], name, args, where)
    for call in made:
        if is_dynamic(call.app):
            found.append(Escape(codes.HOST_COMMAND, "dynamic application",
                                f"'{call.text}' runs an application chosen at run time: "
                                "it can be System() or any other; name it literally"))
            continue
        found += _channels(call, where)
        found += _writes(call, where)
        found += _host_apps(call)
        if call.name == "dbdeltree" and not _own_family(call.arg(0), where):
            found.append(_db(call, f"DBdeltree({call.arg(0)})", where))
        found += _agi(call, where)
        found += _stasis(call, where)
    return found


def setting_escape(setting: Setting, tenant: str) -> Escape:
    return Escape(codes.SHARED_STATE, f"{setting.section.lower()}/{setting.key}",
                  f"'{setting.key} = {setting.value}' in [{setting.section}] of tenant "
                  f"{tenant}'s file {setting.file} holds for every tenant's dialplan "
                  f"(global variables and settings): only the operator's files may set it")


def functions(text: str) -> Iterator[tuple[str, str]]:
    """Every function call `${NAME(args)}` in `text`, nested ones included."""
    for exp in expansions(text):
        func = split_function(exp.inner) if exp.kind == "{" else None
        if func is not None:
            yield func[0].upper(), func[1]
            yield from functions(func[1])
        else:
            yield from functions(exp.inner)


# --- channels ------------------------------------------------------------------------

def _channels(call: Call, where: Where) -> list[Escape]:
    spec = CHANNEL_ARGS.get(call.name)
    if spec is None:
        return []
    index, how = spec
    text = call.arg(index)
    if not text and call.name == "chanspy":
        return [Escape(codes.CROSS_ENDPOINT, "ChanSpy()",
                       f"'{call.text}' names no channel prefix: it spies on every "
                       "channel, every tenant's calls included; give it "
                       f"PJSIP/{where.tenant}-...")]
    found: list[Escape] = []
    for channel in channel_list(text, many=how == "dial" or call.name == "pickupchan"):
        if isinstance(channel, str):
            if channel == "${" + AB_DIAL + "}" and where.bounds.bridge_dial:
                continue  # the tenant's own devices, written by the bridge (channels.py)
            if is_dynamic(channel):
                found.append(_dynamic(call, channel, f"'{channel}' is a whole channel "
                                      "chosen at run time"))
            continue
        found += _channel(call, channel, how, where)
    return found


def _dynamic(call: Call, subject: str, why: str) -> Escape:
    return Escape(codes.DYNAMIC_CHANNEL, subject,
                  f"{why} in '{call.text}': the linter cannot prove the call stays with "
                  "the tenant's own endpoints; write the technology and endpoint "
                  "literally (or FILTER the value) or allow it in the config")


def _channel(call: Call, channel: Channel, how: str, where: Where) -> list[Escape]:
    loose = unbounded(channel.text, where.bounds)
    # A selector matches one channel name (or prefix), so a value cannot add another;
    # PickupChan is the exception: it splits its argument on '&' after substitution.
    if loose and (how != "select" or call.name == "pickupchan"):
        return [_dynamic(call, channel.text,
                         f"'{loose[0]}' in channel '{channel.text}' may hold '&', ',', "
                         "'/' or '@' (a value like '1&PJSIP/other-agent' dials another "
                         "tenant's endpoint)")]
    if is_dynamic(channel.tech):
        return [_dynamic(call, channel.text,
                         f"the technology of '{channel.text}' is chosen at run time")]
    if channel.is_local and how != "select":
        return []  # its context is a target (X303/X304); its values are bounded
    endpoint = channel.endpoint
    noun = "channels of endpoint" if how == "select" else "endpoint"
    if is_dynamic(endpoint) or not endpoint:
        prefix = literal_prefix(endpoint)
        if endpoint and where.ownership.pinned(prefix, where.tenant):
            return []
        return [_dynamic(call, channel.text,
                         f"the {noun} '{endpoint}' of '{channel.text}' is chosen at run "
                         f"time and not pinned to '{where.tenant}-'" if endpoint else
                         f"'{channel.text}' names no endpoint (every tenant's channels)")]
    owner = where.ownership.owner(endpoint)
    if how == "select" and owner is None:
        # A channel name is endpoint-suffix: PJSIP/acme-agent-00000012.
        owner = where.tenant if where.ownership.pinned(endpoint, where.tenant) else None
    if owner == where.tenant:
        return []
    whose = f"of tenant {owner}" if owner else "which belongs to no tenant"
    return [Escape(codes.CROSS_ENDPOINT, f"{channel.tech}/{endpoint}",
                   f"'{call.text}' reaches {noun} '{endpoint}' {whose}, not tenant "
                   f"{where.tenant}'s own: allow it in the config if it is a shared "
                   "trunk")]


# --- writes to shared state ----------------------------------------------------------

def _writes(call: Call, where: Where) -> list[Escape]:
    pairs = [call.data] if call.name == "set" else list(call.args) \
        if call.name == "mset" else []
    found: list[Escape] = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            continue
        name, value = name.strip(), value.strip()
        func = split_function(name)
        if func is None:
            if _AGI_URL_NAME_RE.match(name.lstrip("_")):
                found.append(Escape(codes.FOREIGN_AGI, name.lstrip("_").upper(),
                                    f"'{call.text}' changes where this call's "
                                    "AGI(${AB_AGI_URL}/route) goes: the routing decision "
                                    "would come from whatever server it names, not "
                                    "the bridge"))
            continue
        found += _function_write(call, func[0].upper(), func[1], value, where)
    return found


def _function_write(call: Call, name: str, args: str, value: str,
                    where: Where) -> list[Escape]:
    first = split_top(args, ",", 1)[0].strip()
    if name == "GLOBAL":
        why = ("every venue's AGI(${AB_AGI_URL}/route) of every tenant would ask the "
               "server it names" if _AGI_URL_NAME_RE.match(first) else
               "a global variable is read by every tenant's dialplan")
        return [Escape(codes.SHARED_STATE, f"GLOBAL({first})",
                       f"'{call.text}' writes global variable {first}: {why}")]
    if name == "SHARED" and len(split_top(args, ",")) > 1:
        return [Escape(codes.SHARED_STATE, f"SHARED({first})",
                       f"'{call.text}' writes a variable of another channel, which may "
                       "be another tenant's call")]
    if name == "DB" and not _own_family(first, where):
        return [_db(call, f"DB({first})", where)]
    if name == "GROUP" and not _own_family(value, where):
        return [Escape(codes.SHARED_STATE, f"GROUP({first})={value}",
                       f"'{call.text}' puts the call in group '{value}': group counts "
                       "are shared by all tenants (channel limits use them); use the "
                       f"group '{where.tenant}' or '{where.tenant}-...'")]
    if name == "FILE":
        return [_host(call, "FILE", "writes a file on the Asterisk host")]
    return []


def _own_family(text: str, where: Where) -> bool:
    """`acme`, `acme/...`, `acme-...`: an astdb family or a group named for the tenant."""
    tenant = where.tenant.lower()
    if is_dynamic(text):
        prefix = literal_prefix(text)
        return prefix.lower().startswith(tenant + "/") or where.ownership.pinned(
            prefix, where.tenant)
    low = text.lower()
    return low == tenant or low.startswith((tenant + "/", tenant + "-"))


def _db(call: Call, subject: str, where: Where) -> Escape:
    return Escape(codes.SHARED_STATE, subject,
                  f"'{call.text}' changes the Asterisk database outside tenant "
                  f"{where.tenant}'s family: astdb is shared by all tenants (and by "
                  f"Asterisk itself); use the family '{where.tenant}/...'")


# --- host commands and AGI -----------------------------------------------------------

def _host(call: Call, subject: str, why: str) -> Escape:
    return Escape(codes.HOST_COMMAND, subject,
                  f"'{call.text}' {why}: that reaches every tenant's data and the "
                  "bridge's own config and secrets")


def _host_apps(call: Call) -> list[Escape]:
    if call.name in _SHELL_APPS:
        return [_host(call, call.app, "runs a program on the Asterisk host")]
    if call.name == "mixmonitor" and call.arg(2):
        return [_host(call, "MixMonitor", "runs a post-recording command on the "
                      "Asterisk host")]
    return []


def _function(call: Call, name: str, args: str, where: Where) -> list[Escape]:
    first = split_top(args, ",", 1)[0].strip()
    if name == "SHELL":
        return [_host(call, "SHELL", "runs a shell command on the Asterisk host")]
    if name == "FILE":
        return [_host(call, "FILE", "reads or writes a file on the Asterisk host")]
    if name == "EVAL" and is_dynamic(args):
        return [_host(call, "EVAL", "evaluates a run-time string as dialplan: a value "
                      "holding ${SHELL(...)} runs it")]
    if name == "DB_DELETE" and not _own_family(first, where):
        return [_db(call, f"DB_DELETE({first})", where)]
    return []


def _agi(call: Call, where: Where) -> list[Escape]:
    if call.name in _AGI_APPS:
        url = call.arg(0)
    elif call.name == "queue" and call.arg(5):
        url = call.arg(5)
    else:
        return []
    if own_agi(url, where.agi_addresses):
        return []
    if call.name == "agi" and url.strip().lower() == ASYNC_AGI:
        # AsyncAGI goes to the AMI session, which only the bridge holds (DESIGN.md 4.6;
        # its manager user alone has the `agi` class): an asyncagi venue's route request.
        return []
    return [Escape(codes.FOREIGN_AGI, url,
                   f"'{call.text}' hands the call to AGI '{url}', not the bridge's own "
                   "FastAGI server (${AB_AGI_URL}): that program can read the call and "
                   "send it anywhere")]


def _stasis(call: Call, where: Where) -> list[Escape]:
    """Stasis() hands the call, and ARI's control of it, to whichever program registered
    that application: only the bridge's own, named literally, is the bridge."""
    if call.name != "stasis":
        return []
    app = call.arg(0).strip()
    if app == where.stasis_app:
        return []
    return [Escape(codes.FOREIGN_STASIS, app,
                   f"'{call.text}' hands the call to ARI application '{app}', not the "
                   f"bridge's own ('{where.stasis_app}', [ari] app): the program that "
                   "registered it can read the call and send it anywhere")]


def own_agi(url: str, addresses: frozenset[tuple[str, int]]) -> bool:
    """`${AB_AGI_URL}[/...]` or `agi://host[:port]/...` at one of the bridge's addresses."""
    url = url.strip().strip('"')
    for var in ("${" + AGI_URL_VARIABLE + "}", FAILOVER_URL_REFERENCE):
        if url.upper().startswith(var.upper()):
            rest = url[len(var):]
            return (rest == "" or rest.startswith("/")) and not is_dynamic(rest)
    match = _AGI_RE.match(url)
    if match is None or is_dynamic(url[:match.end()]):
        return False
    port = int(match.group(2)) if match.group(2) else AGI_DEFAULT_PORT
    return (match.group(1).lower(), port) in {(h.lower(), p) for h, p in addresses}
