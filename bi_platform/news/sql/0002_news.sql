-- 0002 the news table: one row per story, the source of truth the HF dataset is
-- exported from.
--
-- Columns follow bi_platform.news.records.HF_SCHEMA (``agency`` is agency_key; theme
-- labels live in ``themes`` and are joined back by the news_hf view, 0004) plus
-- bookkeeping: id, created_at, updated_at, synced_to_hf_at, hf_revision. Fixed-width
-- columns come first to avoid alignment padding.

CREATE TABLE news (
    id                        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    published_at              timestamptz NOT NULL,
    updated_datetime          timestamptz,
    extracted_at              timestamptz,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now(),
    synced_to_hf_at           timestamptz,
    unique_id                 text NOT NULL CONSTRAINT news_unique_id_key UNIQUE,
    agency_key                text NOT NULL REFERENCES agencies (key),
    agency_name               text,  -- denormalised copy of agencies.name
    title                     text NOT NULL
                              CONSTRAINT news_title_not_blank CHECK (btrim(title) <> ''),
    subtitle                  text,
    editorial_lead            text,
    url                       text,
    image_url                 text,
    video_url                 text,
    category                  text,
    tags                      text[],
    content                   text,
    summary                   text,
    -- Theme FKs; the shape checks make each column hold a code of its own level.
    theme_l1_code             text REFERENCES themes (code)
                              CONSTRAINT news_theme_l1_shape CHECK (theme_l1_code ~ '^[0-9]{2}$'),
    theme_l2_code             text REFERENCES themes (code)
                              CONSTRAINT news_theme_l2_shape
                              CHECK (theme_l2_code ~ '^[0-9]{2}\.[0-9]{2}$'),
    theme_l3_code             text REFERENCES themes (code)
                              CONSTRAINT news_theme_l3_shape
                              CHECK (theme_l3_code ~ '^[0-9]{2}\.[0-9]{2}\.[0-9]{2}$'),
    most_specific_theme_code  text REFERENCES themes (code),
    content_hash              text NOT NULL,
    hf_revision               text   -- HF commit revision of the last sync of this row
);

COMMENT ON COLUMN news.updated_at IS
    'Last change of any content column (everything but id, created_at, updated_at, '
    'synced_to_hf_at, hf_revision); maintained by trigger news_touch_updated_at.';
COMMENT ON COLUMN news.synced_to_hf_at IS
    'When this row was last exported to the HF dataset; NULL = never. The row is pending '
    'while synced_to_hf_at IS NULL OR updated_at > synced_to_hf_at.';

-- ---------------------------------------------------------------------------------------
-- updated_at: bumped only when a content column really changes.
--
-- The ingest re-upserts whole records (INSERT ... ON CONFLICT (unique_id) DO UPDATE SET
-- every column = EXCLUDED...). Re-delivering an identical record must not make it look
-- changed, because the HF sync exports rows with updated_at > synced_to_hf_at. So the
-- content columns are compared with IS DISTINCT FROM (NULL-safe) and updated_at is
-- either kept or moved forward; a value written by the caller is ignored.
--
-- The new value is clock_timestamp() (the time of the write, not of the transaction's
-- start) and always greater than the old one (at least +1 us). So, when the sync marks
-- the rows it exported with a compare-and-set
--     UPDATE news SET synced_to_hf_at = clock_timestamp(), hf_revision = <revision>
--     WHERE id = <id> AND updated_at = <the updated_at it exported>
-- no change is lost: a change committed before the mark fails the compare (the row stays
-- pending), and a change made after the mark gets an updated_at above synced_to_hf_at.
--
-- The trigger fires only for UPDATEs that assign a content column or updated_at, so the
-- sync's bookkeeping UPDATE (SET synced_to_hf_at, hf_revision) skips the comparison and
-- the de-TOASTing of content it would cost. When a migration adds a content column to
-- news, it must add it to both lists below (CREATE OR REPLACE FUNCTION, re-create the
-- trigger).
CREATE FUNCTION news_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.unique_id, NEW.agency_key, NEW.agency_name, NEW.published_at,
        NEW.updated_datetime, NEW.extracted_at, NEW.title, NEW.subtitle, NEW.editorial_lead,
        NEW.url, NEW.image_url, NEW.video_url, NEW.category, NEW.tags, NEW.content,
        NEW.summary, NEW.theme_l1_code, NEW.theme_l2_code, NEW.theme_l3_code,
        NEW.most_specific_theme_code, NEW.content_hash)
       IS DISTINCT FROM
       (OLD.unique_id, OLD.agency_key, OLD.agency_name, OLD.published_at,
        OLD.updated_datetime, OLD.extracted_at, OLD.title, OLD.subtitle, OLD.editorial_lead,
        OLD.url, OLD.image_url, OLD.video_url, OLD.category, OLD.tags, OLD.content,
        OLD.summary, OLD.theme_l1_code, OLD.theme_l2_code, OLD.theme_l3_code,
        OLD.most_specific_theme_code, OLD.content_hash)
    THEN
        NEW.updated_at := greatest(clock_timestamp(), OLD.updated_at + interval '1 microsecond');
    ELSE
        NEW.updated_at := OLD.updated_at;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER news_touch_updated_at
    BEFORE UPDATE OF unique_id, agency_key, agency_name, published_at, updated_datetime,
        extracted_at, title, subtitle, editorial_lead, url, image_url, video_url, category,
        tags, content, summary, theme_l1_code, theme_l2_code, theme_l3_code,
        most_specific_theme_code, content_hash, updated_at
    ON news
    FOR EACH ROW EXECUTE FUNCTION news_touch_updated_at();

