"""Live call pops: the hub between the intermediary and the users' workstations.

Contract. The intermediary `offer`s a `Pop` (a call it keeps pending while the users it
asks choose) and says when the call is `gone` (taken, timed out, abandoned); both are
synchronous and never wait: every frame for a socket goes into that socket's queue of at
most `max_queued` frames, written out by one task per socket, and a socket whose queue is
full (a client that stopped reading) is dropped, its connection aborted, so it can delay
nobody else nor grow memory. `handle` serves `GET /api/v1/ws` (docs/api.md): the first
frame must be `{"type": "auth", "token": ...}` within `auth_timeout` seconds and name a
session `authenticate` accepts (`session_authenticator`: the API's own sessions), else the
socket is closed with 4401; then `hello`, then every pop still waiting for that (tenant,
user). A pop goes only to the sockets of the users it asks, in its tenant. A choice is
passed to `decide` only if it is the first valid one for a call this very socket was
offered, not gone, not expired; any other is answered `refused`, in the same words for a
call that does not exist and one the socket was never offered. A pop whose `expires_at`
has passed is gone (reason timeout) at the hub's next step. Bad frames are answered
`error`; nothing a client sends raises here. Frame parsing (`parse_frame`) is pure.

Across bridges (several bridges on one PostgreSQL store, ami_bridge.cluster.bus): with
`peer` set, every pop this bridge offers, its end (`gone`) and every session or user
ended here are published; `on_peer` takes the other bridges' (`PEER_KINDS`). A pop from
bridge B goes to this bridge's sockets of the users it asks, in its tenant, exactly as a
local one; a choice for it is checked here as a local one is, then sent to B, which
alone decides (its first valid choice wins) and answers; the socket gets `accepted` or
`refused` when the answer comes, or `refused` with `REMOTE_NO_ANSWER` after
`REMOTE_ANSWER_TIMEOUT` seconds. The local path (`decide`, synchronous) is unchanged.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSCloseCode, WSMsgType, web

if TYPE_CHECKING:
    from ami_bridge.personal.directory import Directory
    from ami_bridge.personal.model import Store

log = logging.getLogger(__name__)

# The workstation design (issue 11) fixes these: aiohttp's 30 s ping/pong keeps day-long
# pages alive through NATs and proxies; no frame a client sends needs more than 4 KiB.
HEARTBEAT = 30.0
MAX_FRAME = 4096
# A page opens the socket and sends its token at once; 5 s covers a slow phone link
# while an idle unauthenticated socket is not kept for long.
AUTH_TIMEOUT = 5.0
# Frames waiting for one socket. A page that reads keeps 0 or 1 here; 64 pops at once is
# more than a tenant's pending calls ask of one user. A pop frame is at most ~4 KiB
# (8 lookup entries, 20 saved targets, each <= 64 characters): <= 256 KiB per socket.
MAX_QUEUED = 64
# Sockets of one user (tabs, devices); the oldest goes first: a page reloaded after a
# network drop leaves a dead socket that the heartbeat finds only 30 s later.
MAX_SOCKETS_PER_USER = 16
# Calls gone lately, remembered to say why a late choice is refused ("taken by bob").
MAX_GONE = 4096
MAX_TOKEN = 256  # as ami_bridge.api.auth.bearer
MAX_CALL_ID = 128
MAX_TARGET = 128  # "external:" + a number of at most 20 digits fits many times over

CLOSE_WAIT = 2.0  # seconds a client has to answer our close at shutdown (loopback: ms)
CLOSE_UNAUTHORIZED = 4401  # the design's code: 4000 + HTTP 401
CLOSE_INTERNAL = 1011  # RFC 6455: the server met a condition it cannot handle

# A choice sent to the bridge that keeps the call: the bus takes milliseconds; past this
# the page must not wait (the call's own timeout is seconds longer, in general).
REMOTE_ANSWER_TIMEOUT = 3.0
REMOTE_NO_ANSWER = ("the bridge routing this call did not answer in time; the choice "
                    "may not have been taken")
MAX_REMOTE_CHOICES = 1024  # choices waiting for another bridge's answer
PEER_KINDS = ("pop", "gone", "choose", "answer", "pops_wanted", "end_session", "end_user")

CHOICES = ("take", "voicemail", "forward", "reject")
GONE_REASONS = ("taken", "timeout", "abandoned")
UNKNOWN_CALL = "no such call is waiting for you"
_FORBIDDEN_CHARS = ("\r", "\n", "\0")
_FRAME_KEYS = {"auth": {"type", "token"}, "ping": {"type"},
               "choose": {"type", "call", "choice", "target"}}

Decide = Callable[[str, str, str, str, str], str | None]  # call_id, tenant, user_id,
# choice, target -> None (taken) or why not
Authenticate = Callable[[str], Awaitable[tuple[str, str] | None]]  # token -> (tenant, user)
Saved = Callable[[str, str], tuple[str, ...]]  # (tenant, user_id) -> saved targets
Publish = Callable[[str, Mapping[str, Any], str], object]  # kind, body, to ("": all)


@dataclass(frozen=True)
class Pop:
    call_id: str  # the intermediary's handle (opaque)
    tenant: str
    user_id: str  # the dialled user
    number: str  # the dialled personal number
    ani: str
    ani_name: str
    asked: tuple[str, ...]  # user ids whose workstations get the pop
    lookup: Mapping[str, str]
    expires_at: float  # Unix time
    group: str = ""


@dataclass(frozen=True)
class Frame:
    """One valid client frame: `type` is auth, ping or choose; unused fields are ""."""

    type: str
    token: str = ""
    call: str = ""
    choice: str = ""
    target: str = ""


class FrameError(Exception):
    """A client frame refused: the reason goes back in an `error` frame."""


def parse_frame(text: str) -> Frame:
    """The client's frame, or FrameError saying what is wrong with it."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FRAME:
        raise FrameError(f"frame larger than {MAX_FRAME} bytes")
    try:
        raw = json.loads(text)
    except ValueError:
        raise FrameError("not JSON") from None
    if not isinstance(raw, dict):
        raise FrameError("not a JSON object")
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in _FRAME_KEYS:
        raise FrameError(f"type must be one of {', '.join(sorted(_FRAME_KEYS))}")
    unknown = sorted(set(raw) - _FRAME_KEYS[kind])
    if unknown:
        raise FrameError(f"unknown key {unknown[0]!r} in a {kind} frame"[:200])
    if kind == "ping":
        return Frame(kind)
    if kind == "auth":
        return Frame(kind, token=_text(raw, "token", MAX_TOKEN))
    choice = _text(raw, "choice", 16)
    if choice not in CHOICES:
        raise FrameError(f"choice must be one of {', '.join(CHOICES)}")
    target = _text(raw, "target", MAX_TARGET, required=choice == "forward")
    if target and choice != "forward":
        raise FrameError("target goes with choice forward only")
    return Frame(kind, call=_text(raw, "call", MAX_CALL_ID), choice=choice, target=target)


