-- The durable queue (JOB_EXECUTION=queue; see ../migrations for SQLite's, unused there):
-- `queued` rows are run by `nodetool work` processes, which claim them with
-- FOR UPDATE SKIP LOCKED and hold a lease (`lease_token`, `lease_expires_at` on the database's
-- clock). `spec` is what a worker needs to run the job (no secrets); `cancel_requested` is the
-- server's cancel, seen by the owning worker at its next heartbeat.
ALTER TABLE jobs ADD COLUMN queued BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE jobs ADD COLUMN spec JSON;
ALTER TABLE jobs ADD COLUMN worker_tags TEXT[] NOT NULL DEFAULT '{}';
ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN max_attempts INTEGER NOT NULL DEFAULT 1;
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_token TEXT;
ALTER TABLE jobs ADD COLUMN lease_expires_at TIMESTAMPTZ;
ALTER TABLE jobs ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX IF NOT EXISTS jobs_queue_waiting ON jobs (created_at, id)
    WHERE queued AND status = 'scheduled';
CREATE INDEX IF NOT EXISTS jobs_queue_leases ON jobs (lease_expires_at)
    WHERE queued AND status = 'running';
