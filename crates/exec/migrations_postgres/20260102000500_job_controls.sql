-- Controls for a queued job sent to any server (a streamed input value, the end of an input
-- stream, pause, resume), applied in `seq` order by the worker holding the job and deleted once
-- applied. A `NOTIFY nodetool_job_controls` (payload: the job id) wakes that worker.
CREATE TABLE IF NOT EXISTS job_controls (
    seq        BIGSERIAL PRIMARY KEY,
    job_id     TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    control    TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS job_controls_job ON job_controls (job_id, seq);
-- Why a waiting job has not been claimed, as last told to its followers (a `job_update` with
-- status `scheduled` and this message, sent again only when the reason changes).
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS waiting_reason TEXT;
-- VRAM hints: the largest `requires_vram_gb` of a queued job's nodes, and what each worker offers
-- (`NODETOOL_VRAM_GB`); a worker claims only jobs that fit. NULL: no hint / not checked.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS requires_vram_gb DOUBLE PRECISION;
ALTER TABLE queue_workers ADD COLUMN IF NOT EXISTS vram_gb DOUBLE PRECISION;