-- ---------------------------------------------------------------------------------------
-- Indexes for the read paths. Deliberately none on the text itself (no tsvector over
-- content: search is not served from here, and it would dominate load time and size).

-- One story per agency and URL. Partial: records without a URL are not constrained.
-- Its leading agency_key also serves the FK to agencies.
CREATE UNIQUE INDEX news_agency_url_key ON news (agency_key, url) WHERE url IS NOT NULL;

-- Time-ordered listings, overall and per agency.
CREATE INDEX news_published_at_idx ON news (published_at);
CREATE INDEX news_agency_published_at_idx ON news (agency_key, published_at);

-- Listings per theme, newest first. Partial: unclassified rows are not indexed.
CREATE INDEX news_theme_l1_published_at_idx ON news (theme_l1_code, published_at)
    WHERE theme_l1_code IS NOT NULL;
CREATE INDEX news_theme_l2_published_at_idx ON news (theme_l2_code, published_at)
    WHERE theme_l2_code IS NOT NULL;
CREATE INDEX news_theme_l3_published_at_idx ON news (theme_l3_code, published_at)
    WHERE theme_l3_code IS NOT NULL;
CREATE INDEX news_most_specific_theme_published_at_idx
    ON news (most_specific_theme_code, published_at)
    WHERE most_specific_theme_code IS NOT NULL;

-- Rows the HF sync still has to export: never synced, or changed since the last sync.
-- A partial index's predicate may compare two columns of the row, so one small index
-- serves both the incremental query
--     WHERE synced_to_hf_at IS NULL OR updated_at > synced_to_hf_at   (ORDER BY id)
-- and the "never synced" query (WHERE synced_to_hf_at IS NULL implies the predicate).
-- In steady state it holds only the few rows awaiting export, so it costs little.
--
-- Trade-off: columns in an index predicate count as indexed for HOT, so the sync's
-- "mark as exported" UPDATE (synced_to_hf_at) and every content change (updated_at) are
-- never HOT updates: each writes new entries into all indexes of news and leaves a dead
-- heap tuple for (auto)vacuum. That is accepted: without this index the incremental
-- query is a full scan of ~300k wide rows on every sync.
CREATE INDEX news_hf_pending_idx ON news (id)
    WHERE synced_to_hf_at IS NULL OR updated_at > synced_to_hf_at;

-- ---------------------------------------------------------------------------------------
-- Storage.
--
-- fillfactor stays at 100 (the default). Free space in a page only pays off for HOT
-- updates, and the updates news gets (content changes, the sync marking rows exported)
-- cannot be HOT because of news_hf_pending_idx (above); a re-upsert of an identical
-- record could be HOT, but the ingest should skip those with a WHERE on the DO UPDATE
-- instead of writing a no-op version at all. With ~1.5-2 KB rows (about four per 8 kB
-- page) a fillfactor of 90 would leave ~800 bytes per page: too small for one more row
-- version, so it would only make the table 10% larger.
--
-- TOAST compression: content is ~2 KB, so most rows cross the ~2 kB TOAST threshold and
-- get their large text compressed on write. With the default pglz that compression is
-- THE bottleneck of a bulk load (measured on these machines: COPY of 300k x 2 KB rows
-- took 29 s with pglz, 14.6 s without compression); lz4 compresses several times faster
-- with a similar ratio on prose (COPY of 100k x 2.4 KB rows into this table, indexes
-- included: 5.5 s with pglz, 3.6 s with lz4, same table size). So the large text
-- columns use lz4 when the server was built with it (PostgreSQL >= 14 configured
-- --with-lz4: 'lz4' is then one of the values of default_toast_compression); otherwise
-- they keep pglz and a NOTICE says so. The setting applies to values written from now
-- on; pglz values stay readable.
DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_settings
        WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)
    ) THEN
        ALTER TABLE news
            ALTER COLUMN content SET COMPRESSION lz4,
            ALTER COLUMN summary SET COMPRESSION lz4,
            ALTER COLUMN editorial_lead SET COMPRESSION lz4,
            ALTER COLUMN subtitle SET COMPRESSION lz4,
            ALTER COLUMN title SET COMPRESSION lz4;
    ELSE
        RAISE NOTICE 'news: this server has no lz4 support; large text columns keep pglz';
    END IF;
END
$$;
