"""Reference data in PostgreSQL: agencies and the theme taxonomy.

* :func:`load_reference_data` upserts agencies and themes (idempotent), in the caller's
  transaction;
* :class:`ReferenceSets` is what the validator checks records against (agency keys,
  theme codes with their level and label), read from the database.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import tuple_row

from bi_platform.news.pg_common import transaction

if TYPE_CHECKING:
    from bi_platform.news.reference_data import Agency, Theme

log = logging.getLogger(__name__)


def load_reference_data(
    conn: psycopg.Connection[Any],
    agencies: Mapping[str, Agency],
    themes: Mapping[str, Theme],
) -> dict[str, int]:
    """Upsert ``agencies`` and ``themes`` (from :mod:`~bi_platform.news.reference_data`).

    Idempotent: unchanged rows are not rewritten (their ``updated_at`` stays). Parents
    may come in any order (constraints deferred to the end of the call). Rows absent from
    the mappings are kept (news may reference them). When an agency's name changed, the
    denormalised ``news.agency_name`` follows. Returns counts of inserted/updated rows.
    """
    a = list(agencies.values())
    t = list(themes.values())
    with transaction(conn), conn.cursor(row_factory=tuple_row) as cur:
        cur.execute("SET CONSTRAINTS ALL DEFERRED")
        cur.execute(
            """
            WITH upserted AS (
                INSERT INTO agencies AS a (key, name, type, parent_key, url)
                SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[])
                ON CONFLICT (key) DO UPDATE SET
                    name = EXCLUDED.name, type = EXCLUDED.type,
                    parent_key = EXCLUDED.parent_key, url = EXCLUDED.url
                WHERE (a.name, a.type, a.parent_key, a.url)
                      IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.type, EXCLUDED.parent_key,
                                        EXCLUDED.url)
                RETURNING (xmax = 0) AS inserted
            )
            SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted)
            FROM upserted
            """,
            (
                [x.key for x in a],
                [x.name for x in a],
                [x.type for x in a],
                [x.parent for x in a],
                [x.url for x in a],
            ),
        )
        agencies_inserted, agencies_updated = cur.fetchone()  # type: ignore[misc]
        cur.execute(
            """
            WITH upserted AS (
                INSERT INTO themes AS t (code, label, level, parent_code)
                SELECT * FROM unnest(%s::text[], %s::text[], %s::int2[], %s::text[])
                ON CONFLICT (code) DO UPDATE SET
                    label = EXCLUDED.label, level = EXCLUDED.level,
                    parent_code = EXCLUDED.parent_code
                WHERE (t.label, t.level, t.parent_code)
                      IS DISTINCT FROM (EXCLUDED.label, EXCLUDED.level, EXCLUDED.parent_code)
                RETURNING (xmax = 0) AS inserted
            )
            SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted)
            FROM upserted
            """,
            (
                [x.code for x in t],
                [x.label for x in t],
                [x.level for x in t],
                [x.parent_code for x in t],
            ),
        )
        themes_inserted, themes_updated = cur.fetchone()  # type: ignore[misc]
        cur.execute("SET CONSTRAINTS ALL IMMEDIATE")  # check the parents now
        names_updated = 0
        if agencies_updated:
            cur.execute(
                """
                UPDATE news AS n SET agency_name = a.name
                FROM agencies AS a
                WHERE n.agency_key = a.key AND n.agency_name IS DISTINCT FROM a.name
                """
            )
            names_updated = cur.rowcount
    counts = {
        "agencies_inserted": agencies_inserted,
        "agencies_updated": agencies_updated,
        "themes_inserted": themes_inserted,
        "themes_updated": themes_updated,
        "news_agency_names_updated": names_updated,
    }
    log.info("reference data loaded: %s", counts)
    return counts


@dataclass(frozen=True)
class ReferenceSets:
    """What validation needs to know: agency key -> name, theme code -> (level, label)."""

    agencies: Mapping[str, str | None]
    themes: Mapping[str, tuple[int, str]]

    @classmethod
    def from_reference_data(
        cls, agencies: Mapping[str, Agency], themes: Mapping[str, Theme]
    ) -> ReferenceSets:
        """From the packaged YAML (:func:`load_agencies`, :func:`load_themes`)."""
        return cls(
            {k: a.name for k, a in agencies.items()},
            {c: (t.level, t.label) for c, t in themes.items()},
        )

    @classmethod
    def from_database(cls, conn: psycopg.Connection[Any]) -> ReferenceSets:
        with conn.cursor(row_factory=tuple_row) as cur:
            agencies = dict(cur.execute("SELECT key, name FROM agencies").fetchall())
            themes = {
                code: (level, label)
                for code, level, label in cur.execute("SELECT code, level, label FROM themes")
            }
        return cls(agencies, themes)
