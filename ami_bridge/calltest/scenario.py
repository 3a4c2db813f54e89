"""The SIPp caller of a call test: its scenario and its injection file, as text.

Contract. `scenario_xml(ring_ms=, wait_ms=, pai=)` is a UAC scenario that sends one
INVITE per call, waits at most `wait_ms` for ringing (180) or early media (183), lets it
ring `ring_ms`, then CANCELs: nobody's phone is answered. A call refused on the spot
(486, 503, ...) is acknowledged and ends; a call answered all the same (someone was
quicker than `ring_ms`) is acknowledged and hung up at once. Each call takes its line of
the injection file (`injection_csv`): From user, dialled number, a marker that goes in
the caller name (AMI shows it as CallerIDName, which is how `follow` finds the call) and
the caller number, sent as P-Asserted-Identity when `pai` is set. Pure text: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ami_bridge.calltest.entries import sip_user_ok

# SIPp's injection file separator; none of our fields may contain it (sip_user_ok and the
# marker's own alphabet make sure).
FIELD_SEPARATOR = ";"
# Final responses a call may get instead of ringing: acknowledged, not an error of SIPp.
REFUSALS = ("403", "404", "480", "484", "486", "487", "500", "503", "603")


@dataclass(frozen=True)
class CallLine:
    from_user: str
    dnis: str
    marker: str
    ani: str


def injection_csv(lines: Sequence[CallLine]) -> str:
    rows = ["SEQUENTIAL"]
    for line in lines:
        fields = (line.from_user, line.dnis, line.marker, line.ani)
        bad = [f for f in fields if not sip_user_ok(f)]
        if bad:
            raise ValueError(f"cannot send {bad[0]!r} in a SIP header (call {line.marker})")
        rows.append(FIELD_SEPARATOR.join(fields) + FIELD_SEPARATOR)
    return "\n".join(rows) + "\n"


def scenario_xml(*, ring_ms: int, wait_ms: int, pai: bool) -> str:
    identity = ('      P-Asserted-Identity: "[field2]" <sip:[field3]@[local_ip]>\n'
                if pai else "")
    refusals = "".join(f'  <recv response="{code}" optional="true" next="refused" />\n'
                       for code in REFUSALS)
    return _TEMPLATE.format(identity=identity, refusals=refusals, ring_ms=int(ring_ms),
                            wait_ms=int(wait_ms))


_TEMPLATE = """<?xml version="1.0" encoding="UTF-8" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<!-- Written by `ami-bridge calltest` (ami_bridge/calltest/scenario.py). -->
<scenario name="ami-bridge calltest">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[field1]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "[field2]" <sip:[field0]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[field1]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:[field0]@[local_ip]:[local_port];transport=[transport]>
{identity}      Max-Forwards: 70
      Subject: ami-bridge calltest
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
    ]]>
  </send>

  <recv response="100" optional="true" />
  <recv response="180" optional="true" next="ringing" />
  <recv response="200" optional="true" next="answered" />
{refusals}  <recv response="183" timeout="{wait_ms}" ontimeout="cancel" next="ringing" />

  <label id="ringing" />
  <pause milliseconds="{ring_ms}" />

  <label id="cancel" />
  <send>
    <![CDATA[
      CANCEL sip:[field1]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      From: "[field2]" <sip:[field0]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[field1]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 CANCEL
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="180" optional="true" />
  <recv response="183" optional="true" />
  <recv response="200" />
  <recv response="487" />
  <send next="end">
    <![CDATA[
      ACK sip:[field1]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      From: "[field2]" <sip:[field0]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>

  <label id="refused" />
  <send next="end">
    <![CDATA[
      ACK sip:[field1]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      From: "[field2]" <sip:[field0]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>

  <label id="answered" />
  <send>
    <![CDATA[
      ACK sip:[field1]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "[field2]" <sip:[field0]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <send>
    <![CDATA[
      BYE sip:[field1]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "[field2]" <sip:[field0]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" />

  <label id="end" />
</scenario>
"""
