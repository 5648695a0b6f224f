"""Stratified estimation: Student t quantiles, collapsed strata, the bottom-k seeded sample,
the estimator (by hand), exact totals, the real sample size and its reason, and the
coverage of the 95% interval over repeated seeded samples -- on the seeded sample data and
on a skewed test population (printed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from bi_platform.etl.estimation import (
    _GROUP,
    _KEY,
    COCHRAN_FACTOR,
    EstimationResult,
    StratifiedEstimator,
    _draw_sample,
    _key_columns,
    collapse_strata,
    population_skewness,
    sqrt_shares,
    stratified_estimate,
    stratified_sample,
    student_t_quantile,
    with_sample_key,
)
from bi_platform.etl.parse_common import ParseOptions
from bi_platform.etl.parser import parse_file, read_records
from bi_platform.etl.sample import PROCESSED, read_manifest, write_etl_sources

SEEDS = 200  # repeated samples per coverage test
SKEWED_SEEDS = 400  # more for the skewed population: its coverage is noisier
MIN_COVERAGE = 0.93


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


def skewed_population(seed: int = 11, products: int = 800, rows: int = 60_000) -> pl.DataFrame:
    """A retail population more skewed than the sample data (value skewness ~14): Zipf
    product popularity, log-normal unit prices (sigma 1.3), geometric quantities and
    log-normal noise per sale."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, products + 1)
    product = rng.choice(products, rows, p=weights / weights.sum())
    price = rng.lognormal(7, 1.3, products)
    quantity = np.minimum(rng.geometric(0.12, rows), 80)
    value = np.round(price[product] * quantity * rng.lognormal(0, 0.5, rows)).astype(np.int64)
    return pl.DataFrame(
        {
            "id": np.arange(rows, dtype=np.uint32),
            "quantity": quantity.astype(np.uint32),
            "value": value,
            "product": [f"p{p:04d}" for p in product],
        }
    )


@pytest.fixture(scope="module")
def population() -> pl.DataFrame:
    return make_population()


@pytest.fixture(scope="module")
def seeded_records(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    """The valid records of the ``small`` sample inbox (``bi-platform seed``), parsed."""
    home = tmp_path_factory.mktemp("seeded")
    write_etl_sources(home, "small", max_file_mb=2)
    options = ParseOptions.from_settings()
    options = ParseOptions(options.layout, options.timestamp_min, options.timestamp_max)
    out = home / "out"
    paths = []
    for name, entry in read_manifest(home)["files"].items():
        if entry["expect"] in (PROCESSED, "dead_letter") and not name.endswith("_copy.csv"):
            result = parse_file(
                home / "etl" / "inbox" / name, out / f"{name}.parquet", out / f"{name}.d", options
            )
            paths.append(result.records_path)
    return read_records(paths).collect()


# -- Student t -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "df", "expected"),
    [
        (0.975, 1, 12.706204736),
        (0.975, 2, 4.302652730),
        (0.975, 10, 2.228138852),
        (0.975, 30, 2.042272456),
        (0.95, 5, 2.015048373),
        (0.025, 10, -2.228138852),
        (0.975, 1e9, 1.959963985),
    ],
)
def test_student_t_quantiles(p: float, df: float, expected: float) -> None:
    assert student_t_quantile(p, df) == pytest.approx(expected, abs=1e-7)


def test_fractional_df_interpolates_and_bad_input_is_refused() -> None:
    assert student_t_quantile(0.975, 10) < student_t_quantile(0.975, 9.5)
    assert student_t_quantile(0.975, 9.5) < student_t_quantile(0.975, 9)
    with pytest.raises(ValueError, match="p must be"):
        student_t_quantile(1.0, 5)
    with pytest.raises(ValueError, match="df must be"):
        student_t_quantile(0.9, 0)


# -- allocation and collapsed strata --------------------------------------------------------


