"""Who owns a name: contexts, queues and endpoints belong to tenants; some are shared.

`Ownership` answers for every rule module of `conf check`. A name's owner is the
caller's explicit answer (`owners`: a mapping or a function, name → tenant) or else the
naming convention `<tenant>-<anything>` over the known tenants (one match only; two,
as for tenants `acme` and `acme-corp`, is no answer). Names in `shared` need no owner
and every tenant may reach them. A file's tenant is `file_owners`' answer or else its
stem (`tenants/acme.conf` is acme's). `pinned(prefix, tenant)` says whether every name
that starts with a literal prefix is that tenant's, so a name completed at run time
(`acme-${AB_KIND}`) is still provably the tenant's. Contexts, queues and endpoints share
one namespace per tenant, as the renderer names them all `<tenant>-...`. Pure.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

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
        return name.lower() in {s.lower() for s in self.shared}

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
