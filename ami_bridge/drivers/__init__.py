"""Routing drivers: how a venue's calls reach the routing core (docs/drivers.md).

FastAGI lives in `ami_bridge.agi` and `ami_bridge.agi_adapter`; the other drivers have a
module here each. A driver turns Asterisk's side into `Intermediary.route_request(env,
responder)` and `Intermediary.abandon(handle)` and nothing else.
"""
