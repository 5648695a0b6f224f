-- 0003 bookkeeping of the loaders: the run log (progress, resumability) and the records
-- that were refused.

-- One row per unit of work of a loader: a migrated HF shard, an inbox batch, an HF sync
-- of a partition, ... A run inserts its row as 'running' and finishes it as 'success' or
-- 'failed'. Resuming means skipping the scopes that already have a 'success' row for the
-- operation (sync_log_success_idx); a crashed run simply stays 'running'.
CREATE TABLE sync_log (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    operation      text NOT NULL                    -- migration | ingest | hf_sync | ...
                   CONSTRAINT sync_log_operation_not_blank CHECK (btrim(operation) <> ''),
    scope          text,                            -- e.g. shard file, partition, batch
    status         text NOT NULL DEFAULT 'running'
                   CONSTRAINT sync_log_status_known
                   CHECK (status IN ('running', 'success', 'failed')),
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    rows_in        bigint CONSTRAINT sync_log_rows_in_non_negative CHECK (rows_in >= 0),
    rows_written   bigint
                   CONSTRAINT sync_log_rows_written_non_negative CHECK (rows_written >= 0),
    rows_rejected  bigint
                   CONSTRAINT sync_log_rows_rejected_non_negative CHECK (rows_rejected >= 0),
    revision       text,                            -- HF commit read from or written to
    error          text,                            -- the failure, when status = 'failed'
    details        jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- A finished run (success or failed) has its finish time; a running one has none.
    CONSTRAINT sync_log_finished_iff_done CHECK ((status = 'running') = (finished_at IS NULL)),
    CONSTRAINT sync_log_finished_after_start CHECK (finished_at >= started_at)
);

-- "Which scopes of this operation are done?" (resume) and "the last runs" (monitoring).
CREATE INDEX sync_log_success_idx ON sync_log (operation, scope) WHERE status = 'success';
CREATE INDEX sync_log_operation_started_at_idx ON sync_log (operation, started_at);

-- Records a loader refused, with where they came from and why. ``raw`` holds the record
-- as parsed (JSON); ``raw_text`` the input as read when it could not be parsed or stored
-- as jsonb (e.g. invalid JSON). At least one of them is kept.
CREATE TABLE news_rejected (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source       text NOT NULL,        -- file/shard plus line/row, e.g. 'train-0003.parquet#1234'
    reason       text NOT NULL,
    raw          jsonb,
    raw_text     text,
    unique_id    text,                 -- when it could be computed
    sync_log_id  bigint REFERENCES sync_log (id) ON DELETE SET NULL,  -- the run that refused it
    rejected_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT news_rejected_has_payload CHECK (raw IS NOT NULL OR raw_text IS NOT NULL)
);

CREATE INDEX news_rejected_source_idx ON news_rejected (source);
CREATE INDEX news_rejected_sync_log_id_idx ON news_rejected (sync_log_id)
    WHERE sync_log_id IS NOT NULL;

-- Refused records are whole records (~2 KB of text): same storage choice as news.content
-- (see 0002): lz4 when the server has it, pglz otherwise.
DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_settings
        WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)
    ) THEN
        ALTER TABLE news_rejected
            ALTER COLUMN raw SET COMPRESSION lz4,
            ALTER COLUMN raw_text SET COMPRESSION lz4;
    END IF;
END
$$;
