"""A process that holds the harness, for test_harness_cleanup.py (not a test module).

`python -m tests.integration.harness_holder DIR` starts the sandbox Asterisk, one SIPp
UAS and the bridge with its two VTS processes, prints their pids as one JSON line, and
then waits to be killed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from harness.asterisk import DEFAULT_CONF_SRC, Asterisk
from harness.bridge import BridgeProcess
from harness.sipp import SippUas
from tests.integration.helpers import write_config

# Longer than the test waits for this process; it is killed long before.
HOLD_S = 600.0


def main(workdir: Path) -> int:
    config = write_config(workdir)
    with Asterisk(conf_src=DEFAULT_CONF_SRC, name="it-holder") as asterisk, \
            SippUas(5071, "holder-agent") as phone, \
            BridgeProcess(config, log_path=workdir / "bridge.log") as bridge:
        pids = {"asterisk": asterisk.pid, "sipp": phone.pid, "bridge": bridge.pid,
                "vts": bridge.vts_pids("acme") + bridge.vts_pids("globex")}
        print(json.dumps(pids), flush=True)
        time.sleep(HOLD_S)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
