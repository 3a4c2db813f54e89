"""Render each tenant's dialplan fragment from its tenant config (`ami-bridge conf render`).

Pure functions from config to text; `write_tree` is the only I/O. The output is
deterministic (sorted, no timestamps) so a rendered tree diffs cleanly and can be kept
in version control. Layout, relative to Asterisk's config directory:

    ami-bridge/extensions.conf       #include of every tenant fragment (include it once
                                     from extensions.conf)
    ami-bridge/tenants/<tenant>.conf the tenant's venues, internal, queue and outbound
                                     contexts
    ami-bridge/queues.conf           the tenants' queues (include it from queues.conf)
    ami-bridge/voicemail.conf        a mailbox per personal number (include it from
                                     voicemail.conf; only with a tenant's [personal])

The venue context is the contract with the bridge (ami_bridge.agi.variables, whose
names it takes): it catches every extension Asterisk can deliver (`VENUE_PATTERN`, and
`i`/`t` to the fallback), asks the FastAGI server, checks AGISTATUS (bridge down: the
tenant's operator), enforces the tenant's channel limit with GROUP()/GROUP_COUNT(),
sets the tenant's language and music class, and Gosubs only into the tenant's own
`<tenant>-<suffix>` context for the target's kind (`KIND_CONTEXT`, held in the
channel variables `AB_CTX_<kind>`), guarded by DIALPLAN_EXISTS. Caller-controlled
data reaches a Dial string only through FILTER(). Hand-written fragments may extend the
same contexts (Asterisk merges them).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ami_bridge.agi.variables import (
    AB_ACTION,
    AB_AGI_NEXT,
    AB_AGI_URL,
    AB_AGI_URL_FAILOVER,
    AB_CAUSE,
    AB_DIAL,
    AB_DIAL_TIMEOUT,
    AB_KIND,
    AB_LAST,
    AB_TARGET,
    ACTION_REJECT,
    ACTION_ROUTE,
    AGISTATUS,
    ASYNC_AGI,
    DEFAULT_DIAL_TIMEOUT,
    DEFAULT_STASIS_APP,
    DIALSTATUS,
    FAILOVER_CAUSES,
    FIRST_FAILOVER_URL,
    KIND_CONTEXT,
    PERSONAL_KIND_CONTEXT,
    PHONES_KIND,
    ROUTE_ARGS,
    ROUTE_SCRIPT,
    STASISSTATUS,
    kind_variable,
    tenant_context,
)
from ami_bridge.config import DEFAULT_ROUTER_TIMEOUT, BridgeConfig, TenantConfig, VenueConfig
from ami_bridge.namespace import KIND_EXTENSION, KIND_EXTERNAL, KIND_QUEUE, KIND_VOICEMAIL

OUTPUT_DIR = "ami-bridge"
HEADER = "; Rendered by `ami-bridge conf render` from {source}. Do not edit: change the\n" \
         "; tenant file and render again. Hand-written additions go in other files.\n"
# The venue's catch-all: a first character Asterisk may deliver (digits, + * #, letters of
# a SIP user name), then anything (`!`: zero or more), so one-character numbers match too.
VENUE_PATTERN = "_[+*#0-9A-Za-z]!"
# Characters an external number keeps on its way to the carrier: digits and a leading +.
NUMBER_FILTER = "0-9+"


def var(name: str) -> str:
    """A dialplan variable reference: `${NAME}`."""
    return "${" + name + "}"


def route_request(context: str, driver: str, *,
                  stasis_app: str = DEFAULT_STASIS_APP) -> tuple[str, str]:
    """How the venue asks the bridge, by its driver: the dialplan application line (after
    `same => n,`) and the condition that holds when the bridge answered (else the venue
    takes its fallback). One place per driver; the rest of the venue is the same.
    `stasis_app`: the bridge's ARI application (`[ari] app`), for ari venues."""
    args = ",".join(map(var, ROUTE_ARGS))
    if driver == "fastagi":
        return (f"AGI({var(AB_AGI_URL)}/{ROUTE_SCRIPT},{args})",
                f'"{var(AGISTATUS)}" = "SUCCESS"')
    if driver == "ari":
        # The route arguments arrive as the StasisStart's `args`, in the same order.
        # STASISSTATUS is FAILED at once when the application is not registered (bridge
        # or its WebSocket down; measured, docs/drivers.md): the venue's fallback.
        return (f"Stasis({stasis_app},{args})", f'"{var(STASISSTATUS)}" = "SUCCESS"')
    if driver == "asyncagi":
        # AGISTATUS is SUCCESS after the bridge's ASYNCAGI BREAK, HANGUP when the wait
        # bound below ended it (then the `T` extension runs, not the next priority).
        return f"AGI({ASYNC_AGI},{args})", f'"{var(AGISTATUS)}" = "SUCCESS"'
    raise ValueError(f"venue {context}: unknown driver {driver!r}")


