"""What `conf check` reports: one frozen `Finding` per problem, and the table of codes.

A finding names the file and line where the offending text is written, a short stable
code (so CI filters and docs can refer to it) and a message that quotes the text and
says why it is refused. `str(finding)` is the CI line `file:line: code message`;
findings order by file, line, code. Codes: DP1xx the file cannot be read the way
Asterisk would (pbx_config / config.c), OWN2xx context ownership, X3xx crossings into
another tenant's namespace, T4xx caller-controlled data in a dial string, V5xx the
venue contract, S6xx escapes (what Asterisk will do at run time that the linter cannot
prove stays inside the tenant: channels chosen at run time, shared state, host
commands, foreign AGI servers), Q7xx queues.conf. `CODES` holds a one-line summary of
each, for `--help` and docs; `ESCAPE_CODES` are the ones an operator may allow (see
`allow`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Parsing (what Asterisk itself would refuse or warn about).
MALFORMED = "DP100"
MISSING_INCLUDE = "DP101"
INCLUDE_CYCLE = "DP102"
UNCHECKABLE = "DP103"
OUTSIDE_CONTEXT = "DP104"
DUPLICATE_PRIORITY = "DP105"
# Ownership.
NO_OWNER = "OWN201"
FOREIGN_FILE = "OWN202"
AMBIGUOUS_OWNER = "OWN203"
# Crossings.
CROSS_INCLUDE = "X301"
CROSS_JUMP = "X302"
CROSS_LOCAL = "X303"
DYNAMIC_TARGET = "X304"
CROSS_QUEUE = "X305"
CROSS_ENDPOINT = "X306"
# Taint.
TAINTED_DIAL = "T401"
# Venue contract.
NO_AGISTATUS = "V501"
NO_AGI_URL = "V502"
WRONG_AGI_URL = "V503"
# Escapes: run-time behaviour not provably inside the tenant.
DYNAMIC_CHANNEL = "S601"
SHARED_STATE = "S602"
HOST_COMMAND = "S603"
FOREIGN_AGI = "S604"
FOREIGN_STASIS = "S605"
# queues.conf.
CROSS_MEMBER = "Q701"
DYNAMIC_MEMBER = "Q702"
QUEUE_CONTEXT = "Q703"

CODES: dict[str, str] = {
    MALFORMED: "line Asterisk cannot parse (or ignores)",
    MISSING_INCLUDE: "#include names a file that does not exist",
    INCLUDE_CYCLE: "#include cycle",
    UNCHECKABLE: "#exec output cannot be checked",
    OUTSIDE_CONTEXT: "statement before any [context] header",
    DUPLICATE_PRIORITY: "extension priority defined twice (Asterisk ignores the second)",
    NO_OWNER: "context belongs to no tenant and is not shared",
    FOREIGN_FILE: "context defined in another tenant's file",
    AMBIGUOUS_OWNER: "context name matches more than one tenant",
    CROSS_INCLUDE: "include => of another tenant's (or an unowned) context",
    CROSS_JUMP: "Goto/Gosub/... into another tenant's (or an unowned) context",
    CROSS_LOCAL: "Local/...@context channel into another tenant's context",
    DYNAMIC_TARGET: "context chosen at run time, not pinned to the tenant's prefix",
    CROSS_QUEUE: "Queue (or AddQueueMember, ...) of another tenant",
    CROSS_ENDPOINT: "channel to or of another tenant's (or an unowned) endpoint",
    TAINTED_DIAL: "caller-controlled data unfiltered in a dial string",
    NO_AGISTATUS: "venue asks the bridge for a route but never checks AGISTATUS",
    NO_AGI_URL: "venues ask ${AB_AGI_URL} but no [globals] of the loaded files sets it",
    WRONG_AGI_URL: "[globals] AB_AGI_URL is not the bridge's FastAGI listener (agi_listen, "
                   "route-request secret)",
    DYNAMIC_CHANNEL: "channel technology or endpoint chosen at run time, not provably the "
                     "tenant's",
    SHARED_STATE: "write to state every tenant shares (GLOBAL, SHARED, DB, GROUP, "
                  "[globals] in a tenant's file)",
    HOST_COMMAND: "runs a host command or touches host files (System, SHELL, EVAL, FILE, "
                  "...)",
    FOREIGN_AGI: "AGI to anything but the bridge's own FastAGI server",
    FOREIGN_STASIS: "Stasis() to any ARI application but the bridge's own ([ari] app)",
    CROSS_MEMBER: "queue member outside the queue's tenant",
    DYNAMIC_MEMBER: "queue member chosen at run time",
    QUEUE_CONTEXT: "queue context or member gosub outside the queue's tenant",
}
# What an operator may allow explicitly (allow.Allowance); the rest has other remedies
# (declare a context shared, name an owner, fix the file).
ESCAPE_CODES = frozenset({CROSS_ENDPOINT, DYNAMIC_CHANNEL, SHARED_STATE, HOST_COMMAND,
                          FOREIGN_AGI, FOREIGN_STASIS, CROSS_MEMBER, DYNAMIC_MEMBER, QUEUE_CONTEXT})


@dataclass(frozen=True, order=True)
class Finding:
    """One problem, at the file and line where the offending text is written."""

    file: Path
    line: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.code} {self.message}"
