"""The bridge-cost benchmark's pure parts (bench/bridge_cost.py, bench/fair.py,
bench/common.py's baseline helpers): the figures the issue reads must come from the
right runs, or a before/after comparison says nothing. No Asterisk, no sockets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ami_bridge import config as config_mod
from bench import bridge_cost as bc
from bench.common import REPO, baseline_checkout, baseline_env, is_baseline
from bench.fair import find_knee, knee, rotated, spread

EXPOSITION = """# HELP ami_bridge_ami_events_received_total AMI events received
# TYPE ami_bridge_ami_events_received_total counter
ami_bridge_ami_events_received_total 1700.0
ami_bridge_ami_bytes_received_total{session="main"} 600000.0
ami_bridge_ami_bytes_received_total{session="other"} 1000.0
ami_bridge_ami_events_received_total_created 1.7e9
ami_bridge_route_requests_total{tenant="acme",venue="acme-venue"} 0.0
"""


def test_counters_sum_label_sets_and_ignore_other_names() -> None:
    got = bc.counters(EXPOSITION, (bc.EVENTS_COUNTER, bc.BYTES_COUNTER, "missing_total"))
    assert got == {bc.EVENTS_COUNTER: 1700.0, bc.BYTES_COUNTER: 601000.0,
                   "missing_total": None}


def test_per_call_is_null_without_a_counter_on_either_side() -> None:
    assert bc.per_call(100.0, 1800.0, 100) == 17.0
    assert bc.per_call(None, 1800.0, 100) is None
    assert bc.per_call(100.0, None, 100) is None
    assert bc.per_call(100.0, 1800.0, 0) is None


def test_rotation_puts_each_variant_in_each_position() -> None:
    variants = ("a", "b", "c")
    orders = [rotated(variants, rep) for rep in range(3)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    for v in variants:
        assert sorted(o.index(v) for o in orders) == [0, 1, 2]


def test_knee_bisects_above_the_cpu_rate() -> None:
    rates = list(range(120, 681, 40))
    tried: list[int] = []

    def passes(rate: int) -> bool:
        tried.append(rate)
        return rate <= 400

    assert knee(passes, rates, cpu_rate=120, cpu_passed=True) == 400
    assert 120 not in tried and len(tried) <= 4
    assert knee(passes, rates, cpu_rate=120, cpu_passed=False) == 0
    assert knee(lambda r: False, rates, cpu_rate=120, cpu_passed=True) == 120
    assert find_knee(lambda r: True, [200, 240]) == 240


def _run(variant: str, rep: int, *, main: float, vts: float, ast: float, knee_cps: int,
         events: float | None = 17.0, passed: bool = True) -> dict[str, Any]:
    return {"variant": variant, "rep": rep, "position": 0, "cpu_step_passed": passed,
            "knee_cps": knee_cps, "knee_is_ceiling": False,
            "bridge_main_cpu_ms_per_call": main, "vts_cpu_ms_per_call": vts,
            "bridge_cpu_ms_per_call": round(main + vts, 3), "asterisk_cpu_ms_per_call": ast,
            "ami_events_per_call": events, "ami_bytes_per_call": events and events * 400}


def _runs() -> list[dict[str, Any]]:
    runs = []
    for rep, (static_ast, routed_main) in enumerate(((5.0, 1.7), (4.0, 1.9), (6.0, 1.5))):
        runs += [
            _run("static", rep, main=0.0, vts=0.0, ast=static_ast, knee_cps=400),
            _run("routed", rep, main=routed_main, vts=0.5, ast=static_ast * 1.25,
                 knee_cps=240 + 40 * rep),
            _run("routed-noami", rep, main=1.0, vts=0.2, ast=static_ast * 1.1,
                 knee_cps=280, events=None),
            _run("routed@baseline", rep, main=2.0, vts=0.6, ast=static_ast * 1.5,
                 knee_cps=200, events=None),
            _run("routed-noami@baseline", rep, main=1.1, vts=0.2, ast=static_ast * 1.2,
                 knee_cps=240, events=None),
        ]
    return runs


def test_split_pairs_routed_with_noami_of_the_same_repetition() -> None:
    after = bc.side_figures(_runs(), "")
    split = after["bridge_cpu_ms_per_call_split"]
    assert split["routing"]["each"] == [1.0, 1.0, 1.0]
    assert split["ami"]["each"] == [0.7, 0.9, 0.5]
    assert split["ami"]["median"] == 0.7
    assert split["vts"]["each"] == [0.5, 0.5, 0.5]
    assert split["total"]["each"] == [2.2, 2.4, 2.0]
    assert after["asterisk_cpu_ratio"]["each"] == [0.8, 0.8, 0.8]
    assert after["knee_over_static"]["each"] == [0.6, 0.7, 0.8]
    assert after["ami_events_per_call"]["median"] == 17.0
    base = bc.side_figures(_runs(), "@baseline")
    assert base["bridge_cpu_ms_per_call_split"]["ami"]["each"] == [0.9, 0.9, 0.9]
    assert base["ami_events_per_call"] is None  # no counter: null, never a guess
    assert base["knee_over_static"]["median"] == 0.5


def test_a_failed_cpu_step_leaves_its_repetition_out_of_the_cpu_figures() -> None:
    runs = _runs()
    noami_rep1 = next(r for r in runs if r["variant"] == "routed-noami" and r["rep"] == 1)
    noami_rep1["cpu_step_passed"] = False
    split = bc.side_figures(runs, "")["bridge_cpu_ms_per_call_split"]
    assert split["ami"]["each"] == [0.7, 0.5]
    assert split["total"]["each"] == [2.2, 2.4, 2.0]  # routed's own steps all passed


def test_summary_has_the_issue_keys_for_both_sides() -> None:
    variants = bc.VARIANTS + bc.BASELINE_VARIANTS
    out = bc.summarise(_runs(), variants, reps=3, step_s=4.0, cpu_rate=120,
                       rates=list(range(120, 681, 40)))
    for key in ("bridge_cpu_ms_per_call_split", "ami_events_per_call",
                "asterisk_cpu_ratio", "knee_over_static"):
        assert set(out[key]) == {"after", "baseline"}, key
    assert "ami_events_note" in out
    assert out["per_variant"]["routed"]["knee_cps"] == spread([240, 280, 320])
    no_base = bc.summarise([r for r in _runs() if not is_baseline(r["variant"])],
                           bc.VARIANTS, reps=3, step_s=4.0, cpu_rate=120, rates=[120, 160])
    assert set(no_base["knee_over_static"]) == {"after"}
    assert "ami_events_note" not in no_base


@pytest.mark.parametrize("variant", ["routed", "routed-noami", "routed@baseline"])
def test_generated_bridge_configs_load_with_metrics(tmp_path: Path, variant: str) -> None:
    cfg = config_mod.load(bc.bridge_config(tmp_path, variant))
    assert cfg.metrics is not None
    assert (cfg.ami is None) == variant.startswith("routed-noami")


def test_baseline_checkout_and_env(tmp_path: Path) -> None:
    assert baseline_checkout(REPO) == REPO
    with pytest.raises(ValueError, match=r"no ami_bridge/__init__\.py"):
        baseline_checkout(tmp_path)
    env = baseline_env(REPO)
    # without PYTHONSAFEPATH, `-m` from the harness's working directory would import
    # this checkout's package instead of the baseline's
    assert env == {"PYTHONPATH": str(REPO), "PYTHONSAFEPATH": "1"}
