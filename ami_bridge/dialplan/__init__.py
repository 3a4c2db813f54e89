"""Dialplan fragments: parse (`parser`), lint (`lint`, `check`) and render (`render`).

`ami-bridge conf check` calls `check.run_check`; `lint.check` is the library entry point.
The lint rules live in `lint` (ownership, crossings, venue contract), `taint` (caller
data in dial strings), `escapes` with `channels` (run-time behaviour that leaves the
tenant) and `queues` (queues.conf); `ownership` and `allow` are shared by them. Codes
are in `findings`; docs/dialplan-lint.md explains each. Everything here is pure except
the reading done through `parser.DiskSource`.
"""
