"""Header lookup of a parsed AMI block: the lazy lower-cased index behaves like a scan.

`Event.get` / `Response.get` build a key index once per block (the tracker asks ~10
headers of every event); it must answer exactly what a case-insensitive scan of
`fields` in wire order would, and stay invisible to equality and repr.
"""

from __future__ import annotations

import random

from ami_bridge.ami.protocol import Event, Response, make_response


def scan(fields: tuple[tuple[str, str], ...], key: str) -> str | None:
    return next((v for k, v in fields if k.lower() == key.lower()), None)


def test_first_occurrence_wins_case_insensitively() -> None:
    event = Event(name="X", fields=(("Event", "X"), ("uniqueid", "a"), ("Uniqueid", "b"),
                                    ("ChanVariable", "1"), ("CHANVARIABLE", "2")))
    assert event.get("UNIQUEID") == "a"
    assert event.get("Uniqueid") == "a"
    assert event.get("chanvariable") == "1"
    assert event.get_all("ChanVariable") == ["1", "2"]
    assert event.get("Missing") is None
    assert event.get("Missing", "d") == "d"
    assert event.index() is event.index()  # built once


def test_index_is_invisible_to_equality_and_repr() -> None:
    fields = (("Event", "Hangup"), ("Uniqueid", "1.1"))
    used, fresh = Event(name="Hangup", fields=fields), Event(name="Hangup", fields=fields)
    assert used.get("uniqueid") == "1.1"
    assert used == fresh
    assert repr(used) == repr(fresh)
    response = make_response((("Response", "Success"), ("ActionID", "a1")))
    assert response.get("actionid") == "a1"
    assert response == Response(action_id="a1", success=True, message=None,
                                fields=response.fields)


def test_random_blocks_match_a_scan() -> None:
    rnd = random.Random(7)
    keys = ["Event", "Uniqueid", "UNIQUEID", "Channel", "channel", "Linkedid", "A-b", "x"]
    for _ in range(2000):
        fields = tuple((rnd.choice(keys), str(rnd.randrange(5)))
                       for _ in range(rnd.randrange(1, 8)))
        event = Event(name="E", fields=fields)
        for key in [*keys, "nope"]:
            assert event.get(key) == scan(fields, key), (fields, key)
