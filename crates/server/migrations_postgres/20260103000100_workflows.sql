-- Workflows (NodeTool's nodetool_workflows) in PostgreSQL, in the workflow store's own schema
-- (`nodetool_workflows`): the SQLite schema's columns; JSON columns stay TEXT (kept byte for
-- byte, as in SQLite). Ids compare bytewise (`COLLATE "C"`) so the id cursor pages as in SQLite.
CREATE TABLE IF NOT EXISTS nodetool_workflows (
    id          TEXT COLLATE "C" PRIMARY KEY NOT NULL,
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
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS nodetool_workflows_user ON nodetool_workflows (user_id, id);
CREATE INDEX IF NOT EXISTS nodetool_workflows_public ON nodetool_workflows (access, id);
