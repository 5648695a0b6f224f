-- 0004 news_hf: the news table in the HF dataset's shape.
--
-- The first columns are exactly bi_platform.news.records.HF_COLUMNS, in order (agency =
-- agency_key, theme labels joined from ``themes``); the bookkeeping columns the HF sync
-- filters and marks by follow. An exporter selects the HF columns by name:
--     SELECT <HF_COLUMNS> FROM news_hf
--     WHERE synced_to_hf_at IS NULL OR updated_at > synced_to_hf_at ORDER BY id
-- Filters on news columns go straight to news' indexes (news_hf_pending_idx, 0002), and
-- the LEFT JOINs to themes (on its primary key) are dropped by the planner when no label
-- is selected. Timestamps are timestamptz: the exporter converts to America/Sao_Paulo.
CREATE VIEW news_hf AS
SELECT
    n.unique_id,
    n.agency_key                AS agency,
    n.published_at,
    n.updated_datetime,
    n.extracted_at,
    n.title,
    n.subtitle,
    n.editorial_lead,
    n.url,
    n.image_url,
    n.video_url,
    n.category,
    n.tags,
    n.content,
    n.summary,
    n.theme_l1_code             AS theme_1_level_1_code,
    t1.label                    AS theme_1_level_1_label,
    n.theme_l2_code             AS theme_1_level_2_code,
    t2.label                    AS theme_1_level_2_label,
    n.theme_l3_code             AS theme_1_level_3_code,
    t3.label                    AS theme_1_level_3_label,
    n.most_specific_theme_code,
    tm.label                    AS most_specific_theme_label,
    n.content_hash,
    -- bookkeeping, not part of the HF dataset
    n.id,
    n.agency_name,
    n.created_at,
    n.updated_at,
    n.synced_to_hf_at,
    n.hf_revision
FROM news AS n
LEFT JOIN themes AS t1 ON t1.code = n.theme_l1_code
LEFT JOIN themes AS t2 ON t2.code = n.theme_l2_code
LEFT JOIN themes AS t3 ON t3.code = n.theme_l3_code
LEFT JOIN themes AS tm ON tm.code = n.most_specific_theme_code;
