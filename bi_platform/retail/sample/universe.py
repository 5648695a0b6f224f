"""The shared universe (stores, products, manufacturers, the admmat pairs) and the
``admmat`` export."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl

from bi_platform.retail.rules import MONTHS, WEEK_LABELS
from bi_platform.retail.sample.helpers import (
    _allocate,
    _choice,
    _conform,
    _dates,
    _format_numbers,
    _nullable,
    _pick,
    _retail_price,
    _rng,
    _round2,
    _sn,
)
from bi_platform.retail.sample.profiles import (
    _HISTORY_DAYS,
    _REF_DAY,
    _US_PER_DAY,
    REFERENCE_DATE,
    RetailProfile,
)
from bi_platform.retail.sample.vocabulary import (
    _BRAND_HEADS,
    _BRAND_TAILS,
    _COMPANY_SUFFIXES,
    _MANUFACTURER_UF,
    _MANUFACTURER_UF_P,
    _SEASON,
    _SEG_SHARE,
    _STORES,
    _VOCAB,
    MAX_STORES,
)
from bi_platform.retail.schema import SEGMENTS, TABLES


@dataclass(frozen=True)
class _Hierarchy:
    """Flattened segment > category > group > subgroup table (one row per subgroup)."""

    code: np.ndarray  # COD_SUBGRUPO
    segment: np.ndarray  # segment index
    group: list[str]
    frame: pl.DataFrame  # the segmentos table
    kinds: list[str]  # subgroup qualifier (for product names)


@functools.cache
def _hierarchy() -> _Hierarchy:
    rows: list[tuple[int, int, str, str, str, str, str]] = []
    for s, seg_name in enumerate(SEGMENTS):
        vocab = _VOCAB[seg_name]
        for c, (category, groups) in enumerate(vocab.categories.items(), start=1):
            for g, group in enumerate(groups, start=1):
                for k, kind in enumerate(vocab.kinds, start=1):
                    code = (s + 1) * 1_000_000 + c * 10_000 + g * 100 + k
                    rows.append((code, s, seg_name, category, group, f"{group} {kind}", kind))
    frame = pl.DataFrame(
        {
            "COD_SUBGRUPO": [r[0] for r in rows],
            "NOMESEGMENTO": [r[2] for r in rows],
            "NOMECATEGORIA": [r[3] for r in rows],
            "NOMEGRUPO": [r[4] for r in rows],
            "NOMESUBGRUPO": [r[5] for r in rows],
        }
    )
    frame = _conform(frame, TABLES["segmentos"])
    return _Hierarchy(
        code=np.array([r[0] for r in rows], dtype=np.int32),
        segment=np.array([r[1] for r in rows], dtype=np.int16),
        group=[r[4] for r in rows],
        frame=frame,
        kinds=[r[6] for r in rows],
    )


# --------------------------------------------------------------------------------------
# The shared universe: stores, products, manufacturers and the admmat (UNE, PRODUTO) pairs
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Universe:
    store_row: np.ndarray  # index into _STORES, per active store
    store_id: np.ndarray  # int32
    store_weight: np.ndarray  # relative size (mean 1)
    prod_id: np.ndarray  # int64, sorted
    prod_seg: np.ndarray
    prod_sub: np.ndarray  # index into the hierarchy
    prod_name: pl.Series
    prod_pack: pl.Series
    prod_unit: np.ndarray  # 0.5 for products sold by the metre, else 1
    prod_basket: np.ndarray  # units per sale
    prod_ean: pl.Series
    prod_manu: np.ndarray
    prod_price: np.ndarray
    prod_cost: np.ndarray
    prod_pop: np.ndarray
    prod_cadastro: np.ndarray  # epoch days
    prod_foralinha: np.ndarray  # bool
    prod_tipo: np.ndarray
    prod_master: np.ndarray
    prod_multiple: np.ndarray
    manu_id: np.ndarray
    manu_name: list[str]
    manu_brand: list[str]
    manu_cnpj: list[str]
    manu_uf: pl.Series
    manu_leadtime: np.ndarray
    pair_store: np.ndarray  # store index; pairs sorted by (store index, PRODUTO)
    pair_prod: np.ndarray  # product index
    pair_demand: np.ndarray  # expected units per day
    pair_price: np.ndarray

    @property
    def n_products(self) -> int:
        return int(self.prod_id.size)


def _default_products(rows: int, stores: int) -> int:
    return max(60, math.ceil(1.7 * rows / stores))


def _cnpj(base: int) -> str:
    digits = [int(c) for c in f"{base:08d}0001"]
    for weights in ((5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2), (6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2)):
        r = sum(d * w for d, w in zip(digits, weights, strict=True)) % 11
        digits.append(0 if r < 2 else 11 - r)
    s = "".join(map(str, digits))
    return f"{s[:2]}.{s[2:5]}.{s[5:8]}/{s[8:12]}-{s[12:]}"


def _ean13(base12: np.ndarray) -> np.ndarray:
    """Append the EAN-13 check digit to 12-digit integers."""
    digits = (base12[:, None] // 10 ** np.arange(11, -1, -1)) % 10
    total = (digits * np.tile([1, 3], 6)).sum(axis=1)
    return base12 * 10 + (10 - total % 10) % 10


@functools.lru_cache(maxsize=2)
def _universe(rows: int, stores: int, products: int, manufacturers: int, seed: int) -> _Universe:
    """Everything the tables share, derived from the sizes and the seed only."""
    if not 1 <= stores <= MAX_STORES:
        raise ValueError(f"stores must be between 1 and {MAX_STORES}, got {stores}")
    if rows > 0.9 * stores * products:
        raise ValueError(f"{rows} admmat rows need more than {products} products")
    hier = _hierarchy()

    # Stores: the first `stores` entries, with uneven sizes.
    rng = _rng(seed, "universe", "stores")
    store_row = np.arange(stores)
    store_weight = 0.6 + 0.8 * rng.beta(2.0, 2.0, stores)
    store_weight /= store_weight.mean()
    store_id = np.array([_STORES[i][0] for i in store_row], dtype=np.int32)

    # Manufacturers: unique invented names, a home segment each.
    rng = _rng(seed, "universe", "manufacturers")
    combos = len(_BRAND_HEADS) * len(_BRAND_TAILS) * 2 * len(_COMPANY_SUFFIXES)
    if manufacturers > combos:
        raise ValueError(f"at most {combos} manufacturers, got {manufacturers}")
    picked = rng.choice(combos, size=manufacturers, replace=False)
    head, rest = np.divmod(picked, len(_BRAND_TAILS) * 2 * len(_COMPANY_SUFFIXES))
    tail, rest = np.divmod(rest, 2 * len(_COMPANY_SUFFIXES))
    brasil, suffix = np.divmod(rest, len(_COMPANY_SUFFIXES))
    manu_brand = [_BRAND_HEADS[h] + _BRAND_TAILS[t] for h, t in zip(head, tail, strict=True)]
    manu_name = [
        b + (" DO BRASIL" if x else "") + _COMPANY_SUFFIXES[s]
        for b, x, s in zip(manu_brand, brasil, suffix, strict=True)
    ]
    manu_id = 1_000 + np.sort(rng.choice(99_000, manufacturers, replace=False))
    manu_cnpj = [_cnpj(int(b)) for b in rng.choice(10**8, manufacturers, replace=False)]
    manu_uf = _choice(rng, _MANUFACTURER_UF, _MANUFACTURER_UF_P, manufacturers)
    manu_leadtime = np.clip(np.round(rng.gamma(4.0, 6.0, manufacturers)), 5, 90).astype(np.int32)
    manu_seg = rng.choice(len(SEGMENTS), manufacturers, p=_SEG_SHARE)
    manu_seg[: len(SEGMENTS)] = np.arange(min(len(SEGMENTS), manufacturers))  # none left out
    manu_size = rng.pareto(1.2, manufacturers) + 0.05

    # Products: exact segment shares, subgroup, name parts, price, manufacturer.
    rng = _rng(seed, "universe", "products")
    prod_id = 100_000 + np.sort(rng.choice(9_900_000, products, replace=False))
    prod_seg = rng.permutation(np.repeat(np.arange(len(SEGMENTS)), _allocate(products, _SEG_SHARE)))
    prod_sub = np.empty(products, dtype=np.int64)
    prod_manu = np.empty(products, dtype=np.int64)
    variant = np.empty(products, dtype=np.int64)
    size = np.empty(products, dtype=np.int64)
    pack_idx = np.empty(products, dtype=np.int64)
    pack_names: list[str] = []
    variant_names: list[str] = []
    size_names: list[str] = []
    median_price = np.empty(len(SEGMENTS))
    for s, seg_name in enumerate(SEGMENTS):
        vocab = _VOCAB[seg_name]
        members = np.flatnonzero(prod_seg == s)
        subs = np.flatnonzero(hier.segment == s)
        sub_w = rng.pareto(1.5, subs.size) + 0.2
        prod_sub[members] = subs[rng.choice(subs.size, members.size, p=sub_w / sub_w.sum())]
        makers = np.flatnonzero(manu_seg == s)
        if makers.size == 0:
            makers = np.arange(manufacturers)
        mw = manu_size[makers]
        prod_manu[members] = makers[rng.choice(makers.size, members.size, p=mw / mw.sum())]
        variant[members] = len(variant_names) + rng.integers(0, len(vocab.variants), members.size)
        size[members] = len(size_names) + rng.integers(0, len(vocab.sizes), members.size)
        pack_idx[members] = len(pack_names) + rng.integers(0, len(vocab.packs), members.size)
        variant_names += vocab.variants
        size_names += vocab.sizes
        pack_names += vocab.packs
        median_price[s] = vocab.price
    brand_flag = rng.random(products) < 0.5
    prod_name = (
        pl.DataFrame(
            {
                "g": _pick(hier.group, prod_sub),
                "k": _pick(hier.kinds, prod_sub),
                "v": _pick(variant_names, variant),
                "s": _pick(size_names, size),
                "b": _pick(manu_brand, prod_manu),
                "has_b": brand_flag,
            }
        )
        .select(
            pl.concat_str(
                [
                    pl.concat_str(["g", "k", "v", "s"], separator=" "),
                    pl.when("has_b").then(pl.concat_str([pl.lit(" "), "b"])).otherwise(pl.lit("")),
                ]
            )
        )
        .to_series()
    )
    prod_pack = _pick(pack_names, pack_idx)
    prod_unit = np.where((prod_pack == "MT").to_numpy(), 0.5, 1.0)
    prod_basket = np.where(prod_unit < 1, 3.0 + rng.gamma(2.0, 1.5, products), 1.0)
    prod_basket += rng.exponential(0.3, products)
    prod_price = _retail_price(median_price[prod_seg] * rng.lognormal(0.0, 0.55, products), rng)
    prod_price[rng.random(products) < 0.002] = 0.0  # gifts and display items
    prod_cost = _round2(prod_price * rng.uniform(0.42, 0.68, products))
    prod_pop = rng.lognormal(0.0, 1.0, products)
    age = np.where(
        rng.random(products) < 0.75,
        rng.integers(365, _HISTORY_DAYS, products),
        rng.integers(0, 365, products),
    )
    prod_cadastro = (_REF_DAY - age).astype(np.int32)
    prod_foralinha = rng.random(products) < 0.06
    prod_tipo = rng.choice([1, 2, 3, 4], products, p=[0.88, 0.05, 0.04, 0.03]).astype(np.int16)
    masters = np.array([1, 6, 10, 12, 20, 24, 36, 48, 50, 60, 100, 144])
    prod_master = np.where(
        prod_unit < 1,
        rng.choice([10, 25, 50, 100], products),
        masters[rng.choice(masters.size, products)],
    )
    divisor = rng.choice([1, 2, 3, 4, 6, 12], products)
    prod_multiple = np.where(
        (prod_unit < 1) | (prod_master % divisor != 0) | (rng.random(products) < 0.6),
        1,
        prod_master // divisor,
    )
    ean = _ean13(789_000_000_000 + rng.choice(10**9, products, replace=False))
    prod_ean = _nullable(pl.Series(ean).cast(pl.String), rng.random(products) < 0.01)

    # Pairs: per segment and store, the quota of products, chosen by popularity.
    rng = _rng(seed, "universe", "pairs")
    seg_rows = _allocate(rows, _SEG_SHARE)
    stores_out: list[np.ndarray] = []
    prods_out: list[np.ndarray] = []
    for s in range(len(SEGMENTS)):
        members = np.flatnonzero(prod_seg == s)
        quota = _allocate(int(seg_rows[s]), store_weight, np.full(stores, members.size))
        keys = np.log(prod_pop[members])[None, :] + rng.gumbel(size=(stores, members.size))
        order = np.argsort(-keys, axis=1)
        chosen = order[np.arange(members.size)[None, :] < quota[:, None]]
        stores_out.append(np.repeat(np.arange(stores), quota))
        prods_out.append(members[chosen])
    pair_store = np.concatenate(stores_out)
    pair_prod = np.concatenate(prods_out)
    order = np.argsort(pair_store.astype(np.int64) * products + pair_prod, kind="stable")
    pair_store = pair_store[order].astype(np.int32)
    pair_prod = pair_prod[order].astype(np.int32)

    # Demand (units of the product's unit per day) and the store's price.
    n = pair_store.size
    cheapness = (15.0 / np.maximum(prod_price[pair_prod], 1.0)) ** 0.35
    demand = (
        0.11
        * prod_pop[pair_prod] ** 0.9
        * store_weight[pair_store]
        * cheapness
        * rng.lognormal(0.0, 0.6, n)
        / prod_unit[pair_prod]
    )
    dead = rng.random(n) < np.where(prod_foralinha[pair_prod], 0.7, 0.2)
    demand[dead] = 0.0
    price = prod_price[pair_prod].copy()
    local = rng.random(n) < 0.12
    price[local] = _retail_price(price[local] * rng.uniform(0.9, 1.1, int(local.sum())), rng)
    price[prod_price[pair_prod] == 0] = 0.0
    return _Universe(
        store_row=store_row,
        store_id=store_id,
        store_weight=store_weight,
        prod_id=prod_id.astype(np.int64),
        prod_seg=prod_seg,
        prod_sub=prod_sub,
        prod_name=prod_name,
        prod_pack=prod_pack,
        prod_unit=prod_unit,
        prod_basket=prod_basket,
        prod_ean=prod_ean,
        prod_manu=prod_manu,
        prod_price=prod_price,
        prod_cost=prod_cost,
        prod_pop=prod_pop,
        prod_cadastro=prod_cadastro,
        prod_foralinha=prod_foralinha,
        prod_tipo=prod_tipo,
        prod_master=prod_master.astype(np.int32),
        prod_multiple=prod_multiple.astype(np.int32),
        manu_id=manu_id.astype(np.int32),
        manu_name=manu_name,
        manu_brand=manu_brand,
        manu_cnpj=manu_cnpj,
        manu_uf=manu_uf,
        manu_leadtime=manu_leadtime,
        pair_store=pair_store,
        pair_prod=pair_prod,
        pair_demand=demand,
        pair_price=price,
    )


def _profile_universe(profile: RetailProfile, seed: int) -> _Universe:
    return _universe(
        profile.admmat_rows, profile.stores, profile.products, profile.manufacturers, seed
    )


def _store_label(row: int) -> str:
    une, name, *_ = _STORES[row]
    return f"UNE {une} - {name}"


def _demand_pairs(u: _Universe, rng: np.random.Generator, n: int) -> np.ndarray:
    """Pair indices drawn proportionally to their demand (sold pairs only)."""
    cum = np.cumsum(u.pair_demand)
    return np.searchsorted(cum, rng.random(n) * cum[-1], side="right")


# --------------------------------------------------------------------------------------
# admmat
# --------------------------------------------------------------------------------------
def _months() -> list[tuple[int, int, int]]:
    """(first epoch day, number of days, calendar month 0-11) of MES_PARCIAL, MES_01..12."""
    out = []
    y, m = REFERENCE_DATE.year, REFERENCE_DATE.month
    for k in range(13):
        yy, mm = divmod((y * 12 + m - 1) - k, 12)
        first = date(yy, mm + 1, 1)
        nxt = date(yy + (mm + 1) // 12, (mm + 1) % 12 + 1, 1)
        days = REFERENCE_DATE.day if k == 0 else (nxt - first).days
        out.append(((first - date(1970, 1, 1)).days, days, mm))
    return out


def _week_spans() -> list[tuple[int, int]]:
    """(first, last) epoch day of SEMANA_ATUAL (Monday to the reference date) and of the
    four weeks before it."""
    monday = _REF_DAY - REFERENCE_DATE.weekday()
    return [(monday, _REF_DAY), *((monday - 7 * k, monday - 7 * k + 6) for k in range(1, 5))]


def _window_units(
    rng: np.random.Generator,
    week_units: list[np.ndarray],
    spans: list[tuple[int, int]],
    first: int,
    daily: np.ndarray,
) -> np.ndarray:
    """Units sold from ``first`` to the reference date: each week's units thinned by its
    overlap with the window, plus Poisson sales for days before the oldest week."""
    total = np.zeros(week_units[0].size, dtype=np.int64)
    covered = 0
    for units, (a, b) in zip(week_units, spans, strict=True):
        overlap = max(0, min(b, _REF_DAY) - max(a, first) + 1)
        if overlap:
            total += rng.binomial(units, overlap / (b - a + 1))
            covered += overlap
    uncovered = _REF_DAY - first + 1 - covered
    return total + (rng.poisson(daily * uncovered) if uncovered > 0 else 0)


def _abc(value: np.ndarray, group: np.ndarray) -> np.ndarray:
    """ABC class per row within each group: A up to 60% of the value, B up to 85%, C the
    rest and every row without value. Returns 0/1/2."""
    order = np.lexsort((-value, group))
    v, g = value[order], group[order]
    cum = np.cumsum(v)
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    counts = np.diff(np.r_[starts, v.size])
    before = np.r_[0.0, cum[starts[1:] - 1]]
    totals = np.add.reduceat(v, starts)
    share = (cum - v - np.repeat(before, counts)) / np.maximum(np.repeat(totals, counts), 1e-9)
    cls = np.where(share < 0.6, 0, np.where(share < 0.85, 1, 2))
    cls[v <= 0] = 2
    out = np.empty_like(cls)
    out[order] = cls
    return out


def _admmat_frame(u: _Universe, seed: int) -> pl.DataFrame:
    rng = _rng(seed, "admmat")
    sp, pp = u.pair_store, u.pair_prod
    n = sp.size
    d = u.pair_demand
    unit = u.prod_unit[pp]
    basket = u.prod_basket[pp]
    price = u.pair_price
    seg = u.prod_seg[pp]
    cadastro = u.prod_cadastro[pp]
    cols: dict[str, pl.Series | np.ndarray] = {}

    cols["UNE"] = u.store_id[sp]
    cols["PRODUTO"] = u.prod_id[pp]
    cols["TIPO"] = u.prod_tipo[pp]
    cols["UNE_NOME"] = _pick([_store_label(r) for r in u.store_row], sp)
    cols["NOME"] = u.prod_name.gather(pp)
    cols["EMBALAGEM"] = u.prod_pack.gather(pp)
    hier = _hierarchy().frame
    sub = u.prod_sub[pp]
    for c in ("NOMESEGMENTO", "NOMECATEGORIA", "NOMEGRUPO", "NOMESUBGRUPO"):
        cols[c] = hier[c].gather(sub)
    cols["NOMEFABRICANTE"] = _pick(u.manu_name, u.prod_manu[pp])
    cols["EAN"] = u.prod_ean.gather(pp)
    promo = rng.random(n) < 0.06
    cols["PROMOCIONAL"] = _sn(promo)
    cols["FORALINHA"] = _sn(u.prod_foralinha[pp])
    cols["LIQUIDO_38"] = _format_numbers(price, rng, currency=True)
    net_price = price * np.where(promo, 0.85, 1.0)

    # Weekly columns: FREQ sales, QTDE quantity, MEDIA = QTDE / FREQ, value in R$.
    season_now = _SEASON[seg, REFERENCE_DATE.month - 1]
    spans = _week_spans()
    weeks = list(reversed(WEEK_LABELS))  # newest first, as _week_spans()
    week_units: list[np.ndarray] = []
    for week, (first, last) in zip(weeks, spans, strict=True):
        freq = rng.poisson(d / basket * (last - first + 1) * season_now)
        freq[cadastro > last] = 0
        units = freq + rng.poisson(freq * (basket - 1.0))
        qty = units * unit
        week_units.append(units)
        cols[week] = _round2(qty * net_price)
        cols[f"FREQ_{week}"] = freq.astype(np.int32)
        cols[f"QTDE_{week}"] = qty
        cols[f"MEDIA_{week}"] = _round2(np.where(freq > 0, qty / np.maximum(freq, 1), 0.0))
    venda_30 = _window_units(rng, week_units, spans, _REF_DAY - 29, d * season_now) * unit
    cols["VENDA_30DD"] = venda_30

    # Monthly sales: seasonal Poisson counts, nothing before the product existed; the
    # current month (MES_PARCIAL) is the weeks' sales that fall into it.
    months = _months()
    monthly: list[np.ndarray] = []
    for k, (first, days, cal) in enumerate(months):
        if k == 0:
            qty = _window_units(rng, week_units, spans, first, d * season_now) * unit
        else:
            qty = rng.poisson(d * days * _SEASON[seg, cal]) * unit
            qty[cadastro > first + days - 1] = 0.0
        monthly.append(qty)
        cols["MES_PARCIAL" if k == 0 else MONTHS[k - 1]] = qty

    # ABC classes: per store on monthly value, and network-wide over 90 days.
    abc_null_day = np.array([m[0] + m[1] - 1 for m in months[1:5]])
    for k in range(1, 5):
        cls = _abc(monthly[k] * price, sp)
        cols[f"ABC_UNE_MES_{k:02d}"] = _nullable(
            _pick(("A", "B", "C"), cls), cadastro > abc_null_day[k - 1]
        )
    cols["ABC_UNE_30DD"] = _nullable(
        _pick(("A", "B", "C"), _abc(venda_30 * price, sp)), cadastro > _REF_DAY - 30
    )
    value_90 = np.bincount(pp, (monthly[1] + monthly[2] + monthly[3]) * price, u.n_products)
    cols["ABC_CACULA_90DD"] = _nullable(
        _pick(("A", "B", "C"), _abc(value_90, np.zeros(u.n_products, np.int64))[pp]),
        cadastro > _REF_DAY - 90,
    )

    # Stock: the DC's per product, the store's against its target level (LV).
    p_rng = _rng(seed, "admmat", "dc")
    network = np.bincount(pp, d, u.n_products)
    cd_zero = p_rng.random(u.n_products) < np.where(u.prod_foralinha, 0.6, 0.13)
    cd_units = np.ceil(network * p_rng.uniform(15, 90, u.n_products)) + p_rng.integers(
        1, 40, u.n_products
    )
    cd = np.where(cd_zero, 0.0, cd_units)[pp] * unit
    leadtime = np.clip(
        np.round(1 + 4 * u.store_weight[sp] ** -1 + rng.gamma(1.5, 2.0, n)), 2, 30
    ).astype(np.int32)
    expo_min = rng.choice([2, 3, 4, 5, 6, 10, 12], n).astype(np.float64)
    expo_min = np.where(unit < 1, expo_min * 4, expo_min)  # fabric: half metres on display
    gondola = np.maximum(expo_min, np.ceil(d * (leadtime + 7)))
    island = np.where(rng.random(n) < np.where(promo, 0.5, 0.05), expo_min * 2, 0.0)
    lv = gondola + island
    below = rng.random(n) < np.where(cd == 0, 0.3, 0.08)
    une = np.where(
        below,
        np.floor(lv * rng.random(n)),
        lv + np.floor(lv * rng.gamma(1.2, 0.9, n)),
    )
    negative = rng.random(n) < 0.003
    une[negative] = -rng.integers(1, 6, int(negative.sum()))
    reorder = np.ceil(d * leadtime) + expo_min
    cols["ESTOQUE_CD"] = _format_numbers(cd, rng)
    cols["ESTOQUE_UNE"] = _format_numbers(une * unit, rng)
    cols["ESTOQUE_LV"] = _format_numbers(lv * unit, rng)
    cols["ESTOQUE_GONDOLA_LV"] = _format_numbers(gondola * unit, rng)
    cols["ESTOQUE_ILHA_LV"] = _format_numbers(island * unit, rng)
    cols["LEADTIME_LV"] = leadtime
    cols["PONTO_PEDIDO_LV"] = reorder * unit
    frozen = rng.random(n) < 0.03
    cols["MEDIA_TRAVADA"] = _sn(frozen)

    # Dates.
    last_cd = p_rng.integers(0, 120, u.n_products) + np.floor(
        p_rng.exponential(20, u.n_products)
    ).astype(np.int64)
    cols["ULTIMA_ENTRADA_DATA_CD"] = _dates(
        np.maximum(_REF_DAY - last_cd, u.prod_cadastro)[pp],
        (p_rng.random(u.n_products) < 0.03)[pp],
    )
    master = u.prod_master[pp]
    multiple = u.prod_multiple[pp]
    cols["ULTIMA_ENTRADA_QTDE_CD"] = (
        u.prod_master * (1 + p_rng.poisson(8, u.n_products)) * u.prod_unit
    )[pp]
    cols["ULTIMA_ENTRADA_CUSTO_CD"] = u.prod_cost[pp]
    no_entry = rng.random(n) < 0.06
    entry_day = np.maximum(
        _REF_DAY - np.floor(rng.exponential(25, n)).astype(np.int64), cadastro
    ).astype(np.int64)
    cols["ULTIMA_ENTRADA_DATA_UNE"] = _dates(entry_day, no_entry)
    cols["ULTIMA_ENTRADA_QTDE_UNE"] = _nullable(
        multiple * (1 + rng.poisson(np.maximum(d * 10 / multiple, 0.5))) * unit, no_entry
    )
    inventory = np.maximum(_REF_DAY - rng.integers(0, 540, n), cadastro)
    cols["ULTIMO_INVENTARIO_UNE"] = _dates(inventory, rng.random(n) < 0.12)
    cols["ULTIMA_VENDA_DATA_UNE"] = _dates(*_last_sale(rng, week_units, monthly, months, cadastro))
    cols["DATA_CADASTRO"] = _dates(cadastro)

    # Logistics: replenishment requests, picking, invoices, addresses, packaging.
    pending = rng.random(n) < np.where(une < reorder, 0.35, 0.02)
    pending_qty = np.maximum(multiple, np.ceil(np.maximum(lv - une, 1) / multiple) * multiple)
    cols["SOLICITACAO_PENDENTE"] = _sn(pending)
    cols["SOLICITACAO_PENDENTE_QTDE"] = _nullable(pending_qty * unit, ~pending)
    cols["SOLICITACAO_PENDENTE_DATA"] = _dates(_REF_DAY - rng.integers(0, 12, n), ~pending)
    situation = _choice(
        rng, ("ABERTA", "EM SEPARAÇÃO", "PARCIALMENTE ATENDIDA"), (0.55, 0.3, 0.15), n
    )
    situation = (
        pl.DataFrame({"s": situation, "wait": cd == 0})
        .select(pl.when("wait").then(pl.lit("AGUARDANDO ESTOQUE CD")).otherwise("s"))
        .to_series()
    )
    cols["SOLICITACAO_PENDENTE_SITUACAO"] = _nullable(situation, ~pending)
    has_pick = rng.random(n) < 0.55
    cols["PICKLIST"] = _nullable(rng.integers(4_000_000, 4_900_000, n), ~has_pick)
    cols["PICKLIST_SITUACAO"] = _nullable(
        _choice(rng, ("FINALIZADA", "EM SEPARAÇÃO", "GERADA"), (0.86, 0.09, 0.05), n), ~has_pick
    )
    cols["PICKLIST_CONFERENCIA"] = _nullable(
        _choice(rng, ("CONFERIDO", "PENDENTE", "DIVERGENTE"), (0.88, 0.09, 0.03), n), ~has_pick
    )
    cols["NOTA"] = _nullable(rng.integers(100_000, 1_000_000, n), no_entry)
    cols["SERIE"] = _nullable(_choice(rng, ("1", "2", "3"), (0.85, 0.12, 0.03), n), no_entry)
    cols["NOTA_EMISSAO"] = _dates(entry_day - rng.integers(0, 4, n), no_entry)
    no_romaneio = no_entry | (rng.random(n) < 0.2)
    cols["ROMANEIO_SOLICITACAO"] = _nullable(rng.integers(700_000, 999_999, n), no_romaneio)
    cols["ROMANEIO_ENVIO"] = _nullable(rng.integers(1_200_000, 1_800_000, n), no_romaneio)
    cols["ULTIMO_VOLUME"] = _nullable(rng.integers(10_000_000, 99_999_999, n), no_romaneio)
    cols["VOLUME_QTDE"] = _nullable(multiple * (1 + rng.poisson(2, n)) * unit, no_romaneio)
    cols["ENDERECO_RESERVA"] = _nullable(
        _address(rng, n, ("R", 2, 40), ("P", 2, 30), ("N", 1, 6), ("A", 2, 12)),
        rng.random(n) < 0.25,
    )
    cols["ENDERECO_LINHA"] = _nullable(
        _address(rng, n, ("C", 2, 24), ("G", 2, 40), ("P", 1, 6)), rng.random(n) < 0.15
    )
    expo_product = rng.choice([1, 2, 3, 4, 6, 10], u.n_products).astype(np.float64) * u.prod_unit
    cols["EXPOSICAO_MINIMA"] = expo_product[pp]
    cols["EXPOSICAO_MINIMA_UNE"] = expo_min * unit
    cols["EXPOSICAO_MAXIMA_UNE"] = expo_min * rng.choice([2, 3, 4, 6], n) * unit
    cols["MEDIA_CONSIDERADA_LV"] = _round2(
        np.where(frozen, d * unit * rng.uniform(0.5, 2.0, n), venda_30 / 30.0)
    )
    cols["QTDE_EMBALAGEM_MASTER"] = master
    cols["QTDE_EMBALAGEM_MULTIPLO"] = multiple
    weight = np.round(p_rng.lognormal(-1.6, 1.0, u.n_products), 3)
    cols["PESO_BRUTO"] = weight[pp]
    cols["CUBAGEM"] = np.round(weight * p_rng.uniform(0.002, 0.02, u.n_products), 5)[pp]
    cols["FREQ_ULT_SEM"] = cols["FREQ_SEMANA_ANTERIOR_2"]
    store_minute = _rng(seed, "admmat", "stores").integers(0, 180, u.store_id.size)
    stale = rng.random(n) < 0.02
    stamp = (_REF_DAY - stale.astype(np.int64)) * _US_PER_DAY + (
        3 * 3600 + store_minute[sp] * 60 + rng.integers(0, 60, n)
    ) * 1_000_000
    cols["ULTIMA_ATUALIZACAO"] = pl.Series(stamp).cast(pl.Datetime("us"))
    return _conform(pl.DataFrame(cols), TABLES["admmat"])


def _address(rng: np.random.Generator, n: int, *parts: tuple[str, int, int]) -> pl.Series:
    """Addresses like "R03-P12-N2-A04" (prefix, digits, max) joined by "-"."""
    frame = pl.DataFrame(
        {f"p{i}": rng.integers(1, top + 1, n) for i, (_, _, top) in enumerate(parts)}
    )
    exprs = [
        pl.concat_str([pl.lit(prefix), pl.col(f"p{i}").cast(pl.String).str.zfill(width)])
        for i, (prefix, width, _) in enumerate(parts)
    ]
    return frame.select(pl.concat_str(exprs, separator="-").alias("a")).to_series()


def _last_sale(
    rng: np.random.Generator,
    week_units: list[np.ndarray],
    monthly: list[np.ndarray],
    months: list[tuple[int, int, int]],
    cadastro: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Date of the most recent sale (within the latest week / month with sales, never before
    the product's registration) and the mask of rows never sold."""
    day = np.full(week_units[0].size, -1, dtype=np.int64)
    spans = zip(week_units, _week_spans(), strict=True)
    periods = [(u, last, last - first + 1) for u, (first, last) in spans]
    periods += [(monthly[k], months[k][0] + months[k][1] - 1, months[k][1]) for k in range(1, 13)]
    for sold, last, span in periods:
        todo = (day < 0) & (sold > 0)
        day[todo] = last - rng.integers(0, span, int(todo.sum()))
    never = day < 0
    return np.maximum(day, cadastro), never
