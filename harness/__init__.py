"""The test and demo harness of ami-bridge: not part of the product, never installed.

Runs the real pieces around the bridge for the integration tests, `make demo` and the
benchmarks, from a checkout of the repository (it finds `asterisk-conf/` and
`tests/sipp/` there): :mod:`harness.asterisk` (the provisioned sandbox root, one Asterisk
22 in it, the lock that queues concurrent runs), :mod:`harness.sipp` (SIPp phones and
trunks and their counters), :mod:`harness.bridge` (the bridge as a subprocess, ready when
`ctl status` says so), :mod:`harness.procs` (children that die with the harness, and the
reaping of those a killed harness left), :mod:`harness.demo` (`python -m harness.demo`),
:mod:`harness.fault_vts` (a VTS with fault behaviours for tests) and
:mod:`harness.faults` (the fault run under load, `make test-faults`). The product
(`ami_bridge`) never imports this package; a packaging test keeps it so.
"""
