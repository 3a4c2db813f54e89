"""The VTS restart policy (supervision/restart_policy.py): a pure function of injected times.

Also its knobs: `RestartSettings`, and the `[vts.NAME]` keys that set them per VTS.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ami_bridge import config as config_mod
from ami_bridge.config import VtsConfig
from ami_bridge.supervision.restart_policy import RestartDecision, RestartPolicy, RestartSettings

FAST = settings(max_examples=100, deadline=None, database=None)
# Flapping out of the way, for tests about backoff alone.
NO_FLAP = {"flap_max": 10_000}


def crash_loop(policy: RestartPolicy, runs: int, *, run_for: float = 0.01,
               t: float = 0.0) -> tuple[list[RestartDecision], float]:
    """Start, crash after `run_for`, wait the advised delay, repeat. Returns decisions, time."""
    decisions = []
    for _ in range(runs):
        policy.started(t)
        t += run_for
        decision = policy.exited(t)
        decisions.append(decision)
        t += decision.delay
    return decisions, t


# -- backoff -----------------------------------------------------------------------------

def test_default_backoff_doubles_from_a_tenth_and_caps_at_ten_seconds() -> None:
    decisions, _ = crash_loop(RestartPolicy(**NO_FLAP), 10)
    assert [d.delay for d in decisions] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0, 10.0])
    assert [d.attempt for d in decisions] == list(range(1, 11))
    assert not any(d.flapping for d in decisions)


def test_custom_backoff() -> None:
    policy = RestartPolicy(initial=0.5, factor=3, maximum=5.0, **NO_FLAP)
    decisions, _ = crash_loop(policy, 5)
    assert [d.delay for d in decisions] == pytest.approx([0.5, 1.5, 4.5, 5.0, 5.0])


def test_factor_one_is_a_constant_delay() -> None:
    decisions, _ = crash_loop(RestartPolicy(initial=2.0, factor=1, maximum=2.0, **NO_FLAP), 6)
    assert [d.delay for d in decisions] == [2.0] * 6


def test_cap_is_reached_and_never_exceeded() -> None:
    decisions, _ = crash_loop(RestartPolicy(**NO_FLAP), 100)
    assert max(d.delay for d in decisions) == 10.0
    assert decisions[-1].delay == 10.0
    assert decisions[-1].attempt == 100


def test_long_crash_loop_stays_capped() -> None:
    decisions, _ = crash_loop(RestartPolicy(), 1100)  # default policy, realistic timings
    assert decisions[-1].delay == 10.0
    assert decisions[-1].attempt == 1100


def test_exit_without_a_recorded_start_uses_the_initial_delay() -> None:
    decision = RestartPolicy().exited(100.0)
    assert decision == RestartDecision(delay=0.1, flapping=False, attempt=1)


def test_decision_is_frozen() -> None:
    decision = RestartPolicy().exited(0.0)
    with pytest.raises(AttributeError):
        decision.delay = 0.0  # type: ignore[misc]


# -- reset after a stable run ------------------------------------------------------------

def test_stable_run_resets_the_backoff() -> None:
    policy = RestartPolicy(stable_after=10.0, **NO_FLAP)
    decisions, t = crash_loop(policy, 5)
    assert decisions[-1].delay == pytest.approx(1.6)
    policy.started(t)
    after_stable = policy.exited(t + 10.0)  # exactly stable_after counts as stable
    assert after_stable == RestartDecision(delay=pytest.approx(0.1), flapping=False, attempt=1)
    t += 10.0 + after_stable.delay
    decisions, _ = crash_loop(policy, 3, t=t)  # quick crashes back off again from there
    assert [d.delay for d in decisions] == pytest.approx([0.2, 0.4, 0.8])
    assert [d.attempt for d in decisions] == [2, 3, 4]


def test_run_just_short_of_stable_does_not_reset() -> None:
    policy = RestartPolicy(stable_after=10.0, **NO_FLAP)
    _, t = crash_loop(policy, 4)
    policy.started(t)
    decision = policy.exited(t + 9.999)
    assert decision.delay == pytest.approx(1.6)
    assert decision.attempt == 5


def test_stability_is_measured_from_the_latest_start() -> None:
    policy = RestartPolicy(stable_after=10.0, **NO_FLAP)
    policy.started(0.0)
    policy.exited(0.5)
    policy.started(20.0)  # long gap between exit and restart is not "running"
    decision = policy.exited(20.5)
    assert decision.delay == pytest.approx(0.2)
    assert decision.attempt == 2


# -- flapping ----------------------------------------------------------------------------

def rapid_starts(policy: RestartPolicy, times: list[float]) -> None:
    for t in times:
        policy.started(t)


def test_up_to_flap_max_starts_is_not_flapping() -> None:
    policy = RestartPolicy(flap_max=5, flap_window=30.0, flap_cooldown=30.0)
    rapid_starts(policy, [0, 1, 2, 3, 4])
    decision = policy.exited(4.5)
    assert not decision.flapping
    assert decision.delay == pytest.approx(0.1)


def test_more_than_flap_max_starts_in_the_window_is_flapping() -> None:
    policy = RestartPolicy(flap_max=5, flap_window=30.0, flap_cooldown=30.0)
    rapid_starts(policy, [0, 1, 2, 3, 4, 5])
    decision = policy.exited(5.5)
    assert decision.flapping
    assert decision.delay == 30.0


def test_crash_loop_turns_into_flapping_on_the_sixth_start() -> None:
    policy = RestartPolicy(flap_max=5, flap_window=30.0, flap_cooldown=30.0)
    decisions, _ = crash_loop(policy, 7)
    assert [d.flapping for d in decisions] == [False] * 5 + [True, False]
    assert decisions[5].delay == 30.0
    # The seventh start waited out the 30 s cooldown, so the six earlier starts are all more
    # than flap_window old: no longer flapping, back on the plain backoff (0.1 * 2 ** 6).
    assert decisions[6].delay == pytest.approx(6.4)


def test_flapping_never_shortens_a_longer_backoff() -> None:
    policy = RestartPolicy(maximum=10.0, flap_max=1, flap_window=1000.0, flap_cooldown=1.0)
    decisions, _ = crash_loop(policy, 10)
    assert decisions[-1].flapping
    assert decisions[-1].delay == 10.0  # max(backoff, cooldown)
    assert decisions[1].flapping
    assert decisions[1].delay == 1.0  # cooldown above the 0.2 s backoff


def test_flapping_clears_once_starts_age_out_of_the_window() -> None:
    policy = RestartPolicy(flap_max=5, flap_window=30.0, flap_cooldown=30.0)
    rapid_starts(policy, [0, 1, 2, 3, 4, 5])
    flapping = policy.exited(5.5)
    assert flapping.flapping
    restart = 5.5 + flapping.delay  # 35.5: every earlier start is now over 30 s old
    policy.started(restart)
    decision = policy.exited(restart + 0.5)
    assert not decision.flapping
    assert decision.delay < 30.0


def test_flap_window_boundary_is_inclusive() -> None:
    starts = [0, 1, 2, 3, 4, 5]
    policy = RestartPolicy(flap_max=5, flap_window=30.0, flap_cooldown=30.0)
    rapid_starts(policy, starts)
    assert policy.exited(30.0).flapping  # the start at 0 is exactly 30 s old: still counted
    policy = RestartPolicy(flap_max=5, flap_window=30.0, flap_cooldown=30.0)
    rapid_starts(policy, starts)
    assert not policy.exited(30.001).flapping


def test_old_starts_do_not_accumulate() -> None:
    # A start every 10 s, each run crashing at once: 4 starts per 30 s window, never flapping.
    policy = RestartPolicy(flap_max=5, flap_window=30.0, flap_cooldown=30.0)
    for i in range(200):
        policy.started(i * 10.0)
        assert not policy.exited(i * 10.0 + 0.1).flapping
    assert len(policy._starts) <= 4


def test_flap_max_one() -> None:
    policy = RestartPolicy(flap_max=1, flap_window=10.0, flap_cooldown=60.0)
    policy.started(0.0)
    assert not policy.exited(0.1).flapping
    policy.started(0.2)
    decision = policy.exited(0.3)
    assert decision.flapping
    assert decision.delay == 60.0


@FAST
@given(
    runs=st.lists(
        st.tuples(st.floats(min_value=0, max_value=50), st.floats(min_value=0, max_value=50)),
        min_size=1, max_size=40,
    ),
    stable_after=st.floats(min_value=0.5, max_value=30),
    flap_max=st.integers(min_value=1, max_value=8),
    flap_window=st.floats(min_value=1, max_value=100),
    flap_cooldown=st.floats(min_value=0, max_value=100),
)
def test_decisions_stay_within_bounds(runs: list[tuple[float, float]], stable_after: float,
                                      flap_max: int, flap_window: float,
                                      flap_cooldown: float) -> None:
    policy = RestartPolicy(stable_after=stable_after, flap_max=flap_max,
                           flap_window=flap_window, flap_cooldown=flap_cooldown)
    t, starts, attempt = 0.0, [], 0
    for run_for, extra_wait in runs:
        policy.started(t)
        starts.append(t)
        t += run_for
        decision = policy.exited(t)
        attempt = 1 if t - starts[-1] >= stable_after else attempt + 1
        recent = sum(1 for s in starts if t - s <= flap_window)
        assert decision.attempt == attempt
        assert decision.flapping is (recent > flap_max)
        backoff = min(0.1 * 2.0 ** (attempt - 1), 10.0)
        assert decision.delay == pytest.approx(
            max(backoff, flap_cooldown) if decision.flapping else backoff)
        assert 0.1 <= decision.delay <= max(10.0, flap_cooldown)
        t += decision.delay + extra_wait


# -- constructor -------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    {"initial": 0}, {"initial": -0.1}, {"factor": 0.5}, {"factor": 0}, {"factor": -2},
    {"maximum": 0.05}, {"initial": 5.0, "maximum": 1.0}, {"flap_max": 0}, {"flap_max": -1},
])
def test_constructor_rejects_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="restart policy"):
        RestartPolicy(**kwargs)


@pytest.mark.parametrize("kwargs", [
    {"initial": math.nan}, {"factor": math.nan}, {"maximum": math.nan},
    {"stable_after": -1.0}, {"flap_window": -1.0}, {"flap_cooldown": -1.0},
])
def test_constructor_rejects_unchecked_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RestartPolicy(**kwargs)


@pytest.mark.parametrize("kwargs", [
    {}, {"factor": 1}, {"initial": 1.0, "maximum": 1.0}, {"flap_max": 1},
    {"initial": 0.001, "factor": 10, "maximum": 3600},
])
def test_constructor_accepts_edge_values(kwargs: dict[str, Any]) -> None:
    RestartPolicy(**kwargs)


def test_policies_are_independent() -> None:
    a, b = RestartPolicy(**NO_FLAP), RestartPolicy(**NO_FLAP)
    crash_loop(a, 5)
    assert b.exited(0.0).delay == pytest.approx(0.1)


# -- settings and the [vts.NAME] keys that set them ---------------------------------------

def test_policy_from_settings_and_knobs() -> None:
    settings_ = RestartSettings(initial=1.0, maximum=4.0, flap_max=10_000)
    decisions, _ = crash_loop(RestartPolicy(settings_), 4)
    assert [d.delay for d in decisions] == [1.0, 2.0, 4.0, 4.0]
    assert RestartPolicy(settings_, maximum=2.0).settings == RestartSettings(
        initial=1.0, maximum=2.0, flap_max=10_000)
    assert RestartPolicy().settings == RestartSettings()


def _vts_config(tmp_path: Path, knobs: str) -> VtsConfig:
    path = tmp_path / "bridge.toml"
    # A venue maps to the VTS: an idle [vts.X] is refused (config.py).
    path.write_text(f"[tenants.acme.venues.acme-venue]\nvts = 'acme'\n[vts.acme]\n{knobs}\n")
    return config_mod.load(path).vts["acme"]


def test_vts_section_sets_the_restart_knobs(tmp_path: Path) -> None:
    vts = _vts_config(tmp_path, "restart_initial = 0.5\nrestart_factor = 3\n"
                      "restart_maximum = 20\nstable_after = 60\nflap_window = 120\n"
                      "flap_max = 10\nflap_cooldown = 300")
    assert vts.restart == RestartSettings(initial=0.5, factor=3.0, maximum=20.0,
                                          stable_after=60.0, flap_window=120.0,
                                          flap_max=10, flap_cooldown=300.0)
    assert _vts_config(tmp_path, "").restart == RestartSettings()


@pytest.mark.parametrize(("knobs", "key", "shown"), [
    ("restart_initial = 0", "restart_initial", "0"),
    ("restart_initial = 'fast'", "restart_initial", "'fast'"),
    ("restart_maximum = 0.05", "restart_maximum", "0.05"),  # below the default initial
    ("restart_initial = 5\nrestart_maximum = 2", "restart_maximum", "2"),
    ("restart_factor = 0.5", "restart_factor", "0.5"),
    ("restart_factor = true", "restart_factor", "True"),
    ("restart_factor = inf", "restart_factor", "inf"),
    ("stable_after = -1", "stable_after", "-1"),
    ("flap_window = nan", "flap_window", "nan"),
    ("flap_max = 0", "flap_max", "0"),
    ("flap_max = 2.5", "flap_max", "2.5"),
    ("flap_cooldown = -30", "flap_cooldown", "-30"),
    ("flap_max_starts = 3", "flap_max_starts", "unknown key"),
])
def test_bad_restart_knob_names_file_key_and_value(tmp_path: Path, knobs: str, key: str,
                                                   shown: str) -> None:
    with pytest.raises(config_mod.ConfigError) as caught:
        _vts_config(tmp_path, knobs)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'bridge.toml'}: vts.acme.{key}: "), message
    assert shown in message.split(f"vts.acme.{key}: ", 1)[1], message
