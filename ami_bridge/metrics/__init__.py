"""Operations: Prometheus metrics, per-venue alarms and their HTTP endpoint.

`settings` parses the bridge config's `[metrics]` section; `routes` keeps the per-call
counts (plain dicts, fed by the intermediary's observer hook) and writes the per-call
log line; `alarms` is the pure sliding-window alarm logic; `collector` turns all of it,
and the counters the bridge already keeps, into Prometheus series at scrape time;
`endpoint` serves `/metrics` and evaluates the alarms on the event loop.
docs/operations.md lists every series.
"""
