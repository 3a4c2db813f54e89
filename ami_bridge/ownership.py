"""Who owns each name a tenant file uses: contexts, endpoints, trunks, prompt directories.

Contract: every context, endpoint (device, agent, queue member), trunk and prompt
directory that a tenant file names has exactly one owning tenant, or is explicitly shared
by the operator in the bridge config; a tenant may name only its own and shared ones.
Contexts may also be the operator's own (`[operator] contexts`: the hand-written
dialplan that routes DIDs into venues), which no tenant may name; `[operator]` and
`[shared]` contexts are names or fnmatch patterns (ami_bridge.dialplan.globs), and an
operator pattern that could match a tenant's name is refused
(ami_bridge.dialplan.ownership.conflicts, the check `conf check` makes too).
A name belongs to tenant T when it carries T's prefix `T-` (case-insensitive: the same
convention as `conf check`, ami_bridge/dialplan/lint.py) or when the bridge config grants
it to T (`[owners.T] contexts`, `endpoints`). Tenant names never carry one another's
prefix (`check_tenant_names`), so the convention names at most one owner, and a grant
may not name what the convention or `[shared]` already gives (`parse_owners`). A
tenant's prompt directory is `T` or `tenants/T`, or below them. `check_tenant` refuses a
tenant that names anything else, with the key, the value and its real owner;
`check_rendered_queues` checks the rendered queues.conf the same way before it is
written. Pure functions over parsed config: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ami_bridge.dialplan.globs import PATTERN_RE, is_pattern, matches_any, may_start_with
from ami_bridge.dialplan.ownership import conflicts
from ami_bridge.namespace import CONTEXT_RE
from ami_bridge.tenant_config import TenantConfig, VenueConfig
from ami_bridge.validation import Fail, join, names, no_unknown, table

# An endpoint as the operator names it in [shared] / [owners]: technology and name, the
# way a device appears in Asterisk's DeviceStateChange events ("PJSIP/alice").
ENDPOINT_RE = re.compile(r"(PJSIP|SIP|IAX2|DAHDI)/[A-Za-z0-9_.+-]{1,80}")  # fullmatch
# The contexts the renderer writes for every tenant (dialplan/render.py): a venue of the
# same name would be merged into them by Asterisk.
RENDERED_KINDS = ("internal", "queues", "outbound", "voicemail")
# Where a tenant's prompts may live, relative to Asterisk's sounds directory.
PROMPT_ROOTS = ("{tenant}", "tenants/{tenant}")
_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class Use:
    """What a dial string reaches: a `context` (Local/), an `endpoint` or a `trunk`."""

    kind: str
    name: str


def dial_use(dial: str) -> Use:
    """The context, endpoint or trunk a dial string (tenant_config.DIAL_RE) reaches.

    `Local/EXT@CTX` runs CTX (no `@`: Asterisk's `default`); `TECH/USER@PEER` goes out
    through PEER, a trunk; `TECH/NAME` rings NAME. Raises ValueError when it is unclear
    (Asterisk's channel drivers split at the first `@`, so a second one is refused)."""
    tech, _, rest = dial.partition("/")
    if rest.count("@") > 1:
        raise ValueError("more than one '@'")
    user, at, peer = rest.partition("@")
    if tech == "Local":
        return Use("context", peer if at else "default")
    if at and not peer:
        raise ValueError("nothing after '@'")
    if at:
        return Use("trunk", f"{tech}/{peer}")
    return Use("endpoint", f"{tech}/{user}")


@dataclass(frozen=True)
class Owners:
    """The tenants, the operator's grants and what the operator shares."""

    tenants: frozenset[str] = frozenset()
    contexts: Mapping[str, str] = field(default_factory=lambda: _EMPTY)  # granted -> tenant
    endpoints: Mapping[str, str] = field(default_factory=lambda: _EMPTY)  # granted -> tenant
    shared_contexts: frozenset[str] = frozenset()  # names and fnmatch patterns
    shared_endpoints: frozenset[str] = frozenset()
    shared_trunks: frozenset[str] = frozenset()
    operator_contexts: frozenset[str] = frozenset()  # names and fnmatch patterns

    def by_convention(self, name: str) -> str | None:
        """The tenant whose `<tenant>-` prefix `name` carries (at most one: see header)."""
        low = name.lower()
        return next((t for t in sorted(self.tenants) if low.startswith(f"{t}-")), None)

    def context_owner(self, context: str) -> str | None:
        granted = _lookup(self.contexts, context)
        return granted if granted is not None else self.by_convention(context)

    def endpoint_owner(self, endpoint: str) -> str | None:
        granted = _lookup(self.endpoints, endpoint)
        return granted if granted is not None else self.by_convention(
            endpoint.partition("/")[2])

    def is_shared(self, use: Use) -> bool:
        if use.kind == "context":
            return matches_any(self.shared_contexts, use.name)
        pool = {"endpoint": self.shared_endpoints, "trunk": self.shared_trunks}[use.kind]
        return use.name.lower() in {s.lower() for s in pool}

    def is_operator(self, context: str) -> bool:
        """The operator's own context, which no tenant may name or reach."""
        return self.context_owner(context) is None and matches_any(self.operator_contexts,
                                                                    context)

    def owner(self, use: Use) -> str | None:
        if use.kind == "context":
            return self.context_owner(use.name)
        return self.endpoint_owner(use.name)


def _lookup(granted: Mapping[str, str], name: str) -> str | None:
    low = name.lower()
    return next((t for n, t in granted.items() if n.lower() == low), None)


def _whose(owner: str | None) -> str:
    return f"tenant {owner}'s" if owner else "no tenant's (the operator's)"


def _how_to_own(tenant: str, config_path: object) -> str:
    return (f"a tenant names only its own ('{tenant}-...', or granted in [owners.{tenant}] "
            f"of {config_path}) or what [shared] there lists")


# -- the bridge config's side: [shared], [owners.T], tenant names ----------------------------

def parse_owners(raw: Mapping[str, Any], tenants: Iterable[str], fail: Fail) -> Owners:
    """`[shared]`, `[operator]` and `[owners.TENANT]` of the bridge config, checked
    against each other."""
    known = frozenset(tenants)
    plain = Owners(tenants=known)
    shared = table(raw, "shared", fail)
    no_unknown(shared, {"contexts", "endpoints", "trunks"}, "shared", fail)
    shared_contexts = names(shared, "contexts", PATTERN_RE, "shared", fail)
    shared_endpoints = names(shared, "endpoints", ENDPOINT_RE, "shared", fail)
    shared_trunks = names(shared, "trunks", ENDPOINT_RE, "shared", fail)
    operator = table(raw, "operator", fail)
    no_unknown(operator, {"contexts"}, "operator", fail)
    operator_contexts = names(operator, "contexts", PATTERN_RE, "operator", fail)
    for item in shared_contexts:
        owner = next((t for t in sorted(known) if may_start_with(item, f"{t}-")), None)
        if owner is not None:
            verb = "matches" if is_pattern(item) else "carries"
            raise fail("shared.contexts", f"{item!r} {verb} tenant {owner}'s prefix "
                       f"'{owner}-', so it is that tenant's: a shared name belongs to no "
                       "tenant")
    for key, items in (("shared.endpoints", shared_endpoints),
                       ("shared.trunks", shared_trunks)):
        for item in items:
            owner = plain.endpoint_owner(item)
            if owner is not None:
                raise fail(key, f"{item!r} carries tenant {owner}'s prefix '{owner}-', so it "
                           "is that tenant's: a shared name belongs to no tenant")
    contexts: dict[str, str] = {}
    endpoints: dict[str, str] = {}
    for tenant, graw in table(raw, "owners", fail).items():
        key = f"owners.{tenant}"
        if tenant not in known:
            raise fail(key, f"no tenant {tenant!r} (tenants: {', '.join(sorted(known))})")
        if not isinstance(graw, Mapping):
            raise fail(key, "must be a table")
        no_unknown(graw, {"contexts", "endpoints"}, key, fail)
        for what, pattern, granted, shared_pool, owner_of in (
                ("contexts", CONTEXT_RE, contexts, shared_contexts, plain.context_owner),
                ("endpoints", ENDPOINT_RE, endpoints, [*shared_endpoints, *shared_trunks],
                 plain.endpoint_owner)):
            for item in names(graw, what, pattern, key, fail):
                _grant(item, tenant, granted, shared_pool, owner_of(item),
                       f"{key}.{what}", fail)
    problem = next(iter(conflicts(tenants=known, operator=frozenset(operator_contexts),
                                  shared=frozenset(shared_contexts), owners=contexts)), None)
    if problem is not None:
        raise fail("operator.contexts", problem)
    return Owners(tenants=known, contexts=MappingProxyType(contexts),
                  endpoints=MappingProxyType(endpoints),
                  shared_contexts=frozenset(shared_contexts),
                  shared_endpoints=frozenset(shared_endpoints),
                  shared_trunks=frozenset(shared_trunks),
                  operator_contexts=frozenset(operator_contexts))


def _grant(item: str, tenant: str, granted: dict[str, str], shared: list[str],
           by_convention: str | None, key: str, fail: Fail) -> None:
    before = _lookup(granted, item)
    if before is not None and before != tenant:
        raise fail(key, f"{item!r} is already granted to tenant {before}: one owner each")
    if by_convention is not None and by_convention != tenant:
        raise fail(key, f"{item!r} carries tenant {by_convention}'s prefix "
                   f"'{by_convention}-', so it is that tenant's")
    if matches_any(frozenset(shared), item):
        raise fail(key, f"{item!r} is also in [shared]: a name is owned or shared, not both")
    granted[item] = tenant


def check_tenant_names(names_and_fails: Iterable[tuple[str, Fail, str]]) -> None:
    """Refuse tenant names that carry another tenant's prefix (`acme` and `acme-corp`):
    every name of the longer one would be the shorter one's too. Items: (name, fail, key)."""
    items = list(names_and_fails)
    for name, fail, key in items:
        for other, _, _ in items:
            if other != name and name.startswith(f"{other}-"):
                raise fail(key, f"tenant name {name!r} carries tenant {other}'s prefix "
                           f"'{other}-': their contexts and endpoints could not be told "
                           "apart; rename one")


# -- one tenant's file ---------------------------------------------------------------------

def check_tenant(tenant: TenantConfig, venues: Mapping[str, VenueConfig], *, owners: Owners,
                 fail: Fail, prefix: str, config_path: object) -> None:
    """Refuse the first name in the tenant's config that it does not own and that is not
    shared; the message gives the key (inside `prefix`), the value and its owner."""
    t = tenant.name
    for context in venues:
        _check_venue(t, context, owners, fail, join(prefix, f"venues.{context}"), config_path)
    for key, dial in _dial_strings(tenant, prefix):
        _check_dial(t, dial, owners, fail, key, config_path)
    if tenant.outbound:
        _check_outbound(t, tenant.outbound, owners, fail, join(prefix, "outbound"),
                        config_path)
    if tenant.prompts:
        _check_prompts(t, tenant.prompts, owners, fail, join(prefix, "prompts"))


def _dial_strings(tenant: TenantConfig, prefix: str) -> Iterator[tuple[str, str]]:
    for ext, dial in tenant.extensions.items():
        yield join(prefix, f"extensions.{ext}"), dial
    for dial in tenant.devices:
        yield join(prefix, "devices"), dial
    for queue in tenant.queue_configs.values():
        for dial in queue.members:
            yield join(prefix, f"queues.{queue.name}.members"), dial


def _check_venue(tenant: str, context: str, owners: Owners, fail: Fail, key: str,
                 config_path: object) -> None:
    if owners.is_shared(Use("context", context)):
        raise fail(key, f"venue {context!r} is a shared context ([shared] contexts of "
                   f"{config_path}): a venue belongs to exactly one tenant")
    owner = owners.context_owner(context)
    if owner != tenant:
        raise fail(key, f"venue {context!r} is {_whose(owner)} context; "
                   + _how_to_own(tenant, config_path))
    if context.lower() in {f"{tenant}-{kind}" for kind in RENDERED_KINDS}:
        raise fail(key, f"venue {context!r} is the name of the tenant's rendered "
                   f"{context.rpartition('-')[2]} context; choose another")


def _check_dial(tenant: str, dial: str, owners: Owners, fail: Fail, key: str,
                config_path: object) -> None:
    try:
        use = dial_use(dial)
    except ValueError as exc:
        raise fail(key, f"{dial!r}: {exc}") from None
    if owners.is_shared(use):
        return
    owner = owners.owner(use)
    if owner != tenant:
        raise fail(key, f"{dial!r} reaches {use.kind} {use.name!r}, which is "
                   f"{_whose(owner)}; " + _how_to_own(tenant, config_path))


def _check_outbound(tenant: str, template: str, owners: Owners, fail: Fail, key: str,
                    config_path: object) -> None:
    tech, _, rest = template.partition("/")
    _, at, peer = rest.partition("@")
    if not at or "{number}" in peer or "@" in peer or not peer:
        raise fail(key, f"{template!r} must name its trunk after one '@', like "
                   f"'{tech}/{{number}}@{tenant}-carrier'")
    use = Use("trunk", f"{tech}/{peer}")
    if owners.is_shared(use):
        return
    owner = owners.endpoint_owner(use.name)
    if owner != tenant:
        raise fail(key, f"{template!r} goes out through trunk {use.name!r}, which is "
                   f"{_whose(owner)}; " + _how_to_own(tenant, config_path))


def prompt_roots(tenant: str) -> tuple[str, ...]:
    return tuple(root.format(tenant=tenant) for root in PROMPT_ROOTS)


def _under(path: str, root: str) -> bool:
    low, base = path.lower(), root.lower()
    return low == base or low.startswith(f"{base}/")


def _check_prompts(tenant: str, prompts: str, owners: Owners, fail: Fail, key: str) -> None:
    # tenant_config.SOUND_DIR_RE already refused absolute paths, '..' and empty parts.
    for other in sorted(owners.tenants - {tenant}):
        for root in prompt_roots(other):
            if _under(prompts, root) or _under(root, prompts):
                raise fail(key, f"{prompts!r} overlaps tenant {other}'s sound directory "
                           f"{root!r}")
    roots = prompt_roots(tenant)
    if not any(_under(prompts, root) for root in roots):
        raise fail(key, f"{prompts!r} is not under the tenant's own sound directory "
                   f"({' or '.join(repr(r) for r in roots)})")


# -- the rendered queues.conf --------------------------------------------------------------

_SECTION_RE = re.compile(r"\[([^\]]*)\]")
_MEMBER_RE = re.compile(r"member\s*=>?\s*(.*)")


def check_rendered_queues(text: str, *, owners: Owners, where: str) -> list[str]:
    """Findings (`where:LINE: message`) for a rendered queues.conf: every queue is
    `<tenant>-<name>` of one tenant and every member is that tenant's or shared."""
    found: list[str] = []
    tenant: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.split(";", 1)[0].strip()
        section = _SECTION_RE.fullmatch(stripped)
        member = _MEMBER_RE.fullmatch(stripped)
        if section:
            tenant = owners.by_convention(section.group(1))
            if tenant is None:
                found.append(f"{where}:{number}: queue [{section.group(1)}] belongs to no "
                             "tenant")
        elif member and tenant is not None:
            dial = member.group(1).split(",", 1)[0].strip()
            try:
                use = dial_use(dial)
            except ValueError as exc:
                found.append(f"{where}:{number}: member {dial!r}: {exc}")
                continue
            owner = owners.owner(use)
            if not owners.is_shared(use) and owner != tenant:
                found.append(f"{where}:{number}: member {dial!r} of tenant {tenant}'s queue "
                             f"reaches {use.kind} {use.name!r}, which is {_whose(owner)}")
    return found


def device_owners(tenants: Iterable[TenantConfig], owners: Owners) -> dict[str, str]:
    """Device (dial string) -> its one owning tenant, for agent state. Shared endpoints
    have no owner, so their state goes to no tenant."""
    devices: dict[str, str] = {}
    for tenant in tenants:
        for _, dial in _dial_strings(tenant, ""):
            use = dial_use(dial)
            if not owners.is_shared(use) and owners.owner(use) == tenant.name:
                devices[dial] = tenant.name
    return devices