# The failover URL a FastAGI venue asks next: `${AB_AGI_URL_${AB_AGI_NEXT}}`.
NEXT_AGI_URL = var(AB_AGI_URL_FAILOVER + var(AB_AGI_NEXT))


def failover(driver: str) -> tuple[str, str, list[str], list[str]]:
    """Venue failover to further bridges (FastAGI only; docs/scale-out.md): what the
    `ask` MSet adds (the cursor, reset per route request, and AB_CAUSE, which a bridge
    writes only with a default route), the extra term of the route check (a default
    route for a cause in FAILOVER_CAUSES is not taken while another bridge is
    configured), the priority at the head of `other` (no disposition, or such a cause,
    and another bridge configured: ask it), and the `next` block (clear the answer, ask
    that bridge, move the cursor, judge its answer as the first one's). Asterisk's AGI()
    sets AGISTATUS=FAILURE when the connection is refused and SUCCESS with AB_ACTION
    unset when the bridge died after the AGI environment was sent (measured on
    Asterisk 22, docs/scale-out.md): both leave AB_ACTION empty, which a bridge never
    does (it writes AB_ACTION last, `default` included). The routed path gains no
    priority; with AB_AGI_URL_2 unset the other paths gain one GotoIf."""
    if driver != "fastagi":
        return "", "", [], []
    args = ",".join(map(var, ROUTE_ARGS))
    cause = var(AB_CAUSE)
    busy = " | ".join(f'"{cause}" = "{c}"' for c in FAILOVER_CAUSES)
    keep = " & ".join(f'"{cause}" != "{c}"' for c in FAILOVER_CAUSES)
    return (f",{AB_CAUSE}=,{AB_AGI_NEXT}={FIRST_FAILOVER_URL}",
            f' & ({keep} | "{NEXT_AGI_URL}" = "")',
            [f' same => n(other),GotoIf($[("{var(AB_ACTION)}" = "" | {busy}) & '
             f'"{NEXT_AGI_URL}" != ""]?next)'],
            [f" same => n(next),MSet({AB_ACTION}=,{AB_CAUSE}=)",
             f" same => n,AGI({NEXT_AGI_URL}/{ROUTE_SCRIPT},{args})",
             f" same => n,Set({AB_AGI_NEXT}=$[{var(AB_AGI_NEXT)} + 1])",
             " same => n,Goto(asked)"])


def labels(retry: list[str]) -> tuple[str, str]:
    """The labels of the route check (`asked`: where a failover answer is judged) and of
    the reject check (`other`, unless the failover priority took it): none of this for
    drivers without failover, whose venues stay as they were."""
    return ("(asked)", "") if retry else ("", "(other)")


