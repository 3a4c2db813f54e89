"""Supervision of the VTS processes (daemon side)."""