def test_sqrt_shares_are_proportional_capped_and_add_up() -> None:
    sizes = np.array([10, 100, 1_000, 10_000, 40_000, 250, 3_000])
    shares = sqrt_shares(sizes, 1_000)
    assert shares.sum() == pytest.approx(1_000)
    ratio = shares / np.sqrt(sizes)
    assert np.allclose(ratio, ratio[0])
    capped = sqrt_shares(np.array([2, 5, 1_000_000]), 4_000)
    assert capped[:2].tolist() == [2, 5]  # at most N_h
    assert sqrt_shares(sizes, sizes.sum()).tolist() == sizes.tolist()  # a census


def test_rare_products_are_pooled_into_collapsed_strata_of_at_least_the_minimum() -> None:
    """4,600 products, most of them rare: 2 rows each would be a large share of the
    records; collapsed, the sample keeps the requested size."""
    rng = np.random.default_rng(3)
    sizes = {f"p{i:04d}": int(n) for i, n in enumerate(rng.zipf(1.6, 4_600).clip(1, 3_000))}
    total = sum(sizes.values())
    wanted = round(0.005 * total)
    design = collapse_strata(sizes, wanted, min_per_stratum=3)
    groups = design.groups
    assert design.sample_size == wanted
    assert int(groups["N_h"].sum()) == total
    assert int(groups["products"].sum()) == len(sizes)
    assert (groups["n_h"] >= 3).all() and (groups["n_h"] <= groups["N_h"]).all()
    assert design.collapsed_products > 4_000 and 0 < design.collapsed_strata < wanted / 3 + 1
    assert groups.height == design.collapsed_strata + (len(sizes) - design.collapsed_products)
    mapping = design.strata
    assert mapping.height == len(sizes) and mapping["group"].min() == 0
    # products whose share reaches the minimum keep a stratum of their own
    shares = sqrt_shares(mapping["N_h"].to_numpy(), wanted)
    own = mapping.filter(pl.Series(shares >= 3))
    assert own.height > 10 and own["group"].n_unique() == own.height
    pooled = mapping.filter(pl.Series(shares < 3))
    assert pooled.height == design.collapsed_products
    assert not set(pooled["group"]) & set(own["group"])


def test_small_populations_census_and_minimums() -> None:
    assert collapse_strata({"a": 1, "b": 2}, 1, 3).sample_size == 3  # all of them
    census = collapse_strata({"a": 5, "b": 7, "c": 100}, 112, 3)
    assert census.groups["n_h"].to_list() == census.groups["N_h"].to_list()
    assert collapse_strata({}, 10).groups.height == 0
    with pytest.raises(ValueError, match="min_per_stratum"):
        collapse_strata({"a": 3}, 1, 0)
    with pytest.raises(ValueError, match="population must be >= 1"):
        collapse_strata({"a": 0}, 1)
    with pytest.raises(ValueError, match="lacks column"):
        collapse_strata(pl.DataFrame({"stratum": ["a"]}), 1)


# -- sampling ----------------------------------------------------------------------------------


def test_sample_is_reproducible_and_independent_of_row_and_file_order(
    population: pl.DataFrame, tmp_path: Path
) -> None:
    design, first = stratified_sample(population, fraction=0.02, seed=11)
    _, again = stratified_sample(population, fraction=0.02, seed=11)
    assert first.equals(again)
    assert first.height == design.sample_size == round(0.02 * population.height)
    counts = first.group_by(_GROUP).len().sort(_GROUP)
    assert counts["len"].to_list() == design.groups.sort("group")["n_h"].to_list()

    shuffled = population.sample(fraction=1.0, shuffle=True, seed=3)
    _, from_shuffled = stratified_sample(shuffled, fraction=0.02, seed=11)
    assert from_shuffled.equals(first)

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
    alloc = collapse_strata(counts, 1_500, 3).groups.rename({"group": "stratum"})
    mapping = collapse_strata(counts, 1_500, 3).strata.select(
        pl.col("stratum").alias("product"), pl.col("group").alias(_GROUP)
    )
    grouped = population.join(mapping, on="product")
    brute = (
        with_sample_key(grouped.lazy(), 5, keys)
        .collect()
        .sort([_GROUP, _KEY])
        .join(alloc.select(pl.col("stratum").alias(_GROUP), "n_h"), on=_GROUP)
        .filter(pl.int_range(pl.len()).over(_GROUP) < pl.col("n_h"))
        .select(_GROUP, "quantity", "value", _KEY)
    )
    for oversample, slack in ((1.5, 16.0), (0.3, 0.0)):  # the second needs several passes
        drawn = _draw_sample(
            grouped.lazy(),
            alloc,
            stratum=_GROUP,
            columns=("quantity", "value"),
            seed=5,
            key_columns=keys,
            oversample=oversample,
            slack=slack,
        )
        assert drawn.select(_GROUP, "quantity", "value", _KEY).equals(brute)


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
            rows.lazy(), alloc, stratum="product", columns=("id",), seed=seed, key_columns=keys
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
        exact = int(population[column].cast(pl.Int64).sum())
        assert est.exact == exact and isinstance(est.exact, int)
        assert est.estimate == pytest.approx(exact, rel=1e-12)
        assert est.standard_error == pytest.approx(0.0, abs=1e-6 * exact)
        assert est.covers is True
        assert est.relative_error == pytest.approx(0.0, abs=1e-12)
    assert result.sample_size == result.population == population.height
    assert result.sample_fraction == 1.0 and "census" in result.size_reason


