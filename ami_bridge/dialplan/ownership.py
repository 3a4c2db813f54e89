"""Who owns a name: contexts, queues and endpoints belong to tenants, the operator, or all.

`Ownership` answers for every rule module of `conf check`. A name's owner is the
caller's explicit answer (`owners`: a mapping or a function, name → tenant) or else the
naming convention `<tenant>-<anything>` over the known tenants (one match only; two,
as for tenants `acme` and `acme-corp`, is no answer). Names matching `shared` (names
or fnmatch patterns, see `globs`) need no owner and every tenant may reach them; names
matching `operator` are the operator's: trusted, held to no tenant rule, and reached
by no tenant. `conflicts` lists what makes such a split ambiguous (an operator pattern
that reaches a tenant's `<tenant>-` names or grants, a name both shared and the
operator's); callers refuse it as a usage or config error. A file's tenant is
`file_owners`' answer or else its stem (`tenants/acme.conf` is acme's).
`pinned(prefix, tenant)` says whether every name that starts with a literal prefix is
that tenant's, so a name completed at run time (`acme-${AB_KIND}`) is still provably
the tenant's. Contexts, queues and endpoints share
one namespace per tenant, as the renderer names them all `<tenant>-...`. Pure.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from ami_bridge.dialplan.globs import is_pattern, matches, matches_any, may_start_with

OwnerLookup = Mapping[str, str] | Callable[[str], str | None]
FileOwnerLookup = Mapping[Path, str] | Callable[[Path], str | None]
NO_OWNERS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class Ownership:
    """Who owns which context, queue, endpoint and file; what is shared."""

    tenants: frozenset[str]
    owners: OwnerLookup = field(default_factory=lambda: NO_OWNERS)
    shared: frozenset[str] = frozenset()
    file_owners: FileOwnerLookup | None = None
    operator: frozenset[str] = frozenset()  # the operator's context names and patterns

    def explicit(self, name: str) -> str | None:
        if callable(self.owners):
            return self.owners(name)
        return self.owners.get(name)

    def matches(self, name: str) -> list[str]:
        """Tenants whose `<tenant>-` prefix the name carries."""
        return sorted(t for t in self.tenants if name.lower().startswith(t.lower() + "-"))

    def owner(self, name: str) -> str | None:
        found = self.explicit(name)
        if found is not None:
            return found
        matches = self.matches(name)
        return matches[0] if len(matches) == 1 else None

    def is_shared(self, name: str) -> bool:
        return matches_any(self.shared, name)

    def is_operator(self, name: str) -> bool:
        """The operator's context (`[operator] contexts`) and no tenant's: `conflicts`
        refuses a config where both could hold, and here the tenant's claim wins, so a
        tenant's context is never exempted from the tenant rules."""
        return self.owner(name) is None and matches_any(self.operator, name)

    def file_owner(self, path: Path) -> str | None:
        if callable(self.file_owners):
            return self.file_owners(path)
        if self.file_owners is not None:
            for key, tenant in self.file_owners.items():
                if same_file(key, path):
                    return tenant
            return None
        return path.stem if path.stem in self.tenants else None

    def pinned(self, prefix: str, tenant: str) -> bool:
        """True when every name starting with `prefix` is `tenant`'s by convention."""
        low = prefix.lower()
        if not low.startswith(tenant.lower() + "-"):
            return False
        for other in self.tenants - {tenant}:
            stem = other.lower() + "-"
            # Tenants acme and acme-corp: "acme-${X}" reaches acme-corp's names too;
            # "acme-corp-${X}" is acme-corp's (its names need an explicit owner anyway).
            if stem.startswith(low) or (low.startswith(stem) and len(other) > len(tenant)):
                return False
        if isinstance(self.owners, Mapping):
            return all(t == tenant for n, t in self.owners.items()
                       if n.lower().startswith(low))
        return True

    def tenant_list(self) -> str:
        return ", ".join(f"'{t}-'" for t in sorted(self.tenants)) or "(no tenants given)"


def same_file(a: Path, b: Path) -> bool:
    return os.path.normpath(os.path.abspath(a)) == os.path.normpath(os.path.abspath(b))


def conflicts(*, tenants: frozenset[str] | set[str], operator: frozenset[str],
              shared: frozenset[str], owners: Mapping[str, str]) -> list[str]:
    """Why this split of contexts is ambiguous, one sentence each (empty: it is not).

    An operator name or pattern must not reach a tenant's names (its `<tenant>-`
    prefix, or a context granted to it in `owners`), and no name may be both the
    operator's and shared: a context has one owner, or is shared."""
    found: list[str] = []
    for pattern in sorted(operator):
        for tenant in sorted(tenants):
            if may_start_with(pattern, f"{tenant}-"):
                what = "matches" if is_pattern(pattern) else "is"
                found.append(f"operator context {pattern!r} {what} tenant {tenant}'s "
                             f"'{tenant}-...' contexts too: a context is a tenant's or the "
                             "operator's, not both")
        for name, tenant in sorted(owners.items()):
            if matches(pattern, name):
                found.append(f"operator context {pattern!r} matches {name!r}, granted to "
                             f"tenant {tenant}: a context is a tenant's or the operator's, "
                             "not both")
        for name in sorted(shared):
            if matches(pattern, name) or (not is_pattern(pattern) and matches(name, pattern)):
                found.append(f"operator context {pattern!r} and shared context {name!r} "
                             "overlap: a context is shared or the operator's, not both")
    return found
