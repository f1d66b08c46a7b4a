-- Workflow versions (NodeTool's nodetool_workflow_versions): numbered snapshots of a workflow's
-- graph, `manual` (a named save) or `autosave` (the editor's periodic save, kept to a bounded
-- number per workflow). Deleted with their workflow.
CREATE TABLE IF NOT EXISTS nodetool_workflow_versions (
    id                TEXT PRIMARY KEY NOT NULL,
    workflow_id       TEXT NOT NULL,
    user_id           TEXT NOT NULL,
    version           INTEGER NOT NULL,
    save_type         TEXT NOT NULL DEFAULT 'manual',
    name              TEXT,
    description       TEXT,
    graph             TEXT NOT NULL,
    autosave_metadata TEXT,
    created_at        TEXT NOT NULL,
    UNIQUE (workflow_id, version)
);
CREATE INDEX IF NOT EXISTS nodetool_workflow_versions_kind
    ON nodetool_workflow_versions (workflow_id, save_type, version);
