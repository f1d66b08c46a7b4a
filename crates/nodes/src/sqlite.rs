//! `lib.sqlite.*` (nodetool-base `lib/sqlite.py`): tables in SQLite database files of the
//! user's workspace, through sqlx.
//!
//! A database lives at `{NODETOOL_WORKSPACE_DIR}/{user}/{database_name}`; the name must be a
//! plain file name (no folders, no `..`), and a symbolic link there is refused, so no node reaches
//! a file outside the workspace. Without a workspace the nodes fail, as NodeTool's do without
//! one. Table and column names are quoted identifiers; `where`, `order_by` (and ExecuteSQL's
//! statement) are SQL as in NodeTool, but one statement only and without ATTACH, DETACH, PRAGMA,
//! VACUUM or extension loading, which could reach other files.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Map, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteRow};
use sqlx::{Column, ConnectOptions, Connection, Row, SqliteConnection, TypeInfo, ValueRef};

use nodetool_core::{Error, ErrorKind, Result};

use nodetool_engine::context::ProcessingContext;
use nodetool_engine::node::{Emitter, NodeImpl, NodeInputs, NodeSpec};
use nodetool_engine::registry::Registry;

use super::settings::NodeSettings;

const OP: &str = "sqlite";
/// The most rows one Query or ExecuteSQL returns.
const MAX_ROWS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    CreateTable,
    Insert,
    Query,
    Update,
    Delete,
    ExecuteSql,
}

pub fn register(r: &mut Registry, settings: &NodeSettings) {
    let base = |class: &str, title: &str, table_default: &str| {
        NodeSpec::new(format!("lib.sqlite.{class}"), title)
            .input("database_name", "str", json!("memory.db"))
            .input("table_name", "str", json!(table_default))
    };
    let record = || json!({"type": "record_type", "columns": []});
    let nodes = [
        (
            Kind::CreateTable,
            base("CreateTable", "Create Table", "flashcards")
                // The bundled Flashcard example stores the record type as JSON text.
                .input("columns", "union[record_type, str]", record())
                .input("add_primary_key", "bool", json!(true))
                .input("if_not_exists", "bool", json!(true))
                .output("database_name", "str")
                .output("table_name", "str")
                .output("columns", "record_type"),
        ),
        (
            Kind::Insert,
            base("Insert", "Insert", "flashcards")
                .input("data", "dict[str, any]", json!({"content": "example"}))
                .output("output", "dict[str, any]"),
        ),
        (
            Kind::Query,
            base("Query", "Query", "flashcards")
                .input("where", "str", json!(""))
                .input("columns", "union[record_type, str]", record())
                .input("order_by", "str", json!(""))
                .input("limit", "int", json!(0))
                .output("output", "list[dict[str, any]]")
                // Each row as well (the bundled Flashcard example wires `row`).
                .output("row", "dict[str, any]")
                .streaming(),
        ),
        (
            Kind::Update,
            base("Update", "Update", "flashcards")
                .input("data", "dict[str, any]", json!({"content": "updated"}))
                .input("where", "str", json!(""))
                .output("output", "dict[str, any]"),
        ),
        (
            Kind::Delete,
            base("Delete", "Delete", "flashcards")
                .input("where", "str", json!(""))
                .output("output", "dict[str, any]"),
        ),
        (
            Kind::ExecuteSql,
            NodeSpec::new("lib.sqlite.ExecuteSQL", "Execute SQL")
                .input("database_name", "str", json!("memory.db"))
                .input("sql", "str", json!("SELECT * FROM flashcards"))
                .input("parameters", "list[any]", json!([]))
                .output("output", "dict[str, any]"),
        ),
    ];
    for (kind, spec) in nodes {
        r.register(Arc::new(SqliteNode {
            spec,
            kind,
            workspace: settings.workspace_dir.clone(),
        }));
    }
}

#[derive(Debug)]
struct SqliteNode {
    spec: NodeSpec,
    kind: Kind,
    workspace: Option<PathBuf>,
}

fn sql_error(msg: impl Into<String>) -> Error {
    Error::invalid_input(msg).with_operation(OP)
}

