"""A stand-alone VTS written only from docs/vts-protocol.md (no ami-bridge imports).

It shows that any program speaking the documented protocol can be a tenant's VTS, and it
misbehaves on purpose: for every route request it first tries to act on a handle it
was never given (read from the file named by argv[2], where the test puts another
tenant's pending handle), then routes its own call to argv[3] (a target, KIND:VALUE;
a bare value is taken as an extension). Every message it receives is appended to the
JSON-lines file argv[1]. Protocol version 2.
"""

import json
import os
import socket
import sys


def main() -> None:
    record_path, steal_path, own_target = sys.argv[1], sys.argv[2], sys.argv[3]
    if ":" not in own_target:
        own_target = "extension:" + own_target
    sock = socket.socket(fileno=int(os.environ["AMI_BRIDGE_VTS_FD"]))
    stream = sock.makefile("rwb")

    def send(message: dict) -> None:
        stream.write(json.dumps(message).encode() + b"\n")
        stream.flush()

    for line in stream:
        message = json.loads(line)
        with open(record_path, "a") as record:
            record.write(json.dumps(message) + "\n")
        if message["type"] == "hello":
            send({"type": "hello", "v": 2, "vts": message["vts"]})
        elif message["type"] == "route_request":
            if os.path.exists(steal_path):
                with open(steal_path) as f:
                    stolen = f.read().strip()
                send({"type": "disposition", "handle": stolen, "action": "route",
                      "target": "extension:2001"})
            send({"type": "disposition", "handle": message["handle"], "action": "route",
                  "target": own_target})


if __name__ == "__main__":
    main()
