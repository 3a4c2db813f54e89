"""`conf check` rules: ownership, crossings, caller data in dial strings, venue contract,
escapes, queues.

`check(files, tenants=..., owners=..., shared=..., file_owners=..., allow=...)` reads
the files (and their #includes) and returns sorted, de-duplicated `Finding`s;
`check_dialplan` does the same on an already parsed `Dialplan`, with no I/O. Files named
`queues.conf` are read as queues.conf (see `queues`); with `config_dir` given and no
such file named, `<config_dir>/queues.conf` is read too when it exists, so the tree is
linted as Asterisk loads it. Owners: see `ownership`; `[general]` and `[globals]` are no
contexts. Rules: every context has exactly one owner, a tenant or the operator
(`operator`: names and fnmatch patterns), or is shared (OWN201/OWN203), and is written
only in its own tenant's files or platform files (OWN202); a tenant's context may reach
only its own and shared contexts: no include, jump, handler, Local channel or queue of
it reaches another tenant's, the operator's or an unowned context (X301-X303, X305),
nor any context chosen at run time unless its literal prefix pins it to `<tenant>-` of
the same tenant (X304); a shared context may lead only into shared ones; the
operator's contexts are trusted and may reach anything (they route DIDs into venues),
so the crossing, taint and escape rules skip them; caller data reaches no dial string
unfiltered (T401, see `taint`); a venue that asks the bridge for a route tests AGISTATUS
afterwards (V501; STASISSTATUS after Stasis() to the bridge's ARI application), and
when venues ask `${AB_AGI_URL}/route`, a `[globals]` section of the loaded files sets
it (V502; the last one read wins, as Asterisk sets them in order) to the bridge's own
listener and secret when the caller knows them (`BridgeAgi`, V503); nothing in a
tenant's context does at run time what the linter cannot prove stays inside the tenant
(X306, S601-S605, see `escapes`) unless `allow` allows it; a dial string already
reported as T401, X303 or X304 on a line gets no S601 besides.
Statements inherited from a template are checked in each inheriting context and
reported where the template writes them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ami_bridge.agi.variables import (
    AB_AGI_URL,
    AGISTATUS,
    ASYNC_AGI,
    DEFAULT_STASIS_APP,
    ROUTE_SCRIPT,
    STASISSTATUS,
)
from ami_bridge.dialplan import findings as codes
from ami_bridge.dialplan.allow import Allowance, allowed
from ami_bridge.dialplan.channels import Bounds, bounded_variables, bridge_dial_only
from ami_bridge.dialplan.escapes import (
    AGI_URL_VARIABLE,
    DEFAULT_AGI_ADDRESSES,
    Where,
    own_agi,
    setting_escape,
    step_escapes,
)
from ami_bridge.dialplan.findings import Finding
from ami_bridge.dialplan.ownership import NO_OWNERS, FileOwnerLookup, OwnerLookup, Ownership
from ami_bridge.dialplan.parser import (
    Dialplan,
    DiskSource,
    Include,
    Section,
    Setting,
    Source,
    Statement,
    Step,
    Switch,
    inherited,
    load,
)
from ami_bridge.dialplan.queues import check_queues, is_queue_file, load_queues
from ami_bridge.dialplan.syntax import is_dynamic, literal_prefix, split_top
from ami_bridge.dialplan.taint import pattern_is_safe, sink_taint, tainted_variables
from ami_bridge.dialplan.targets import Target, calls, targets

__all__ = ["Allowance", "BridgeAgi", "FileOwnerLookup", "OwnerLookup", "Ownership", "Policy",
           "check", "check_dialplan"]

# The venue's route request: AGI(${AB_AGI_URL}/route...) or AGI(agi://host:port/route...).
ROUTE_AGI_RE = re.compile(rf"(?:{re.escape('${' + AB_AGI_URL + '}')}|agis?://[^/\s]*)/"
                          f"{re.escape(ROUTE_SCRIPT)}", re.IGNORECASE)
# Any venue's route request, FastAGI as above or AsyncAGI (`AGI(agi:async,...)`): V501.
ROUTE_REQUEST_RE = re.compile(rf"{ROUTE_AGI_RE.pattern}|{re.escape(ASYNC_AGI)}(?:,|$)",
                              re.IGNORECASE)
_CONDITIONAL_APPS = frozenset({"gotoif", "gosubif", "execif", "gotoiftime", "while"})


@dataclass(frozen=True)
class BridgeAgi:
    """The bridge's FastAGI listener as its config says (`[bridge] agi_listen`, the
    route-request secret of `agi_secret_file`): what `[globals] AB_AGI_URL` must name
    (V503). Unknown (`conf check` without `--config`): only a missing URL is found."""

    addresses: frozenset[tuple[str, int]]
    secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Policy:
    """What the operator allows (`allow`) and where the bridge's FastAGI server listens."""

    allow: tuple[Allowance, ...] = ()
    agi_addresses: frozenset[tuple[str, int]] = DEFAULT_AGI_ADDRESSES
    bridge_agi: BridgeAgi | None = None
    stasis_app: str = DEFAULT_STASIS_APP  # the bridge's ARI application (S605, V501)


