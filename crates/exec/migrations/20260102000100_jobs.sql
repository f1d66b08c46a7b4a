-- Job records written by nodetool-exec's JobExecutionManager (one owner task per job writes).
CREATE TABLE IF NOT EXISTS jobs (
    id           TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL,
    workflow_id  TEXT NOT NULL DEFAULT '',
    strategy     TEXT NOT NULL,
    status       TEXT NOT NULL,
    params       TEXT NOT NULL DEFAULT '{}',
    created_at   TEXT NOT NULL,
    started_at   TEXT,
    finished_at  TEXT,
    error        TEXT,
    result       TEXT,
    worker_pid   INTEGER,
    container_id TEXT
);
CREATE INDEX IF NOT EXISTS jobs_user_created ON jobs (user_id, created_at);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
