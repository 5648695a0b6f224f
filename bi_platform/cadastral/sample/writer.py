"""Measuring a snapshot, and the public API: the full snapshot and a change set."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bi_platform.cadastral.reference import (
    OCCUPATIONS,
    SEGMENTS,
    SOURCE_TABLES,
    STATES,
)
from bi_platform.cadastral.sample.helpers import (
    _dates,
    _day,
    _decimal,
    _flat,
    _pick,
    _raw_case,
    _take,
    _taken_bases,
    _user_codes,
    _users,
)
from bi_platform.cadastral.sample.layout import (
    CadastralChangeSummary,
    CadastralSourceSummary,
    _complete,
    _write_snapshot,
    load_dates,
    partition_dir,
    read_snapshot,
)
from bi_platform.cadastral.sample.profiles import (
    _NATURAL_ONLY,
    CADASTRAL_PROFILES,
    INVALID_CODE_RATES,
    PENUMPER_PATTERN,
    SCHEMAS,
)
from bi_platform.cadastral.sample.tables import _contacts, _new_persons
from bi_platform.cadastral.sample.vocabulary import _CIVIL_CODES, _CIVIL_P, _SEGMENT_F_P, _SEGMENTS

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# Measuring a snapshot
# --------------------------------------------------------------------------------------
def _well_formed(penumper: pa.Array) -> pa.Array:
    return pc.fill_null(pc.match_substring_regex(penumper, PENUMPER_PATTERN), False)


#: Columns identifying a row of each table; exact duplicates necessarily share them.
_ROW_KEYS: dict[str, tuple[str, ...]] = {
    "pedt001": ("penumper",),
    "pedt002": ("penumper",),
    "pedt003": ("penumper", "pesequen"),
    "pedt205": ("penumper", "pecodbem"),
}


def _distinct_rows(table: pa.Table) -> pa.Table:
    return table.group_by(table.column_names, use_threads=False).aggregate([])


def _codes(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Dense int64 codes of a column (equal values, nulls included, share a code)."""
    encoded = _flat(values).dictionary_encode()
    return pc.fill_null(encoded.indices, -1).to_numpy().astype(np.int64) + 1


def _shared_key_rows(name: str, table: pa.Table) -> pa.Table:
    """The rows whose key occurs more than once (the only candidates for duplicates)."""
    key = np.zeros(table.num_rows, dtype=np.int64)
    for column in _ROW_KEYS[name]:
        codes = _codes(table[column])
        key = key * (int(codes.max(initial=0)) + 1) + codes
    key_array = pa.array(key)
    counts = pc.value_counts(key_array)
    repeated = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    return table.filter(pc.is_in(key_array, value_set=repeated))


def _person_keys(pedt001: pa.Table) -> pa.Array:
    """Distinct well-formed document numbers (first-appearance order)."""
    pen = pedt001["penumper"].combine_chunks()
    return pc.unique(pen.filter(_well_formed(pen)))


def _persons_count(pedt001: pa.Table) -> int:
    """Distinct well-formed persons plus one person per malformed row."""
    pen = pedt001["penumper"].combine_chunks()
    ok = _well_formed(pen)
    return len(pc.unique(pen.filter(ok))) + (len(pen) - pc.sum(ok).as_py())


