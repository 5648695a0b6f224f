"""The serving benchmark end to end on the small profile, briefly: its JSON keys, no
errors, and cache hits in the cached run (timings are not asserted)."""

import json

from bi_platform.serving import bench as serving

# wrk is installed by `make` (scripts/ensure-system-deps.sh); without it serving.run raises
# BenchError naming `make system-deps`, so the test fails rather than skips.


def test_bench_serving_small_run() -> None:
    messages: list[str] = []
    stages, summary = serving.run(
        duration_s=2,
        warmup_s=2,
        max_warmup_s=2,
        users=8,
        workers=1,
        profile="small",
        progress=messages.append,
    )
    json.dumps(summary)
    assert messages[0].startswith("no small warehouse: building one")
    assert summary["bench"] == "serving" and summary["generator"] == "wrk"
    assert summary["users"] == 8 and summary["workers"] == 1
    assert summary["warehouse"].startswith("built (small lake")
    for key in ("p95_ms_cached", "rps_cached", "p95_ms_uncached", "rps_uncached"):
        assert isinstance(summary[key], float) and summary[key] > 0, key
    assert summary["errors"] == 0 and summary["warmup_errors"] == 0
    assert 0 < summary["hit_rate"] <= 1 and stages["cached"]["cache_hits"] > 0
    assert set(summary["targets_met"]) == set(serving.TARGETS)
    assert summary["targets_met"]["errors"] is True
    assert set(stages) == {"warmup", "cached", "uncached"}


def test_query_mix_covers_the_catalog() -> None:
    from bi_platform.serving.queries import catalog

    paths = serving.query_mix([261, 2, 3])
    names = {p.split("?")[0].rsplit("/", 1)[1] for p in paths}
    assert names == {q["name"] for q in catalog()}
    assert any("une_a=261&une_b=2" in p for p in paths)
    assert all(p.isascii() for p in paths)
