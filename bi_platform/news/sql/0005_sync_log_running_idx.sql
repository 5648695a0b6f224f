-- 0005 the open runs of sync_log, found without scanning the log: every start_log
-- (bi_platform.news.pg_store) closes the runs that killed processes left 'running'
-- (close_abandoned_logs: status = 'running' and the recorded backend gone), and the
-- migration looks up its 'running' migration_indexes row. Only running rows are indexed:
-- a handful, however long the log grows (measured: the cleanup took 24 ms per run start
-- at 100k log rows without it, 0.2 ms with it).
CREATE INDEX sync_log_running_idx ON sync_log (id) WHERE status = 'running';