# AsyncAGI: a channel waits in AGI(agi:async) until an AMI client breaks it, with no
# bridge connected too (measured on Asterisk 22.10, docs/drivers.md): the venue bounds
# the wait itself with TIMEOUT(absolute), the router timeout plus this grace (the bridge
# default-routes at the router timeout; the bound only fires when it cannot answer).
ASYNC_AGI_GRACE_S = 3
ABSOLUTE_TIMEOUT = "TIMEOUT(absolute)"
AB_ASKED = "AB_ASKED"  # the personal number a call asked for (its `T` goes back there)


def wait_bound(driver: str, router_timeout: float) -> tuple[list[str], list[str]]:
    """The priorities a driver needs before and after its route request (none for
    FastAGI, whose connection Asterisk times out itself): AsyncAGI sets the venue's
    wait bound before and clears it after, so it never cuts the routed call."""
    if driver != "asyncagi":
        return [], []
    bound = math.ceil(router_timeout) + ASYNC_AGI_GRACE_S
    return [f"Set({ABSOLUTE_TIMEOUT}={bound})"], [f"Set({ABSOLUTE_TIMEOUT}=0)"]


def render_venue(tenant: TenantConfig, venue: VenueConfig, *,
                 stasis_app: str = DEFAULT_STASIS_APP) -> list[str]:
    """The venue context. Every priority costs Asterisk work on every call (and, with an
    AMI session connected, a channel snapshot update for the manager), so the happy
    path is kept short: variables are reset and set in one MSet each, and the route
    decision is one GotoIf."""
    t = tenant.name
    kind_map = ",".join(f"{kind_variable(k)}={s}" for k, s in KIND_CONTEXT.items())
    # `<tenant>-${AB_CTX_${AB_KIND}}`: the literal prefix pins the jump to this tenant.
    context = f"{t}-{var(kind_variable(var(AB_KIND)))}"
    ask, bridge_ok = route_request(venue.context, venue.driver, stasis_app=stasis_app)
    before, after = wait_bound(venue.driver, venue.router_timeout)
    cursor, usable, retry, ask_next = failover(venue.driver)
    asked, other = labels(retry)
    # The wait bound ran out (AsyncAGI with no bridge to answer): Asterisk runs `T`.
    specials = ("i", "t", "T") if before else ("i", "t")
    lines = [
        f"; venue {venue.context} of tenant {t}",
        f"[{venue.context}]",
        # A call in a venue always leaves it: whatever Asterisk delivers (+4930123, 5,
        # *21#, s, a SIP user name) matches VENUE_PATTERN; `h` (the hang-up run) is not a
        # call, and the special `i`/`t` take the venue's fallback, the tenant's operator.
        # Each ends in Hangup(): Asterisk looks up every next priority afresh, and the
        # catch-all pattern has a priority 2 for `h` too (it would ask the bridge again).
        "exten => h,1,NoOp(hangup)",
        " same => n,Hangup()",
        *(line for special in specials for line in (
            f"exten => {special},1,Gosub({tenant_context(t, KIND_EXTENSION)},"
            f"{tenant.operator},1)", " same => n,Hangup()")),
        f"exten => {VENUE_PATTERN},1,Set(CHANNEL(language)={tenant.language})",
        f" same => n,Set(CHANNEL(musicclass)={tenant.moh_class})",
    ]
    if tenant.channel_limit:
        lines += [
            f" same => n,Set(GROUP(ami-bridge-tenant)={t})",
            f" same => n,GotoIf($[${{GROUP_COUNT({t}@ami-bridge-tenant)}} > "
            f"{tenant.channel_limit}]?limit)",
        ]
    lines += [
        f" same => n,MSet({AB_LAST}=,{kind_map})",
        f" same => n(ask),MSet({AB_ACTION}=,{AB_DIAL_TIMEOUT}={DEFAULT_DIAL_TIMEOUT}"
        f"{cursor})",
        *(f" same => n,{line}" for line in before),
        f" same => n,{ask}",
        *(f" same => n,{line}" for line in after),
        f' same => n{asked},GotoIf($[{bridge_ok} & "{var(AB_ACTION)}" = "{ACTION_ROUTE}"'
        f"{usable}]?:other)",
        f" same => n,GotoIf($[${{DIALPLAN_EXISTS({context},{var(AB_TARGET)},1)}}]?:fallback)",
        f" same => n,MSet({AB_LAST}={var(AB_KIND)}:{var(AB_TARGET)},{DIALSTATUS}=)",
        f" same => n,Gosub({context},{var(AB_TARGET)},1)",
        f' same => n,GotoIf($["{var(DIALSTATUS)}" = "ANSWER"]?done:ask)',
        " same => n(done),Hangup()",
        *retry,
        f' same => n{other},GotoIf($[{bridge_ok} & "{var(AB_ACTION)}" = '
        f'"{ACTION_REJECT}"]?reject)',
        f" same => n(fallback),Gosub({tenant_context(t, KIND_EXTENSION)},{tenant.operator},1)",
        " same => n,Hangup()",
        f' same => n(reject),GotoIf($["{var(AB_CAUSE)}" = "congestion"]?congestion)',
        " same => n,Busy(2)",
        " same => n,Hangup(17)",
        " same => n(congestion),Congestion(2)",
        " same => n,Hangup(34)",
        *ask_next,
    ]
    if tenant.channel_limit:
        lines += [f" same => n(limit),NoOp(tenant {t} is at its limit of "
                  f"{tenant.channel_limit} calls)", " same => n,Congestion(2)",
                  " same => n,Hangup(34)"]
    return lines


