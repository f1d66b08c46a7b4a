-- Each job's events (the envelope as JSON), so SSE `Last-Event-ID` and `/ws reconnect_job`
-- replay of a finished job survive a restart. Written in batches by nodetool-exec's event log;
-- at most JOB_EVENTS_MAX_PER_JOB (the latest) per job, removed JOB_EVENT_RETENTION after the
-- job finished.
CREATE TABLE IF NOT EXISTS job_events (
    job_id TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    event  TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at);
