//! Workflows and workflow versions, in SQLite (the `DB_PATH` file, next to the other tables) or
//! PostgreSQL (`DATABASE_URL`, schema `nodetool_workflows`), behind one [`WorkflowStore`]: what
//! `/api/workflows`, its versions and autosave, tRPC and `nodetool workflows` read and write.
//!
//! The two schemas (`migrations/`, `migrations_postgres/`) have the same tables, columns and
//! migration versions; JSON columns are `TEXT` in both (kept byte for byte), timestamps are
//! `TIMESTAMPTZ` in PostgreSQL (microseconds). Every query is written once with `$n`
//! placeholders, which both drivers take.
//!
//! Access rules (who may see, change, version) belong to the handlers; the store answers
//! questions per user and owner ("the row if `user` owns it or it is public").

use chrono::{DateTime, Utc};
use nodetool_assets::PgOptions;
use nodetool_core::{Error, ErrorKind, Result};
use sqlx::postgres::PgPool;
use sqlx::SqlitePool;

/// The PostgreSQL schema the workflow tables live in.
pub const WORKFLOWS_SCHEMA: &str = "nodetool_workflows";

static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations_postgres");

#[derive(Debug, Clone)]
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` once per backend with `$pool` bound to that backend's pool: the same tokens
/// compile against each driver, so one query text serves both.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.db {
            Db::Sqlite($pool) => $body,
            Db::Postgres($pool) => $body,
        }
    };
}

/// One `nodetool_workflows` row. JSON columns (`tags`, `graph`, `settings`) as stored text.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct WorkflowRow {
    pub id: String,
    pub user_id: String,
    /// `private` or `public`.
    pub access: String,
    pub name: String,
    pub description: String,
    pub tags: String,
    pub thumbnail: Option<String>,
    pub graph: String,
    pub settings: Option<String>,
    pub run_mode: Option<String>,
    pub tool_name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The fields [`WorkflowStore::update`] changes; `None` keeps the stored value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkflowPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub tags: Option<String>,
    pub access: Option<String>,
    pub thumbnail: Option<String>,
    pub graph: Option<String>,
    pub settings: Option<String>,
    pub run_mode: Option<String>,
    pub tool_name: Option<String>,
}

/// One `nodetool_workflow_versions` row.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct VersionRow {
    pub id: String,
    pub workflow_id: String,
    pub user_id: String,
    /// 1, 2, ... per workflow.
    pub version: i64,
    /// `manual` or `autosave`.
    pub save_type: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub graph: String,
    pub autosave_metadata: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A version to record with [`WorkflowStore::insert_version`] (it gets the next number).
#[derive(Debug, Clone, PartialEq)]
pub struct NewVersion<'a> {
    pub workflow_id: &'a str,
    pub user_id: &'a str,
    pub save_type: &'a str,
    pub name: Option<&'a str>,
    pub description: Option<&'a str>,
    pub graph: &'a str,
    pub autosave_metadata: Option<String>,
}

/// Workflows and their versions, in SQLite or PostgreSQL. Cheap to clone.
///
/// Contract (the suite in `tests/server/workflow_store.rs` runs it against both):
/// - rows are per user: [`visible`](Self::visible) returns a row to its owner, or to anyone when
///   it is `public`; writes ([`update`](Self::update), [`delete`](Self::delete)) MUST touch only
///   the given user's row and report whether there was one;
/// - [`list`](Self::list) MUST return one user's rows newest (greatest id) first, after the
///   cursor, so that following the last id visits every row once;
/// - version numbers MUST be 1, 2, ... per workflow and never shared by two versions, even under
///   concurrent saves; deleting a workflow MUST delete its versions.
#[derive(Debug, Clone)]
pub struct WorkflowStore {
    db: Db,
}

fn db_err(op: &'static str) -> impl Fn(sqlx::Error) -> Error {
    move |e| {
        let (kind, temporary) = match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                (ErrorKind::AlreadyExists, false)
            }
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                (ErrorKind::Unavailable, true)
            }
            _ => (ErrorKind::Unexpected, false),
        };
        Error::new(kind, "workflow database query failed")
            .with_operation(op)
            .with_source(e)
            .set_temporary(temporary)
    }
}

impl WorkflowStore {
    /// Uses the SQLite `pool` as is: the caller applied the workflow migrations
    /// ([`crate::db::open`]).
    pub fn sqlite(pool: SqlitePool) -> Self {
        Self {
            db: Db::Sqlite(pool),
        }
    }

    /// Connects to the PostgreSQL at `url` (`DATABASE_URL`, see [`nodetool_assets::postgres::connect`]:
    /// errors never show the password; a schema migrated by a newer nodetool is refused) and
    /// applies the workflow migrations in the schema [`WORKFLOWS_SCHEMA`].
    pub async fn connect(url: &str, options: &PgOptions) -> Result<Self> {
        let pool = nodetool_assets::postgres::connect(
            url,
            WORKFLOWS_SCHEMA,
            &PG_MIGRATOR,
            "workflow store",
            options,
        )
        .await?;
        Ok(Self {
            db: Db::Postgres(pool),
        })
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match &self.db {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// The user's workflows, greatest id (newest) first, with an id below `cursor` if given, at
    /// most `limit` (all when `None`).
    pub async fn list(
        &self,
        user: &str,
        cursor: Option<&str>,
        limit: Option<i64>,
    ) -> Result<Vec<WorkflowRow>> {
        let sql = "SELECT * FROM nodetool_workflows WHERE user_id = $1 \
                   AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3";
        let limit = limit.unwrap_or(i64::MAX);
        on_pool!(self, pool => {
            sqlx::query_as::<_, WorkflowRow>(sql)
                .bind(user)
                .bind(cursor)
                .bind(limit)
                .fetch_all(pool)
                .await
        })
        .map_err(db_err("workflows.list"))
    }

    /// The workflow `id` if `user` owns it or it is public.
    pub async fn visible(&self, user: &str, id: &str) -> Result<Option<WorkflowRow>> {
        let sql = "SELECT * FROM nodetool_workflows WHERE id = $1 \
                   AND (user_id = $2 OR access = 'public')";
        on_pool!(self, pool => {
            sqlx::query_as::<_, WorkflowRow>(sql)
                .bind(id)
                .bind(user)
                .fetch_optional(pool)
                .await
        })
        .map_err(|e| db_err("workflows.get")(e).with_context("workflow", id))
    }

    /// `(owner, access)` of the workflow `id`, whoever owns it (to tell "yours", "public, not
    /// yours" and "not there" apart).
    pub async fn owner_of(&self, id: &str) -> Result<Option<(String, String)>> {
        let sql = "SELECT user_id, access FROM nodetool_workflows WHERE id = $1";
        on_pool!(self, pool => {
            sqlx::query_as::<_, (String, String)>(sql)
                .bind(id)
                .fetch_optional(pool)
                .await
        })
        .map_err(|e| db_err("workflows.owner")(e).with_context("workflow", id))
    }

    /// Adds `row`; an existing id is `AlreadyExists`.
    pub async fn insert(&self, row: &WorkflowRow) -> Result<()> {
        let sql = "INSERT INTO nodetool_workflows (id, user_id, access, name, description, tags, \
                   thumbnail, graph, settings, run_mode, tool_name, created_at, updated_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";
        on_pool!(self, pool => {
            sqlx::query(sql)
                .bind(&row.id)
                .bind(&row.user_id)
                .bind(&row.access)
                .bind(&row.name)
                .bind(&row.description)
                .bind(&row.tags)
                .bind(&row.thumbnail)
                .bind(&row.graph)
                .bind(&row.settings)
                .bind(&row.run_mode)
                .bind(&row.tool_name)
                .bind(row.created_at)
                .bind(row.updated_at)
                .execute(pool)
                .await
                .map(drop)
        })
        .map_err(|e| db_err("workflows.insert")(e).with_context("workflow", &row.id))
    }

    /// Writes the set fields of `patch` and `updated_at = at` to `user`'s workflow `id`; false
    /// if the user has no such workflow.
    pub async fn update(
        &self,
        user: &str,
        id: &str,
        patch: &WorkflowPatch,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let sql = "UPDATE nodetool_workflows SET \
                   name = COALESCE($1, name), description = COALESCE($2, description), \
                   tags = COALESCE($3, tags), access = COALESCE($4, access), \
                   thumbnail = COALESCE($5, thumbnail), graph = COALESCE($6, graph), \
                   settings = COALESCE($7, settings), run_mode = COALESCE($8, run_mode), \
                   tool_name = COALESCE($9, tool_name), updated_at = $10 \
                   WHERE id = $11 AND user_id = $12";
        let affected = on_pool!(self, pool => {
            sqlx::query(sql)
                .bind(&patch.name)
                .bind(&patch.description)
                .bind(&patch.tags)
                .bind(&patch.access)
                .bind(&patch.thumbnail)
                .bind(&patch.graph)
                .bind(&patch.settings)
                .bind(&patch.run_mode)
                .bind(&patch.tool_name)
                .bind(at)
                .bind(id)
                .bind(user)
                .execute(pool)
                .await
                .map(|d| d.rows_affected())
        })
        .map_err(|e| db_err("workflows.update")(e).with_context("workflow", id))?;
        Ok(affected > 0)
    }

    /// Deletes `user`'s workflow `id` and its versions; false if the user has no such workflow
    /// (nothing is deleted then).
    pub async fn delete(&self, user: &str, id: &str) -> Result<bool> {
        let affected = on_pool!(self, pool => {
            sqlx::query("DELETE FROM nodetool_workflows WHERE id = $1 AND user_id = $2")
                .bind(id)
                .bind(user)
                .execute(pool)
                .await
                .map(|d| d.rows_affected())
        })
        .map_err(|e| db_err("workflows.delete")(e).with_context("workflow", id))?;
        if affected > 0 {
            on_pool!(self, pool => {
                sqlx::query("DELETE FROM nodetool_workflow_versions WHERE workflow_id = $1")
                    .bind(id)
                    .execute(pool)
                    .await
                    .map(drop)
            })
            .map_err(|e| db_err("workflows.delete_versions")(e).with_context("workflow", id))?;
        }
        Ok(affected > 0)
    }

    /// Records the next version (greatest number + 1) of `v.workflow_id` and returns it. Two
    /// concurrent saves never share a number: SQLite serializes writers; in PostgreSQL the
    /// loser of a race hits the unique `(workflow_id, version)` and tries again.
    pub async fn insert_version(&self, v: &NewVersion<'_>) -> Result<VersionRow> {
        let sql = "INSERT INTO nodetool_workflow_versions (id, workflow_id, user_id, version, \
                   save_type, name, description, graph, autosave_metadata, created_at) \
                   SELECT $1, $2, $3, COALESCE(MAX(version), 0) + 1, $4, $5, $6, $7, $8, $9 \
                   FROM nodetool_workflow_versions WHERE workflow_id = $2";
        let mut attempt = 0;
        loop {
            attempt += 1;
            let id = nodetool_core::id::new_id();
            let done = on_pool!(self, pool => {
                sqlx::query(sql)
                    .bind(&id)
                    .bind(v.workflow_id)
                    .bind(v.user_id)
                    .bind(v.save_type)
                    .bind(v.name)
                    .bind(v.description)
                    .bind(v.graph)
                    .bind(&v.autosave_metadata)
                    .bind(Utc::now())
                    .execute(pool)
                    .await
                    .map(drop)
            })
            .map_err(|e| {
                db_err("workflows.insert_version")(e).with_context("workflow", v.workflow_id)
            });
            match done {
                Ok(()) => {
                    return self.version_by_id(&id).await?.ok_or_else(|| {
                        Error::unexpected("a version vanished right after its insert")
                            .with_operation("workflows.insert_version")
                    })
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists && attempt < 10 => continue,
                Err(e) => return Err(e),
            }
        }
    }

    async fn version_by_id(&self, id: &str) -> Result<Option<VersionRow>> {
        on_pool!(self, pool => {
            sqlx::query_as::<_, VersionRow>("SELECT * FROM nodetool_workflow_versions WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await
        })
        .map_err(db_err("workflows.get_version"))
    }

    /// The versions of `workflow_id`, newest (greatest number) first, at most `limit`.
    pub async fn list_versions(&self, workflow_id: &str, limit: i64) -> Result<Vec<VersionRow>> {
        let sql = "SELECT * FROM nodetool_workflow_versions WHERE workflow_id = $1 \
                   ORDER BY version DESC LIMIT $2";
        on_pool!(self, pool => {
            sqlx::query_as::<_, VersionRow>(sql)
                .bind(workflow_id)
                .bind(limit)
                .fetch_all(pool)
                .await
        })
        .map_err(db_err("workflows.list_versions"))
    }

    /// The version of `workflow_id` named by `v`: its id, else its number.
    pub async fn find_version(&self, workflow_id: &str, v: &str) -> Result<Option<VersionRow>> {
        let number = v.parse::<i64>().ok();
        let sql = "SELECT * FROM nodetool_workflow_versions WHERE workflow_id = $1 \
                   AND (id = $2 OR version = $3) ORDER BY id = $2 DESC LIMIT 1";
        on_pool!(self, pool => {
            sqlx::query_as::<_, VersionRow>(sql)
                .bind(workflow_id)
                .bind(v)
                .bind(number)
                .fetch_optional(pool)
                .await
        })
        .map_err(db_err("workflows.find_version"))
    }

    /// Deletes the version with this id; false if there was none.
    pub async fn delete_version(&self, version_id: &str) -> Result<bool> {
        let affected = on_pool!(self, pool => {
            sqlx::query("DELETE FROM nodetool_workflow_versions WHERE id = $1")
                .bind(version_id)
                .execute(pool)
                .await
                .map(|d| d.rows_affected())
        })
        .map_err(db_err("workflows.delete_version"))?;
        Ok(affected > 0)
    }

    /// The workflow a version id belongs to.
    pub async fn workflow_of_version(&self, version_id: &str) -> Result<Option<String>> {
        let sql = "SELECT workflow_id FROM nodetool_workflow_versions WHERE id = $1";
        on_pool!(self, pool => {
            sqlx::query_scalar::<_, String>(sql)
                .bind(version_id)
                .fetch_optional(pool)
                .await
        })
        .map_err(db_err("workflows.workflow_of_version"))
    }

    /// When the newest autosave of `workflow_id` was recorded.
    pub async fn last_autosave_at(&self, workflow_id: &str) -> Result<Option<DateTime<Utc>>> {
        let sql = "SELECT created_at FROM nodetool_workflow_versions \
                   WHERE workflow_id = $1 AND save_type = 'autosave' ORDER BY version DESC LIMIT 1";
        on_pool!(self, pool => {
            sqlx::query_scalar::<_, DateTime<Utc>>(sql)
                .bind(workflow_id)
                .fetch_optional(pool)
                .await
        })
        .map_err(db_err("workflows.last_autosave"))
    }

    /// Deletes all but the newest `keep` autosaves of `workflow_id` (manual versions stay);
    /// returns how many went.
    pub async fn prune_autosaves(&self, workflow_id: &str, keep: i64) -> Result<u64> {
        let sql = "DELETE FROM nodetool_workflow_versions WHERE workflow_id = $1 \
                   AND save_type = 'autosave' AND id NOT IN (SELECT id FROM \
                   nodetool_workflow_versions WHERE workflow_id = $1 AND save_type = 'autosave' \
                   ORDER BY version DESC LIMIT $2)";
        on_pool!(self, pool => {
            sqlx::query(sql)
                .bind(workflow_id)
                .bind(keep)
                .execute(pool)
                .await
                .map(|d| d.rows_affected())
        })
        .map_err(db_err("workflows.prune_autosaves"))
    }
}
