-- Assets (NodeTool's nodetool_assets) in PostgreSQL: the same columns as the SQLite schema, in
-- this store's own schema (`nodetool_assets`). Ids compare bytewise (`COLLATE "C"`), as in
-- SQLite, so the id cursor pages the same way whatever the database's collation.
CREATE TABLE IF NOT EXISTS nodetool_assets (
    id           TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL,
    workflow_id  TEXT,
    parent_id    TEXT NOT NULL,
    name         TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size         BIGINT,
    metadata     TEXT,
    duration     DOUBLE PRECISION,
    node_id      TEXT,
    job_id       TEXT,
    storage_key  TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS nodetool_assets_user_parent ON nodetool_assets (user_id, parent_id, id);
CREATE INDEX IF NOT EXISTS nodetool_assets_user_id ON nodetool_assets (user_id, id);
