"""Benchmarks of ami-bridge (not part of `make test`); entry point: `python -m bench`."""
