"""The four source tables of the cadastral sample, for new persons and for changes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bi_platform.cadastral.reference import (
    ASSET_TYPES,
)
from bi_platform.cadastral.sample.helpers import (
    _cities_of,
    _company_names,
    _count,
    _dates,
    _decimal,
    _flat,
    _inject,
    _join,
    _malformed,
    _padded,
    _penumpers,
    _pick,
    _raw_case,
    _scatter,
    _spread,
    _take,
    _user_codes,
    _users,
)
from bi_platform.cadastral.sample.profiles import (
    _NATURAL_ONLY,
    ASSETS_P,
    CONFLICTING_DUPLICATE_RATE,
    CONTACTS_P,
    EXACT_DUPLICATE_RATE,
    FATHER_NULL_RATE,
    INVALID_CODE_RATES,
    INVALID_CODE_VALUES,
    LEGAL_PERSON_SHARE,
    MALFORMED_PENUMPER_RATE,
    NATURALIDADE_SHARE,
    NULL_BIRTH_DATE_RATE,
    SCHEMAS,
)
from bi_platform.cadastral.sample.vocabulary import (
    _ADDRESS_STATE_P,
    _ASSET_MEDIAN,
    _ASSET_P,
    _ASSET_TYPES,
    _CITY_NAMES,
    _CITY_UF,
    _CIVIL_CODES,
    _CIVIL_P,
    _COMPANY_MAILBOXES,
    _CONTACT_F_CDF,
    _CONTACT_J_CDF,
    _CONTACT_TYPES,
    _EMAIL_DOMAIN_P,
    _EMAIL_DOMAINS,
    _FEMALE,
    _MALE,
    _OCC_F_P,
    _OCC_J_P,
    _OCCUPATION_CODES,
    _SEGMENT_F_P,
    _SEGMENT_J_P,
    _SEGMENTS,
    _STATE_CODES,
    _STATE_P,
    _STREET_TYPE_P,
    _STREET_TYPES,
    _STREETS,
    _SURNAMES,
)


# --------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------
@dataclass
class _People:
    """Per-person arrays a snapshot's child tables are derived from."""

    pedt001: pa.Table
    is_j: np.ndarray
    state_idx: np.ndarray
    well_formed: np.ndarray


def _persons(
    rng: np.random.Generator,
    n: int,
    day: int,
    taken: tuple[np.ndarray, np.ndarray],
    exact: bool,
) -> _People:
    """``n`` persons (one pedt001 row each) with malformed numbers and invalid codes."""
    is_j = rng.random(n) < LEGAL_PERSON_SHARE
    j_mask = pa.array(is_j)
    female = rng.random(n) < 0.51
    natural = np.flatnonzero(~is_j)

    penumper = _penumpers(rng, is_j, taken)
    malformed = rng.choice(n, _count(rng, MALFORMED_PENUMPER_RATE, n, exact), replace=False)
    penumper = _scatter(penumper, malformed, _malformed(rng, _take(penumper, malformed)))
    well_formed = np.ones(n, dtype=bool)
    well_formed[malformed] = False

    first = pc.if_else(pa.array(female), _pick(rng, _FEMALE, n), _pick(rng, _MALE, n))
    blank = pc.if_else(pa.array(rng.random(n) < 0.5), "", pa.scalar(None, pa.string()))
    penomper = pc.if_else(j_mask, _company_names(rng, n), first)
    pepriape = pc.if_else(j_mask, blank, _pick(rng, _SURNAMES, n))
    pesegape = pc.if_else(j_mask, blank, _pick(rng, _SURNAMES, n))

    age = np.where(is_j, rng.integers(180, 60 * 365, n), rng.integers(18 * 365, 90 * 365, n))
    birth_null = np.zeros(n, dtype=bool)
    birth_null[rng.choice(n, _count(rng, NULL_BIRTH_DATE_RATE, n, exact), replace=False)] = True
    pefecnac = _dates(day - age, birth_null)

    null = pa.scalar(None, pa.string())
    columns = {
        "peestciv": pc.if_else(j_mask, null, _pick(rng, _CIVIL_CODES, n, p=_CIVIL_P)),
        "pesexper": pc.if_else(j_mask, null, pc.if_else(pa.array(female), "F", "M")),
        "petipocu": pc.if_else(
            j_mask,
            _pick(rng, _OCCUPATION_CODES, n, p=_OCC_J_P),
            _pick(rng, _OCCUPATION_CODES, n, p=_OCC_F_P),
        ),
    }
    state_idx = rng.choice(len(_STATE_CODES), n, p=_STATE_P)
    columns["penacper"] = _take(pa.array(_STATE_CODES), state_idx)
    segment = pc.if_else(
        j_mask, _pick(rng, _SEGMENTS, n, p=_SEGMENT_J_P), _pick(rng, _SEGMENTS, n, p=_SEGMENT_F_P)
    )
    columns["pesegmen"] = _raw_case(rng, segment)
    everyone = np.arange(n)
    for column, rate in INVALID_CODE_RATES.items():
        eligible = natural if column in _NATURAL_ONLY else everyone
        columns[column] = _inject(
            rng, columns[column], eligible, rate, INVALID_CODE_VALUES[column], exact
        )

    table = pa.Table.from_arrays(
        [
            penumper,
            pc.if_else(j_mask, "J", "F"),
            penomper,
            pepriape,
            pesegape,
            pefecnac,
            columns["peestciv"],
            columns["pesexper"],
            columns["petipocu"],
            columns["penacper"],
            columns["pesegmen"],
            _user_codes(_users(rng, n)),
        ],
        schema=SCHEMAS["pedt001"],
    )
    return _People(table, is_j, state_idx, well_formed)


