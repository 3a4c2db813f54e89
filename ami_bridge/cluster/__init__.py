"""Several bridges on one store: the bus between them (bus.py) and the merged agent
states (agents.py); cluster-wide apply lives here too (apply.py, peers.py)."""
