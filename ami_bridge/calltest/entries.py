"""How a test call gets into a venue on the operator's Asterisk: one `Entry` per venue.

Contract. `parse_entry("VENUE=USER")` gives the SIP user a call is sent From so that
Asterisk's endpoint identification puts it in that venue (PJSIP `identify_by=username`,
as asterisk-conf/pjsip.conf does for each tenant's trunk); `VENUE=` (no user) sends the
case's caller number as the From user, for trunks Asterisk recognises by source address.
Whether a case may choose its caller number follows from that and from `pai` (the number
goes in a P-Asserted-Identity header, which the endpoint must trust: `trust_id_inbound`).
Errors name the flag and the bad value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ami_bridge.namespace import CONTEXT_RE

# A SIP user part we put on the wire unquoted: RFC 3261 "unreserved" plus a few of
# "user-unreserved", and never ';', '@', '<', '>' or a quote that would end the header.
SIP_USER_RE = re.compile(r"[A-Za-z0-9_.!~*'()&=+$,?/-]{1,64}")


class EntryError(ValueError):
    """An --entry value (or a flag that goes with it) is not usable; says which and why."""


@dataclass(frozen=True)
class Entry:
    venue: str
    user: str | None  # the From user; None: the case's caller number
    pai: bool = False  # the caller number goes in P-Asserted-Identity

    @property
    def fixed_ani(self) -> str | None:
        """The caller number Asterisk will see on every call of this entry, or None when
        each case chooses its own."""
        if self.user is None or self.pai:
            return None
        return self.user

    def from_user(self, ani: str) -> str:
        return ani if self.user is None else self.user


def parse_entry(text: str, *, pai: bool = False) -> Entry:
    venue, sep, user = text.partition("=")
    if not sep or not CONTEXT_RE.fullmatch(venue):
        raise EntryError(f"--entry {text!r}: expected VENUE=USER (VENUE a dialplan context, "
                         "USER the SIP user that puts a call into it; VENUE= to send the "
                         "caller number as the user)")
    if user and not SIP_USER_RE.fullmatch(user):
        raise EntryError(f"--entry {text!r}: {user!r} is not a plain SIP user name")
    return Entry(venue=venue, user=user or None, pai=pai)


def sip_user_ok(text: str) -> bool:
    """Whether a caller number or DNIS can go on the wire as a SIP user part."""
    return SIP_USER_RE.fullmatch(text) is not None
