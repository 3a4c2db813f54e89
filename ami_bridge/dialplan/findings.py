"""What `conf check` reports: one frozen `Finding` per problem, and the table of codes.

A finding names the file and line where the offending text is written, a short stable
code (so CI filters and docs can refer to it) and a message that quotes the text and
says why it is refused. `str(finding)` is the CI line `file:line: code message`;
findings order by file, line, code. Codes: DP1xx the file cannot be read the way
Asterisk would (pbx_config / config.c), OWN2xx context ownership, X3xx crossings into
another tenant's namespace, T4xx caller-controlled data in a dial string, V5xx the
venue contract. `CODES` holds a one-line summary of each, for `--help` and docs.
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
# Taint.
TAINTED_DIAL = "T401"
# Venue contract.
NO_AGISTATUS = "V501"

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
    CROSS_QUEUE: "Queue of another tenant",
    TAINTED_DIAL: "caller-controlled data unfiltered in a dial string",
    NO_AGISTATUS: "venue asks the bridge for a route but never checks AGISTATUS",
}


@dataclass(frozen=True, order=True)
class Finding:
    """One problem, at the file and line where the offending text is written."""

    file: Path
    line: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.code} {self.message}"