def test_estimate_matches_a_hand_computation(population: pl.DataFrame) -> None:
    """T = sum N_h mean_h; Var = sum N_h^2 (1 - n_h/N_h) s_h^2 / n_h; t with Satterthwaite
    df; widened on the skewed side by g (2t^2 + 1)/6 standard errors."""
    estimator = StratifiedEstimator(population)
    result = estimator.estimate(fraction=0.02, seed=21)
    assert isinstance(result, EstimationResult)
    design, sample = estimator.sample(result.sample_size, 21)
    assert sample.height == result.sample_size and result.strata == 50
    sizes = dict(design.groups.select("group", "N_h").rows())
    for column in ("quantity", "value"):
        total = variance = third = denominator = 0.0
        for (group,), rows in sample.group_by([_GROUP]):
            values = rows[column].cast(pl.Float64).to_numpy()
            n, big = len(values), sizes[group]
            mean = values.mean()
            s2 = ((values - mean) ** 2).sum() / (n - 1)
            k3 = n * ((values - mean) ** 3).sum() / ((n - 1) * (n - 2))
            part = big**2 * (1 - n / big) * s2 / n
            total += big * mean
            variance += part
            denominator += part**2 / (n - 1)
            third += big**3 * (1 - n / big) * (1 - 2 * n / big) * k3 / n**2
        se = math.sqrt(variance)
        df = variance**2 / denominator
        q = student_t_quantile(0.975, df)
        shift = third / variance**1.5 * (2 * q * q + 1) / 6
        est = result.estimates[column]
        assert est.estimate == pytest.approx(total, rel=1e-9)
        assert est.standard_error == pytest.approx(se, rel=1e-9)
        assert est.df == pytest.approx(df, rel=1e-9)
        assert est.ci_low == pytest.approx(total - (q + max(-shift, 0)) * se, rel=1e-9)
        assert est.ci_high == pytest.approx(total + (q + max(shift, 0)) * se, rel=1e-9)
        assert est.ci_high - est.ci_low >= 2 * q * se * (1 - 1e-12)  # never narrower
        exact = int(population[column].cast(pl.Int64).sum())
        assert est.exact == exact
        assert est.relative_error == pytest.approx(abs(total - exact) / exact)
        assert est.covers is (est.ci_low <= exact <= est.ci_high)
    json.dumps(result.as_metadata())  # JSON-able


def test_exact_totals_never_wrap() -> None:
    """Four valid int64 values of 2**62 add up to 2**64 (int64 sums wrap to 0); uint64
    values beyond int64 stay themselves."""
    big = pl.DataFrame(
        {
            "id": np.arange(4, dtype=np.uint32),
            "quantity": pl.Series([2**63 + 1, 2**63 + 2, 5, 7], dtype=pl.UInt64),
            "value": pl.Series([2**62] * 4, dtype=pl.Int64),
            "product": ["a", "a", "b", "b"],
        }
    )
    assert big["value"].sum() == 0  # what a plain int64 sum gives
    result = stratified_estimate(big, fraction=1.0, seed=1)
    assert result.estimates["value"].exact == 2**64
    assert result.estimates["quantity"].exact == 2**64 + 15
    assert result.estimates["value"].covers is True


