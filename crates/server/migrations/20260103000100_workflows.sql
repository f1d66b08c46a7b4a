-- Workflows (NodeTool's nodetool_workflows). Ids are UUIDv7 hex unless the client names one
-- (the app PUTs new workflows by its own id); they sort by creation time and serve as the cursor.
CREATE TABLE IF NOT EXISTS nodetool_workflows (
    id          TEXT PRIMARY KEY NOT NULL,
    user_id     TEXT NOT NULL,
    access      TEXT NOT NULL DEFAULT 'private',
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    tags        TEXT NOT NULL DEFAULT '[]',
    thumbnail   TEXT,
    graph       TEXT NOT NULL,
    settings    TEXT,
    run_mode    TEXT,
    tool_name   TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS nodetool_workflows_user ON nodetool_workflows (user_id, id);
CREATE INDEX IF NOT EXISTS nodetool_workflows_public ON nodetool_workflows (access, id);