def _with_person_duplicates(
    rng: np.random.Generator, people: _People, day: int, exact: bool
) -> pa.Table:
    """pedt001 plus exact duplicate rows and conflicting rows (same penumper, other
    birth date and last user) of distinct well-formed persons."""
    n = people.pedt001.num_rows
    candidates = np.flatnonzero(people.well_formed)
    k_exact = _count(rng, EXACT_DUPLICATE_RATE, n, exact)
    k_conflict = _count(rng, CONFLICTING_DUPLICATE_RATE, n, exact)
    chosen = rng.choice(candidates, min(len(candidates), k_exact + k_conflict), replace=False)
    exact_rows = people.pedt001.take(chosen[:k_exact])
    conflict = people.pedt001.take(chosen[k_exact:])
    m = conflict.num_rows
    birth = conflict["pefecnac"].combine_chunks()
    days = pc.fill_null(birth.cast(pa.int32()), 0).to_numpy(zero_copy_only=False)
    shifted = np.where(birth.is_null().to_numpy(zero_copy_only=False), day - 40 * 365, days)
    shifted = shifted - rng.integers(1, 400, m)
    conflict = conflict.set_column(5, "pefecnac", _dates(shifted))
    conflict = conflict.set_column(11, "peusualt", _user_codes(rng.integers(900_000, 1_000_000, m)))
    return pa.concat_tables([people.pedt001, exact_rows, conflict])


def _pedt002(rng: np.random.Generator, people: _People, exact: bool) -> pa.Table:
    """Naturalidade (a city of the true state of birth) and parents' names."""
    n = people.pedt001.num_rows
    idx = np.flatnonzero(rng.random(n) < NATURALIDADE_SHARE)
    m = len(idx)
    t = people.pedt001.take(idx)
    j_mask = pa.array(people.is_j[idx])
    city = _take(_CITY_NAMES, _cities_of(rng, people.state_idx[idx]))
    null = pa.scalar(None, pa.string())
    mother = _join(_pick(rng, _FEMALE, m), _pick(rng, _SURNAMES, m), t["pepriape"], sep=" ")
    father = _join(_pick(rng, _MALE, m), _pick(rng, _SURNAMES, m), t["pesegape"], sep=" ")
    no_father = pa.array(people.is_j[idx] | (rng.random(m) < FATHER_NULL_RATE))
    return pa.Table.from_arrays(
        [
            t["penumper"].combine_chunks(),
            _raw_case(rng, city),
            pc.if_else(j_mask, null, mother),
            pc.if_else(no_father, null, father),
        ],
        schema=SCHEMAS["pedt002"],
    )