/// SQLite's own errors, with what was run.
fn db_error(e: sqlx::Error, what: &str) -> Error {
    Error::invalid_input(format!("{what}: {e}"))
        .with_operation(OP)
        .with_source(e)
}

/// `"name"` with embedded quotes doubled, as NodeTool's `quote_identifier`.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The database file of `name` for `user`, inside the workspace.
fn database_path(workspace: Option<&Path>, user: &str, name: &str) -> Result<PathBuf> {
    let Some(workspace) = workspace else {
        return Err(Error::new(
            ErrorKind::ConfigInvalid,
            "lib.sqlite needs a workspace folder: set NODETOOL_WORKSPACE_DIR (databases are kept \
             there, one subfolder per user)",
        )
        .with_operation(OP));
    };
    let bad = name.is_empty()
        || name.len() > 255
        || name.starts_with('.')
        || name.contains(['/', '\\', '\0'])
        || name.chars().any(char::is_control);
    if bad {
        return Err(sql_error(format!(
            "database_name {name:?} must be a plain file name (no folders, not starting with '.')"
        ))
        .with_context("input", "database_name"));
    }
    let user = if user.is_empty() { "anonymous" } else { user };
    if user.contains(['/', '\\', '\0']) || user.starts_with('.') {
        return Err(sql_error("the job's user id cannot name a folder"));
    }
    let dir = workspace.join(user);
    std::fs::create_dir_all(&dir).map_err(|e| {
        Error::unexpected(format!(
            "cannot create the workspace folder {}: {e}",
            dir.display()
        ))
        .with_operation(OP)
    })?;
    // The user's folder itself must not lead elsewhere.
    let real_dir = dir.canonicalize().map_err(|e| {
        Error::unexpected(format!("cannot resolve {}: {e}", dir.display())).with_operation(OP)
    })?;
    let real_root = workspace
        .canonicalize()
        .unwrap_or_else(|_| workspace.to_path_buf());
    if !real_dir.starts_with(&real_root) {
        return Err(sql_error(format!(
            "the workspace folder of this user leads outside {}",
            workspace.display()
        )));
    }
    let path = real_dir.join(name);
    if std::fs::symlink_metadata(&path).is_ok_and(|m| !m.is_file()) {
        return Err(sql_error(format!(
            "{} is not a regular file (symbolic links are refused)",
            path.display()
        )));
    }
    Ok(path)
}

/// Refuses SQL text that is more than one statement or names a statement that reaches other
/// files or the connection's settings. String literals and quoted names are skipped.
fn check_fragment(sql: &str, what: &'static str) -> Result<()> {
    let mut plain = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    for c in sql.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if matches!(c, '\'' | '"' | '`' | '[') => {
                quote = Some(if c == '[' { ']' } else { c });
                plain.push(' ');
            }
            None => plain.push(c),
        }
    }
    let trimmed = plain.trim_end().trim_end_matches(';');
    if trimmed.contains(';') {
        return Err(
            sql_error(format!("{what} must be one SQL statement (no ';')"))
                .with_context("input", what),
        );
    }
    let upper = trimmed.to_ascii_uppercase();
    for word in upper.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if matches!(
            word,
            "ATTACH" | "DETACH" | "PRAGMA" | "VACUUM" | "LOAD_EXTENSION"
        ) {
            return Err(sql_error(format!(
                "{what} may not use {word}: it would reach beyond this database"
            ))
            .with_context("input", what));
        }
    }
    Ok(())
}

/// A RecordType (`{type: "record_type", columns: [{name, data_type}]}`), or its JSON text.
fn record_columns(v: &Value) -> Result<Vec<(String, String)>> {
    let v = match v {
        Value::String(s) if s.trim().is_empty() => return Ok(Vec::new()),
        Value::String(s) => serde_json::from_str::<Value>(s).map_err(|e| {
            sql_error(format!(
                "columns is not a record type (nor its JSON text): {e}"
            ))
            .with_context("input", "columns")
        })?,
        other => other.clone(),
    };
    let cols = match &v {
        Value::Null => return Ok(Vec::new()),
        Value::Object(m) => m.get("columns").cloned().unwrap_or(json!([])),
        Value::Array(_) => v.clone(),
        _ => {
            return Err(sql_error("columns must be a record type").with_context("input", "columns"))
        }
    };
    cols.as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let name = c.get("name").and_then(Value::as_str).unwrap_or("");
            if name.is_empty() {
                return Err(sql_error("every column needs a name").with_context("input", "columns"));
            }
            let ty = c
                .get("data_type")
                .and_then(Value::as_str)
                .unwrap_or("string");
            Ok((name.to_owned(), ty.to_owned()))
        })
        .collect()
}