def check(files: Sequence[Path], *, owners: OwnerLookup = NO_OWNERS,
          shared: frozenset[str] = frozenset(), tenants: Iterable[str] = (),
          file_owners: FileOwnerLookup | None = None, source: Source | None = None,
          config_dir: Path | None = None, allow: Iterable[Allowance] = (),
          agi_addresses: frozenset[tuple[str, int]] = DEFAULT_AGI_ADDRESSES,
          operator: frozenset[str] = frozenset(),
          bridge_agi: BridgeAgi | None = None,
          stasis_app: str = DEFAULT_STASIS_APP) -> list[Finding]:
    """Lint `files` (and their #includes). Raises parser.DialplanReadError on I/O errors.

    `allow`: the escapes the operator allows (default: none). `agi_addresses`: where
    the bridge's FastAGI server listens (host, port), for the S604 rule. `shared` and
    `operator`: context names or fnmatch patterns (see `globs`); the caller has refused
    `ownership.conflicts` between them and the tenants. `bridge_agi`: the bridge's
    listener as its config says, for V503 (None: not known, V502 only). `stasis_app`:
    the bridge's ARI application (`[ari] app`), the only one a tenant may enter (S605).
    """
    known = set(tenants) | (set(owners.values()) if isinstance(owners, Mapping) else set())
    ownership = Ownership(frozenset(known), owners, shared, file_owners, operator)
    policy = Policy(tuple(allow), frozenset(agi_addresses), bridge_agi, stasis_app)
    dialplan_files = [f for f in files if not is_queue_file(f)]
    found = check_dialplan(load(dialplan_files, source=source, config_dir=config_dir),
                           ownership, policy) if dialplan_files else []
    queue_files = [f for f in files if is_queue_file(f)]
    implicit = not queue_files and config_dir is not None
    if implicit and config_dir is not None:
        queue_files = [config_dir / "queues.conf"]
    if queue_files:
        found += check_queues(load_queues(queue_files, source=source or DiskSource(),
                                          config_dir=config_dir, required=not implicit),
                              ownership, policy.allow)
    return sorted(set(found))


