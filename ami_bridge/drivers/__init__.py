"""Routing drivers: how a venue's route request reaches the bridge (docs/drivers.md).

FastAGI lives in `ami_bridge.agi` and `ami_bridge.agi_adapter`; the other drivers are
modules here. Each turns Asterisk's side into `Intermediary.route_request(env,
responder)` and `Intermediary.abandon(handle)`, and nothing else."""
