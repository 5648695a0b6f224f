"""Public API of the retail sample: one table, the large fact, every export + manifest."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from bi_platform.lib.files import atomic_path, write_json_atomic
from bi_platform.retail.sample.helpers import _conform, _draw_days, _pick, _rng, _round2
from bi_platform.retail.sample.profiles import (
    _REF_DAY,
    _US_PER_DAY,
    DEFAULT_SEED,
    GENERATOR_VERSION,
    MANIFEST_NAME,
    PROFILES,
    REFERENCE_DATE,
    RetailProfile,
)
from bi_platform.retail.sample.tables import _FACT_TABLES, _MASTER_TABLES
from bi_platform.retail.sample.universe import (
    _admmat_frame,
    _default_products,
    _profile_universe,
    _Universe,
    _universe,
)
from bi_platform.retail.schema import ALL_TABLES, LARGE_FACT_TABLE, RetailTable

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------
def generate_admmat(
    rows: int, *, stores: int = 38, products: int | None = None, seed: int = DEFAULT_SEED
) -> pl.DataFrame:
    """The raw ``admmat`` export: ``rows`` unique (UNE, PRODUTO) rows, raw schema."""
    products = products or _default_products(rows, stores)
    manufacturers = max(20, products // 32)
    return _admmat_frame(_universe(rows, stores, products, manufacturers, seed), seed)


def generate_table(name: str, profile: RetailProfile, *, seed: int = DEFAULT_SEED) -> pl.DataFrame:
    """One table of :data:`TABLES` for the profile, with its raw schema."""
    u = _profile_universe(profile, seed)
    if name == "admmat":
        return _admmat_frame(u, seed)
    if name in _MASTER_TABLES:
        return _MASTER_TABLES[name](u, seed)
    if name in _FACT_TABLES:
        return _FACT_TABLES[name](u, getattr(profile, f"{name}_rows"), seed)
    if name == LARGE_FACT_TABLE.name:
        raise ValueError(f"{name} is written in chunks: use write_large_fact()")
    raise KeyError(f"unknown retail table {name!r}")


def _vendas_itens_chunk(
    u: _Universe, rng: np.random.Generator, rows: int, first_cupom: int, day0: int, day1: int
) -> pl.DataFrame:
    """``rows`` sale lines of coupons issued on epoch days [day0, day1], in time order."""
    k = np.empty(0, dtype=np.int64)
    while k.sum() < rows:
        k = np.r_[k, 1 + rng.poisson(1.8, max(16, int((rows - k.sum()) / 2.6)))]
    k = k[: np.searchsorted(np.cumsum(k), rows) + 1]
    k[-1] -= int(k.sum()) - rows
    n_cupons = k.size
    weights = u.store_weight / u.store_weight.sum()
    store = rng.choice(weights.size, n_cupons, p=weights)
    day = _draw_days(rng, n_cupons, day0, day1)
    second = 8 * 3600 + (13 * 3600 * rng.beta(2.2, 2.0, n_cupons)).astype(np.int64)  # 8h-21h
    stamp = day * _US_PER_DAY + second * 1_000_000
    order = np.argsort(stamp, kind="stable")
    store, stamp = store[order], stamp[order]
    pdv = rng.integers(1, 4 + np.round(12 * u.store_weight[store]).astype(np.int64))
    operator = u.store_id[store].astype(np.int64) * 1000 + rng.integers(1, 60, n_cupons)
    payment = rng.choice(5, n_cupons, p=[0.12, 0.28, 0.32, 0.26, 0.02])
    line_cupom = np.repeat(np.arange(n_cupons), k)
    item = np.arange(rows) - np.repeat(np.cumsum(k) - k, k) + 1
    # Products: drawn within the coupon's store, proportionally to demand.
    cum = np.cumsum(u.pair_demand)
    bounds = np.searchsorted(u.pair_store, np.arange(u.store_id.size + 1))
    lo = np.r_[0.0, cum][bounds[:-1]]
    hi = np.r_[0.0, cum][bounds[1:]]
    line_store = store[line_cupom]
    target = lo[line_store] + rng.random(rows) * (hi[line_store] - lo[line_store])
    pair = np.minimum(np.searchsorted(cum, target, side="right"), cum.size - 1)
    pp = u.pair_prod[pair]
    unit = u.prod_unit[pp]
    qty = np.where(unit < 1, 1 + rng.poisson(4, rows), 1 + rng.poisson(0.35, rows)) * unit
    unit_price = u.pair_price[pair]
    gross = qty * unit_price
    discount = _round2(np.where(rng.random(rows) < 0.15, gross * rng.uniform(0.05, 0.3, rows), 0.0))
    payments = ("DINHEIRO", "CARTÃO DÉBITO", "CARTÃO CRÉDITO", "PIX", "VALE-PRESENTE")
    frame = pl.DataFrame(
        {
            "CUPOM": first_cupom + line_cupom,
            "ITEM": item,
            "DATA_HORA": pl.Series(stamp[line_cupom]).cast(pl.Datetime("us")),
            "UNE": u.store_id[line_store],
            "PRODUTO": u.prod_id[pp],
            "QTDE": qty,
            "PRECO_UNITARIO": unit_price,
            "DESCONTO": discount,
            "VALOR_LIQUIDO": _round2(gross - discount),
            "FORMA_PAGAMENTO": _pick(payments, payment[line_cupom]),
            "OPERADOR": operator[line_cupom],
            "PDV": pdv[line_cupom],
        }
    )
    return _conform(frame, LARGE_FACT_TABLE)


def write_large_fact(
    path: Path,
    rows: int,
    *,
    seed: int = DEFAULT_SEED,
    chunk_rows: int = 2_000_000,
    profile: RetailProfile | str = "default",
) -> Path:
    """Write ``rows`` lines of ``vendas_itens`` (a year of coupons, in time order) to one
    Parquet file, one row group per chunk, atomically; memory stays ~one chunk."""
    prof = PROFILES[profile] if isinstance(profile, str) else profile
    u = _profile_universe(prof, seed)
    path = Path(path)
    with atomic_path(path, durable=False) as tmp:
        n_chunks = max(1, math.ceil(rows / chunk_rows))
        next_cupom = 1_000_000_001
        writer: pq.ParquetWriter | None = None
        try:
            for c in range(n_chunks):
                n = min(chunk_rows, rows - c * chunk_rows)
                day0 = _REF_DAY - 364 + 365 * c // n_chunks
                day1 = max(day0, _REF_DAY - 365 + 365 * (c + 1) // n_chunks)
                chunk = _vendas_itens_chunk(
                    u, _rng(seed, "vendas_itens", c), n, next_cupom, day0, day1
                )
                next_cupom = int(chunk["CUPOM"][-1]) + 1 if n else next_cupom
                table = chunk.to_arrow()
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
                writer.write_table(table, row_group_size=max(n, 1))
                logger.debug("vendas_itens: chunk %d/%d written", c + 1, n_chunks)
            if writer is None:  # rows == 0: an empty file with the right schema
                empty = pl.DataFrame(schema=LARGE_FACT_TABLE.raw_schema).to_arrow()
                writer = pq.ParquetWriter(tmp, empty.schema, compression="zstd")
                writer.write_table(empty)
            writer.close()
            writer = None
        finally:
            if writer is not None:
                writer.close()
    return path


def schema_hash(tables: tuple[str, ...]) -> str:
    """Hash of the raw schemas of ``tables`` and of the generator version."""
    payload = {
        "generator_version": GENERATOR_VERSION,
        "tables": {
            name: [[c, str(t)] for c, t in _table(name).raw_schema.items()] for name in tables
        },
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _table(name: str) -> RetailTable:
    return ALL_TABLES[name]


def _write_parquet(frame: pl.DataFrame, path: Path) -> None:
    with atomic_path(path, durable=False) as tmp:
        frame.write_parquet(tmp, compression="zstd", statistics=True)


def _manifest_is_current(
    out_dir: Path, profile: RetailProfile, seed: int, digest: str
) -> dict[str, Path] | None:
    manifest = out_dir / MANIFEST_NAME
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    if (data.get("profile"), data.get("seed"), data.get("schema_hash")) != (
        profile.name,
        seed,
        digest,
    ) or set(data.get("tables", {})) != set(profile.tables):
        return None
    paths = {}
    for name, entry in data["tables"].items():
        path = out_dir / _table(name).raw_file
        if not path.is_file() or path.stat().st_size != entry.get("bytes"):
            return None
        paths[name] = path
    return paths


def write_retail_exports(
    out_dir: Path, profile: str = "default", *, seed: int = DEFAULT_SEED, force: bool = False
) -> dict[str, Path]:
    """Write every table of the profile as ``out_dir/<table>.parquet`` plus a manifest.

    Idempotent: when the manifest matches (profile, seed, schema hash) and the files are
    there with the recorded sizes, nothing is written unless ``force``. Returns the paths.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {sorted(PROFILES)}")
    prof = PROFILES[profile]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    digest = schema_hash(prof.tables)
    if not force and (paths := _manifest_is_current(out_dir, prof, seed, digest)) is not None:
        logger.info("retail exports in %s are current (%s, seed %d)", out_dir, profile, seed)
        return {name: paths[name] for name in prof.tables}
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    stale = out_dir / LARGE_FACT_TABLE.raw_file
    if not prof.include_large_fact and stale.exists():
        stale.unlink()
        logger.info("removed %s: not part of profile %s", stale, profile)
    started = time.perf_counter()
    entries: dict[str, dict[str, object]] = {}
    paths: dict[str, Path] = {}
    for name in prof.tables:
        t0 = time.perf_counter()
        path = out_dir / _table(name).raw_file
        if name == LARGE_FACT_TABLE.name:
            write_large_fact(path, prof.vendas_itens_rows, seed=seed, profile=prof)
            rows = pq.ParquetFile(path).metadata.num_rows
        else:
            frame = generate_table(name, prof, seed=seed)
            _write_parquet(frame, path)
            rows = frame.height
            del frame
        size = path.stat().st_size
        entries[name] = {"file": path.name, "rows": rows, "bytes": size}
        paths[name] = path
        logger.info(
            "wrote %s: %d rows, %.1f MB in %.1fs",
            path.name,
            rows,
            size / 1e6,
            time.perf_counter() - t0,
        )
    manifest = {
        "generator": __package__,
        "generator_version": GENERATOR_VERSION,
        "profile": prof.name,
        "seed": seed,
        "reference_date": REFERENCE_DATE.isoformat(),
        "schema_hash": digest,
        "sizes": {f.name: getattr(prof, f.name) for f in fields(prof) if f.name != "name"},
        "tables": entries,
    }
    write_json_atomic(out_dir / MANIFEST_NAME, manifest, durable=False)
    logger.info(
        "retail exports (%s, seed %d) written to %s in %.1fs",
        profile,
        seed,
        out_dir,
        time.perf_counter() - started,
    )
    return paths