def check_dialplan(dialplan: Dialplan, ownership: Ownership,
                   policy: Policy | None = None) -> list[Finding]:
    """The rules of the module header over a parsed dialplan: pure."""
    policy = policy or Policy()
    found = list(dialplan.problems)
    headers = [s for s in dialplan.statements if isinstance(s, Section) and not s.is_global]
    templates = {s.name.lower() for s in headers if s.template}
    names = list(dict.fromkeys(s.name for s in headers if not s.template))
    own = _by_context(dialplan.statements)
    steps = [s for s in dialplan.statements if isinstance(s, Step)]
    bounded = bounded_variables(steps)
    bridge_dial = bridge_dial_only(steps)
    for name in names:
        fragments = [s for s in headers if s.name == name]
        found += _ownership(name, fragments, ownership)
        from_templates = inherited(fragments, headers, own, templates)
        statements = from_templates + own.get(name.lower(), [])
        context_found = _context_rules(name, statements, ownership, policy.stasis_app)
        tenant = ownership.owner(name)
        if tenant is not None:
            context_found += _escapes(name, tenant, statements, ownership, policy,
                                      bounded, context_found, bridge_dial)
        found += context_found
        found += _duplicates(name, own.get(name.lower(), []))
    found += _settings(dialplan.statements, ownership, policy)
    found += _agi_url(dialplan.statements, policy.bridge_agi)
    return sorted(set(found))


_URL_VARIABLE = "${" + AGI_URL_VARIABLE + "}"


def _agi_url(statements: Iterable[Statement], bridge: BridgeAgi | None) -> list[Finding]:
    """V502/V503: without `[globals] AB_AGI_URL` (or with one that is not the bridge's),
    AGI() fails on every call and every call takes the AGISTATUS fallback: the
    dialplan works, the bridge never hears of the calls, nothing says why."""
    venue = next((s for s in statements if isinstance(s, Step)
                  and s.app.lower() in ("agi", "eagi") and s.args
                  and s.args[0].strip().upper().startswith(_URL_VARIABLE.upper())
                  and ROUTE_AGI_RE.match(s.args[0].strip())), None)
    if venue is None:
        return []
    setting = None
    for statement in statements:
        if (isinstance(statement, Setting) and statement.section.lower() == "globals"
                and statement.key.strip() == AGI_URL_VARIABLE):
            setting = statement  # Asterisk sets globals in reading order: the last wins
    if setting is None:
        return [Finding(venue.file, venue.line, codes.NO_AGI_URL,
                        f"'{venue.app}({venue.data})' asks {_URL_VARIABLE}, but no [globals] "
                        f"of the loaded files sets {AGI_URL_VARIABLE}: every call would take "
                        "the venue's AGISTATUS fallback and the bridge would never hear of "
                        f"it; add '{AGI_URL_VARIABLE}=agi://HOST:PORT' (the bridge's "
                        "[bridge] agi_listen) to [globals]")]
    if bridge is None:
        return []
    value = setting.value.strip()
    listen = ", ".join(f"{h}:{p}" for h, p in sorted(bridge.addresses))
    # A listener on every address (0.0.0.0, ::) is reached through any of the host's.
    host = _agi_host(value)
    addresses = bridge.addresses | {(host, port) for h, port in bridge.addresses
                                    if h in _ANY_ADDRESS}
    if not own_agi(value, addresses) or value.upper().startswith(_URL_VARIABLE.upper()):
        return [Finding(setting.file, setting.line, codes.WRONG_AGI_URL,
                        f"{AGI_URL_VARIABLE}={value!r} is not the bridge's FastAGI listener "
                        f"(agi://{listen}, [bridge] agi_listen): every venue's route request "
                        "would fail or go elsewhere")]
    path = _agi_path(value)
    expected = bridge.secret or ""
    if path != expected:
        # Never quote the secret, nor the path (a near miss gives most of it away).
        why = ("does not carry the bridge's route-request secret ([bridge] agi_secret_file) "
               "as its path" if expected else "has a path, but the bridge has no route-"
               "request secret ([bridge] agi_secret_file)")
        return [Finding(setting.file, setting.line, codes.WRONG_AGI_URL,
                        f"{AGI_URL_VARIABLE} {why}: the bridge would refuse every route "
                        "request and give each call its default route")]
    return []


_ANY_ADDRESS = frozenset({"0.0.0.0", "::", ""})


