"""Reload as a reconcile of desired against running VTS specs (supervision/reconcile.py).

Pure: specs in, a plan out, no processes. The supervisor's loopback test
(tests/loopback/test_supervision.py) checks that the plan is what happens to real ones.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from ami_bridge.config import VtsConfig
from ami_bridge.supervision.reconcile import Plan, reconcile
from ami_bridge.supervision.restart_policy import RestartSettings

ACME = VtsConfig(name="acme", command=(), grace_period=3.0, tenants=("acme",))
GLOBEX = VtsConfig(name="globex", command=("./vts",), grace_period=1.0, tenants=("globex",))


def test_first_start_starts_everything() -> None:
    assert reconcile({"acme": ACME, "globex": GLOBEX}, {}) == Plan(start=("acme", "globex"))


def test_nothing_changed_keeps_everything() -> None:
    specs = {"acme": ACME, "globex": GLOBEX}
    assert reconcile(specs, dict(specs)) == Plan(keep=("acme", "globex"))


def test_an_equal_spec_built_anew_is_kept() -> None:
    # A reload parses the file again: new objects, equal values.
    assert reconcile({"acme": replace(ACME)}, {"acme": ACME}) == Plan(keep=("acme",))


def test_each_part_of_the_spec_counts() -> None:
    changes = [
        replace(ACME, command=("python3", "-m", "my_vts")),
        replace(ACME, grace_period=5.0),
        replace(ACME, tenants=("acme", "initech")),
        replace(ACME, restart=RestartSettings(flap_max=3)),
    ]
    for changed in changes:
        plan = reconcile({"acme": changed, "globex": GLOBEX}, {"acme": ACME, "globex": GLOBEX})
        assert plan == Plan(restart=("acme",), keep=("globex",)), changed


def test_removed_is_stopped_and_added_is_started() -> None:
    plan = reconcile({"globex": GLOBEX, "initech": replace(ACME, name="initech")},
                     {"acme": ACME, "globex": GLOBEX})
    assert plan == Plan(stop=("acme",), start=("initech",), keep=("globex",))
    assert plan.to_stop == ("acme",)
    assert plan.to_start == ("initech",)


def test_restarts_stop_before_they_start() -> None:
    plan = reconcile({"acme": replace(ACME, grace_period=1.0), "b": GLOBEX},
                     {"acme": ACME, "c": GLOBEX})
    assert plan.to_stop == ("c", "acme")
    assert plan.to_start == ("acme", "b")


_NAMES = st.sampled_from(["a", "b", "c", "d", "e"])
_SPECS = st.dictionaries(_NAMES, st.integers(min_value=0, max_value=2), max_size=5)


@settings(max_examples=200, deadline=None, database=None)
@given(desired=_SPECS, running=_SPECS)
def test_plan_partitions_the_names_and_reaches_the_desired_state(
        desired: dict[str, int], running: dict[str, int]) -> None:
    plan = reconcile(desired, running)
    groups = [plan.stop, plan.restart, plan.start, plan.keep]
    named = [n for group in groups for n in group]
    assert sorted(named) == sorted(set(desired) | set(running))  # each name exactly once
    assert all(list(group) == sorted(group) for group in groups)
    after = {n: s for n, s in running.items() if n not in plan.to_stop}
    assert all(after[n] == desired[n] for n in plan.keep)  # kept ones already match
    after.update({n: desired[n] for n in plan.to_start})
    assert after == desired