def render_personal(tenant: TenantConfig, router_timeout: float = DEFAULT_ROUTER_TIMEOUT, *,
                    stasis_app: str = DEFAULT_STASIS_APP) -> list[str]:
    """The personal venue: one extension per personal number, each asking the bridge like
    a venue does (the bridge adds the user's own rules; the tenant's VTS decides) and
    looping over the steps of the user's plan (ring my phones, forward, follow-me,
    voicemail) until one answers. `phones` rings the devices the bridge wrote into
    AB_DIAL (from this tenant's `extensions`); every other kind Gosubs into this
    tenant's own context for it. With the bridge down (AGISTATUS) or no decision, the
    number's home phone rings for the ring time, then its mailbox takes the call."""
    personal = tenant.personal
    if personal is None:
        return []
    t = tenant.name
    kind_map = ",".join(f"{kind_variable(k)}={s}" for k, s in PERSONAL_KIND_CONTEXT.items())
    context = f"{t}-{var(kind_variable(var(AB_KIND)))}"
    ask, bridge_ok = route_request(personal.context, personal.driver,
                                   stasis_app=stasis_app)
    before, after = wait_bound(personal.driver, router_timeout)
    cursor, usable, retry, ask_next = failover(personal.driver)
    asked, other = labels(retry)
    lines = [f"; personal venue {personal.context} of tenant {t}: calls to its users' "
             "numbers", f"[{personal.context}]"]
    if before:  # the wait bound ran out: back to the asked number's fallback
        lines += [f"exten => T,1,Goto({personal.context},{var(AB_ASKED)},fallback)"]
    for number, home in personal.numbers.items():
        guard = [f"Set({AB_ASKED}={number})", *before] if before else []
        lines += [
            f"exten => {number},1,Set(CHANNEL(language)={tenant.language})",
            f" same => n,MSet({AB_LAST}=,{kind_map})",
            f" same => n(ask),MSet({AB_ACTION}=,{AB_DIAL}=,"
            f"{AB_DIAL_TIMEOUT}={DEFAULT_DIAL_TIMEOUT}{cursor})",
            *(f" same => n,{line}" for line in guard),
            f" same => n,{ask}",
            *(f" same => n,{line}" for line in after),
            f' same => n{asked},GotoIf($[{bridge_ok} & "{var(AB_ACTION)}" = '
            f'"{ACTION_ROUTE}"{usable}]?:other)',
            f" same => n,MSet({AB_LAST}={var(AB_KIND)}:{var(AB_TARGET)},{DIALSTATUS}=)",
            f' same => n,GotoIf($["{var(AB_KIND)}" = "{PHONES_KIND}"]?phones)',
            f" same => n,GotoIf($[${{DIALPLAN_EXISTS({context},{var(AB_TARGET)},1)}}]"
            "?:fallback)",
            f" same => n,Gosub({context},{var(AB_TARGET)},1)",
            f' same => n(next),GotoIf($["{var(DIALSTATUS)}" = "ANSWER"]?done:ask)',
            f' same => n(phones),GotoIf($["{var(AB_DIAL)}" = ""]?fallback)',
            f" same => n,Dial({var(AB_DIAL)},{var(AB_DIAL_TIMEOUT)})",
            " same => n,Goto(next)",
            " same => n(done),Hangup()",
            *retry,
            f' same => n{other},GotoIf($[{bridge_ok} & "{var(AB_ACTION)}" = '
            f'"{ACTION_REJECT}"]?reject)',
            f" same => n(fallback),Dial({tenant.extensions[home]},{personal.ring_time})",
            f' same => n,GotoIf($["{var(DIALSTATUS)}" = "ANSWER"]?done)',
            f" same => n,VoiceMail({number}@{personal.voicemail_context},u)",
            " same => n,Hangup()",
            f' same => n(reject),GotoIf($["{var(AB_CAUSE)}" = "congestion"]?congestion)',
            " same => n,Busy(2)",
            " same => n,Hangup(17)",
            " same => n(congestion),Congestion(2)",
            " same => n,Hangup(34)",
            *ask_next,
        ]
    return lines


