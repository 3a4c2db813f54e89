"""The standing fault run: the bridge under load while faults are injected, measured.

`python -m harness.faults run [--short] [--only NAME]` runs the scenarios of
:mod:`harness.faults.scenarios` (a soak, VTS SIGKILL and SIGSTOP, AMI session drops, an
Asterisk restart, SIGKILL and SIGTERM of the bridge, random CANCEL/BYE, an AGI burst)
against the sandbox Asterisk 22 with SIPp callers for two tenants (acme takes the
faults, globex is the untouched tenant), appends one JSON record per scenario to
`bench/results/faults.jsonl` and prints a table; `python -m harness.faults report`
regenerates docs/reliability.md from the latest run. The pieces: :mod:`.census` (the
bridge's descriptors, threads, children, tasks, RSS), :mod:`.load` (the SIPp call mix
and what it counted), :mod:`.rig` (Asterisk, the bridge and its config for one
scenario), :mod:`.scenarios` (the faults and the run of one scenario into a
:class:`~harness.faults.scenarios.FaultResult`), :mod:`.families` (the test suite's
hostile-input families, counted by running them) and :mod:`.report`.
"""