def _agi_host(url: str) -> str:
    rest = url.split("://", 1)[1] if "://" in url else url
    where = rest.partition("/")[0]
    if where.startswith("["):
        return where[1:].partition("]")[0].lower()
    return where.rpartition(":")[0].lower() if ":" in where else where.lower()


def _agi_path(url: str) -> str:
    """`agi://host:port/PATH` -> PATH (no trailing slash); '' without one."""
    rest = url.split("://", 1)[1] if "://" in url else url
    return rest.partition("/")[2].rstrip("/")


# Findings that already say what is wrong with a dial string on their line.
_DIAL_STRING_CODES = frozenset({codes.TAINTED_DIAL, codes.CROSS_LOCAL,
                                codes.DYNAMIC_TARGET})


def _escapes(context: str, tenant: str, statements: list[Statement],
             ownership: Ownership, policy: Policy, bounded: frozenset[str],
             already: list[Finding], bridge_dial: bool) -> list[Finding]:
    said = {(f.file, f.line) for f in already if f.code in _DIAL_STRING_CODES}
    found: list[Finding] = []
    for step in statements:
        if not isinstance(step, Step):
            continue
        where = Where(tenant, ownership,
                      Bounds(pattern_is_safe(step.pattern), bounded, bridge_dial),
                      policy.agi_addresses, policy.stasis_app)
        for escape in step_escapes(step, where):
            if escape.code == codes.DYNAMIC_CHANNEL and (step.file, step.line) in said:
                continue
            if not allowed(policy.allow, tenant, escape.code, escape.subject):
                found.append(_here(step, context, escape.code, escape.message))
    return found


def _settings(statements: Iterable[Statement], ownership: Ownership,
              policy: Policy) -> list[Finding]:
    """[general]/[globals] settings in a tenant's file hold for every tenant."""
    found: list[Finding] = []
    for setting in statements:
        if not isinstance(setting, Setting):
            continue
        tenant = ownership.file_owner(setting.file)
        if tenant is None:
            continue
        escape = setting_escape(setting, tenant)
        if not allowed(policy.allow, tenant, escape.code, escape.subject):
            found.append(Finding(setting.file, setting.line, escape.code, escape.message))
    return found


def _duplicates(context: str, statements: list[Statement]) -> list[Finding]:
    """Priorities defined twice: Asterisk keeps the first and logs "already in use"."""
    found: list[Finding] = []
    seen: dict[tuple[str, int], Step] = {}
    last = 0
    for step in statements:
        if not isinstance(step, Step) or step.is_hint:
            continue
        if step.priority.isdigit():
            last = int(step.priority)
        elif step.priority.lower() == "n":
            last += 1
        else:
            continue
        first = seen.setdefault((step.pattern, last), step)
        if first is not step:
            found.append(Finding(step.file, step.line, codes.DUPLICATE_PRIORITY,
                                 f"'{step.pattern}' priority {last} of [{context}] is "
                                 f"already defined at {first.file}:{first.line}: Asterisk "
                                 "keeps the first and ignores this one"))
    return found


def _by_context(statements: Iterable[Statement]) -> dict[str, list[Statement]]:
    grouped: dict[str, list[Statement]] = {}
    for s in statements:
        if isinstance(s, Step | Include | Switch):
            grouped.setdefault(s.context.lower(), []).append(s)
    return grouped