def render_voicemail(tenant: TenantConfig) -> list[str]:
    """`<tenant>-voicemail`: each personal number's mailbox, as a route target."""
    personal = tenant.personal
    if personal is None:
        return []
    lines = [f"[{tenant_context(tenant.name, KIND_VOICEMAIL)}]"]
    for number in personal.numbers:
        lines += [f"exten => {number},1,VoiceMail({number}@{personal.voicemail_context},u)",
                  f" same => n,Set({DIALSTATUS}=ANSWER)", " same => n,Return()"]
    return lines


def render_mailboxes(config: BridgeConfig) -> str:
    """`ami-bridge/voicemail.conf`: a mailbox per personal number (include it from
    voicemail.conf). No PIN: a user sets one from the phone (VoiceMailMain)."""
    blocks = [["; Rendered by `ami-bridge conf render`: a mailbox per personal number. "
               "Include it from voicemail.conf."]]
    for tenant in sorted(config.tenants.values(), key=lambda t: t.name):
        if tenant.personal is None:
            continue
        blocks.append([f"[{tenant.personal.voicemail_context}]",
                       *(f"{n} => ,{tenant.name} {n}" for n in tenant.personal.numbers)])
    return "\n\n".join("\n".join(b) for b in blocks) + "\n"


def render_internal(tenant: TenantConfig) -> list[str]:
    lines = [f"[{tenant_context(tenant.name, KIND_EXTENSION)}]"]
    for ext, dial in tenant.extensions.items():
        lines += [f"exten => {ext},1,Dial({dial},${{AB_DIAL_TIMEOUT}})", " same => n,Return()"]
    return lines


def render_queues(tenant: TenantConfig) -> list[str]:
    lines = [f"[{tenant_context(tenant.name, KIND_QUEUE)}]"]
    for name in sorted(tenant.queue_configs):
        lines += [
            f"exten => {name},1,Queue({tenant.name}-{name},,,,${{AB_DIAL_TIMEOUT}})",
            ' same => n,Set(DIALSTATUS=${IF($["${QUEUESTATUS}" = "CONTINUE"]'
            '?ANSWER:NOANSWER)})',
            " same => n,Return()",
        ]
    return lines


