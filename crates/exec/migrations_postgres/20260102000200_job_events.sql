-- Each job's events, for replay after a restart (see ../migrations). `event` is the envelope's
-- JSON as TEXT: replayed byte for byte as it was sent live, and cheaper to insert in batches
-- than JSON/JSONB, which would parse every row.
CREATE TABLE IF NOT EXISTS job_events (
    job_id TEXT NOT NULL,
    seq    BIGINT NOT NULL,
    event  TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at);
