-- Queue semantics (JOB_EXECUTION=queue): `idempotent` says whether every node of the job may run
-- twice harmlessly (decided by the server at enqueue from its node registry): only such jobs are
-- retried when their worker is lost. `queue_workers` lists the live `nodetool work` processes
-- (heartbeat on the database's clock), so a job no live worker can take is reported, then failed
-- after JOB_CLAIM_TIMEOUT_SECONDS.
ALTER TABLE jobs ADD COLUMN idempotent BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX IF NOT EXISTS jobs_queue_running_user ON jobs (user_id)
    WHERE queued AND status = 'running';
CREATE TABLE IF NOT EXISTS queue_workers (
    id TEXT PRIMARY KEY,
    tags TEXT[] NOT NULL DEFAULT '{}',
    strategies TEXT[] NOT NULL DEFAULT '{}',
    spec_version INTEGER NOT NULL,
    binary_version TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
