-- Job records (PostgreSQL; the SQLite schema is in ../migrations). Versions match the SQLite
-- migrations one for one. `params` and `result` are JSON (validated, kept as written: JSONB
-- would reorder keys); timestamps are TIMESTAMPTZ.
CREATE TABLE IF NOT EXISTS jobs (
    id           TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL,
    workflow_id  TEXT NOT NULL DEFAULT '',
    strategy     TEXT NOT NULL,
    status       TEXT NOT NULL,
    params       JSON NOT NULL DEFAULT '{}',
    created_at   TIMESTAMPTZ NOT NULL,
    started_at   TIMESTAMPTZ,
    finished_at  TIMESTAMPTZ,
    error        TEXT,
    result       JSON,
    worker_pid   BIGINT,
    container_id TEXT
);
CREATE INDEX IF NOT EXISTS jobs_user_created ON jobs (user_id, created_at);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