def render_outbound(tenant: TenantConfig) -> list[str]:
    lines = [f"[{tenant_context(tenant.name, KIND_EXTERNAL)}]"]
    if tenant.outbound:
        dial = tenant.outbound.replace("{number}", f"${{FILTER({NUMBER_FILTER},${{EXTEN}})}}")
        for pattern in ("_+X.", "_X."):
            lines += [f"exten => {pattern},1,Dial({dial},${{AB_DIAL_TIMEOUT}})",
                      " same => n,Return()"]
    return lines


def render_tenant(tenant: TenantConfig, venues: Iterable[VenueConfig], *,
                  stasis_app: str = DEFAULT_STASIS_APP) -> str:
    venues = list(venues)
    blocks = [HEADER.format(source=_source(tenant)).rstrip("\n").split("\n")]
    blocks += [render_venue(tenant, v, stasis_app=stasis_app)
               for v in sorted(venues, key=lambda v: v.context) if not v.personal]
    blocks += [render_internal(tenant), render_queues(tenant), render_outbound(tenant)]
    personal = [v.router_timeout for v in venues if v.personal][:1] or [DEFAULT_ROUTER_TIMEOUT]
    blocks += [b for b in (render_personal(tenant, personal[0], stasis_app=stasis_app),
                           render_voicemail(tenant)) if b]
    return "\n\n".join("\n".join(block) for block in blocks) + "\n"


def render_queue_config(config: BridgeConfig) -> str:
    blocks = [["; Rendered by `ami-bridge conf render`: every tenant's queues, named "
               "<tenant>-<queue>."]]
    for tenant in sorted(config.tenants.values(), key=lambda t: t.name):
        for queue in sorted(tenant.queue_configs.values(), key=lambda q: q.name):
            if not queue.members:
                continue  # declared by name only: defined in hand-written queues config
            blocks.append([f"[{tenant.name}-{queue.name}]", f"strategy = {queue.strategy}",
                           f"timeout = {queue.timeout}",
                           *(f"member => {m}" for m in queue.members)])
    return "\n\n".join("\n".join(b) for b in blocks) + "\n"


def render_includes(config: BridgeConfig) -> str:
    lines = ["; Rendered by `ami-bridge conf render`. Include this file once from",
             '; extensions.conf: #include "ami-bridge/extensions.conf"', ""]
    lines += [f'#include "{OUTPUT_DIR}/tenants/{name}.conf"' for name in sorted(config.tenants)]
    return "\n".join(lines) + "\n"


def render_tree(config: BridgeConfig) -> dict[str, str]:
    """Relative path (under Asterisk's config directory) -> file content."""
    files = {f"{OUTPUT_DIR}/extensions.conf": render_includes(config),
             f"{OUTPUT_DIR}/queues.conf": render_queue_config(config)}
    if config.personal:
        files[f"{OUTPUT_DIR}/voicemail.conf"] = render_mailboxes(config)
    for name, tenant in config.tenants.items():
        venues = [v for v in config.venues.values() if v.tenant == name]
        files[f"{OUTPUT_DIR}/tenants/{name}.conf"] = render_tenant(
            tenant, venues, stasis_app=config.ari.app if config.ari else DEFAULT_STASIS_APP)
    return dict(sorted(files.items()))


def write_tree(files: dict[str, str], out: Path) -> list[str]:
    """Write the files atomically (temp file + rename); returns those that changed."""
    changed = []
    for relative, text in files.items():
        target = out / relative
        if target.exists() and target.read_text(encoding="utf-8") == text:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        changed.append(relative)
    return changed


def _source(tenant: TenantConfig) -> str:
    source = Path(tenant.source) if tenant.source else None
    if source is None:
        return f"tenant {tenant.name}"
    return f"{source.parent.name}/{source.name}" if source.name == "tenant.toml" else source.name