def _measure(
    raw_root: Path, load_date: date, tables: dict[str, pa.Table], generated: bool, started: float
) -> CadastralSourceSummary:
    t = tables["pedt001"]
    pen = t["penumper"].combine_chunks()
    ok = _well_formed(pen)
    natural = pc.fill_null(pc.equal(t["petipper"], "F"), False)
    invalid = {}
    for column in INVALID_CODE_RATES:
        values = t[column]
        if column == "pesegmen":
            values = pc.utf8_upper(pc.utf8_trim_whitespace(values))
            valid_codes: tuple[str, ...] = SEGMENTS
        elif column in _NATURAL_ONLY:
            valid_codes = _NATURAL_ONLY[column]
        else:
            valid_codes = tuple(OCCUPATIONS) if column == "petipocu" else tuple(STATES)
        bad = pc.invert(pc.is_in(values, value_set=pa.array(valid_codes)))
        if column in _NATURAL_ONLY:
            bad = pc.or_(pc.and_(natural, bad), pc.and_(pc.invert(natural), pc.is_valid(values)))
        invalid[column] = pc.sum(bad).as_py() or 0
    shared = {name: _shared_key_rows(name, table) for name, table in tables.items()}
    distinct = {name: _distinct_rows(table) for name, table in shared.items()}
    distinct001 = distinct["pedt001"]
    keyed = distinct001.filter(_well_formed(distinct001["penumper"].combine_chunks()))
    per_key = keyed.group_by("penumper", use_threads=False).aggregate([("penumper", "count")])
    conflicting = pc.sum(pc.greater(per_key["penumper_count"], 1)).as_py() or 0
    return CadastralSourceSummary(
        path=Path(raw_root),
        load_date=load_date,
        persons=_persons_count(t),
        rows={name: table.num_rows for name, table in tables.items()},
        malformed_penumper=len(pen) - (pc.sum(ok).as_py() or 0),
        invalid_codes=invalid,
        null_birth_dates=t["pefecnac"].null_count,
        exact_duplicates={
            name: shared[name].num_rows - distinct[name].num_rows for name in SOURCE_TABLES
        },
        conflicting_duplicates=conflicting,
        generated=generated,
        seconds=time.perf_counter() - started,
    )


