"""What the operator allows beyond the tenant's own namespace: the lint allow-list.

`conf check` refuses whatever it cannot prove stays inside the tenant (see
`findings.ESCAPE_CODES`). Some of it an operator may want on purpose: a shared trunk
endpoint, `System()` for one trusted tenant, a second AGI server. An `Allowance` names
one such escape: a finding code, a case-insensitive glob over the finding's *subject*
(the thing itself: `System`, `GLOBAL(NIGHT_MODE)`, `PJSIP/carrier`,
`agi://10.0.0.5:4573/*`) and the tenant it is allowed for (None: every tenant). The
default everywhere is the empty list: nothing is allowed. The config key is meant to be
`[bridge] dialplan_allow = ["S603 System", ...]` for every tenant and
`dialplan_allow = [...]` in a tenant's table or tenant.toml for that tenant only;
`parse_allowance` reads one such entry and says what is wrong with a bad one. Pure.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

from ami_bridge.dialplan.findings import ESCAPE_CODES


@dataclass(frozen=True)
class Allowance:
    """Findings of `code` whose subject matches `subject`, for `tenant` (None: all)."""

    code: str
    subject: str = "*"
    tenant: str | None = None

    def covers(self, tenant: str | None, code: str, subject: str) -> bool:
        return (code == self.code and self.tenant in (None, tenant)
                and fnmatch.fnmatchcase(subject.lower(), self.subject.lower()))


def parse_allowance(entry: str, tenant: str | None = None) -> Allowance:
    """`"S603 System"` → Allowance("S603", "System", tenant). ValueError names the fault."""
    code, _, subject = entry.strip().partition(" ")
    if code not in ESCAPE_CODES:
        known = ", ".join(sorted(ESCAPE_CODES))
        raise ValueError(f"dialplan_allow entry {entry!r}: {code!r} is not a code that "
                         f"can be allowed (one of {known})")
    if not subject.strip():
        raise ValueError(f"dialplan_allow entry {entry!r}: no subject after the code "
                         "(write '*' to allow every subject)")
    return Allowance(code, subject.strip(), tenant)


def allowed(allow: Iterable[Allowance], tenant: str | None, code: str, subject: str) -> bool:
    return any(a.covers(tenant, code, subject) for a in allow)
