"""The pop hub's pure parts: client frame parsing, the pop frame, refusal words, and the
hub's bookkeeping without sockets (offer, gone, waiting, expiry)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ami_bridge.personal.directory import Directory
from ami_bridge.personal.model import Portion, User
from ami_bridge.personal.pops import (
    MAX_FRAME,
    Frame,
    FrameError,
    Pop,
    PopHub,
    directory_saved,
    gone_words,
    parse_frame,
    pop_frame,
)

NOW = 1_800_000_000.0


def pop(call_id: str = "c1", asked: tuple[str, ...] = ("ann",), tenant: str = "acme",
        expires_at: float = NOW + 15) -> Pop:
    return Pop(call_id, tenant, asked[0], "2001", "+4930123", "Jane", asked,
               {"customer": "ACME"}, expires_at, "sales")


def test_valid_frames() -> None:
    assert parse_frame('{"type": "ping"}') == Frame("ping")
    assert parse_frame('{"type": "auth", "token": "abc"}') == Frame("auth", token="abc")
    assert parse_frame('{"type": "choose", "call": "c1", "choice": "take"}') == \
        Frame("choose", call="c1", choice="take")
    assert parse_frame('{"type": "choose", "call": "c1", "choice": "forward", '
                       '"target": "extension:1003"}') == \
        Frame("choose", call="c1", choice="forward", target="extension:1003")
    assert parse_frame('{"type": "choose", "call": "c1", "choice": "reject", '
                       '"target": ""}') == Frame("choose", call="c1", choice="reject")


@pytest.mark.parametrize(("text", "reason"), [
    ("", "not JSON"), ("{", "not JSON"), ("[1]", "not a JSON object"),
    ('{"type": "pong"}', "type must be one of auth, choose, ping"),
    ('{"type": "ping", "x": 1}', "unknown key 'x' in a ping frame"),
    ('{"type": "auth"}', "token is required"),
    ('{"type": "auth", "token": 5}', "token must be a string"),
    ('{"type": "auth", "token": "' + "t" * 257 + '"}', "token longer than 256 characters"),
    ('{"type": "choose", "call": "c1", "choice": "dance"}',
     "choice must be one of take, voicemail, forward, reject"),
    ('{"type": "choose", "call": "c\\r1", "choice": "take"}', "call contains CR, LF or NUL"),
    ('{"type": "choose", "call": "c1", "choice": "forward"}', "target is required"),
    ('{"type": "choose", "call": "c1", "choice": "vm", "target": "x"}',
     "choice must be one of take, voicemail, forward, reject"),
    ('{"type": "choose", "call": "c1", "choice": "take", "target": "x"}',
     "target goes with choice forward only"),
    ('{"type": "ping", "pad": "' + "x" * MAX_FRAME + '"}', "frame larger than 4096 bytes"),
])
def test_invalid_frames_name_why(text: str, reason: str) -> None:
    with pytest.raises(FrameError) as refused:
        parse_frame(text)
    assert str(refused.value) == reason


@given(st.one_of(st.text(max_size=300),
                 st.dictionaries(st.sampled_from(["type", "token", "call", "choice",
                                                  "target", "x"]),
                                 st.one_of(st.sampled_from(["auth", "ping", "choose", "take",
                                                            "forward", ""]),
                                           st.text(max_size=20), st.integers(), st.none()),
                                 max_size=6).map(json.dumps)))
def test_no_frame_raises_anything_but_frame_error(text: str) -> None:
    try:
        frame = parse_frame(text)
    except FrameError:
        return
    assert frame.type in ("auth", "ping", "choose")
    for value in (frame.token, frame.call, frame.target):
        assert not any(c in value for c in "\r\n\0")


def test_the_pop_frame_carries_the_receiving_users_saved_targets() -> None:
    frame = pop_frame(pop(), ("extension:1003",))
    assert frame == {"type": "pop", "call": {
        "call_id": "c1", "user_id": "ann", "number": "2001", "ani": "+4930123",
        "ani_name": "Jane", "lookup": {"customer": "ACME"}, "expires_at": NOW + 15,
        "group": "sales", "choices": ["take", "voicemail", "forward", "reject"],
        "saved": ["extension:1003"]}}
    json.dumps(frame)


def test_gone_words() -> None:
    assert gone_words("taken", "bob") == "the call was taken by bob"
    assert gone_words("taken", "") == "the call was taken"
    assert gone_words("abandoned", "") == "the caller hung up"
    assert gone_words("timeout", "") == "the call is no longer waiting (timed out)"


def test_the_hub_without_sockets_keeps_what_waits_for_whom() -> None:
    now = [NOW]
    hub = PopHub(clock=lambda: now[0])
    hub.offer(pop("c1", ("ann", "bob")))
    hub.offer(pop("c2", ("bob",), expires_at=NOW + 5))
    hub.offer(pop("c3", ("bob",), tenant="globex"))
    hub.offer(pop("c4", ("bob",), expires_at=NOW))  # expired already: not kept
    assert [p.call_id for p in hub.waiting("acme", "bob")] == ["c1", "c2"]
    assert [p.call_id for p in hub.waiting("acme", "ann")] == ["c1"]
    assert [p.call_id for p in hub.waiting("globex", "bob")] == ["c3"]
    assert hub.waiting("globex", "ann") == []
    now[0] = NOW + 5
    assert [p.call_id for p in hub.waiting("acme", "bob")] == ["c1"]
    hub.gone("c1", "taken", by="ann")
    hub.gone("c1", "taken", by="ann")  # again, and unknown calls: nothing happens
    hub.gone("nope", "abandoned")
    assert hub.waiting("acme", "bob") == []
    assert hub.status() == {"clients": 0, "pops": 1, "dropped": 0}
    with pytest.raises(ValueError, match="asks nobody"):
        hub.offer(Pop("c5", "acme", "ann", "2001", "", "", (), {}, NOW + 60))


def test_directory_saved_reads_the_users_current_portion() -> None:
    directory = Directory()
    saved = directory_saved(directory)
    assert saved("acme", "ann") == ()
    directory.put_user(User(tenant="acme", user_id="ann", number="2001"))
    assert saved("acme", "ann") == ()
    directory.put_portion(Portion("acme", "ann", 2, {"saved": ["extension:1003"]}))
    assert saved("acme", "ann") == ("extension:1003",)
    assert saved("globex", "ann") == ()
