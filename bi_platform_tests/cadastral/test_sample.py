"""The cadastral sample-data generator: layout, schemas, dirty-data rates, duplicates,
determinism, idempotency and change sets (real Parquet files, ``small`` profile)."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from bi_platform.cadastral.reference import (
    ASSET_TYPES,
    CONTACT_TYPES,
    LOAD_DATE_COLUMN,
    SOURCE_TABLES,
    STATES,
)
from bi_platform.cadastral.sample import (
    CADASTRAL_PROFILES,
    CONFLICTING_DUPLICATE_RATE,
    EXACT_DUPLICATE_RATE,
    INVALID_CODE_RATES,
    MALFORMED_PENUMPER_RATE,
    NULL_BIRTH_DATE_RATE,
    SCHEMAS,
    CadastralChangeSummary,
    CadastralSourceSummary,
    generate_cadastral_sources,
    generate_change_set,
    load_dates,
    partition_dir,
    read_snapshot,
)

SMALL = CADASTRAL_PROFILES["small"]
DAY0 = date(2026, 1, 31)
DAY1 = date(2026, 2, 28)
VALID = r"^(\d{11}|\d{14})$"


def read_part(raw_root: Path, table: str, load_date: date) -> pa.Table:
    return pq.ParquetFile(partition_dir(raw_root, table, load_date) / "part-00000.parquet").read()


def well_formed(penumper) -> pa.Array:
    return pc.fill_null(pc.match_substring_regex(penumper, VALID), False)


def person_keys(pedt001: pa.Table) -> set[str]:
    pen = pedt001["penumper"]
    return set(pen.filter(well_formed(pen)).to_pylist())


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CadastralSourceSummary]:
    root = tmp_path_factory.mktemp("cadastral_raw")
    return root, generate_cadastral_sources(root, persons=SMALL, load_date=DAY0)


@pytest.fixture(scope="module")
def changed(
    raw: tuple[Path, CadastralSourceSummary],
) -> tuple[Path, CadastralChangeSummary]:
    root, _ = raw
    return root, generate_change_set(root, from_date=DAY0, to_date=DAY1)


def test_profiles() -> None:
    assert CADASTRAL_PROFILES == {"small": 5_000, "medium": 100_000, "default": 1_000_000}


def test_hive_layout_and_schemas(raw: tuple[Path, CadastralSourceSummary]) -> None:
    root, summary = raw
    for table in SOURCE_TABLES:
        part = root / table / f"{LOAD_DATE_COLUMN}={DAY0.isoformat()}"
        assert sorted(p.name for p in part.iterdir()) == ["part-00000.parquet"]
        assert summary.partition_dir(table) == part
        file = pq.ParquetFile(part / "part-00000.parquet")
        assert file.schema_arrow == SCHEMAS[table]
        assert LOAD_DATE_COLUMN not in file.schema_arrow.names
        assert file.metadata.row_group(0).column(0).compression == "SNAPPY"
        assert file.metadata.num_rows == summary.rows[table]
    # no temporary directories left next to the partitions
    assert not [p for t in SOURCE_TABLES for p in (root / t).iterdir() if p.name.startswith(".")]
    assert SCHEMAS["pedt205"].field("pevalbem").type == pa.decimal128(18, 2)
    assert SCHEMAS["pedt003"].field("pesequen").type == pa.int32()


def test_persons_and_document_numbers(raw: tuple[Path, CadastralSourceSummary]) -> None:
    root, summary = raw
    pedt001 = read_part(root, "pedt001", DAY0)
    assert summary.persons == SMALL
    ok = well_formed(pedt001["penumper"])
    valid = pedt001.filter(ok)
    lengths = pc.utf8_length(valid["penumper"]).to_pylist()
    types = valid["petipper"].to_pylist()
    pairs = zip(lengths, types, strict=True)
    assert all((n == 11) == (t == "F") and (n == 14) == (t == "J") for n, t in pairs)
    share_f = types.count("F") / len(types)
    assert 0.90 <= share_f <= 0.94
    # the malformed ones really are malformed, and are counted
    bad = pedt001.filter(pc.invert(ok))["penumper"].to_pylist()
    assert len(bad) == summary.malformed_penumper >= 1
    assert all(p is None or not p.isdigit() or len(p) not in (11, 14) for p in bad)
    # natural persons have surnames; legal persons have company names and no F-only codes
    natural = valid.filter(pc.equal(valid["petipper"], "F"))
    assert pc.all(pc.greater(pc.utf8_length(natural["pepriape"]), 0)).as_py()
    legal = valid.filter(pc.equal(valid["petipper"], "J"))
    names = legal["penomper"].to_pylist()
    assert all(n.endswith(("LTDA", "S.A.", "LTDA ME", "LTDA EPP")) for n in names)
    assert all(v in ("", None) for v in legal["pepriape"].to_pylist())
    assert legal["pesexper"].null_count == legal.num_rows


def _rate(count: int, total: int, rate: float) -> None:
    assert abs(count / total - rate) <= max(rate * 0.35, 2.5 / total), (count, total, rate)


def test_dirty_data_rates(raw: tuple[Path, CadastralSourceSummary]) -> None:
    root, summary = raw
    t = read_part(root, "pedt001", DAY0)
    n = t.num_rows
    natural = pc.sum(pc.equal(t["petipper"], "F")).as_py()
    _rate(summary.malformed_penumper, n, MALFORMED_PENUMPER_RATE)
    _rate(t["pefecnac"].null_count, n, NULL_BIRTH_DATE_RATE)
    assert t["pefecnac"].null_count == summary.null_birth_dates
    for column, rate in INVALID_CODE_RATES.items():
        base = natural if column in ("peestciv", "pesexper") else n
        _rate(summary.invalid_codes[column], base, rate)
    bad_states = pc.invert(pc.is_in(t["penacper"], value_set=pa.array(list(STATES))))
    assert pc.sum(bad_states).as_py() == summary.invalid_codes["penacper"]
    raw_segments = set(t["pesegmen"].drop_null().to_pylist())
    assert any(s != s.strip() or s != s.upper() for s in raw_segments)  # raw case/spaces
    # child tables: coverage and averages
    p002 = read_part(root, "pedt002", DAY0)
    assert 0.95 <= p002.num_rows / SMALL <= 0.99
    fathers = p002["penompai"].null_count / p002.num_rows
    assert 0.07 <= fathers <= 0.13
    p003 = read_part(root, "pedt003", DAY0)
    assert 2.3 <= p003.num_rows / SMALL <= 2.8
    assert set(p003["petipcon"].to_pylist()) == set(CONTACT_TYPES)
    emails = p003.filter(pc.equal(p003["petipcon"], "E"))
    assert emails["pelograd"].null_count == emails.num_rows
    assert pc.all(pc.match_substring(emails["peemail"], "@")).as_py()
    addresses = p003.filter(pc.not_equal(p003["petipcon"], "E"))
    assert addresses["peemail"].null_count == addresses.num_rows
    assert pc.all(pc.match_substring_regex(addresses["pecep"], r"^\d{8}$")).as_py()
    assert set(addresses["peuf"].to_pylist()) <= {uf for uf, _, _ in STATES.values()}
    assert pc.sum(pc.starts_with(addresses["pelograd"], "RUA ")).as_py() > addresses.num_rows / 2
    p205 = read_part(root, "pedt205", DAY0)
    assert 1.3 <= p205.num_rows / SMALL <= 1.7
    assert set(p205["petipbem"].to_pylist()) <= set(ASSET_TYPES)
    assert pc.min(p205["pevalbem"]).as_py() > 0


def test_duplicates(raw: tuple[Path, CadastralSourceSummary]) -> None:
    root, summary = raw
    t = read_part(root, "pedt001", DAY0)
    rows = t.to_pylist()
    seen: dict[tuple, int] = {}
    for row in rows:
        key = tuple(row.values())
        seen[key] = seen.get(key, 0) + 1
    exact = sum(c - 1 for c in seen.values())
    assert exact == summary.exact_duplicates["pedt001"]
    _rate(exact, SMALL, EXACT_DUPLICATE_RATE)
    by_key: dict[str, set[tuple]] = {}
    for key in seen:
        if key[0] is not None and key[0].isdigit() and len(key[0]) in (11, 14):
            by_key.setdefault(key[0], set()).add(key)
    conflicting = sum(1 for variants in by_key.values() if len(variants) > 1)
    assert conflicting == summary.conflicting_duplicates >= 1
    _rate(conflicting, SMALL, CONFLICTING_DUPLICATE_RATE)
    for table in ("pedt002", "pedt003", "pedt205"):
        data = read_part(root, table, DAY0)
        distinct = len({tuple(r.values()) for r in data.to_pylist()})
        assert data.num_rows - distinct == summary.exact_duplicates[table] >= 1
        _rate(summary.exact_duplicates[table], data.num_rows, EXACT_DUPLICATE_RATE)
    # pesequen unique per person, except exact duplicate rows
    p003 = read_part(root, "pedt003", DAY0)
    pairs = {(r["penumper"], r["pesequen"]) for r in p003.to_pylist()}
    assert p003.num_rows - len(pairs) == summary.exact_duplicates["pedt003"]


def test_deterministic_and_seeded(tmp_path: Path, raw: tuple[Path, CadastralSourceSummary]) -> None:
    root, _ = raw
    generate_cadastral_sources(tmp_path / "a", persons=SMALL, load_date=DAY0)
    other = generate_cadastral_sources(tmp_path / "b", persons=SMALL, load_date=DAY0, seed=99)
    for table in SOURCE_TABLES:
        same = partition_dir(tmp_path / "a", table, DAY0) / "part-00000.parquet"
        original = partition_dir(root, table, DAY0) / "part-00000.parquet"
        assert same.read_bytes() == original.read_bytes()
        assert not read_part(tmp_path / "b", table, DAY0).equals(read_part(root, table, DAY0))
    assert other.persons == SMALL


def test_idempotent_and_force(tmp_path: Path) -> None:
    first = generate_cadastral_sources(tmp_path, persons=500, load_date=DAY0)
    part = partition_dir(tmp_path, "pedt001", DAY0) / "part-00000.parquet"
    mtime = part.stat().st_mtime_ns
    again = generate_cadastral_sources(tmp_path, persons=500, load_date=DAY0)
    assert first.generated and not again.generated
    assert part.stat().st_mtime_ns == mtime
    for field in ("persons", "rows", "malformed_penumper", "invalid_codes", "exact_duplicates"):
        assert getattr(again, field) == getattr(first, field)
    forced = generate_cadastral_sources(tmp_path, persons=600, load_date=DAY0, force=True)
    assert forced.generated and forced.persons == 600
    assert read_snapshot(tmp_path, DAY0)["pedt001"].num_rows == forced.rows["pedt001"]
    # nothing but the partitions is left behind
    for table in SOURCE_TABLES:
        assert [p.name for p in (tmp_path / table).iterdir()] == [
            f"{LOAD_DATE_COLUMN}={DAY0.isoformat()}"
        ]


def test_incomplete_snapshot_is_rewritten(tmp_path: Path) -> None:
    generate_cadastral_sources(tmp_path, persons=300, load_date=DAY0)
    shutil.rmtree(partition_dir(tmp_path, "pedt003", DAY0))
    summary = generate_cadastral_sources(tmp_path, persons=300, load_date=DAY0)
    assert summary.generated
    assert read_snapshot(tmp_path, DAY0)["pedt003"].num_rows == summary.rows["pedt003"]


def test_load_dates(tmp_path: Path) -> None:
    assert load_dates(tmp_path) == []
    for day in (date(2026, 3, 31), date(2025, 12, 31), date(2026, 1, 31)):
        generate_cadastral_sources(tmp_path, persons=200, load_date=day)
    (tmp_path / "pedt001" / ".tmp-2027-01-01-x").mkdir()
    (tmp_path / "pedt001" / f"{LOAD_DATE_COLUMN}=2027-01-01").mkdir()  # empty: not a load
    assert load_dates(tmp_path) == [date(2025, 12, 31), date(2026, 1, 31), date(2026, 3, 31)]
    assert load_dates(tmp_path, "pedt205") == load_dates(tmp_path)


def test_change_set_counts(
    raw: tuple[Path, CadastralSourceSummary], changed: tuple[Path, CadastralChangeSummary]
) -> None:
    root, before = raw
    _, change = changed
    old, new = read_snapshot(root, DAY0), read_snapshot(root, DAY1)
    old_keys, new_keys = person_keys(old["pedt001"]), person_keys(new["pedt001"])
    n_keys = len(old_keys)
    assert change.deleted == round(0.005 * n_keys) == len(old_keys - new_keys)
    assert change.inserted == round(0.005 * n_keys)
    assert change.updated == round(0.01 * n_keys)
    assert change.snapshot.persons == before.persons + change.inserted - change.deleted
    # inserted persons have new, unique document numbers (malformed ones aside)
    assert len(new_keys - old_keys) <= change.inserted
    assert len(new_keys - old_keys) >= change.inserted - 2
    gone = old_keys - new_keys
    for table in SOURCE_TABLES:
        assert not gone & set(new[table]["penumper"].drop_null().to_pylist())
        assert (
            pq.ParquetFile(partition_dir(root, table, DAY1) / "part-00000.parquet").schema_arrow
            == (SCHEMAS[table])
        )
    # updated persons really differ in pedt001
    rows_old = {tuple(r.values()) for r in old["pedt001"].to_pylist()}
    kept = old_keys & new_keys
    differ = {
        r["penumper"]
        for r in new["pedt001"].to_pylist()
        if r["penumper"] in kept and tuple(r.values()) not in rows_old
    }
    assert len(differ) == change.updated
    # some of them got a later contact and revalued assets
    new_contacts = new["pedt003"].filter(pc.greater(new["pedt003"]["pedatalt"], pa.scalar(DAY0)))
    assert new_contacts.num_rows > 0
    assert set(new_contacts["penumper"].to_pylist()) <= differ | (new_keys - old_keys) | {None}


def test_change_set_keeps_dirty_character(
    raw: tuple[Path, CadastralSourceSummary], changed: tuple[Path, CadastralChangeSummary]
) -> None:
    _, before = raw
    _, change = changed
    after = change.snapshot
    assert after.load_date == DAY1
    assert after.malformed_penumper >= before.malformed_penumper - 1
    assert after.conflicting_duplicates >= 1
    for table in SOURCE_TABLES:
        assert after.exact_duplicates[table] >= before.exact_duplicates[table] * 0.9
        assert abs(after.rows[table] - before.rows[table]) <= before.rows[table] * 0.03
    for column, count in before.invalid_codes.items():
        assert abs(after.invalid_codes[column] - count) <= max(3, count * 0.2)


def test_change_set_idempotent_deterministic(
    tmp_path: Path,
    raw: tuple[Path, CadastralSourceSummary],
    changed: tuple[Path, CadastralChangeSummary],
) -> None:
    root, _ = raw
    _, change = changed
    part = partition_dir(root, "pedt001", DAY1) / "part-00000.parquet"
    mtime = part.stat().st_mtime_ns
    again = generate_change_set(root, from_date=DAY0, to_date=DAY1)
    assert change.generated and not again.generated
    assert part.stat().st_mtime_ns == mtime
    assert (again.inserted, again.updated, again.deleted) == (
        change.inserted,
        change.updated,
        change.deleted,
    )
    assert again.rows == change.rows
    # same seed on a copy of the source snapshot -> identical files
    for table in SOURCE_TABLES:
        src = partition_dir(root, table, DAY0)
        shutil.copytree(src, partition_dir(tmp_path, table, DAY0))
    generate_change_set(tmp_path, from_date=DAY0, to_date=DAY1)
    for table in SOURCE_TABLES:
        name = "part-00000.parquet"
        assert (partition_dir(tmp_path, table, DAY1) / name).read_bytes() == (
            partition_dir(root, table, DAY1) / name
        ).read_bytes()
    assert load_dates(root) == [DAY0, DAY1]


def test_change_set_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="2026-01-31"):
        generate_change_set(tmp_path, from_date=DAY0, to_date=DAY1)
    with pytest.raises(ValueError, match="after"):
        generate_change_set(tmp_path, from_date=DAY1, to_date=DAY0)
