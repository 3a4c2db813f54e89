"""The personal router: users, their own routing rules (portions), bindings, traces.

`model` holds the shapes and the `Store` interface; `sqlite` and `postgres` the two
backends; `directory` the in-memory view the intermediary reads at call time.
"""
