"""Writes the byte-exact AMI transcript corpus next to this file; run it to regenerate.

`real_session.ami` is a raw capture from Asterisk 22.10 in the sandbox (a capture user
with read=all: Login, Ping, one acme call answered by the operator, CoreShowChannels,
QueueStatus, DeviceStateList, QueuePause, two Commands, a failing Redirect, Logoff); it
is committed as captured and never regenerated. Every other `*.ami` file is written
here from block lists, with exact CRLF or LF bytes, together with `*.expected.json`: the
messages a correct parser yields, computed by the naive oracle below (split on the blank
line, then on ": "), which shares no code with ami_bridge.ami.protocol. Broken inputs
get `*.error.txt` holding a substring of the expected RemoteProtocolError instead.
Events of call flows the sandbox cannot produce with SIPp alone (hold, transfers, Local
channels, no answer, busy) follow the field layout of the Asterisk 22 AMI docs.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
GREETING = b"Asterisk Call Manager/11.0.0\r\n"
Pairs = list[tuple[str, str]]


def oracle(data: bytes, eol: bytes = b"\r\n") -> list[dict[str, object]]:
    """Naive reference parse of a well-formed transcript (no bounds, no errors)."""
    first, _, rest = data.partition(eol)
    out: list[dict[str, object]] = [{"type": "greeting", "version": first.decode()[22:]}]
    for block in rest.split(eol + eol):
        if not block.strip():
            continue
        pairs = []
        for line in block.split(eol):
            key, _, value = line.decode("utf-8", "replace").partition(":")
            pairs.append([key, value[1:] if value.startswith(" ") else value])
        kind = "response" if pairs[0][0] == "Response" else "event"
        out.append({"type": kind, "fields": pairs})
    return out


def encode(blocks: list[Pairs], eol: bytes = b"\r\n", greeting: bool = True) -> bytes:
    body = b"".join(
        b"".join(f"{k}: {v}".encode() + eol for k, v in block) + eol for block in blocks
    )
    return (GREETING.replace(b"\r\n", eol) if greeting else b"") + body


def real_blocks() -> list[bytes]:
    raw = (HERE / "real_session.ami").read_bytes()
    _, _, rest = raw.partition(b"\r\n")
    return [b + b"\r\n\r\n" for b in rest.split(b"\r\n\r\n") if b]


def snap(prefix: str, channel: str, uid: str, lid: str, ctx: str, exten: str,
         state: int = 6) -> Pairs:
    """A channel snapshot as Asterisk 22 prints it, with an optional key prefix."""
    desc = {0: "Down", 4: "Ring", 5: "Ringing", 6: "Up"}[state]
    return [
        (f"{prefix}Channel", channel), (f"{prefix}ChannelState", str(state)),
        (f"{prefix}ChannelStateDesc", desc), (f"{prefix}CallerIDNum", "4930123"),
        (f"{prefix}CallerIDName", "<unknown>"), (f"{prefix}ConnectedLineNum", "<unknown>"),
        (f"{prefix}ConnectedLineName", "<unknown>"), (f"{prefix}Language", "en"),
        (f"{prefix}AccountCode", ""), (f"{prefix}Context", ctx), (f"{prefix}Exten", exten),
        (f"{prefix}Priority", "1"), (f"{prefix}Uniqueid", uid), (f"{prefix}Linkedid", lid),
    ]  # fmt: skip


def ev(name: str, *parts: Pairs, privilege: str = "call,all", **extra: str) -> Pairs:
    pairs: Pairs = [("Event", name), ("Privilege", privilege)]
    for part in parts:
        pairs += part
    return pairs + [(k.replace("_", "-"), v) for k, v in extra.items()]


def bridge(bid: str, n: int) -> Pairs:
    return [("BridgeUniqueid", bid), ("BridgeType", "basic"),
            ("BridgeTechnology", "simple_bridge"), ("BridgeCreator", "<unknown>"),
            ("BridgeName", "<unknown>"), ("BridgeNumChannels", str(n)),
            ("BridgeVideoSourceMode", "none")]  # fmt: skip


# Channels of the two synthetic calls (tracker scenario).
A_IN = ("PJSIP/acme-trunk-00000010", "1700000000.10", "1700000000.10")
A_L1 = ("Local/1001@acme-internal-00000001;1", "1700000000.11", "1700000000.10")
A_L2 = ("Local/1001@acme-internal-00000001;2", "1700000000.12", "1700000000.10")
A_AG = ("PJSIP/acme-agent-00000013", "1700000000.13", "1700000000.10")
A_OP = ("PJSIP/acme-operator-00000014", "1700000000.14", "1700000000.14")
G_IN = ("PJSIP/globex-trunk-00000020", "1700000000.20", "1700000000.20")
G_AG = ("PJSIP/globex-agent-00000021", "1700000000.21", "1700000000.20")
G_OP = ("PJSIP/globex-operator-00000022", "1700000000.22", "1700000000.20")


def s(ch: tuple[str, str, str], ctx: str, exten: str, state: int = 6, p: str = "") -> Pairs:
    return snap(p, ch[0], ch[1], ch[2], ctx, exten, state)


def scenario() -> list[Pairs]:
    """Two tenants interleaved: acme via a Local channel, hold, blind transfer;
    globex: agent no answer, operator busy, caller hangs up."""
    b1, b2 = "bridge-acme-1", "bridge-acme-2"
    return [
        ev("Newchannel", s(A_IN, "acme-venue", "100", 4)),
        ev("Newchannel", s(G_IN, "globex-venue", "100", 4)),
        ev("Newchannel", s(A_L1, "acme-internal", "1001", 0)),
        ev("Newchannel", s(A_L2, "acme-internal", "1001", 4)),
        ev("LocalBridge", s(A_L1, "acme-internal", "1001", 0, "LocalOne"),
           s(A_L2, "acme-internal", "1001", 4, "LocalTwo"),
           Context="acme-internal", Exten="1001", LocalOptimization="No"),
        ev("DialBegin", s(A_IN, "acme-internal", "1001", 4),
           s(A_L1, "acme-internal", "1001", 0, "Dest"), DialString="1001@acme-internal"),
        ev("Newchannel", s(A_AG, "acme-internal", "s", 0)),
        ev("DialBegin", s(A_L2, "acme-internal", "1001", 4),
           s(A_AG, "acme-internal", "s", 0, "Dest"), DialString="acme-agent"),
        ev("Newchannel", s(G_AG, "globex-internal", "s", 0)),
        ev("DialBegin", s(G_IN, "globex-internal", "2001", 4),
           s(G_AG, "globex-internal", "s", 0, "Dest"), DialString="globex-agent"),
        ev("Newstate", s(A_AG, "acme-internal", "s", 6)),
        ev("DialEnd", s(A_L2, "acme-internal", "1001", 4),
           s(A_AG, "acme-internal", "", 6, "Dest"), DialStatus="ANSWER"),
        ev("Newstate", s(A_L2, "acme-internal", "1001", 6)),
        ev("Newstate", s(A_L1, "acme-internal", "1001", 6)),
        ev("DialEnd", s(A_IN, "acme-internal", "1001", 4),
           s(A_L1, "acme-internal", "", 6, "Dest"), DialStatus="ANSWER"),
        ev("Newstate", s(A_IN, "acme-internal", "1001", 6)),
        ev("BridgeEnter", bridge(b1, 1), s(A_IN, "acme-internal", "1001")),
        ev("BridgeEnter", bridge(b1, 2), s(A_L1, "acme-internal", "")),
        ev("BridgeEnter", bridge(b2, 1), s(A_L2, "acme-internal", "1001")),
        ev("BridgeEnter", bridge(b2, 2), s(A_AG, "acme-internal", "")),
        ev("DialEnd", s(G_IN, "globex-internal", "2001", 4),
           s(G_AG, "globex-internal", "", 5, "Dest"), DialStatus="NOANSWER"),
        ev("Hangup", s(G_AG, "globex-internal", "", 5), Cause="16",
           Cause_txt="Normal Clearing"),
        ev("Hold", s(A_IN, "acme-internal", "1001"), MusicClass="default"),
        ev("Unhold", s(A_IN, "acme-internal", "1001")),
        ev("Newchannel", s(G_OP, "globex-internal", "s", 0)),
        ev("DialBegin", s(G_IN, "globex-internal", "operator", 4),
           s(G_OP, "globex-internal", "s", 0, "Dest"), DialString="globex-operator"),
        ev("DialEnd", s(G_IN, "globex-internal", "operator", 4),
           s(G_OP, "globex-internal", "", 0, "Dest"), DialStatus="BUSY"),
        ev("Hangup", s(G_OP, "globex-internal", "", 0), Cause="17", Cause_txt="User busy"),
        ev("Hangup", s(G_IN, "globex-internal", "operator", 4), Cause="17",
           Cause_txt="User busy"),
        # The agent blind-transfers the caller (through the Local pair) to the operator.
        ev("BlindTransfer", [("Result", "Success")],
           s(A_AG, "acme-internal", "", 6, "Transferer"), bridge(b2, 2),
           s(A_L2, "acme-internal", "1001", 6, "Transferee"),
           IsExternal="No", Context="acme-internal", Extension="operator"),
        ev("BridgeLeave", bridge(b2, 1), s(A_AG, "acme-internal", "")),
        ev("Hangup", s(A_AG, "acme-internal", ""), Cause="16", Cause_txt="Normal Clearing"),
        ev("Newchannel", s(A_OP, "acme-internal", "s", 0)),
        ev("DialBegin", s(A_L2, "acme-internal", "operator", 6),
           s(A_OP, "acme-internal", "s", 0, "Dest"), DialString="acme-operator"),
        ev("DialEnd", s(A_L2, "acme-internal", "operator", 6),
           s(A_OP, "acme-internal", "", 6, "Dest"), DialStatus="ANSWER"),
        ev("BridgeEnter", bridge(b2, 2), s(A_OP, "acme-internal", "")),
        ev("Hangup", s(A_IN, "acme-internal", "1001"), Cause="16",
           Cause_txt="Normal Clearing"),
        ev("Hangup", s(A_L1, "acme-internal", ""), Cause="16", Cause_txt="Normal Clearing"),
        ev("Hangup", s(A_L2, "acme-internal", "operator"), Cause="16",
           Cause_txt="Normal Clearing"),
        ev("Hangup", s(A_OP, "acme-internal", ""), Cause="16", Cause_txt="Normal Clearing"),
    ]  # fmt: skip


def attended_transfer() -> list[Pairs]:
    return [ev(
        "AttendedTransfer", [("Result", "Success")],
        s(A_AG, "acme-internal", "", 6, "OrigTransferer"),
        [("OrigBridgeUniqueid", "bridge-acme-2")],
        s(A_OP, "acme-internal", "", 6, "SecondTransferer"),
        [("SecondBridgeUniqueid", "bridge-acme-3"), ("DestType", "Bridge"),
         ("DestBridgeUniqueid", "bridge-acme-3")],
        s(A_L2, "acme-internal", "1001", 6, "Transferee"),
        s(A_OP, "acme-internal", "", 6, "TransferTarget"),
        IsExternal="No",
    )]  # fmt: skip


def agents() -> list[Pairs]:
    member = [("Queue", "acme-support"), ("MemberName", "PJSIP/acme-agent"),
              ("Interface", "PJSIP/acme-agent"), ("StateInterface", "PJSIP/acme-agent"),
              ("Membership", "static"), ("Penalty", "0"), ("CallsTaken", "3"),
              ("LastCall", "1700000100"), ("LastPause", "0"), ("LoginTime", "1700000000"),
              ("InCall", "0")]  # fmt: skip
    return [
        ev("DeviceStateChange", Device="PJSIP/acme-agent", State="NOT_INUSE"),
        ev("DeviceStateChange", Device="PJSIP/globex-agent", State="UNAVAILABLE"),
        ev("QueueMemberStatus", member, privilege="agent,all", Status="1", Paused="0",
           PausedReason="", Ringinuse="1", Wrapuptime="0"),
        ev("QueueMemberPause", member, privilege="agent,all", Status="1", Paused="1",
           PausedReason="lunch", Ringinuse="1", Wrapuptime="0"),
        ev("DeviceStateChange", Device="PJSIP/acme-agent", State="INUSE"),
        ev("DeviceStateChange", Device="PJSIP/acme-agent", State="NOT_INUSE"),
    ]


def write(name: str, data: bytes, expected: object) -> None:
    (HERE / f"{name}.ami").write_bytes(data)
    suffix = ".error.txt" if isinstance(expected, str) else ".expected.json"
    text = expected if isinstance(expected, str) else json.dumps(expected, indent=1)
    (HERE / f"{name}{suffix}").write_text(text + "\n")


def main() -> None:
    real = real_blocks()
    login, booted = real[0], real[1]
    good: dict[str, bytes] = {
        "greeting_login": GREETING + login + booted,
        "call_operator": GREETING + b"".join(b for b in real if b"Privilege: call," in b),
        "core_show_channels": GREETING + b"".join(b for b in real if b"csc1" in b),
        "queue_status": GREETING + b"".join(b for b in real if b"qs1" in b or b"qp" in b),
        "command_output": GREETING + b"".join(b for b in real if b"cmd" in b),
        "duplicate_keys": GREETING + b"".join(b for b in real if b"CallIDChange" in b),
        "tracker_scenario": encode(scenario()),
        "attended_transfer": encode(attended_transfer()),
        "agents": encode(agents()),
        "escaped_newline": encode([
            ev("UserEvent", privilege="user,all", UserEvent="Note",
               Body="line one\\nline two\\\\n", Empty=""),
            [("Response", "Success"), ("ActionID", "x-1"), ("Message", "a: b: c")],
        ]),
        "unknown_event": encode([ev("FrobnicatorStarted", privilege="system,all",
                                    Frob="yes", Ratio="3:4")]),
        "response_without_actionid": encode([
            [("Response", "Error"), ("Message", "Missing action in request")],
        ]),
        "utf8_latin1": GREETING + (
            "Event: Newchannel\r\nCallerIDName: Jürgen Ölmann ☎\r\n\r\n".encode()
            + b"Event: Newchannel\r\nCallerIDName: J\xfcrgen\r\n\r\n"
        ),
    }
    for name, data in good.items():
        write(name, data, oracle(data))
    (HERE / "real_session.expected.json").write_text(
        json.dumps(oracle((HERE / "real_session.ami").read_bytes()), indent=1) + "\n"
    )
    call = good["call_operator"]
    write("bare_lf", call.replace(b"\r\n", b"\n"), oracle(call))
    big_value = ("0123456789abcdef" * (1024 * 1024 // 16)) + "!"
    big = encode([ev("VarSet", privilege="dialplan,all", Variable="BIG", Value=big_value)])
    expected = oracle(big)
    fields = expected[1]["fields"]
    assert isinstance(fields, list) and fields[-1][1] == big_value
    # Not 1 MB of JSON: the test rebuilds the value from this recipe.
    fields[-1][1] = {"repeat": "0123456789abcdef", "times": 65536, "tail": "!"}
    write("big_event_1mb", big, expected)
    broken = {
        "broken_eof_mid_block": (GREETING + login + booted[:40], "EOF in the middle"),
        "broken_eof_in_greeting": (GREETING[:12], "EOF inside the AMI greeting"),
        "broken_garbage_before_greeting": (b"HTTP/1.1 400 Bad Request\r\n\r\n" + GREETING,
                                           "expected the AMI greeting"),
        "broken_not_key_value": (GREETING + b"Event: X\r\nno colon here\r\n\r\n",
                                 "line is not 'Key: Value'"),
        "broken_no_event_key": (GREETING + b"Foo: bar\r\n\r\n",
                                "neither Response nor Event"),
    }
    for name, (data, error) in broken.items():
        write(name, data, error)


if __name__ == "__main__":
    main()
