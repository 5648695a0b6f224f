-- 0001 reference tables: agencies and the three-level theme taxonomy.
--
-- How these files run (bi_platform.news.pg_schema.migrate): each file is executed in its
-- own transaction together with its schema_version row, so a file never contains
-- BEGIN/COMMIT nor statements that refuse to run inside a transaction (CREATE INDEX
-- CONCURRENTLY, VACUUM, ...), and uses SET LOCAL rather than SET (a plain SET would
-- outlive the transaction on the caller's connection). A file that fails leaves nothing
-- behind. Applied files are checksummed and immutable: change the schema by adding the
-- next numbered file.

-- Generic "updated_at follows real changes" trigger for small tables. The trigger owns
-- updated_at: a value the caller sets is ignored, and an UPDATE that leaves every column
-- as it was (e.g. an idempotent upsert) keeps the old timestamp.
CREATE FUNCTION touch_updated_at_if_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := OLD.updated_at;
    IF NEW IS DISTINCT FROM OLD THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;

-- One row per publishing gov.br agency. The key is the scraper's agency slug (the
-- ``agency`` field of a record, part of its unique_id). Only the key is required: the
-- HF dataset carries slugs only, so a loader may create an agency before its name is
-- known. The parent FKs of agencies and themes are DEFERRABLE (checked per statement by
-- default): a loader that inserts a tree in arbitrary order can SET CONSTRAINTS ALL
-- DEFERRED in its transaction.
CREATE TABLE agencies (
    key         text PRIMARY KEY
                CONSTRAINT agencies_key_not_blank CHECK (key <> '' AND key = btrim(key)),
    name        text,
    type        text,
    parent_key  text REFERENCES agencies (key) DEFERRABLE,
    url         text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT agencies_not_own_parent CHECK (parent_key <> key)
);

CREATE INDEX agencies_parent_key_idx ON agencies (parent_key) WHERE parent_key IS NOT NULL;

CREATE TRIGGER agencies_touch_updated_at
    BEFORE UPDATE ON agencies
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at_if_changed();

-- The theme taxonomy, three levels. Codes are dot-separated two-digit segments, one per
-- level: '01' (level 1), '01.02' (level 2), '01.02.03' (level 3). The checks keep level,
-- code shape and parent consistent: a level-1 theme has no parent, a deeper theme's
-- parent is its code minus the last segment (so the parent has the level above).
CREATE TABLE themes (
    code         text PRIMARY KEY,
    label        text NOT NULL,
    level        smallint NOT NULL CONSTRAINT themes_level_range CHECK (level BETWEEN 1 AND 3),
    parent_code  text REFERENCES themes (code) DEFERRABLE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT themes_code_matches_level CHECK (
        code ~ CASE level
                   WHEN 1 THEN '^[0-9]{2}$'
                   WHEN 2 THEN '^[0-9]{2}\.[0-9]{2}$'
                   WHEN 3 THEN '^[0-9]{2}\.[0-9]{2}\.[0-9]{2}$'
               END
    ),
    CONSTRAINT themes_parent_matches_code CHECK (
        parent_code IS NOT DISTINCT FROM
            CASE WHEN level > 1 THEN left(code, length(code) - 3) END
    )
);

CREATE INDEX themes_parent_code_idx ON themes (parent_code) WHERE parent_code IS NOT NULL;

CREATE TRIGGER themes_touch_updated_at
    BEFORE UPDATE ON themes
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at_if_changed();
