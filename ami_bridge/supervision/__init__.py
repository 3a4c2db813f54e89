"""The daemon's side of the VTS processes: keep them running as the config says.

`reconcile` (pure) turns desired and running specs into a plan; `restart_policy` (pure,
on `ami_bridge.backoff`) says when a VTS that exited starts again and when it is
flapping; `supervisor` is the asyncio glue that spawns, watches and stops the processes.
Nothing here runs in, or is imported by, a VTS process (`ami_bridge.tenants`).
"""
