"""Dialplan fragments: parse (`parser`), lint (`lint`, `check`) and render (`render`).

`ami-bridge conf check` calls `check.run_check`; `lint.check` is the library entry point.
Everything here is pure except the one small reader in `parser.DiskSource`.
"""