/// NodeTool's `column_type_to_sqlite`.
fn sqlite_type(data_type: &str) -> &'static str {
    match data_type {
        "int" => "INTEGER",
        "float" => "REAL",
        _ => "TEXT",
    }
}

/// Binds a JSON value as Python's sqlite3 would store it (dicts and lists as JSON text).
fn bind<'q>(
    q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    v: &Value,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    match v {
        Value::Null => q.bind(None::<String>),
        Value::Bool(b) => q.bind(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => q.bind(i),
            None => q.bind(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => q.bind(s.clone()),
        other => q.bind(super::json::dumps(other, None).unwrap_or_default()),
    }
}

/// A row as a dict; text that looks like a JSON object or array is parsed, as NodeTool does.
fn row_to_dict(row: &SqliteRow) -> Map<String, Value> {
    let mut out = Map::new();
    for (i, col) in row.columns().iter().enumerate() {
        let value = match row.try_get_raw(i) {
            Ok(raw) if raw.is_null() => Value::Null,
            Ok(raw) => {
                let ty = raw.type_info().name().to_ascii_uppercase();
                match ty.as_str() {
                    "INTEGER" => row.try_get::<i64, _>(i).map_or(Value::Null, Value::from),
                    "REAL" => row
                        .try_get::<f64, _>(i)
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map_or(Value::Null, Value::Number),
                    "BLOB" => row.try_get::<Vec<u8>, _>(i).map_or(Value::Null, |b| {
                        Value::String(String::from_utf8_lossy(&b).into_owned())
                    }),
                    _ => match row.try_get::<String, _>(i) {
                        Ok(s) => {
                            let t = s.trim_start();
                            if t.starts_with('{') || t.starts_with('[') {
                                serde_json::from_str(&s).unwrap_or(Value::String(s))
                            } else {
                                Value::String(s)
                            }
                        }
                        Err(_) => Value::Null,
                    },
                }
            }
            Err(_) => Value::Null,
        };
        out.insert(col.name().to_owned(), value);
    }
    out
}

async fn connect(path: &Path, create: bool) -> Result<SqliteConnection> {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(create)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(false)
        .connect()
        .await
        .map_err(|e| db_error(e, &format!("cannot open {}", path.display())))
}

#[async_trait]
impl NodeImpl for SqliteNode {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        i: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        let db_name = i.str("database_name")?;
        let table = i.str("table_name").unwrap_or_default();
        let path = database_path(self.workspace.as_deref(), ctx.user_id(), &db_name)?;
        match self.kind {
            Kind::CreateTable => {
                let columns = record_columns(&i.value("columns"))?;
                let mut conn = connect(&path, true).await?;
                let exists: Option<(String,)> =
                    sqlx::query_as("SELECT name FROM sqlite_master WHERE type='table' AND name=?")
                        .bind(&table)
                        .fetch_optional(&mut conn)
                        .await
                        .map_err(|e| db_error(e, "cannot look the table up"))?;
                if exists.is_none() {
                    if columns.is_empty() {
                        return Err(sql_error("a table needs at least one column")
                            .with_context("input", "columns"));
                    }
                    let add_pk = i.get("add_primary_key").is_none() || i.bool("add_primary_key")?;
                    let defs: Vec<String> = columns
                        .iter()
                        .enumerate()
                        .map(|(n, (name, ty))| {
                            if n == 0 && add_pk && ty == "int" {
                                format!("{} INTEGER PRIMARY KEY AUTOINCREMENT", quote(name))
                            } else {
                                format!("{} {}", quote(name), sqlite_type(ty))
                            }
                        })
                        .collect();
                    let if_not_exists =
                        i.get("if_not_exists").is_none() || i.bool("if_not_exists")?;
                    let sql = format!(
                        "CREATE TABLE {}{} ({})",
                        if if_not_exists { "IF NOT EXISTS " } else { "" },
                        quote(&table),
                        defs.join(", ")
                    );
                    sqlx::query(&sql)
                        .execute(&mut conn)
                        .await
                        .map_err(|e| db_error(e, "cannot create the table"))?;
                }
                let _ = conn.close().await;
                let record = json!({
                    "type": "record_type",
                    "columns": columns.iter().map(|(n, t)| json!({"name": n, "data_type": t, "description": ""})).collect::<Vec<_>>(),
                });
                out.emit("database_name", json!(db_name)).await?;
                out.emit("table_name", json!(table)).await?;
                out.emit("columns", record).await
            }
            Kind::Insert => {
                let data = i.dict("data")?;
                if data.is_empty() {
                    return Err(
                        sql_error("data has no columns to insert").with_context("input", "data")
                    );
                }
                let cols: Vec<String> = data.keys().map(|k| quote(k)).collect();
                let sql = format!(
                    "INSERT INTO {} ({}) VALUES ({})",
                    quote(&table),
                    cols.join(", "),
                    vec!["?"; cols.len()].join(", ")
                );
                let mut conn = connect(&path, true).await?;
                let q = data.values().fold(sqlx::query(&sql), bind);
                let done = q
                    .execute(&mut conn)
                    .await
                    .map_err(|e| db_error(e, "cannot insert"))?;
                let _ = conn.close().await;
                let id = done.last_insert_rowid();
                out.emit(
                    "output",
                    json!({"row_id": id, "rows_affected": done.rows_affected(), "message": format!("Inserted record with ID {id}")}),
                )
                .await
            }
            Kind::Query => {
                let columns = record_columns(&i.value("columns"))?;
                let select = if columns.is_empty() {
                    "*".to_owned()
                } else {
                    columns
                        .iter()
                        .map(|(n, _)| quote(n))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let mut sql = format!("SELECT {select} FROM {}", quote(&table));
                let (where_, order_by) = (i.str("where")?, i.str("order_by")?);
                if !where_.trim().is_empty() {
                    check_fragment(&where_, "where")?;
                    sql.push_str(&format!(" WHERE {where_}"));
                }
                if !order_by.trim().is_empty() {
                    check_fragment(&order_by, "order_by")?;
                    sql.push_str(&format!(" ORDER BY {order_by}"));
                }
                let limit = i.opt_i64("limit")?.unwrap_or(0);
                if limit > 0 {
                    sql.push_str(&format!(" LIMIT {limit}"));
                }
                // NodeTool answers an empty list when the database does not exist yet.
                if !path.exists() {
                    out.emit("output", json!([])).await?;
                    return Ok(());
                }
                let rows = fetch(&path, &sql, &[]).await?;
                for row in &rows {
                    out.emit("row", row.clone()).await?;
                }
                out.emit("output", Value::Array(rows)).await
            }
            Kind::Update => {
                let data = i.dict("data")?;
                if data.is_empty() {
                    return Err(
                        sql_error("data has no columns to update").with_context("input", "data")
                    );
                }
                let set: Vec<String> = data.keys().map(|k| format!("{} = ?", quote(k))).collect();
                let mut sql = format!("UPDATE {} SET {}", quote(&table), set.join(", "));
                let where_ = i.str("where")?;
                if !where_.trim().is_empty() {
                    check_fragment(&where_, "where")?;
                    sql.push_str(&format!(" WHERE {where_}"));
                }
                let mut conn = connect(&path, true).await?;
                let done = data
                    .values()
                    .fold(sqlx::query(&sql), bind)
                    .execute(&mut conn)
                    .await
                    .map_err(|e| db_error(e, "cannot update"))?;
                let _ = conn.close().await;
                let n = done.rows_affected();
                out.emit(
                    "output",
                    json!({"rows_affected": n, "message": format!("Updated {n} record(s)")}),
                )
                .await
            }
            Kind::Delete => {
                let where_ = i.str("where")?;
                if where_.trim().is_empty() {
                    return Err(sql_error(
                        "WHERE clause is required for DELETE operations to prevent accidental data loss",
                    )
                    .with_context("input", "where"));
                }
                check_fragment(&where_, "where")?;
                let sql = format!("DELETE FROM {} WHERE {where_}", quote(&table));
                let mut conn = connect(&path, true).await?;
                let done = sqlx::query(&sql)
                    .execute(&mut conn)
                    .await
                    .map_err(|e| db_error(e, "cannot delete"))?;
                let _ = conn.close().await;
                let n = done.rows_affected();
                out.emit(
                    "output",
                    json!({"rows_affected": n, "message": format!("Deleted {n} record(s)")}),
                )
                .await
            }
            Kind::ExecuteSql => {
                let sql = i.str("sql")?;
                check_fragment(&sql, "sql")?;
                let params = i.list("parameters")?;
                let head = sql.trim_start().to_ascii_uppercase();
                let modifying = ["INSERT", "UPDATE", "DELETE", "CREATE", "ALTER", "DROP"]
                    .iter()
                    .any(|k| head.starts_with(k));
                if modifying {
                    let mut conn = connect(&path, true).await?;
                    let done = params
                        .iter()
                        .fold(sqlx::query(&sql), bind)
                        .execute(&mut conn)
                        .await
                        .map_err(|e| db_error(e, "cannot execute the statement"))?;
                    let _ = conn.close().await;
                    out.emit(
                        "output",
                        json!({"rows_affected": done.rows_affected(), "last_row_id": done.last_insert_rowid(), "message": "SQL executed successfully"}),
                    )
                    .await
                } else {
                    let rows = fetch(&path, &sql, &params).await?;
                    let n = rows.len();
                    out.emit(
                        "output",
                        json!({"rows": rows, "count": n, "message": format!("Query returned {n} row(s)")}),
                    )
                    .await
                }
            }
        }
    }
}

async fn fetch(path: &Path, sql: &str, params: &[Value]) -> Result<Vec<Value>> {
    use futures::TryStreamExt;
    let mut conn = connect(path, true).await?;
    let mut rows = Vec::new();
    {
        let mut stream = params.iter().fold(sqlx::query(sql), bind).fetch(&mut conn);
        while let Some(row) = stream
            .try_next()
            .await
            .map_err(|e| db_error(e, "cannot run the query"))?
        {
            if rows.len() >= MAX_ROWS {
                return Err(Error::new(
                    ErrorKind::TooLarge,
                    format!("the query returns more than {MAX_ROWS} rows; add a limit"),
                )
                .with_operation(OP));
            }
            rows.push(Value::Object(row_to_dict(&row)));
        }
    }
    let _ = conn.close().await;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_are_one_statement_without_attach() {
        assert!(check_fragment("id = 1 AND name = 'a;b'", "where").is_ok());
        assert!(check_fragment("\"attach\" = 1", "where").is_ok());
        assert!(check_fragment("1=1; DROP TABLE x", "where").is_err());
        assert!(check_fragment("x IN (SELECT 1) ; ATTACH 'f' AS g", "where").is_err());
        assert!(check_fragment("SELECT 1; ", "sql").is_ok());
        assert!(check_fragment("attach database '/tmp/x' as y", "sql").is_err());
        assert!(check_fragment("pragma table_info(t)", "sql").is_err());
    }

    #[test]
    fn database_names_stay_in_the_workspace() {
        let dir = tempfile::tempdir().unwrap();
        assert!(database_path(None, "1", "a.db").is_err());
        for bad in ["", "../a.db", "a/b.db", ".hidden", "/etc/passwd", "a\\b"] {
            assert!(database_path(Some(dir.path()), "1", bad).is_err(), "{bad}");
        }
        let ok = database_path(Some(dir.path()), "1", "cards.db").unwrap();
        assert!(ok.ends_with("1/cards.db"));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/etc/passwd", ok.with_file_name("link.db")).unwrap();
            assert!(database_path(Some(dir.path()), "1", "link.db").is_err());
        }
    }
}
