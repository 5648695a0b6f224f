"""Stratified estimation: allocation rules, the bottom-k seeded sample, the estimator and the
coverage of its 95% interval over repeated seeded samples."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from bi_platform.etl.estimation import (
    _KEY,
    EstimationResult,
    _draw_sample,
    _key_columns,
    allocate,
    stratified_estimate,
    stratified_sample,
    with_sample_key,
)


def make_population(strata: int = 50, rows: int = 50_000, seed: int = 7) -> pl.DataFrame:
    """Records shaped like the ETL output: skewed stratum sizes, per-product price levels."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, strata + 1) ** 0.8
    sizes = np.maximum(3, np.floor(weights / weights.sum() * rows)).astype(int)
    sizes[0] += rows - sizes.sum()
    product = np.repeat([f"product-{i:03d}" for i in range(strata)], sizes)
    price = np.repeat(rng.uniform(100, 20_000, strata), sizes)
    quantity = rng.integers(1, 50, rows).astype(np.uint32)
    value = np.round(price * quantity * rng.lognormal(0, 0.3, rows)).astype(np.int64)
    return pl.DataFrame(
        {
            "id": np.arange(rows, dtype=np.uint32),
            "timestamp": pl.Series(rng.integers(1_600_000_000, 1_700_000_000, rows)).cast(
                pl.Datetime("ms", "UTC")
            ),
            "quantity": quantity,
            "value": value,
            "product": product,
        }
    )


@pytest.fixture(scope="module")
def population() -> pl.DataFrame:
    return make_population()


# -- allocation --------------------------------------------------------------------------------


def test_allocation_is_sqrt_proportional_and_hits_the_target() -> None:
    sizes = {f"s{i:02d}": n for i, n in enumerate([10, 100, 1_000, 10_000, 40_000, 250, 3_000])}
    total = sum(sizes.values())
    alloc = allocate(sizes, 0.02)
    assert alloc.columns == ["stratum", "N_h", "n_h"]
    assert alloc["stratum"].to_list() == sorted(sizes)
    assert int(alloc["n_h"].sum()) == round(0.02 * total)
    free = alloc.filter((pl.col("n_h") > 2) & (pl.col("n_h") < pl.col("N_h")))
    # One constant c with |n_h - c sqrt(N_h)| < 1 for every unclipped stratum.
    c = float(free["n_h"].sum() / free["N_h"].sqrt().sum())
    assert all(abs(n - c * math.sqrt(big)) < 1 for n, big in free.select("n_h", "N_h").rows())
    assert len(free) >= 5


def test_allocation_bounds_minimum_and_census() -> None:
    sizes = {"one": 1, "two": 2, "three": 3, "big": 100_000}
    alloc = dict(allocate(sizes, 0.001).select("stratum", "n_h").rows())
    assert alloc["one"] == 1  # min(2, N_h)
    assert alloc["two"] == 2
    assert alloc["three"] == 2
    assert alloc["big"] <= 100_000
    assert sum(alloc.values()) == round(0.001 * sum(sizes.values()))
    # fraction 1: a census.
    full = allocate(sizes, 1.0)
    assert full["n_h"].to_list() == full["N_h"].to_list()


def test_allocation_minimums_can_exceed_the_target() -> None:
    sizes = {f"p{i}": 50 for i in range(100)}  # 5,000 rows, 0.1% would be 5 rows
    alloc = allocate(sizes, 0.001)
    assert alloc["n_h"].to_list() == [2] * 100
    assert allocate(sizes, 0.001, min_per_stratum=3)["n_h"].sum() == 300


def test_allocation_accepts_a_frame_and_rejects_bad_input() -> None:
    frame = pl.DataFrame({"stratum": ["b", "a"], "N_h": [400, 900]})
    assert allocate(frame, 0.05).rows() == allocate({"a": 900, "b": 400}, 0.05).rows()
    for fraction in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="fraction"):
            allocate(frame, fraction)
    with pytest.raises(ValueError, match="min_per_stratum"):
        allocate(frame, 0.1, min_per_stratum=0)
    with pytest.raises(ValueError, match="population must be >= 1"):
        allocate({"a": 0}, 0.1)
    with pytest.raises(ValueError, match="lacks column"):
        allocate(pl.DataFrame({"stratum": ["a"]}), 0.1)
    assert allocate({}, 0.1).height == 0


