-- Runs once when the postgres:15 container initialises its volume: the platform data
-- lives in POSTGRES_DB (bi_platform); Dagster's run/event/schedule storage gets its own.
CREATE DATABASE dagster;
