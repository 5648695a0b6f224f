"""The other retail exports (master data and facts), generated from the universe."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import polars as pl

from bi_platform.retail.sample.helpers import (
    _choice,
    _conform,
    _dates,
    _pick,
    _retail_price,
    _rng,
    _round2,
    _seasonal_days,
    _sn,
    _sorted_unique,
    _unique_codes,
)
from bi_platform.retail.sample.profiles import _HISTORY_DAYS, _REF_DAY, CD_UNE
from bi_platform.retail.sample.universe import _demand_pairs, _hierarchy, _Universe
from bi_platform.retail.sample.vocabulary import _CD, _CLOSED_STORES, _SEG_SHARE, _STORES
from bi_platform.retail.schema import SEGMENTS, TABLES


# --------------------------------------------------------------------------------------
# The other tables
# --------------------------------------------------------------------------------------
def _lojas(u: _Universe, seed: int) -> pl.DataFrame:
    rng = _rng(seed, "lojas")
    rows = [_STORES[i] for i in u.store_row] + list(_STORES[-_CLOSED_STORES:]) + [_CD]
    k = len(u.store_row)
    area = np.round(350 + 900 * u.store_weight * rng.uniform(0.85, 1.15, k), -1)
    opened = _REF_DAY - rng.integers(365, 40 * 365, len(rows))
    frame = pl.DataFrame(
        {
            "UNE": [r[0] for r in rows],
            "UNE_NOME": [f"UNE {r[0]} - {r[1]}" for r in rows],
            "CIDADE": [r[2] for r in rows],
            "UF": [r[3] for r in rows],
            "REGIAO": [r[4] for r in rows],
            "AREA_VENDA_M2": [*area.tolist(), 420.0, 380.0, None],
            "DATA_ABERTURA": _dates(opened),
            "ATIVA": [True] * k + [False] * _CLOSED_STORES + [True],
        }
    )
    return _conform(frame.sort("UNE"), TABLES["lojas"])


def _produtos(u: _Universe, seed: int) -> pl.DataFrame:
    hier = _hierarchy().frame
    frame = pl.DataFrame(
        {
            "PRODUTO": u.prod_id,
            "NOME": u.prod_name,
            "EMBALAGEM": u.prod_pack,
            "EAN": u.prod_ean,
            **{c: hier[c].gather(u.prod_sub) for c in hier.columns if c != "COD_SUBGRUPO"},
            "COD_FABRICANTE": u.manu_id[u.prod_manu],
            "DATA_CADASTRO": _dates(u.prod_cadastro),
            "FORALINHA": _sn(u.prod_foralinha),
        }
    )
    return _conform(frame, TABLES["produtos"])


def _fabricantes(u: _Universe, seed: int) -> pl.DataFrame:
    frame = pl.DataFrame(
        {
            "COD_FABRICANTE": u.manu_id,
            "NOMEFABRICANTE": u.manu_name,
            "CNPJ": u.manu_cnpj,
            "UF": u.manu_uf,
            "LEADTIME_DIAS": u.manu_leadtime,
        }
    )
    return _conform(frame, TABLES["fabricantes"])


def _segmentos(u: _Universe, seed: int) -> pl.DataFrame:
    return _hierarchy().frame


def _vendas_diarias(u: _Universe, rows: int, seed: int) -> pl.DataFrame:
    rng = _rng(seed, "vendas_diarias")
    npairs = u.pair_store.size
    days = 365

    def draw(k: int) -> np.ndarray:
        day = _seasonal_days(rng, k, days) - (_REF_DAY - days + 1)
        return day.astype(np.int64) * npairs + _demand_pairs(u, rng, k)

    codes = _unique_codes(rng, rows, draw)
    day, pair = np.divmod(codes, npairs)
    pp = u.pair_prod[pair]
    units = 1 + rng.poisson(u.pair_demand[pair] + u.prod_basket[pp] - 1.0)
    qty = units * u.prod_unit[pp]
    discount = np.where(rng.random(codes.size) < 0.1, rng.uniform(0.05, 0.3, codes.size), 0.0)
    frame = pl.DataFrame(
        {
            "DATA": _dates(day + _REF_DAY - days + 1),
            "UNE": u.store_id[u.pair_store[pair]],
            "PRODUTO": u.prod_id[pp],
            "QTDE": qty,
            "VALOR_LIQUIDO": _round2(qty * u.pair_price[pair] * (1 - discount)),
        }
    )
    return _conform(frame, TABLES["vendas_diarias"])


def _pedidos_compra(u: _Universe, rows: int, seed: int) -> pl.DataFrame:
    rng = _rng(seed, "pedidos_compra")
    n_prod = u.n_products
    by_manu = np.argsort(u.prod_manu, kind="stable")
    counts = np.bincount(u.prod_manu, minlength=u.manu_id.size)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    n_orders = max(1, math.ceil(rows / 6 * 1.1))
    lines = 1 + rng.poisson(5, n_orders)
    keep = np.searchsorted(np.cumsum(lines), rows) + 1
    lines = lines[:keep]
    lines[-1] -= max(0, int(lines.sum()) - rows)
    n_orders = lines.size
    manu = rng.choice(counts.size, n_orders, p=counts / counts.sum())
    order_day = np.sort(_REF_DAY - rng.integers(0, _HISTORY_DAYS, n_orders))
    line_order = np.repeat(np.arange(n_orders), lines)
    line_manu = manu[line_order]
    prod = by_manu[
        starts[line_manu] + (rng.random(line_order.size) * counts[line_manu]).astype(int)
    ]
    code = _sorted_unique(line_order.astype(np.int64) * n_prod + prod)  # one line per product
    line_order, prod = np.divmod(code, n_prod)
    first = np.searchsorted(line_order, line_order, side="left")
    item = np.arange(line_order.size) - first + 1
    expected = order_day + u.manu_leadtime[manu] + rng.integers(-2, 6, n_orders)
    old = expected < _REF_DAY - 10
    status = np.where(
        old,
        rng.choice(3, n_orders, p=[0.9, 0.05, 0.05]),
        3 + rng.choice(3, n_orders, p=[0.5, 0.35, 0.15]),
    )
    labels = ("RECEBIDO", "RECEBIDO PARCIAL", "CANCELADO", "PENDENTE", "EM TRÂNSITO", "CONFIRMADO")
    no_forecast = (status == 2) & (rng.random(n_orders) < 0.3)
    qty = u.prod_master[prod] * (1 + rng.poisson(3, prod.size)) * u.prod_unit[prod]
    frame = pl.DataFrame(
        {
            "PEDIDO": 5_000_000 + line_order,
            "ITEM": item,
            "COD_FABRICANTE": u.manu_id[manu[line_order]],
            "PRODUTO": u.prod_id[prod],
            "QTDE": qty,
            "VALOR": _round2(qty * u.prod_cost[prod]),
            "DATA_PEDIDO": _dates(order_day[line_order]),
            "DATA_PREVISTA": _dates(expected[line_order], no_forecast[line_order]),
            "SITUACAO": _pick(labels, status[line_order]),
        }
    )
    return _conform(frame, TABLES["pedidos_compra"])


def _transferencias(u: _Universe, rows: int, seed: int) -> pl.DataFrame:
    rng = _rng(seed, "transferencias")
    pair = _demand_pairs(u, rng, rows)
    dest = u.pair_store[pair]
    pp = u.pair_prod[pair]
    day = np.sort(_seasonal_days(rng, rows, 365))
    k = u.store_id.size
    other = (dest + rng.integers(1, max(k, 2), rows)) % k
    from_cd = (rng.random(rows) < 0.85) | (k == 1)
    origin = np.where(from_cd, CD_UNE, u.store_id[other])
    recent = day > _REF_DAY - 3
    status = np.where(
        recent,
        3 + rng.choice(2, rows, p=[0.4, 0.6]),
        rng.choice(3, rows, p=[0.96, 0.03, 0.01]),
    )
    labels = ("CONCLUÍDA", "CANCELADA", "DIVERGENTE", "PENDENTE", "EM TRÂNSITO")
    frame = pl.DataFrame(
        {
            "TRANSFERENCIA": 10_000_000 + np.arange(rows),
            "DATA": _dates(day),
            "UNE_ORIGEM": origin,
            "UNE_DESTINO": u.store_id[dest],
            "PRODUTO": u.prod_id[pp],
            "QTDE": u.prod_multiple[pp] * (1 + rng.poisson(3, rows)) * u.prod_unit[pp],
            "SITUACAO": _pick(labels, status),
        }
    )
    return _conform(frame, TABLES["transferencias"])


def _inventarios(u: _Universe, rows: int, seed: int) -> pl.DataFrame:
    rng = _rng(seed, "inventarios")
    npairs = u.pair_store.size

    def draw(k: int) -> np.ndarray:
        day = rng.integers(0, _HISTORY_DAYS, k)
        return day * npairs + rng.integers(0, npairs, k)

    day, pair = np.divmod(_unique_codes(rng, rows, draw), npairs)
    pp = u.pair_prod[pair]
    n = pair.size
    system = np.floor(rng.lognormal(2.0, 1.0, n))
    diff = np.where(rng.random(n) < 0.28, np.round(rng.normal(0, 0.15 * system + 1.5)), 0.0)
    frame = pl.DataFrame(
        {
            "DATA_INVENTARIO": _dates(_REF_DAY - _HISTORY_DAYS + 1 + day),
            "UNE": u.store_id[u.pair_store[pair]],
            "PRODUTO": u.prod_id[pp],
            "QTDE_SISTEMA": system * u.prod_unit[pp],
            "QTDE_CONTADA": np.maximum(system + diff, 0) * u.prod_unit[pp],
        }
    )
    return _conform(frame, TABLES["inventarios"])


def _precos(u: _Universe, rows: int, seed: int) -> pl.DataFrame:
    rng = _rng(seed, "precos")
    npairs = u.pair_store.size

    def draw(k: int) -> np.ndarray:
        return rng.integers(0, npairs, k) * _HISTORY_DAYS + rng.integers(0, _HISTORY_DAYS, k)

    pair, day = np.divmod(_unique_codes(rng, rows, draw), _HISTORY_DAYS)
    ago = _HISTORY_DAYS - 1 - day
    base = u.pair_price[pair] * (1 - 0.05 * ago / 365) * rng.uniform(0.95, 1.05, pair.size)
    frame = pl.DataFrame(
        {
            "PRODUTO": u.prod_id[u.pair_prod[pair]],
            "UNE": u.store_id[u.pair_store[pair]],
            "DATA_VIGENCIA": _dates(_REF_DAY - ago),
            "PRECO": np.where(u.pair_price[pair] > 0, _retail_price(base, rng), 0.0),
        }
    )
    return _conform(frame.sort("PRODUTO", "UNE", "DATA_VIGENCIA"), TABLES["precos"])


def _promocoes(u: _Universe, rows: int, seed: int) -> pl.DataFrame:
    rng = _rng(seed, "promocoes")
    n_prod = u.n_products
    n_promos = max(1, rows // 40)
    promo_seg = rng.choice(len(SEGMENTS), n_promos, p=_SEG_SHARE)
    by_seg = np.argsort(u.prod_seg, kind="stable")
    counts = np.bincount(u.prod_seg, minlength=len(SEGMENTS))
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    size_w = rng.lognormal(0, 0.7, n_promos)

    def draw(k: int) -> np.ndarray:
        promo = rng.choice(n_promos, k, p=size_w / size_w.sum())
        g = promo_seg[promo]
        prod = by_seg[starts[g] + (rng.random(k) * counts[g]).astype(np.int64)]
        return promo.astype(np.int64) * n_prod + prod

    promo, prod = np.divmod(_unique_codes(rng, rows, draw), n_prod)
    begin = np.sort(_REF_DAY - rng.integers(0, _HISTORY_DAYS, n_promos))
    end = begin + rng.choice([7, 10, 14, 15, 21, 30], n_promos)
    pct = rng.choice([10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0], n_promos)
    tweak = np.where(rng.random(promo.size) < 0.2, rng.choice([-5.0, 5.0], promo.size), 0.0)
    frame = pl.DataFrame(
        {
            "PROMOCAO": 20_000 + promo,
            "PRODUTO": u.prod_id[prod],
            "INICIO": _dates(begin[promo]),
            "FIM": _dates(end[promo]),
            "DESCONTO_PCT": np.clip(pct[promo] + tweak, 5.0, 70.0),
        }
    )
    return _conform(frame, TABLES["promocoes"])


def _devolucoes(u: _Universe, rows: int, seed: int) -> pl.DataFrame:
    rng = _rng(seed, "devolucoes")
    pair = _demand_pairs(u, rng, rows)
    pp = u.pair_prod[pair]
    units = np.where(u.prod_unit[pp] < 1, 1 + rng.poisson(3, rows), 1 + rng.poisson(0.2, rows))
    reasons = (
        "DEFEITO DE FABRICAÇÃO",
        "TAMANHO/MEDIDA INCORRETA",
        "ARREPENDIMENTO",
        "PRODUTO AVARIADO",
        "COR DIFERENTE DA ESPERADA",
        "TROCA DE PRESENTE",
    )
    frame = pl.DataFrame(
        {
            "DEVOLUCAO": 300_000 + np.arange(rows),
            "DATA": _dates(np.sort(_seasonal_days(rng, rows, 365))),
            "UNE": u.store_id[u.pair_store[pair]],
            "PRODUTO": u.prod_id[pp],
            "QTDE": units * u.prod_unit[pp],
            "MOTIVO": _choice(rng, reasons, (0.3, 0.2, 0.15, 0.15, 0.08, 0.12), rows),
        }
    )
    return _conform(frame, TABLES["devolucoes"])


_MASTER_TABLES: dict[str, Callable[[_Universe, int], pl.DataFrame]] = {
    "lojas": _lojas,
    "produtos": _produtos,
    "fabricantes": _fabricantes,
    "segmentos": _segmentos,
}
_FACT_TABLES: dict[str, Callable[[_Universe, int, int], pl.DataFrame]] = {
    "vendas_diarias": _vendas_diarias,
    "pedidos_compra": _pedidos_compra,
    "transferencias": _transferencias,
    "inventarios": _inventarios,
    "precos": _precos,
    "promocoes": _promocoes,
    "devolucoes": _devolucoes,
}
