"""Vectorised helpers of the cadastral sample: document numbers, names, dates."""

from __future__ import annotations

from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bi_platform.cadastral.sample.profiles import _EPOCH, PENUMPER_PATTERN
from bi_platform.cadastral.sample.vocabulary import (
    _ACTIVITIES,
    _CITY_COUNT,
    _CITY_OFFSET,
    _COMPANY_SUFFIX_P,
    _COMPANY_SUFFIXES,
    _FANTASY,
    _SURNAMES,
    _USER_RANGE,
)


# --------------------------------------------------------------------------------------
# Vectorised helpers
# --------------------------------------------------------------------------------------
def _day(d: date) -> int:
    return (d - _EPOCH).days


def _count(rng: np.random.Generator, rate: float, n: int, exact: bool) -> int:
    """How many rows get a trait: round(rate*n) (at least 1) for a fresh snapshot,
    stochastic rounding for the small batches of a change set."""
    if n <= 0:
        return 0
    if exact:
        return min(n, max(1, round(rate * n)))
    return min(n, int(np.floor(rate * n + rng.random())))


def _take(values: pa.Array, idx: np.ndarray) -> pa.Array:
    return values.take(pa.array(idx, type=pa.int64()))


def _pick(rng: np.random.Generator, values: pa.Array, n: int, p=None) -> pa.Array:
    if p is None:
        return _take(values, rng.integers(0, len(values), n))
    return _take(values, rng.choice(len(values), n, p=p))