def _text(raw: Mapping[str, Any], key: str, max_len: int, *, required: bool = True) -> str:
    value = raw.get(key, "")
    if not isinstance(value, str):
        raise FrameError(f"{key} must be a string")
    if required and not value:
        raise FrameError(f"{key} is required")
    if len(value) > max_len:
        raise FrameError(f"{key} longer than {max_len} characters")
    if any(c in value for c in _FORBIDDEN_CHARS):
        raise FrameError(f"{key} contains CR, LF or NUL")
    return value


def pop_frame(pop: Pop, saved: tuple[str, ...]) -> dict[str, Any]:
    """The `pop` frame one user's sockets get (`saved`: that user's own targets)."""
    return {"type": "pop", "call": {
        "call_id": pop.call_id, "user_id": pop.user_id, "number": pop.number,
        "ani": pop.ani, "ani_name": pop.ani_name, "lookup": dict(pop.lookup),
        "expires_at": pop.expires_at, "group": pop.group, "choices": list(CHOICES),
        "saved": list(saved)}}


def pop_json(pop: Pop) -> dict[str, Any]:
    """A pop as the bus carries it to the other bridges."""
    return {"call_id": pop.call_id, "tenant": pop.tenant, "user_id": pop.user_id,
            "number": pop.number, "ani": pop.ani, "ani_name": pop.ani_name,
            "asked": list(pop.asked), "lookup": dict(pop.lookup),
            "expires_at": pop.expires_at, "group": pop.group}


