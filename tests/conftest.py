"""Hypothesis profiles. AMI_BRIDGE_HYPOTHESIS_PROFILE=long loads one of 10,000 examples
per property test (those that fix no count of their own; the VTS message and tenant
isolation properties take the larger of it and their few hundred: `examples`)."""

from __future__ import annotations

import os

from hypothesis import settings

PROFILE_ENV = "AMI_BRIDGE_HYPOTHESIS_PROFILE"

settings.register_profile("long", max_examples=10_000, deadline=None, database=None)
if os.environ.get(PROFILE_ENV):
    settings.load_profile(os.environ[PROFILE_ENV])


def examples(ordinary: int) -> int:
    """Examples for a property that runs `ordinary` many in `make test`: the larger of
    that and the loaded profile's (10,000 under `long`). Read when the test module is
    imported, after this file loaded the profile."""
    return max(ordinary, settings.default.max_examples)
