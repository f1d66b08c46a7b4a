-- Queued jobs' controls, waiting reason and VRAM hints (see ../migrations_postgres): unused on SQLite, kept
-- so both schemas have the same tables, columns and migration versions.
CREATE TABLE IF NOT EXISTS job_controls (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id     TEXT NOT NULL,
    control    TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS job_controls_job ON job_controls (job_id, seq);
ALTER TABLE jobs ADD COLUMN waiting_reason TEXT;
ALTER TABLE jobs ADD COLUMN requires_vram_gb REAL;
ALTER TABLE queue_workers ADD COLUMN vram_gb REAL;
