"""`ami-bridge calltest`: call cases derived from the tenant files, placed with SIPp through
a running Asterisk and bridge, followed over AMI, compared with what the rules expect.

Layers (each imports only the ones before it): `entries` (how a call gets into a venue),
`cases` (pure derivation from the tenants' own rule code), `scenario` (the SIPp caller's
text), `follow` (pure: AMI events to observed destinations), `run` (the asyncio glue,
SIPp as a child process, the report). docs/calltest.md is the operator's page.
"""
