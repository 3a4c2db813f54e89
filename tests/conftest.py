"""Hypothesis profiles. AMI_BRIDGE_HYPOTHESIS_PROFILE=long loads one of 10,000 examples
per property test (those that fix no count of their own; the VTS message properties
take the larger of it and their few hundred)."""

from __future__ import annotations

import os

from hypothesis import settings

PROFILE_ENV = "AMI_BRIDGE_HYPOTHESIS_PROFILE"

settings.register_profile("long", max_examples=10_000, deadline=None, database=None)
if os.environ.get(PROFILE_ENV):
    settings.load_profile(os.environ[PROFILE_ENV])
