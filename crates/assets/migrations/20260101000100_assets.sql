-- Assets (NodeTool's nodetool_assets). The blob key is stored, so changing content_type never
-- orphans the blob. Ids are UUIDv7 hex: they sort by creation time and serve as the cursor.
CREATE TABLE IF NOT EXISTS nodetool_assets (
    id           TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL,
    workflow_id  TEXT,
    parent_id    TEXT NOT NULL,
    name         TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size         INTEGER,
    metadata     TEXT,
    duration     REAL,
    node_id      TEXT,
    job_id       TEXT,
    storage_key  TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS nodetool_assets_user_parent ON nodetool_assets (user_id, parent_id, id);
CREATE INDEX IF NOT EXISTS nodetool_assets_user_id ON nodetool_assets (user_id, id);