def _contacts(
    rng: np.random.Generator,
    persons: pa.Table,
    is_j: np.ndarray,
    counts: np.ndarray,
    seq_start: np.ndarray,
    day_lo: int,
    day_hi: int,
) -> pa.Table:
    """``counts[i]`` contacts of person ``i`` (pedt001 rows), numbered from
    ``seq_start[i]``, updated on a day in ``[day_lo, day_hi]``."""
    owner = np.repeat(np.arange(len(counts)), counts)
    m = len(owner)
    starts = np.cumsum(counts) - counts
    seq = np.arange(m) - np.repeat(starts, counts) + np.repeat(seq_start, counts)
    u = rng.random(m)
    cdf = np.where(is_j[owner][:, None], _CONTACT_J_CDF, _CONTACT_F_CDF)
    kind = (u[:, None] > cdf).sum(axis=1).clip(0, 2)
    petipcon = _take(_CONTACT_TYPES, kind)

    emails = np.flatnonzero((kind == 0) & ~is_j[owner])
    who = persons.select(["penomper", "pesegape"]).take(owner[emails])
    k = len(emails)
    style = rng.integers(0, 3, k)
    sep = _take(pa.array([".", "", "_"]), style)
    number = pc.if_else(
        pa.array(style == 0), "", _padded(rng.integers(0, 100, k), 2)
    )  # e.g. maria.silva / mariasilva07 / maria_silva81
    natural_mail = _join(
        pc.utf8_lower(who["penomper"]),
        sep,
        pc.utf8_lower(pc.fill_null(who["pesegape"], "")),
        number,
        "@",
        _pick(rng, _EMAIL_DOMAINS, k, p=_EMAIL_DOMAIN_P),
    )
    company = np.flatnonzero((kind == 0) & is_j[owner])
    name = _flat(persons["penomper"]).take(pa.array(owner[company]))
    slug = pc.utf8_lower(pc.replace_substring_regex(name, r"^(\S+).*$", r"\1"))
    slug = pc.replace_substring_regex(slug, r"[^a-z0-9]", "")
    company_mail = _join(_pick(rng, _COMPANY_MAILBOXES, len(company)), "@", slug, ".com.br")
    emails = np.concatenate([emails, company])
    mail = pa.concat_arrays([_flat(natural_mail), _flat(company_mail)])
    peemail = _spread(_raw_case(rng, mail, lower=True), emails, m)

    addresses = np.flatnonzero(kind != 0)
    a = len(addresses)
    number = pa.array(rng.integers(1, 4000, a)).cast(pa.string())
    unit_kind = rng.integers(0, 5, a)
    commercial = kind[addresses] == 2
    unit_label = pc.if_else(pa.array(commercial), " SALA ", " APTO ")
    unit = pc.if_else(
        pa.array(unit_kind < 2),
        _join(
            unit_label,
            pa.array(rng.integers(1, 40, a) * 100 + rng.integers(1, 9, a)).cast(pa.string()),
        ),
        "",
    )
    street = _join(
        _pick(rng, _STREET_TYPES, a, p=_STREET_TYPE_P), " ", _pick(rng, _STREETS, a), ", ", number
    )
    city = _cities_of(rng, rng.choice(len(_STATE_CODES), a, p=_ADDRESS_STATE_P))
    columns = {
        "pelograd": _join(street, unit),
        "pecidade": _take(_CITY_NAMES, city),
        "peuf": _take(_CITY_UF, city),
        "pecep": _padded(rng.integers(1_000_000, 99_999_999, a), 8),
    }
    for name, values in columns.items():
        columns[name] = _spread(values, addresses, m)

    days = day_hi - rng.integers(0, max(1, day_hi - day_lo + 1), m)
    tie = (seq > np.repeat(seq_start, counts)) & (rng.random(m) < 0.04)
    days[tie] = days[np.flatnonzero(tie) - 1]
    return pa.Table.from_arrays(
        [
            _take(persons["penumper"].combine_chunks(), owner),
            pa.array(seq, type=pa.int32()),
            petipcon,
            peemail,
            columns["pelograd"],
            columns["pecidade"],
            columns["peuf"],
            columns["pecep"],
            _dates(days),
        ],
        schema=SCHEMAS["pedt003"],
    )


def _assets(rng: np.random.Generator, penumper: pa.Array, day: int) -> pa.Table:
    """0..8 assets per person: code unique per person, log-normal value per type."""
    counts = rng.choice(len(ASSETS_P), len(penumper), p=ASSETS_P)
    owner = np.repeat(np.arange(len(penumper)), counts)
    m = len(owner)
    seq = np.arange(m) - np.repeat(np.cumsum(counts) - counts, counts) + 1
    kind = rng.choice(len(ASSET_TYPES), m, p=_ASSET_P)
    value = _ASSET_MEDIAN[kind] * rng.lognormal(0.0, 0.8, m)
    cents = np.round(value * 100).astype(np.int64)
    return pa.Table.from_arrays(
        [
            _take(penumper, owner),
            _padded(rng.integers(0, 10**8, m) * 100 + seq, 10),
            _take(_ASSET_TYPES, kind),
            _decimal(cents),
            _dates(day - rng.integers(1, 15 * 365, m)),
        ],
        schema=SCHEMAS["pedt205"],
    )


def _with_exact_duplicates(rng: np.random.Generator, table: pa.Table, exact: bool) -> pa.Table:
    k = _count(rng, EXACT_DUPLICATE_RATE, table.num_rows, exact)
    if k == 0:
        return table
    return pa.concat_tables([table, table.take(rng.choice(table.num_rows, k, replace=False))])


def _new_persons(
    rng: np.random.Generator,
    n: int,
    day: int,
    taken: tuple[np.ndarray, np.ndarray],
    exact: bool,
) -> dict[str, pa.Table]:
    """``n`` new persons and their rows in all four tables, dirty data included."""
    people = _persons(rng, n, day, taken, exact)
    penumper = people.pedt001["penumper"].combine_chunks()
    counts = rng.choice(len(CONTACTS_P), n, p=CONTACTS_P)
    tables = {
        "pedt001": _with_person_duplicates(rng, people, day, exact),
        "pedt002": _with_exact_duplicates(rng, _pedt002(rng, people, exact), exact),
        "pedt003": _with_exact_duplicates(
            rng,
            _contacts(
                rng, people.pedt001, people.is_j, counts, np.ones(n, np.int64), day - 3650, day - 1
            ),
            exact,
        ),
        "pedt205": _with_exact_duplicates(rng, _assets(rng, penumper, day), exact),
    }
    return tables