def _ownership(name: str, fragments: list[Section], ownership: Ownership) -> list[Finding]:
    first = fragments[0]
    found: list[Finding] = []
    owner = ownership.owner(name)
    shared = ownership.is_shared(name)
    operator = ownership.is_operator(name)
    matches = ownership.matches(name)
    if owner is None and not shared and not operator and ownership.explicit(name) is None:
        if len(matches) > 1:
            found.append(Finding(first.file, first.line, codes.AMBIGUOUS_OWNER,
                                 f"context [{name}] could belong to any of tenants "
                                 f"{', '.join(matches)}: name its owner explicitly"))
        else:
            found.append(Finding(first.file, first.line, codes.NO_OWNER,
                                 f"context [{name}] belongs to no tenant: its name starts "
                                 f"with none of {ownership.tenant_list()} and no owner is "
                                 "given for it, nor is it declared the operator's or "
                                 "shared"))
    file_tenants: dict[str, Section] = {}
    for fragment in fragments:
        tenant = ownership.file_owner(fragment.file)
        if tenant is None:
            continue
        file_tenants.setdefault(tenant, fragment)
        if owner is not None and tenant != owner:
            found.append(Finding(fragment.file, fragment.line, codes.FOREIGN_FILE,
                                 f"context [{name}] of tenant {owner} is written in "
                                 f"{fragment.file}, tenant {tenant}'s file: a tenant's "
                                 "file may only hold its own contexts"))
        elif owner is None and shared:
            found.append(Finding(fragment.file, fragment.line, codes.FOREIGN_FILE,
                                 f"shared context [{name}] is written in {fragment.file}, "
                                 f"tenant {tenant}'s file: every tenant would run "
                                 f"{tenant}'s dialplan"))
        elif operator:
            found.append(Finding(fragment.file, fragment.line, codes.FOREIGN_FILE,
                                 f"operator context [{name}] is written in "
                                 f"{fragment.file}, tenant {tenant}'s file: the operator's "
                                 f"trusted dialplan would run {tenant}'s lines"))
    if owner is None and not shared and not operator and len(file_tenants) > 1:
        for tenant, fragment in list(file_tenants.items())[1:]:
            found.append(Finding(fragment.file, fragment.line, codes.FOREIGN_FILE,
                                 f"context [{name}] is written in files of tenants "
                                 f"{', '.join(file_tenants)}: here in {tenant}'s"))
    return found


def _context_rules(name: str, statements: list[Statement], ownership: Ownership,
                   stasis_app: str = DEFAULT_STASIS_APP) -> list[Finding]:
    tenant = ownership.owner(name)
    shared = ownership.is_shared(name)
    steps = [s for s in statements if isinstance(s, Step)]
    found: list[Finding] = []
    if ownership.is_operator(name):
        # Trusted: it may reach anything and handle caller data as it likes; it is
        # still a venue if it asks the bridge for routes.
        return _venue_contract(name, steps, stasis_app)
    if tenant is not None or shared:
        for statement in statements:
            for target in _statement_targets(statement):
                finding = _crossing(statement, target, name, tenant, ownership)
                if finding is not None:
                    found.append(finding)
    variables = tainted_variables(steps)
    for step in steps:
        for call, index, taint in sink_taint(step, variables):
            found.append(_here(step, name, codes.TAINTED_DIAL,
                               f"argument {index + 1} of {call.app} "
                               f"'{call.arg(index)}' carries caller-controlled "
                               f"{taint.describe()} unfiltered: a value like "
                               "'1&PJSIP/other' or '1,,U(x)' dials another channel or "
                               "adds options; wrap it in ${FILTER(0-9,...)} or use a "
                               "digits-only pattern such as _XXXX"))
    found += _venue_contract(name, steps, stasis_app)
    return found


def _here(statement: Step | Include | Switch, context: str, code: str,
          message: str) -> Finding:
    if statement.context.lower() != context.lower():
        message += f" (inherited by [{context}] from template [{statement.context}])"
    return Finding(statement.file, statement.line, code, message)


def _statement_targets(statement: Statement) -> list[Target]:
    if isinstance(statement, Include):
        return [Target(statement.target, "include", f"include => {statement.target}",
                       kind="include")]
    if isinstance(statement, Switch):
        kind, _, rest = statement.value.partition("/")
        if kind.strip().lower() == "loopback" and "@" in rest:
            context = split_top(split_top(rest, "@", 1)[1], "/", 1)[0].strip()
            return [Target(context, "Loopback switch", statement.value, kind="include")]
        return []
    if isinstance(statement, Step):
        return [t for call in calls(statement) for t in targets(call)]
    return []