# -- sampling ----------------------------------------------------------------------------------


def test_sample_is_reproducible_and_independent_of_row_and_file_order(
    population: pl.DataFrame, tmp_path: Path
) -> None:
    alloc, first = stratified_sample(population, fraction=0.02, seed=11)
    _, again = stratified_sample(population, fraction=0.02, seed=11)
    assert first.equals(again)
    assert first.height == int(alloc["n_h"].sum()) == round(0.02 * population.height)
    # Per stratum exactly n_h rows.
    counts = first.group_by("product").len().sort("product")
    assert counts["len"].to_list() == alloc["n_h"].to_list()

    shuffled = population.sample(fraction=1.0, shuffle=True, seed=3)
    _, from_shuffled = stratified_sample(shuffled, fraction=0.02, seed=11)
    assert from_shuffled.equals(first)

    # Two Parquet files, scanned in either order.
    half = population.height // 3
    shuffled[:half].write_parquet(tmp_path / "a.parquet")
    shuffled[half:].write_parquet(tmp_path / "b.parquet")
    for order in (["a", "b"], ["b", "a"]):
        lazy = pl.scan_parquet([tmp_path / f"{name}.parquet" for name in order])
        assert stratified_sample(lazy, fraction=0.02, seed=11)[1].equals(first)

    _, other = stratified_sample(population, fraction=0.02, seed=12)
    overlap = len(set(first[_KEY]) & set(other[_KEY]))
    assert other.height == first.height
    assert overlap < first.height * 0.2  # a different seed draws a different sample


def test_sample_is_the_exact_bottom_k_even_when_passes_run_short(
    population: pl.DataFrame,
) -> None:
    schema = population.collect_schema()
    keys = _key_columns(schema, "product", None)
    assert list(keys) == ["id", "timestamp", "quantity", "value"]
    counts = population.group_by("product").len("N_h").rename({"product": "stratum"})
    alloc = allocate(counts, 0.03)
    brute = (
        with_sample_key(population.lazy(), 5, keys)
        .collect()
        .sort(["product", _KEY])
        .join(alloc.rename({"stratum": "product"}), on="product")
        .filter(pl.int_range(pl.len()).over("product") < pl.col("n_h"))
        .select("product", "quantity", "value", _KEY)
    )
    for oversample, slack in ((1.5, 16.0), (0.3, 0.0)):  # the second needs several passes
        drawn = _draw_sample(
            population.lazy(),
            alloc,
            stratum="product",
            columns=("quantity", "value"),
            seed=5,
            key_columns=keys,
            oversample=oversample,
            slack=slack,
        )
        assert drawn.select("product", "quantity", "value", _KEY).equals(brute)


def test_every_row_of_a_stratum_is_equally_likely() -> None:
    rows = pl.DataFrame(
        {
            "id": np.arange(20, dtype=np.uint32),
            "quantity": np.ones(20, dtype=np.uint32),
            "product": ["only"] * 20,
        }
    )
    alloc = pl.DataFrame({"stratum": ["only"], "N_h": [20], "n_h": [5]})
    keys = _key_columns(rows.collect_schema(), "product", ("id",))
    hits = np.zeros(20, dtype=int)
    for seed in range(400):
        sample = _draw_sample(
            rows.lazy(),
            alloc,
            stratum="product",
            columns=("id",),
            seed=seed,
            key_columns=keys,
        )
        assert sample.height == 5
        hits[sample["id"].to_numpy()] += 1
    # Binomial(400, 1/4) per row: mean 100, sd 8.7.
    assert hits.min() >= 65
    assert hits.max() <= 135


# -- estimator ---------------------------------------------------------------------------------


def test_census_gives_the_exact_totals_with_zero_error(population: pl.DataFrame) -> None:
    result = stratified_estimate(population, fraction=1.0, seed=1)
    for column in ("quantity", "value"):
        est = result.estimates[column]
        exact = float(population[column].cast(pl.Int64).sum())
        assert est.exact == exact
        assert est.estimate == pytest.approx(exact, rel=1e-12)
        assert est.standard_error == pytest.approx(0.0, abs=1e-6 * exact)
        assert est.covers is True
        assert est.relative_error == pytest.approx(0.0, abs=1e-12)
    assert result.sample_size == result.population == population.height