def pop_from_json(raw: Mapping[str, Any]) -> Pop:
    """The pop another bridge published, or ValueError saying what is wrong."""
    texts = {key: raw.get(key) for key in ("call_id", "tenant", "user_id", "number", "ani",
                                           "ani_name", "group")}
    asked, lookup, expires = raw.get("asked"), raw.get("lookup"), raw.get("expires_at")
    if not all(isinstance(v, str) for v in texts.values()) or not texts["call_id"] \
            or not isinstance(asked, list) or not asked \
            or not all(isinstance(a, str) for a in asked) \
            or not isinstance(lookup, dict) \
            or not all(isinstance(v, str) for v in lookup.values()) \
            or not isinstance(expires, (int, float)):
        raise ValueError(f"a pop from another bridge is malformed: {str(raw)[:120]}")
    t = {k: str(v) for k, v in texts.items()}
    return Pop(call_id=t["call_id"], tenant=t["tenant"], user_id=t["user_id"],
               number=t["number"], ani=t["ani"], ani_name=t["ani_name"],
               asked=tuple(asked), lookup=dict(lookup), expires_at=float(expires),
               group=t["group"])


def gone_words(reason: str, by: str) -> str:
    """Why a choice for a gone call is refused, as a person reads it."""
    if reason == "taken":
        return f"the call was taken by {by}" if by else "the call was taken"
    if reason == "abandoned":
        return "the caller hung up"
    return "the call is no longer waiting (timed out)"


def session_authenticator(store: Store, clock: Callable[[], float] = time.time
                          ) -> Authenticate:
    """The API's own sessions (`store.get_session` of the token's SHA-256) whose user
    still exists: a token from `POST /api/v1/login` works here as it does there."""
    from ami_bridge.api.auth import token_hash

    async def authenticate(token: str) -> tuple[str, str] | None:
        session = await store.get_session(token_hash(token), clock())
        if session is None or await store.get_user(session.tenant, session.user_id) is None:
            return None
        return session.tenant, session.user_id

    return authenticate


def directory_saved(directory: Directory) -> Saved:
    """A user's saved forward targets, read from the directory's current portion."""
    def saved(tenant: str, user_id: str) -> tuple[str, ...]:
        user = directory.user(tenant, user_id)
        found = directory.by_number(tenant, user.number) if user is not None else None
        if found is None or found[0].user_id != user_id:
            return ()
        targets = found[1].body.get("saved", ())
        return tuple(t for t in targets if isinstance(t, str))

    return saved


class _Socket:
    """One authenticated workstation socket and its bounded outgoing queue."""

    def __init__(self, number: int, tenant: str, user_id: str, ws: web.WebSocketResponse,
                 transport: asyncio.Transport | None, max_queued: int) -> None:
        self.number = number
        self.tenant = tenant
        self.user_id = user_id
        self.ws = ws
        self.transport = transport
        self.queue: asyncio.Queue[str] = asyncio.Queue(max_queued)
        self.writer: asyncio.Task[None] | None = None
        self.dropped = False
        self.session = ""  # the SHA-256 of the token it authenticated with (logout)


@dataclass
class _Live:
    """A pop still waiting: who got it, whether a choice was taken."""

    pop: Pop
    receivers: set[int] = field(default_factory=set)  # socket numbers
    taken_by: str = ""
    deciding: bool = False
    held: tuple[str, str] | None = None  # a gone(reason, by) that came during decide
    origin: str = ""  # the bridge that keeps the call ("": this one)


@dataclass(frozen=True)
class _Asked:
    """A choice sent to another bridge, waiting for its answer."""

    socket: int
    call_id: str
    user_id: str
    timer: asyncio.TimerHandle


@dataclass(frozen=True)
class _Gone:
    reason: str
    by: str
    receivers: frozenset[int]


