"""The ETL benchmark logic end to end at a small size: its JSON keys, the parity checks
and the scratch directory cleaned up (timings are not asserted)."""

import json
from pathlib import Path

from bi_platform.etl import bench as etl


def test_bench_etl_small_run(tmp_path: Path) -> None:
    messages: list[str] = []
    stages, summary = etl.run(
        8, workers=2, struct_prefix_mb=1, workdir=tmp_path, progress=messages.append
    )
    json.dumps(summary)
    assert list(tmp_path.iterdir()) == []  # the generated file and outputs are gone
    assert messages[0].startswith("generating 8 MiB")
    assert summary["bench"] == "etl" and summary["mb"] == 8
    assert summary["records"] == 8 * 2**20 // 56 == summary["estimate_records"]
    assert summary["workers"] == 2 and summary["struct_prefix_mb"] == 1
    for key in (
        "read_mb_per_s",
        "readinto_mb_per_s",
        "parse_mb_per_s",
        "struct_mb_per_s",
        "fraction_of_raw_read",
        "speedup_vs_struct",
    ):
        assert isinstance(summary[key], float) and summary[key] > 0, key
    assert 0 <= summary["estimate_rel_error"] < 0.2
    assert summary["estimate_rel_error"] == max(
        summary["estimate_rel_error_quantity"], summary["estimate_rel_error_value"]
    )
    assert isinstance(summary["ci_covers"], bool)
    assert 4_500 < summary["estimate_strata"] <= etl.PRODUCTS  # rare ones may not occur
    assert summary["dead_letter"] == 0
    assert set(summary["targets_met"]) == {
        "speedup_vs_struct",
        "fraction_of_raw_read",
        "estimate_rel_error",
        "estimate_on_10m_records",
        "parity",
    }
    assert all(isinstance(v, bool) for v in summary["targets_met"].values())
    assert summary["targets_met"]["parity"] is True
    assert summary["targets_met"]["estimate_on_10m_records"] is False  # 150k records here
    names = list(stages)
    assert names[0].startswith("read_floor") and names[2].startswith("parse_file (2 workers)")
    assert "1 MiB prefix, extrapolated" in names[3]
    struct_stage = stages[names[3]]
    assert struct_stage["extrapolated_seconds"] > struct_stage["seconds"]
    assert all(stage["seconds"] > 0 and stage["mb_per_s"] > 0 for stage in stages.values())


def test_generated_products_are_distinct_short_utf8() -> None:
    names = etl.product_names()
    assert len(names) == len(set(names)) == etl.PRODUCTS
    assert all(len(n) <= 32 and n.decode("utf-8") for n in names)