def test_the_real_sample_size_fraction_and_reason_are_reported(
    seeded_records: pl.DataFrame,
) -> None:
    """On the seeded data (~4,600 products) 0.5% is ~300 rows: the sample keeps that order
    of size (no longer 2 rows per product, 14% of the records), raised by Cochran's rule
    because sales values are skewed, and the result says so."""
    result = stratified_estimate(seeded_records, fraction=0.005, seed=42)
    assert result.strata > 4_000
    assert result.target_size == round(0.005 * result.population)
    assert result.sample_fraction == result.sample_size / result.population < 0.05
    assert result.required_size > result.target_size
    assert result.sample_size >= result.required_size
    skewness = population_skewness(
        np.zeros(seeded_records.height, np.int64),
        seeded_records["value"].cast(pl.Float64).to_numpy(),
        np.array([seeded_records.height]),
    )
    assert result.required_size < 4 * COCHRAN_FACTOR * skewness**2  # of the right order
    assert "Cochran's rule" in result.size_reason and "collapsed strata" in result.size_reason
    assert result.collapsed_products > 4_000 and result.sampling_strata < result.strata
    meta = result.as_metadata()
    assert meta["sample_fraction"] == result.sample_fraction
    assert meta["size_reason"] == result.size_reason


def test_a_fraction_that_suffices_is_kept(population: pl.DataFrame) -> None:
    result = stratified_estimate(population, fraction=0.05, seed=3)
    assert result.sample_size == round(0.05 * population.height)
    assert "the configured fraction" in result.size_reason


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
    for fraction in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="fraction"):
            stratified_estimate(population, fraction=fraction)


def test_no_records_give_zero_totals(population: pl.DataFrame) -> None:
    result = stratified_estimate(population.clear().lazy())
    assert (result.population, result.sample_size, result.strata) == (0, 0, 0)
    for est in result.estimates.values():
        assert (est.estimate, est.standard_error, est.exact, est.covers) == (0.0, 0.0, 0, True)


# -- coverage ----------------------------------------------------------------------------------


def _coverage(records: pl.DataFrame, label: str, seeds: int = SEEDS) -> dict[str, float]:
    estimator = StratifiedEstimator(records)
    covered = {"quantity": 0, "value": 0}
    sizes = []
    for seed in range(seeds):
        result = estimator.estimate(fraction=0.005, seed=seed)
        sizes.append(result.sample_size)
        for column in covered:
            covered[column] += bool(result.estimates[column].covers)
    coverage = {column: hits / seeds for column, hits in covered.items()}
    print(  # noqa: T201 - the coverage is the test's output
        f"\n95% interval coverage over {seeds} seeds, {label} ({records.height:,} records, "
        f"median sample {int(np.median(sizes)):,} rows = "
        f"{np.median(sizes) / records.height:.2%}): "
        + ", ".join(f"{column} {value:.1%}" for column, value in coverage.items())
    )
    return coverage


def test_interval_coverage_on_the_seeded_data(seeded_records: pl.DataFrame) -> None:
    coverage = _coverage(seeded_records, "seeded sample data (small profile)")
    for column, value in coverage.items():
        assert value >= MIN_COVERAGE, (column, value)


def test_interval_coverage_on_a_skewed_population() -> None:
    records = skewed_population()
    values = records["value"].cast(pl.Float64).to_numpy()
    skewness = ((values - values.mean()) ** 3).mean() / values.std() ** 3
    assert skewness > 10  # more skewed than the sample data (~8)
    coverage = _coverage(
        records, f"skewed population (value skewness {skewness:.1f})", SKEWED_SEEDS
    )
    for column, value in coverage.items():
        assert value >= MIN_COVERAGE, (column, value)
