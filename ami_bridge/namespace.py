"""The names a tenant may use, as patterns: the bottom of the project's import graph.

Every check that a name is safe and well formed (in a tenant file, in a routing rule,
in a VTS's disposition, on the AGI wire) uses the patterns below, so a rule can never
hold what the bridge would refuse, nor the bridge accept what the dialplan could not
carry. Patterns are meant for `fullmatch`. The small fixed vocabularies that travel
with these names (route-target kinds, reject causes) and the digit-collection limit
live here for the same reason. This module imports nothing of the project and does
no I/O; whether a well-formed name is *this* tenant's is decided elsewhere (the
intermediary, against the tenant's config).
"""

from __future__ import annotations

import re

# -- route targets ----------------------------------------------------------------------
# A route target is KIND:VALUE (ami_bridge.tenants.messages.Target). The three kinds:
KIND_EXTENSION = "extension"  # an extension of the tenant's internal context
KIND_QUEUE = "queue"  # one of the tenant's queues / agent groups
KIND_EXTERNAL = "external"  # a number dialled through the tenant's outbound route
TARGET_KINDS = (KIND_EXTENSION, KIND_QUEUE, KIND_EXTERNAL)

# Extensions: what a dialplan extension name may safely hold (no ',', '/', '@', '&',
# nothing Asterisk would evaluate); also the alphabet of AB_TARGET on the AGI wire.
EXTENSION_RE = re.compile(r"[0-9A-Za-z_+*#-]{1,64}")
QUEUE_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
# External numbers: E.164 is at most 15 digits; 20 leaves room for national prefixes.
NUMBER_RE = re.compile(r"\+?[0-9]{2,20}")
# The personal venue's two kinds (issue 10; only personal venues may use them):
# `phones` rings 1..MAX_PHONES extensions at once (the user's bindings, or a ring-all
# follow-me), `voicemail` leaves a message in the mailbox of a personal number.
KIND_PHONES = "phones"
KIND_VOICEMAIL = "voicemail"
PERSONAL_KINDS = (*TARGET_KINDS, KIND_PHONES, KIND_VOICEMAIL)
MAX_PHONES = 8  # the design's limit on extensions rung at once (model.MAX_BINDINGS)
PHONES_RE = re.compile(rf"{EXTENSION_RE.pattern}(&{EXTENSION_RE.pattern}){{0,{MAX_PHONES - 1}}}")
TARGET_VALUE_RE = {KIND_EXTENSION: EXTENSION_RE, KIND_QUEUE: QUEUE_RE,
                   KIND_EXTERNAL: NUMBER_RE, KIND_PHONES: PHONES_RE,
                   KIND_VOICEMAIL: EXTENSION_RE}

# -- tenants, contexts, prompts ---------------------------------------------------------
# Tenant (and VTS) names: lower case, since they prefix the tenant's dialplan contexts
# (`<tenant>-internal`) and Asterisk matches context names case-insensitively.
TENANT_NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,62}")
# Dialplan context names: Asterisk allows more, we keep to what is safe everywhere.
CONTEXT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,79}")
# Prompts are sound-file paths relative to Asterisk's sounds directory, without
# extension. Playback treats ',' as an option separator and '&' as a file separator,
# so the alphabet excludes both (and '.', so no '..' and no extension games).
PROMPT_PART = r"[A-Za-z0-9_-]{1,64}"
MAX_PROMPT_DEPTH = 4
PROMPT_RE = re.compile(rf"{PROMPT_PART}(/{PROMPT_PART}){{0,{MAX_PROMPT_DEPTH - 1}}}")

# -- vocabularies -----------------------------------------------------------------------
# How a rejected call ends: the venue dialplan runs Busy() or Congestion() (AB_CAUSE).
REJECT_CAUSES = ("busy", "congestion")
# Digits one treatment may collect; GET DATA takes any count, 32 covers every number
# plan plus a PIN and keeps a hostile VTS from holding a caller on one long read.
MAX_COLLECT_DIGITS = 32