def test_estimate_matches_a_hand_computation(population: pl.DataFrame) -> None:
    alloc, sample = stratified_sample(population, fraction=0.02, seed=21)
    result = stratified_estimate(population.lazy(), fraction=0.02, seed=21)
    assert isinstance(result, EstimationResult)
    assert result.sample_size == sample.height
    assert result.strata == 50
    assert result.population == population.height
    z = 1.959963984540054
    sizes = dict(alloc.select("stratum", "N_h").rows())
    for column in ("quantity", "value"):
        total = 0.0
        variance = 0.0
        for (product,), group in sample.group_by(["product"]):
            values = group[column].cast(pl.Float64).to_list()
            n, big = len(values), sizes[product]
            mean = sum(values) / n
            s2 = sum((v - mean) ** 2 for v in values) / (n - 1)
            total += big * mean  # expansion weight N_h/n_h on each sampled row
            variance += big**2 * (1 - n / big) * s2 / n
        est = result.estimates[column]
        exact = float(population[column].cast(pl.Int64).sum())
        assert est.estimate == pytest.approx(total, rel=1e-9)
        assert est.standard_error == pytest.approx(math.sqrt(variance), rel=1e-9)
        assert est.ci_low == pytest.approx(total - z * math.sqrt(variance), rel=1e-9)
        assert est.ci_high == pytest.approx(total + z * math.sqrt(variance), rel=1e-9)
        assert est.exact == exact
        assert est.relative_error == pytest.approx(abs(total - exact) / exact)
        assert est.covers is (est.ci_low <= exact <= est.ci_high)
    json.dumps(result.as_metadata())  # JSON-able


def test_categorical_strata_without_exact_and_bad_columns(population: pl.DataFrame) -> None:
    as_text = stratified_estimate(population, fraction=0.02, seed=4)
    categorical = population.with_columns(pl.col("product").cast(pl.Categorical))
    as_cat = stratified_estimate(categorical.lazy(), fraction=0.02, seed=4, with_exact=False)
    for column in ("quantity", "value"):
        assert as_cat.estimates[column].estimate == as_text.estimates[column].estimate
        assert as_cat.estimates[column].exact is None
        assert as_cat.estimates[column].covers is None
    with pytest.raises(ValueError, match="lack column"):
        stratified_estimate(population.drop("value"))
    with pytest.raises(ValueError, match="numeric"):
        stratified_estimate(population, columns=("product",), stratum="id")
    with pytest.raises(ValueError, match="confidence"):
        stratified_estimate(population, confidence=1.0)
    with pytest.raises(ValueError, match="key column 'nope'"):
        stratified_estimate(population, key_columns=("nope",))


@pytest.fixture(scope="module")
def repeated(population: pl.DataFrame) -> list[EstimationResult]:
    lazy = population.lazy()
    return [stratified_estimate(lazy, fraction=0.02, seed=seed) for seed in range(200)]


def test_ninety_five_percent_interval_covers_about_95_percent(
    repeated: list[EstimationResult],
) -> None:
    for column in ("quantity", "value"):
        coverage = np.mean([r.estimates[column].covers for r in repeated])
        assert 0.90 <= coverage <= 0.99, (column, coverage)


def test_estimator_is_unbiased_and_its_standard_error_is_honest(
    repeated: list[EstimationResult],
) -> None:
    for column in ("quantity", "value"):
        estimates = np.array([r.estimates[column].estimate for r in repeated])
        errors = np.array([r.estimates[column].standard_error for r in repeated])
        exact = repeated[0].estimates[column].exact
        assert exact is not None
        # Mean of 200 estimates within 4 standard errors of the mean of the truth.
        assert abs(estimates.mean() - exact) <= 4 * errors.mean() / math.sqrt(len(repeated))
        # The reported SE agrees with the spread of the estimates across seeds.
        assert 0.8 <= estimates.std(ddof=1) / errors.mean() <= 1.25
        assert len({round(e, 6) for e in estimates}) > 190  # the seeds really differ


def test_no_records_give_zero_totals(population: pl.DataFrame) -> None:
    result = stratified_estimate(population.clear().lazy())
    assert (result.population, result.sample_size, result.strata) == (0, 0, 0)
    for est in result.estimates.values():
        assert (est.estimate, est.standard_error, est.exact, est.covers) == (0.0, 0.0, 0.0, True)
