-- The queue's semantics columns and worker registry (see ../migrations_postgres): unused on
-- SQLite, kept so both schemas have the same columns and migration versions.
ALTER TABLE jobs ADD COLUMN idempotent INTEGER NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS queue_workers (
    id TEXT PRIMARY KEY,
    tags TEXT NOT NULL DEFAULT '',
    strategies TEXT NOT NULL DEFAULT '',
    spec_version INTEGER NOT NULL,
    binary_version TEXT NOT NULL,
    started_at TEXT NOT NULL DEFAULT '',
    heartbeat_at TEXT NOT NULL DEFAULT ''
);