_CODE = {"include": codes.CROSS_INCLUDE, "jump": codes.CROSS_JUMP,
         "local": codes.CROSS_LOCAL, "queue": codes.CROSS_QUEUE}


def _crossing(statement: Statement, target: Target, context: str, tenant: str | None,
              ownership: Ownership) -> Finding | None:
    assert isinstance(statement, Step | Include | Switch)
    where = target.context
    noun = "queue" if target.kind == "queue" else "context"
    if not where or where.lower() == context.lower() or ownership.is_shared(where):
        return None
    who = f"tenant {tenant}'s [{context}]" if tenant else f"shared context [{context}]"
    if is_dynamic(where):
        prefix = literal_prefix(where)
        if tenant is not None and ownership.pinned(prefix, tenant):
            return None
        comma = (" (a comma in a run-time value there adds a context field)"
                 if target.possible else "")
        pin = f"'{tenant}-'" if tenant else "a shared name"
        return _here(statement, context, codes.DYNAMIC_TARGET,
                     f"{target.what} '{target.quote}' in {who} picks its {noun} "
                     f"'{where}' at run time{comma}: it can reach any tenant's "
                     f"{noun}s; start it with the literal prefix {pin}")
    owner = ownership.owner(where)
    operator = ownership.is_operator(where)
    if tenant is not None and owner == tenant:
        return None
    if target.possible and not operator and (owner is None or owner == tenant):
        return None  # a literal first field that is not someone else's context
    if target.kind == "queue" and owner is None:
        return None  # queues.conf is not read: unprefixed queues are not judged
    if operator:
        reason = ("which is the operator's ([operator] contexts): a tenant's context may "
                  "reach only its own and shared contexts")
    elif owner is None:
        reason = "which belongs to no tenant and is not declared shared"
    else:
        reason = (f"of tenant {owner}: a call of {tenant or 'every tenant'} would run in "
                  "another tenant's dialplan" if noun == "context" else
                  f"of tenant {owner}: callers would wait in another tenant's queue")
    return _here(statement, context, _CODE[target.kind],
                 f"{target.what} '{target.quote}' in {who} leads into {noun} "
                 f"[{where}] {reason}; declare it shared if that is intended")


def _checks_status(step: Step, status: str) -> bool:
    return any((c.name in _CONDITIONAL_APPS or "IF(" in c.data.upper())
               and status in c.data.upper() for c in calls(step))


def _route_status(step: Step, stasis_app: str) -> str | None:
    """The status variable a route request sets (AGISTATUS for the FastAGI route script
    and for AsyncAGI, STASISSTATUS for Stasis() to the bridge's application); None: not a
    route request."""
    first = step.args[0].strip() if step.args else ""
    if step.app.lower() in ("agi", "eagi") and ROUTE_REQUEST_RE.match(first):
        return AGISTATUS  # FastAGI's route script, or AsyncAGI (agi:async)
    if step.app.lower() == "stasis" and first == stasis_app:
        return STASISSTATUS
    return None


def _venue_contract(context: str, steps: list[Step],
                    stasis_app: str = DEFAULT_STASIS_APP) -> list[Finding]:
    found: list[Finding] = []
    for index, step in enumerate(steps):
        status = _route_status(step, stasis_app)
        if status is None:
            continue
        checked = False
        for later in steps[index + 1:]:
            if later.pattern != step.pattern:
                continue
            if _route_status(later, stasis_app) is not None:
                break
            if _checks_status(later, status):
                checked = True
                break
        if not checked:
            found.append(_here(step, context, codes.NO_AGISTATUS,
                               f"'{step.app}({step.data})' asks the bridge for a route but "
                               f"no later priority of extension '{step.pattern}' tests "
                               f"{status}: with the bridge down the call never takes the "
                               "venue's default route"))
    return found