def _flat(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _scatter(arr: pa.Array, positions: np.ndarray, values: pa.Array) -> pa.Array:
    """``arr`` with ``arr[positions] = values``."""
    if len(positions) == 0:
        return arr
    arr, values = _flat(arr), _flat(values)
    n = len(arr)
    idx = np.arange(n, dtype=np.int64)
    idx[positions] = n + np.arange(len(positions))
    return _take(pa.concat_arrays([arr, values.cast(arr.type)]), idx)


def _spread(values: pa.Array, positions: np.ndarray, n: int) -> pa.Array:
    """A length-``n`` array holding ``values`` at ``positions`` and null elsewhere."""
    idx = np.zeros(n, dtype=np.int64)
    idx[positions] = np.arange(len(positions))
    missing = np.ones(n, dtype=bool)
    missing[positions] = False
    return _flat(values).take(pa.array(idx, mask=missing))


def _padded(values: np.ndarray, width: int) -> pa.Array:
    return pc.utf8_lpad(pa.array(values, type=pa.int64()).cast(pa.string()), width, "0")


def _join(*parts, sep: str = "") -> pa.Array:
    return pc.binary_join_element_wise(*parts, sep)


def _dates(days: np.ndarray, null_mask: np.ndarray | None = None) -> pa.Array:
    return pa.array(days.astype(np.int32), type=pa.date32(), mask=null_mask)


def _decimal(cents: np.ndarray) -> pa.Array:
    """decimal128(18,2) from non-negative int64 cents (little-endian 128-bit buffer)."""
    buf = np.zeros((len(cents), 2), dtype=np.int64)
    buf[:, 0] = cents
    return pa.Array.from_buffers(pa.decimal128(18, 2), len(cents), [None, pa.py_buffer(buf)])


def _raw_case(rng: np.random.Generator, arr: pa.Array, *, lower: bool = False) -> pa.Array:
    """Free text as typed by hand: mostly as-is, some title/lower/upper case, a few stray
    leading/trailing spaces."""
    arr = _flat(arr)
    n = len(arr)
    u = rng.random(n)
    title, other = np.flatnonzero(u < 0.08), np.flatnonzero((u >= 0.08) & (u < 0.13))
    out = _scatter(arr, title, pc.utf8_title(_take(arr, title)))
    alt = pc.utf8_upper if lower else pc.utf8_lower
    out = _scatter(out, other, alt(_take(arr, other)))
    s = rng.random(n)
    lead = pc.if_else(pa.array(s < 0.03), " ", "")
    trail = pc.if_else(pa.array((s >= 0.03) & (s < 0.06)), "  ", "")
    return _join(lead, out, trail)


def _users(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(*_USER_RANGE, n)


def _user_codes(numbers: np.ndarray) -> pa.Array:
    return _join("U", _padded(numbers, 6))


def _unique_new(rng: np.random.Generator, n: int, high: int, taken: np.ndarray) -> np.ndarray:
    """``n`` distinct integers in ``[0, high)`` not in ``taken`` (deterministic)."""
    taken = np.sort(taken)
    out = np.empty(0, dtype=np.int64)
    while len(out) < n:
        cand = rng.integers(0, high, int((n - len(out)) * 1.05) + 16)
        cand = np.concatenate([out, cand])
        _, first = np.unique(cand, return_index=True)
        cand = cand[np.sort(first)]
        at = np.searchsorted(taken, cand).clip(0, max(len(taken) - 1, 0))
        out = cand[taken[at] != cand] if len(taken) else cand
    return out[:n]


def _check_digit(digits: np.ndarray, weights: np.ndarray) -> np.ndarray:
    r = (digits * weights).sum(axis=1) % 11
    return np.where(r < 2, 0, 11 - r)


def _cpf(base: np.ndarray) -> np.ndarray:
    """11-digit CPF numbers (with valid check digits) from 9-digit bases."""
    d = (base[:, None] // 10 ** np.arange(8, -1, -1)) % 10
    dv1 = _check_digit(d, np.arange(10, 1, -1))
    dv2 = _check_digit(np.column_stack([d, dv1]), np.arange(11, 1, -1))
    return base * 100 + dv1 * 10 + dv2


def _cnpj(base: np.ndarray) -> np.ndarray:
    """14-digit CNPJ numbers (head office ``0001``, valid check digits) from 8-digit bases."""
    root = base * 10_000 + 1
    d = (root[:, None] // 10 ** np.arange(11, -1, -1)) % 10
    w1 = np.array([5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2])
    dv1 = _check_digit(d, w1)
    dv2 = _check_digit(np.column_stack([d, dv1]), np.concatenate([[6], w1]))
    return root * 100 + dv1 * 10 + dv2


def _taken_bases(pedt001: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """CPF and CNPJ bases already in use by the well-formed document numbers."""
    pen = pedt001["penumper"].combine_chunks()
    ok = pc.fill_null(pc.match_substring_regex(pen, PENUMPER_PATTERN), False)
    valid = pen.filter(ok)
    lengths = pc.utf8_length(valid).to_numpy()
    numbers = pc.cast(valid, pa.int64()).to_numpy()
    return numbers[lengths == 11] // 100, numbers[lengths == 14] // 1_000_000


def _penumpers(
    rng: np.random.Generator, is_j: np.ndarray, taken: tuple[np.ndarray, np.ndarray]
) -> pa.Array:
    numbers = np.empty(len(is_j), dtype=np.int64)
    numbers[~is_j] = _cpf(_unique_new(rng, int((~is_j).sum()), 10**9, taken[0]))
    numbers[is_j] = _cnpj(_unique_new(rng, int(is_j.sum()), 10**8, taken[1]))
    text = pa.array(numbers).cast(pa.string())
    return pc.if_else(pa.array(is_j), pc.utf8_lpad(text, 14, "0"), pc.utf8_lpad(text, 11, "0"))


def _malformed(rng: np.random.Generator, valid: pa.Array) -> pa.Array:
    """Broken variants of document numbers: null, empty, one digit short, one too many,
    letters, punctuation."""
    k = len(valid)
    kind = rng.integers(0, 6, k)
    variants = [
        pa.nulls(k, pa.string()),
        pa.array([""] * k, pa.string()),
        pc.utf8_slice_codeunits(valid, 0, -1),
        _join(valid, "0"),
        _join("AB", pc.utf8_slice_codeunits(valid, 2)),
        _join(
            pc.utf8_slice_codeunits(valid, 0, 3),
            ".",
            pc.utf8_slice_codeunits(valid, 3, 6),
            ".",
            pc.utf8_slice_codeunits(valid, 6, 9),
            "-",
            pc.utf8_slice_codeunits(valid, 9),
        ),
    ]
    out = variants[0]
    for i, variant in enumerate(variants[1:], start=1):
        out = pc.if_else(pa.array(kind == i), variant, out)
    return out


def _inject(
    rng: np.random.Generator,
    arr: pa.Array,
    eligible: np.ndarray,
    rate: float,
    bad: tuple[str | None, ...],
    exact: bool,
) -> pa.Array:
    k = _count(rng, rate, len(eligible), exact)
    if k == 0:
        return arr
    pos = rng.choice(eligible, k, replace=False)
    values = _pick(rng, pa.array(bad, pa.string()), k)
    return _scatter(arr, pos, values)


def _company_names(rng: np.random.Generator, n: int) -> pa.Array:
    u = rng.random(n)
    single = _pick(rng, _SURNAMES, n)
    pair = _join(single, " & ", _pick(rng, _SURNAMES, n))
    prefix = pc.if_else(pa.array(u < 0.30), _pick(rng, _FANTASY, n), single)
    prefix = pc.if_else(pa.array(u >= 0.90), pair, prefix)
    activity = _pick(rng, _ACTIVITIES, n)
    suffix = _pick(rng, _COMPANY_SUFFIXES, n, p=_COMPANY_SUFFIX_P)
    return _join(prefix, activity, suffix, sep=" ")


def _cities_of(rng: np.random.Generator, state_idx: np.ndarray) -> np.ndarray:
    """A city index of each state."""
    within = np.floor(rng.random(len(state_idx)) * _CITY_COUNT[state_idx]).astype(np.int64)
    return _CITY_OFFSET[state_idx] + within
