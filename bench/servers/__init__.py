"""Servers the benchmarks run side by side with the bridge (each a `python -m` module)."""
