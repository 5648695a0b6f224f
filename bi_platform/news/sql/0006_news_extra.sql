-- 0006 news.extra: the fields of an ingested record that are not HF columns.
--
-- The scraper may send fields the platform does not know yet. They are kept, never
-- dropped silently: the ingest (bi_platform.news.ingest) collects them into one JSON
-- object per record, stored here. The HF dataset does not carry them (its schema is
-- fixed, bi_platform.news.records.HF_SCHEMA), so news_hf (0004) does not show them and
-- the migration of the HF dataset keeps the value stored here. NULL: no unknown field.
ALTER TABLE news ADD COLUMN extra jsonb
    CONSTRAINT news_extra_is_object CHECK (extra IS NULL OR jsonb_typeof(extra) = 'object');

COMMENT ON COLUMN news.extra IS
    'Fields of the ingested record that are not HF columns (a JSON object; NULL: none). '
    'Kept in PostgreSQL only: the HF dataset''s schema is fixed.';

-- extra is a content column: a change to it moves updated_at like any other (0002 asks
-- every migration adding a content column to extend both lists of the trigger).
CREATE OR REPLACE FUNCTION news_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.unique_id, NEW.agency_key, NEW.agency_name, NEW.published_at,
        NEW.updated_datetime, NEW.extracted_at, NEW.title, NEW.subtitle, NEW.editorial_lead,
        NEW.url, NEW.image_url, NEW.video_url, NEW.category, NEW.tags, NEW.content,
        NEW.summary, NEW.theme_l1_code, NEW.theme_l2_code, NEW.theme_l3_code,
        NEW.most_specific_theme_code, NEW.content_hash, NEW.extra)
       IS DISTINCT FROM
       (OLD.unique_id, OLD.agency_key, OLD.agency_name, OLD.published_at,
        OLD.updated_datetime, OLD.extracted_at, OLD.title, OLD.subtitle, OLD.editorial_lead,
        OLD.url, OLD.image_url, OLD.video_url, OLD.category, OLD.tags, OLD.content,
        OLD.summary, OLD.theme_l1_code, OLD.theme_l2_code, OLD.theme_l3_code,
        OLD.most_specific_theme_code, OLD.content_hash, OLD.extra)
    THEN
        NEW.updated_at := greatest(clock_timestamp(), OLD.updated_at + interval '1 microsecond');
    ELSE
        NEW.updated_at := OLD.updated_at;
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER news_touch_updated_at ON news;
CREATE TRIGGER news_touch_updated_at
    BEFORE UPDATE OF unique_id, agency_key, agency_name, published_at, updated_datetime,
        extracted_at, title, subtitle, editorial_lead, url, image_url, video_url, category,
        tags, content, summary, theme_l1_code, theme_l2_code, theme_l3_code,
        most_specific_theme_code, content_hash, extra, updated_at
    ON news
    FOR EACH ROW EXECUTE FUNCTION news_touch_updated_at();