def _write_and_measure(
    raw_root: Path, load_date: date, tables: dict[str, pa.Table], started: float
) -> CadastralSourceSummary:
    """Write the snapshot while measuring it in a second thread (both release the GIL)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        measured = pool.submit(_measure, raw_root, load_date, tables, True, started)
        _write_snapshot(raw_root, load_date, tables)
        summary = measured.result()
    return replace(summary, seconds=time.perf_counter() - started)


def _row_keys(table: pa.Table) -> pa.Array:
    parts = [pc.cast(table[c], pa.string()) for c in table.column_names]
    return pc.binary_join_element_wise(
        *parts, "\x1f", null_handling="replace", null_replacement="\\N"
    ).combine_chunks()


def _changes(old001: pa.Table, new001: pa.Table) -> tuple[int, int, int]:
    """(inserted, updated, deleted) persons between two pedt001 snapshots."""
    old_keys, new_keys = _person_keys(old001), _person_keys(new001)
    deleted = pc.sum(pc.invert(pc.is_in(old_keys, value_set=new_keys))).as_py() or 0
    inserted = _persons_count(new001) - _persons_count(old001) + deleted
    pen = new001["penumper"].combine_chunks()
    changed = pc.and_(
        pc.is_in(pen, value_set=old_keys),
        pc.invert(pc.is_in(_row_keys(new001), value_set=_row_keys(old001))),
    )
    updated = len(pc.unique(pen.filter(changed)))
    return inserted, updated, deleted


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------
def generate_cadastral_sources(
    raw_root: Path, *, persons: int, load_date: date, seed: int = 3, force: bool = False
) -> CadastralSourceSummary:
    """Write the full snapshot of the four source tables for ``load_date``.

    An existing complete snapshot is kept unless ``force`` (the summary is then measured
    from its files)."""
    started = time.perf_counter()
    raw_root = Path(raw_root)
    if persons < 1:
        raise ValueError(f"persons must be positive, got {persons}")
    if _complete(raw_root, load_date) and not force:
        logger.info("cadastral snapshot %s already present under %s", load_date, raw_root)
        return _measure(raw_root, load_date, read_snapshot(raw_root, load_date), False, started)
    rng = np.random.default_rng([seed, load_date.toordinal(), persons])
    empty = np.empty(0, dtype=np.int64)
    tables = _new_persons(rng, persons, _day(load_date), (empty, empty), exact=True)
    summary = _write_and_measure(raw_root, load_date, tables, started)
    logger.info(
        "cadastral snapshot %s: %d persons, rows %s in %.1fs",
        load_date,
        summary.persons,
        summary.rows,
        summary.seconds,
    )
    return summary


def generate_change_set(
    raw_root: Path,
    *,
    from_date: date,
    to_date: date,
    update_rate: float = 0.01,
    insert_rate: float = 0.005,
    delete_rate: float = 0.005,
    seed: int = 4,
    force: bool = False,
) -> CadastralChangeSummary:
    """Derive the ``to_date`` snapshot from the ``from_date`` one.

    ``round(rate * persons)`` persons (persons = distinct well-formed document numbers of
    ``from_date``) are deleted from all four tables, updated (new last user, sometimes a new
    civil status/segment, a new contact or revalued assets) and inserted (new document
    numbers with their contacts and assets, same dirty-data rates)."""
    started = time.perf_counter()
    raw_root = Path(raw_root)
    if to_date <= from_date:
        raise ValueError(f"to_date {to_date} must be after from_date {from_date}")
    for rate in (update_rate, insert_rate, delete_rate):
        if not 0 <= rate <= 1:
            raise ValueError(f"change rates must be within [0, 1], got {rate}")
    if not _complete(raw_root, from_date):
        raise FileNotFoundError(
            f"no complete cadastral snapshot for {from_date.isoformat()} under {raw_root}"
        )
    old = read_snapshot(raw_root, from_date)
    if _complete(raw_root, to_date) and not force:
        logger.info("cadastral snapshot %s already present under %s", to_date, raw_root)
        new = read_snapshot(raw_root, to_date)
        return _change_summary(raw_root, from_date, to_date, old, new, False, started)

    rng = np.random.default_rng([seed, from_date.toordinal(), to_date.toordinal()])
    from_day, to_day = _day(from_date), _day(to_date)
    keys = _person_keys(old["pedt001"])
    n_keys = len(keys)
    n_delete = round(delete_rate * n_keys)
    n_update = min(round(update_rate * n_keys), n_keys - n_delete)
    n_insert = round(insert_rate * n_keys)
    order = rng.permutation(n_keys)
    deleted = _take(keys, order[:n_delete])
    updated = _take(keys, order[n_delete : n_delete + n_update])

    new = {
        name: table.filter(pc.invert(pc.is_in(table["penumper"], value_set=deleted)))
        for name, table in old.items()
    }
    new = _apply_updates(rng, new, updated, from_day, to_day)
    inserts = _new_persons(rng, n_insert, to_day, _taken_bases(old["pedt001"]), exact=False)
    new = {name: pa.concat_tables([new[name], inserts[name]]) for name in SOURCE_TABLES}
    snapshot = _write_and_measure(raw_root, to_date, new, started)
    summary = CadastralChangeSummary(
        path=raw_root,
        from_date=from_date,
        to_date=to_date,
        inserted=n_insert,
        updated=n_update,
        deleted=n_delete,
        snapshot=snapshot,
        generated=True,
        seconds=time.perf_counter() - started,
    )
    logger.info(
        "cadastral change set %s -> %s: +%d ~%d -%d persons in %.1fs",
        from_date,
        to_date,
        summary.inserted,
        summary.updated,
        summary.deleted,
        summary.seconds,
    )
    return summary


def _apply_updates(
    rng: np.random.Generator,
    tables: dict[str, pa.Table],
    updated: pa.Array,
    from_day: int,
    to_day: int,
) -> dict[str, pa.Table]:
    """Change a few fields of the ``updated`` persons (the same way on all their rows)."""
    k = len(updated)
    if k == 0:
        return tables
    t001 = tables["pedt001"]
    pen = t001["penumper"].combine_chunks()
    who = pc.fill_null(pc.index_in(pen, value_set=updated), -1).to_numpy()
    rows = who >= 0
    at = np.where(rows, who, 0)

    old_user = pc.cast(pc.utf8_slice_codeunits(t001["peusualt"], 1), pa.int64()).to_numpy()
    new_user = _users(rng, k)[at]
    new_user = np.where(new_user == old_user, new_user + 1, new_user)
    natural = pc.fill_null(pc.equal(t001["petipper"], "F"), False).to_numpy(zero_copy_only=False)
    civil = rng.random(k) < 0.4
    civil_codes = _pick(rng, _CIVIL_CODES, k, p=_CIVIL_P)
    segment = rng.random(k) < 0.3
    segments = _raw_case(rng, _pick(rng, _SEGMENTS, k, p=_SEGMENT_F_P))
    columns = {
        "peestciv": pc.if_else(
            pa.array(rows & natural & civil[at]), _take(civil_codes, at), t001["peestciv"]
        ),
        "pesegmen": pc.if_else(pa.array(rows & segment[at]), _take(segments, at), t001["pesegmen"]),
        "peusualt": pc.if_else(pa.array(rows), _user_codes(new_user), t001["peusualt"]),
    }
    for name, values in columns.items():
        t001 = t001.set_column(t001.schema.get_field_index(name), name, values)
    out = dict(tables, pedt001=t001)

    # a new contact for some of them, numbered after their last one
    contact = updated.filter(pa.array(rng.random(k) < 0.35))
    if len(contact):
        persons = t001.take(pc.index_in(contact, value_set=pen))
        t003 = tables["pedt003"]
        mine = t003.filter(pc.is_in(t003["penumper"], value_set=contact))
        last = mine.group_by("penumper", use_threads=False).aggregate([("pesequen", "max")])
        at_last = pc.index_in(contact, value_set=last["penumper"])
        seq_start = pc.fill_null(_take(last["pesequen_max"].combine_chunks(), at_last), 0)
        is_j = pc.equal(persons["petipper"], "J").to_numpy(zero_copy_only=False)
        added = _contacts(
            rng,
            persons,
            is_j,
            np.ones(len(contact), dtype=np.int64),
            seq_start.to_numpy().astype(np.int64) + 1,
            from_day + 1,
            to_day,
        )
        out["pedt003"] = pa.concat_tables([t003, added])

    # revalued assets for some of them
    revalued = updated.filter(pa.array(rng.random(k) < 0.25))
    if len(revalued):
        t205 = tables["pedt205"]
        owner = pc.fill_null(pc.index_in(t205["penumper"], value_set=revalued), -1).to_numpy()
        hit = owner >= 0
        factor = rng.uniform(0.8, 1.25, len(revalued))
        when = to_day - rng.integers(0, max(1, to_day - from_day), len(revalued))
        value = pc.cast(t205["pevalbem"], pa.float64()).to_numpy(zero_copy_only=False)
        cents = np.round(value * 100).astype(np.int64)
        cents = np.where(hit, np.round(cents * factor[np.where(hit, owner, 0)]), cents)
        days = pc.cast(t205["pedatalt"], pa.int32()).to_numpy(zero_copy_only=False)
        days = np.where(hit, when[np.where(hit, owner, 0)], days)
        t205 = t205.set_column(3, "pevalbem", _decimal(cents.astype(np.int64)))
        out["pedt205"] = t205.set_column(4, "pedatalt", _dates(days))
    return out


def _change_summary(
    raw_root: Path,
    from_date: date,
    to_date: date,
    old: dict[str, pa.Table],
    new: dict[str, pa.Table],
    generated: bool,
    started: float,
) -> CadastralChangeSummary:
    inserted, updated, deleted = _changes(old["pedt001"], new["pedt001"])
    snapshot = _measure(raw_root, to_date, new, generated, started)
    return CadastralChangeSummary(
        path=raw_root,
        from_date=from_date,
        to_date=to_date,
        inserted=inserted,
        updated=updated,
        deleted=deleted,
        snapshot=snapshot,
        generated=generated,
        seconds=time.perf_counter() - started,
    )


__all__ = [
    "CADASTRAL_PROFILES",
    "SCHEMAS",
    "CadastralChangeSummary",
    "CadastralSourceSummary",
    "generate_cadastral_sources",
    "generate_change_set",
    "load_dates",
    "partition_dir",
    "read_snapshot",
]