class PopHub:
    def __init__(self, *, clock: Callable[[], float] = time.time,
                 authenticate: Authenticate | None = None, saved: Saved | None = None,
                 max_queued: int = MAX_QUEUED, auth_timeout: float = AUTH_TIMEOUT) -> None:
        self.decide: Decide | None = None  # set by the daemon once the intermediary exists
        self.authenticate = authenticate  # None: every token is refused
        self.saved: Saved = saved or (lambda tenant, user_id: ())
        self.auth_timeout = auth_timeout
        self._clock = clock
        self._max_queued = max_queued
        self._numbers = itertools.count(1)
        self._sockets: dict[int, _Socket] = {}
        self._by_user: dict[tuple[str, str], dict[int, _Socket]] = {}
        self._pops: dict[str, _Live] = {}
        self._gone: OrderedDict[str, _Gone] = OrderedDict()
        self.dropped = 0  # sockets dropped for not reading
        # Across bridges (ami_bridge.cluster.bus): set by the personal service.
        self.peer: Publish | None = None
        self._asked: dict[str, _Asked] = {}  # request id -> the socket waiting
        self._requests = itertools.count(1)
        self.remote_timeouts = 0

    # -- the intermediary's side (sync, never waits) ----------------------------------------
    def offer(self, pop: Pop) -> None:
        """Send the pop to every open socket of the users it asks (its tenant only)."""
        if self._offer(pop, ""):
            self._publish("pop", pop_json(pop))

    def _offer(self, pop: Pop, origin: str) -> bool:
        """False if it was not sent (expired, or a peer's pop we have already)."""
        self._expire()
        if not pop.asked:
            raise ValueError(f"pop of call {pop.call_id!r}: asks nobody")
        if pop.expires_at <= self._clock():
            log.info("pop of call %s offered after it expired; not sent", pop.call_id)
            return False
        self._gone.pop(pop.call_id, None)
        live = self._pops.get(pop.call_id)
        if live is None:
            live = self._pops[pop.call_id] = _Live(pop, origin=origin)
        elif origin and live.pop == pop:  # a peer's pop sent again (a resync): known
            return False
        else:  # offered again (changed): everyone asked gets the new one
            live.pop = pop
        for user_id in dict.fromkeys(pop.asked):
            sockets = self._by_user.get((pop.tenant, user_id))
            if not sockets:
                continue
            frame = _dump(pop_frame(pop, self._saved(pop.tenant, user_id)))
            for sock in list(sockets.values()):
                live.receivers.add(sock.number)
                self._send(sock, frame)
        return True

    def gone(self, call_id: str, reason: str, by: str = "") -> None:
        """The call is no longer waiting: tell every socket that got its pop."""
        if reason not in GONE_REASONS:
            raise ValueError(f"gone({call_id!r}): reason must be one of "
                             f"{', '.join(GONE_REASONS)}, got {reason!r}")
        live = self._pops.get(call_id)
        if live is None:  # unknown, or gone already (expired here first): nothing to say
            return
        if live.deciding:  # called from inside decide: answer the chooser first
            live.held = (reason, by)
            return
        self._finish(call_id, live, reason, by)
        self._expire()

    def waiting(self, tenant: str, user_id: str) -> list[Pop]:
        """The pops still waiting for this user, oldest first."""
        self._expire()
        return [live.pop for live in self._pops.values()
                if live.pop.tenant == tenant and user_id in live.pop.asked
                and not live.taken_by]

    def status(self) -> dict[str, int]:
        self._expire()
        status = {"clients": len(self._sockets), "pops": len(self._pops),
                  "dropped": self.dropped}
        if self.peer is not None:  # across bridges only
            status |= {"remote_choices": len(self._asked),
                       "remote_timeouts": self.remote_timeouts}
        return status

    async def close(self) -> None:
        """Close every socket with 1001 (going away): the bridge stops and the pages will
        reconnect. The API's on_shutdown: aiohttp would otherwise wait for each open
        socket's handler until its shutdown timeout."""
        sockets = list(self._sockets.values())
        await asyncio.gather(*(self._close(sock) for sock in sockets))

    async def _close(self, sock: _Socket) -> None:
        try:
            await asyncio.wait_for(sock.ws.close(code=WSCloseCode.GOING_AWAY,
                                                 message=b"the bridge is stopping"),
                                   CLOSE_WAIT)
        except Exception:  # no answer, or broken already
            self._drop(sock, "no answer to the close")

    def _finish(self, call_id: str, live: _Live, reason: str, by: str) -> None:
        del self._pops[call_id]
        if not live.origin:  # ours: the other bridges' sockets hear it too
            self._publish("gone", {"call": call_id, "reason": reason, "by": by})
        self._gone[call_id] = _Gone(reason, by, frozenset(live.receivers))
        self._gone.move_to_end(call_id)
        while len(self._gone) > MAX_GONE:
            self._gone.popitem(last=False)
        frame = _dump({"type": "gone", "call": call_id, "reason": reason, "by": by})
        for number in live.receivers:
            sock = self._sockets.get(number)
            if sock is not None:
                self._send(sock, frame)

    def _expire(self) -> None:
        now = self._clock()
        for call_id, live in list(self._pops.items()):
            if live.pop.expires_at <= now and not live.deciding:
                self._finish(call_id, live, "timeout", "")

    def _saved(self, tenant: str, user_id: str) -> tuple[str, ...]:
        try:
            return tuple(self.saved(tenant, user_id))
        except Exception:  # the daemon's reader: a pop still goes out, without targets
            log.exception("saved targets of %s/%s could not be read", tenant, user_id)
            return ()

    # -- a client's choice --------------------------------------------------------------------
    def _choose(self, sock: _Socket, frame: Frame) -> None:
        self._expire()
        call_id = frame.call
        live = self._pops.get(call_id)
        if live is None or sock.number not in live.receivers:
            gone = self._gone.get(call_id)
            offered = gone is not None and sock.number in gone.receivers
            self._refuse(sock, call_id, gone_words(gone.reason, gone.by) if gone and offered
                         else UNKNOWN_CALL)
            return
        if live.taken_by:
            self._refuse(sock, call_id, gone_words("taken", live.taken_by))
            return
        if frame.choice == "forward" and frame.target not in self._saved(sock.tenant,
                                                                          sock.user_id):
            self._refuse(sock, call_id, f"{frame.target} is not one of your saved targets")
            return
        if live.origin:
            self._ask_origin(sock, live, frame)
            return
        decide = self.decide
        if decide is None:
            self._refuse(sock, call_id, "the bridge takes no choices yet; try again")
            return
        live.deciding = True
        try:
            answer = decide(call_id, live.pop.tenant, sock.user_id, frame.choice,
                            frame.target)
        except Exception:
            log.exception("decide failed for call %s (%s of %s chose %s)", call_id,
                          sock.user_id, sock.tenant, frame.choice)
            answer = "internal error"
        finally:
            live.deciding = False
        if answer is None:
            live.taken_by = sock.user_id
            self._send(sock, _dump({"type": "accepted", "call": call_id}))
        else:
            self._refuse(sock, call_id, answer)
        if live.held is not None and self._pops.get(call_id) is live:
            reason, by = live.held
            self._finish(call_id, live, reason, by)

    # -- across bridges -------------------------------------------------------------------
    def _publish(self, kind: str, body: Mapping[str, Any], to: str = "") -> None:
        if self.peer is not None:
            self.peer(kind, body, to)

    def _ask_origin(self, sock: _Socket, live: _Live, frame: Frame) -> None:
        """A choice for another bridge's call: sent there; the socket waits for its
        answer (`on_peer` "answer") or the timeout."""
        if len(self._asked) >= MAX_REMOTE_CHOICES:
            self._refuse(sock, frame.call, "too many choices waiting; try again")
            return
        request = f"{next(self._requests)}"
        timer = asyncio.get_running_loop().call_later(
            REMOTE_ANSWER_TIMEOUT, self._no_answer, request)
        self._asked[request] = _Asked(sock.number, frame.call, sock.user_id, timer)
        self._publish("choose", {"req": request, "call": frame.call,
                                 "tenant": live.pop.tenant, "user": sock.user_id,
                                 "choice": frame.choice, "target": frame.target},
                      live.origin)

    def _no_answer(self, request: str) -> None:
        asked = self._asked.pop(request, None)
        if asked is None:
            return
        self.remote_timeouts += 1
        log.warning("call %s: no answer from the bridge keeping it within %.0f s",
                    asked.call_id, REMOTE_ANSWER_TIMEOUT)
        sock = self._sockets.get(asked.socket)
        if sock is not None:
            self._refuse(sock, asked.call_id, REMOTE_NO_ANSWER)

    def on_peer(self, sender: str, kind: str, body: Mapping[str, Any]) -> None:
        """A message of `PEER_KINDS` from another bridge (the bus's subscriber)."""
        if kind == "pop":
            self._offer(pop_from_json(body), sender)
        elif kind == "gone":
            call_id = str(body.get("call", ""))
            live = self._pops.get(call_id)
            reason = str(body.get("reason", ""))
            if live is not None and live.origin == sender and reason in GONE_REASONS:
                self._finish(call_id, live, reason, str(body.get("by", "")))
        elif kind == "choose":
            answer = self._decide_for_peer(body)
            self._publish("answer", {"req": body.get("req"), "call": body.get("call"),
                                     "refused": answer}, sender)
            self._release_held(str(body.get("call", "")))
        elif kind == "answer":
            self._answered(body)
        elif kind == "pops_wanted":
            for live in list(self._pops.values()):
                if not live.origin and not live.taken_by:
                    self._publish("pop", pop_json(live.pop), sender)
        elif kind == "end_session":
            self._end_session(str(body.get("session", "")))
        elif kind == "end_user":
            self._end_user(str(body.get("tenant", "")), str(body.get("user", "")))

    def resync(self) -> None:
        """Messages may have been missed (the bus reconnected): ask for the pops the
        other bridges keep."""
        self._publish("pops_wanted", {})

    def _decide_for_peer(self, body: Mapping[str, Any]) -> str | None:
        """Another bridge's socket chose for a call of ours: None (taken) or why not."""
        self._expire()
        call_id, tenant, user_id = (str(body.get(k, "")) for k in ("call", "tenant", "user"))
        choice, target = str(body.get("choice", "")), str(body.get("target", ""))
        live = self._pops.get(call_id)
        if live is None or live.origin:
            gone = self._gone.get(call_id)
            return gone_words(gone.reason, gone.by) if gone is not None else UNKNOWN_CALL
        if live.pop.tenant != tenant or user_id not in live.pop.asked:
            return UNKNOWN_CALL  # the same words as for a call that does not exist
        if live.taken_by:
            return gone_words("taken", live.taken_by)
        if self.decide is None:
            return "the bridge takes no choices yet; try again"
        live.deciding = True
        try:
            answer = self.decide(call_id, tenant, user_id, choice, target)
        except Exception:
            log.exception("decide failed for call %s (%s of %s chose %s on another bridge)",
                          call_id, user_id, tenant, choice)
            answer = "internal error"
        finally:
            live.deciding = False
        if answer is None:
            live.taken_by = user_id
        return answer

    def _release_held(self, call_id: str) -> None:
        live = self._pops.get(call_id)
        if live is not None and live.held is not None:
            reason, by = live.held
            self._finish(call_id, live, reason, by)

    def _answered(self, body: Mapping[str, Any]) -> None:
        asked = self._asked.pop(str(body.get("req", "")), None)
        if asked is None:  # timed out already, or not ours
            return
        asked.timer.cancel()
        sock = self._sockets.get(asked.socket)
        refused = body.get("refused")
        live = self._pops.get(asked.call_id)
        if refused is None and live is not None:
            live.taken_by = asked.user_id
        if sock is None:
            return
        if refused is None:
            self._send(sock, _dump({"type": "accepted", "call": asked.call_id}))
        else:
            self._refuse(sock, asked.call_id, str(refused)[:200])

    def _refuse(self, sock: _Socket, call_id: str, reason: str) -> None:
        self._send(sock, _dump({"type": "refused", "call": call_id, "reason": reason}))

    # -- sockets ------------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """GET /api/v1/ws."""
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=MAX_FRAME)
        await ws.prepare(request)  # not an upgrade: aiohttp's 400, answered by the API
        try:
            who = await self._auth(ws)
        except Exception:
            log.exception("workstation authentication failed")
            await ws.close(code=CLOSE_INTERNAL, message=b"internal error")
            return ws
        if who is None:
            await ws.close(code=CLOSE_UNAUTHORIZED, message=b"authentication required")
            return ws
        sock = self._register(who[0], who[1], ws, request.transport)
        sock.session = who[2]
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    self._receive(sock, message.data)
                elif message.type == WSMsgType.BINARY:
                    self._error(sock, "text frames only")
                else:  # ERROR: a frame over MAX_FRAME (aiohttp closes with 1009) or a
                    break  # broken connection
        finally:
            self._unregister(sock)
        return ws

    async def _auth(self, ws: web.WebSocketResponse) -> tuple[str, str, str] | None:
        """(tenant, user id, the token's SHA-256) of a socket whose first frame
        authenticates it, else None."""
        try:
            message = await ws.receive(timeout=self.auth_timeout)
        except TimeoutError:
            return None
        if message.type != WSMsgType.TEXT or self.authenticate is None:
            return None
        try:
            frame = parse_frame(message.data)
        except FrameError:
            return None
        if frame.type != "auth":
            return None
        from ami_bridge.api.auth import token_hash  # the API's own spelling of a session

        who = await self.authenticate(frame.token)
        return None if who is None else (*who, token_hash(frame.token))

    def _register(self, tenant: str, user_id: str, ws: web.WebSocketResponse,
                  transport: asyncio.Transport | None) -> _Socket:
        sock = _Socket(next(self._numbers), tenant, user_id, ws, transport, self._max_queued)
        mine = self._by_user.setdefault((tenant, user_id), {})
        while len(mine) >= MAX_SOCKETS_PER_USER:
            self._drop(next(iter(mine.values())), "too many sockets for one user")
        mine[sock.number] = sock
        self._sockets[sock.number] = sock
        sock.writer = asyncio.get_running_loop().create_task(self._write(sock))
        self._send(sock, _dump({"type": "hello", "tenant": tenant, "user": user_id}))
        saved = self._saved(tenant, user_id)
        for pop in self.waiting(tenant, user_id):
            self._pops[pop.call_id].receivers.add(sock.number)
            self._send(sock, _dump(pop_frame(pop, saved)))
        return sock

    def end_session(self, session: str) -> int:
        """Close the sockets that authenticated with one session (`session`: the token's
        SHA-256, as the store keeps it): a logout takes its sockets with it, on every
        bridge. A refreshed token leaves them open (the page keeps its socket across
        refreshes)."""
        self._publish("end_session", {"session": session})
        return self._end_session(session)

    def _end_session(self, session: str) -> int:
        if not session:
            return 0
        sockets = [sock for sock in self._sockets.values() if sock.session == session]
        for sock in sockets:
            self._drop(sock, "its session was logged out", slow=False)
        return len(sockets)

    def end_user(self, tenant: str, user_id: str) -> int:
        """Close every socket of a user (a new password ends the old sessions: their
        sockets go too, on every bridge); returns how many here. The page logs in again."""
        self._publish("end_user", {"tenant": tenant, "user": user_id})
        return self._end_user(tenant, user_id)

    def _end_user(self, tenant: str, user_id: str) -> int:
        sockets = list(self._by_user.get((tenant, user_id), {}).values())
        for sock in sockets:
            self._drop(sock, "the user's sessions ended (new password)", slow=False)
        return len(sockets)

    def _unregister(self, sock: _Socket) -> None:
        self._sockets.pop(sock.number, None)
        mine = self._by_user.get((sock.tenant, sock.user_id))
        if mine is not None:
            mine.pop(sock.number, None)
            if not mine:
                del self._by_user[(sock.tenant, sock.user_id)]
        if sock.writer is not None and sock.writer is not asyncio.current_task():
            sock.writer.cancel()

    def _drop(self, sock: _Socket, why: str, *, slow: bool = True) -> None:
        """Abort a socket: it is not read (or broken; `slow`, counted in `dropped`), or
        its user's sessions ended; the others must not wait for it."""
        if sock.dropped:
            return
        sock.dropped = True
        self.dropped += int(slow)
        log.warning("dropping the workstation socket of %s of %s: %s", sock.user_id,
                    sock.tenant, why)
        self._unregister(sock)
        if sock.transport is not None:
            sock.transport.abort()  # the handler's read loop ends; no close handshake

    def _send(self, sock: _Socket, text: str) -> None:
        if sock.dropped:
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug("ws %s %s/%s -> %s", sock.number, sock.tenant, sock.user_id, text)
        try:
            sock.queue.put_nowait(text)
        except asyncio.QueueFull:
            self._drop(sock, f"{self._max_queued} frames unread")

    async def _write(self, sock: _Socket) -> None:
        try:
            while True:
                text = await sock.queue.get()
                await sock.ws.send_str(text)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # connection reset or closing: the socket is done
            self._drop(sock, f"send failed: {exc!r}")

    def _receive(self, sock: _Socket, text: str) -> None:
        try:
            frame = parse_frame(text)
        except FrameError as exc:
            # Not the text itself: a malformed auth frame may hold a token.
            log.debug("ws %s %s/%s <- a frame refused: %s", sock.number, sock.tenant,
                      sock.user_id, exc)
            self._error(sock, str(exc))
            return
        if frame.type != "auth":  # an auth frame's token is never logged
            log.debug("ws %s %s/%s <- %s", sock.number, sock.tenant, sock.user_id, frame)
        if frame.type == "ping":
            self._send(sock, _dump({"type": "pong"}))
        elif frame.type == "auth":
            self._error(sock, "already authenticated")
        else:
            self._choose(sock, frame)

    def _error(self, sock: _Socket, reason: str) -> None:
        self._send(sock, _dump({"type": "error", "reason": reason}))


def _dump(frame: Mapping[str, Any]) -> str:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))
