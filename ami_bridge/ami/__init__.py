"""The bridge's AMI side: sans-I/O protocol core, asyncio client, call/agent tracker.

`protocol` frames and parses AMI and is the one door to the wire (`encode_action`);
`client` keeps one logged-in session up; `tracker` turns events into per-venue
`CallEvent`s (EVENTS.md) and per-tenant `AgentState`. Reconnects are paced by the
shared `ami_bridge.backoff`.
"""
