"""The scale-out benchmark's pure parts (bench/scale_out.py, bench/personal_data.py's
PostgreSQL config): issue 16's three figures must come from the right pairs of runs, or
the bench could report a shared store as free or two bridges as twice one by accident.
No servers, no sockets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ami_bridge import config as config_mod
from bench import scale_out as so
from bench.personal_data import write_config


def _point(store: str, kind: str, rep: int, cpu: float, main: float) -> dict[str, Any]:
    return {"kind": "point", "store": store, "venue_kind": kind, "rep": rep,
            "cpu_us_per_route": cpu, "cpu_us_per_route_main": main,
            "cpu_us_per_route_vts": cpu - main, "pg_cpu_us_per_route": 5.0,
            "p50_ms": 1.0, "p99_ms": 3.0, "max_ms": 9.0, "routes_per_s": 1000.0,
            "loadgen_cpu_pct": 20.0, "actions": {"route": 90, "reject": 10},
            "completed": 100, "deferred_ticks": 0, "errors": {}}


def _sat(variant: str, rep: int, rps: float, per_cpu: float,
         kind: str = "saturation") -> dict[str, Any]:
    names = ["pg-a"] + (["pg-b"] if variant == "two" else [])
    return {"kind": kind, "variant": variant, "rep": rep, "users": 10,
            "offered_rate_each": 500.0 if kind == "paced" else None,
            "routes_per_s": rps, "machine_busy_share": 1.0,
            "routes_per_bridge_cpu_s": per_cpu, "routes_per_cpu_s_all": per_cpu / 2,
            "per_bridge": {n: {"cpu_us_per_route": 1e6 / per_cpu} for n in names}}


def test_store_cost_is_postgres_minus_sqlite_paired_by_repetition() -> None:
    records = [
        _point("sqlite", "personal", 0, 500.0, 350.0),
        _point("postgres", "personal", 0, 530.0, 370.0),
        # a noisy repetition: both sides high, the paired difference stays small
        _point("sqlite", "personal", 1, 900.0, 600.0),
        _point("postgres", "personal", 1, 910.0, 610.0),
        _point("sqlite", "personal", 2, 510.0, 350.0),
        _point("postgres", "personal", 2, 600.0, 420.0),
    ]
    cost = next(s for s in so.summarize(records, 1000) if s["kind"] == "store-cost")
    assert cost["venue_kind"] == "personal"
    assert cost["added_us_each"] == [30.0, 10.0, 90.0]
    assert cost["added_us_per_route"] == 30.0
    assert cost["added_us_main"] == 20.0
    assert cost["target_added_le_50us"] is True
    worse = [r if r["store"] == "sqlite" else {**r, "cpu_us_per_route":
                                                r["cpu_us_per_route"] + 60}
             for r in records]
    cost = next(s for s in so.summarize(worse, 1000) if s["kind"] == "store-cost")
    assert cost["added_us_per_route"] == 90.0
    assert cost["target_added_le_50us"] is False


def test_scale_ratio_pairs_one_and_two_by_repetition() -> None:
    records = [_sat("one", 0, 1000.0, 2000.0), _sat("two", 0, 1500.0, 1800.0),
               _sat("one", 1, 500.0, 2000.0), _sat("two", 1, 1000.0, 2000.0),
               _sat("one", 2, 1000.0, 2000.0), _sat("two", 2, 1200.0, 1900.0)]
    scale = next(s for s in so.summarize(records, 1000) if s["kind"] == "scale")
    assert scale["two_over_one_each"] == [1.5, 2.0, 1.2]
    assert scale["two_over_one_routes_per_s"] == 1.5
    assert scale["two_over_one_per_bridge_cpu_s"] == 0.95
    # two bridges at 0.95 of one's routes per CPU-second: 1.9x one with the cores for it
    assert scale["two_over_one_cpu_normalised"] == 1.9
    assert scale["one_pg-a_cpu_us_per_route"] == 500.0
    assert "one_pg-b_cpu_us_per_route" not in scale
    assert scale["two_pg-b_cpu_us_per_route"] == round(1e6 / 1900.0, 1)
    assert "paced_two_over_one_cpu_per_route" not in scale


def test_paced_cpu_ratio_is_each_bridge_with_the_other_busy_against_alone() -> None:
    records = [_sat("one", 0, 1000.0, 2000.0), _sat("two", 0, 1500.0, 1800.0),
               _sat("one", 0, 500.0, 2500.0, "paced"), _sat("two", 0, 1000.0, 2000.0,
                                                             "paced")]
    scale = next(s for s in so.summarize(records, 1000) if s["kind"] == "scale")
    assert scale["paced_one_pg-a_cpu_us_per_route"] == 400.0
    assert scale["paced_two_pg-b_cpu_us_per_route"] == 500.0
    assert scale["paced_two_over_one_cpu_per_route"] == 1.25
    assert scale["paced_offered_rate_each"] == 500.0
    # the saturation figures are not mixed with the paced ones
    assert scale["two_over_one_routes_per_s"] == 1.5


def test_no_scale_summary_without_both_variants() -> None:
    out = so.summarize([_sat("one", 0, 1000.0, 2000.0)], 1000)
    assert not [s for s in out if s["kind"] == "scale"]


def test_busy_share_reads_the_tick_deltas() -> None:
    assert so.busy_share((100, 1000), (250, 1200)) == 0.75
    assert so.busy_share((100, 1000), (100, 1000)) is None
    busy, total = so.machine_ticks()
    assert 0 <= busy <= total


def test_postgres_config_names_the_dsn_and_loads(tmp_path: Path) -> None:
    dsn = "host=/tmp/ab-pg-x port=5432 user=postgres dbname=scale"
    cfg_path = tmp_path / "pg-a.toml"
    write_config(cfg_path, agi_port=4742, api_port=4743, store=tmp_path / "unused.sqlite3",
                 users=3, vts="so1v", store_dsn=dsn)
    cfg = config_mod.load(cfg_path)
    assert cfg.store.backend == "postgresql"
    assert cfg.store.dsn == dsn
    lite = tmp_path / "sqlite.toml"
    write_config(lite, agi_port=4740, api_port=4741, store=tmp_path / "s.sqlite3", users=3,
                 vts="so0v")
    assert config_mod.load(lite).store.backend == "sqlite"
