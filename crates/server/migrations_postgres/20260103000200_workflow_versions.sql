-- Workflow versions (NodeTool's nodetool_workflow_versions) in PostgreSQL: as in SQLite.
CREATE TABLE IF NOT EXISTS nodetool_workflow_versions (
    id                TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    workflow_id       TEXT NOT NULL,
    user_id           TEXT NOT NULL,
    version           BIGINT NOT NULL,
    save_type         TEXT NOT NULL DEFAULT 'manual',
    name              TEXT,
    description       TEXT,
    graph             TEXT NOT NULL,
    autosave_metadata TEXT,
    created_at        TIMESTAMPTZ NOT NULL,
    UNIQUE (workflow_id, version)
);
CREATE INDEX IF NOT EXISTS nodetool_workflow_versions_kind
    ON nodetool_workflow_versions (workflow_id, save_type, version);
