//! lib.sqlite nodes against real SQLite files in a workspace folder: the Flashcard example's
//! create / insert / query, with the results NodeTool's Python nodes gave for the same runs
//! (recorded with the oracle, `shared/oracle`, its `ProcessingContext.workspace_dir` set to a
//! temporary folder), and what bad input gets.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use std::path::Path;

use common::*;
use nodetool_core::ErrorKind;
use nodetool_engine::{Engine, RunOptions, RunOutcome, Status};
use nodetool_nodes::NodeSettings;
use serde_json::{json, Value};

async fn engine_in(workspace: &Path) -> Engine {
    let settings = NodeSettings {
        workspace_dir: Some(workspace.to_path_buf()),
        ..NodeSettings::default()
    };
    engine_with(nodetool_nodes::registry_with(&settings)).await
}

async fn run_graph(
    engine: &Engine,
    nodes: &[(&str, &str, Value)],
    edges: &[(&str, &str, &str, &str)],
) -> RunOutcome {
    run(
        engine,
        graph(nodes, edges),
        Value::Null,
        RunOptions::default(),
    )
    .await
    .0
}

/// The record type as the bundled Flashcard Generator stores it: JSON text.
const COLUMNS: &str = r#"{"type": "record_type", "columns": [{"name": "id", "data_type": "int"}, {"name": "question", "data_type": "string"}, {"name": "answer", "data_type": "string"}, {"name": "tags", "data_type": "object"}, {"name": "score", "data_type": "float"}]}"#;

#[tokio::test]
async fn flashcards_create_insert_query_as_nodetool() {
    let ws = tempfile::tempdir().unwrap();
    let engine = engine_in(ws.path()).await;
    let o = run_graph(
        &engine,
        &[
            (
                "ct",
                "lib.sqlite.CreateTable",
                json!({"database_name": "flashcards.db", "table_name": "study_cards", "columns": COLUMNS, "add_primary_key": true, "if_not_exists": true}),
            ),
            ("o1", "nodetool.output.Output", json!({"name": "db"})),
            ("o2", "nodetool.output.Output", json!({"name": "table"})),
            (
                "ins",
                "lib.sqlite.Insert",
                json!({"data": {"question": "2+2?", "answer": "4", "tags": ["math", "easy"], "score": 0.5}}),
            ),
            ("o3", "nodetool.output.Output", json!({"name": "inserted"})),
        ],
        &[
            ("ct", "database_name", "o1", "value"),
            ("ct", "table_name", "o2", "value"),
            ("ct", "database_name", "ins", "database_name"),
            ("ct", "table_name", "ins", "table_name"),
            ("ins", "output", "o3", "value"),
        ],
    )
    .await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    assert_eq!(o.result["db"], json!(["flashcards.db"]));
    assert_eq!(o.result["table"], json!(["study_cards"]));
    assert_eq!(
        o.result["inserted"],
        json!([{"row_id": 1, "rows_affected": 1, "message": "Inserted record with ID 1"}])
    );
    // The file is the user's, inside the workspace.
    assert!(ws.path().join("1/flashcards.db").is_file());

    let o = run_graph(
        &engine,
        &[
            (
                "ins",
                "lib.sqlite.Insert",
                json!({"database_name": "flashcards.db", "table_name": "study_cards", "data": {"question": "Capital of France?", "answer": "Paris", "tags": {"geo": true}, "score": null}}),
            ),
            ("o", "nodetool.output.Output", json!({"name": "inserted"})),
        ],
        &[("ins", "output", "o", "value")],
    )
    .await;
    assert_eq!(
        o.result["inserted"],
        json!([{"row_id": 2, "rows_affected": 1, "message": "Inserted record with ID 2"}])
    );

    let o = run_graph(
        &engine,
        &[
            (
                "q",
                "lib.sqlite.Query",
                json!({"database_name": "flashcards.db", "table_name": "study_cards", "where": "score IS NULL OR score < 1", "order_by": "id DESC", "limit": 10}),
            ),
            ("o", "nodetool.output.Output", json!({"name": "rows"})),
            ("each", "nodetool.output.Output", json!({"name": "row"})),
            (
                "q2",
                "lib.sqlite.Query",
                json!({"database_name": "flashcards.db", "table_name": "study_cards", "columns": {"type": "record_type", "columns": [{"name": "question", "data_type": "string"}]}, "limit": 1}),
            ),
            ("o2", "nodetool.output.Output", json!({"name": "first"})),
        ],
        &[
            ("q", "output", "o", "value"),
            ("q", "row", "each", "value"),
            ("q2", "output", "o2", "value"),
        ],
    )
    .await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    let rows = json!([
        {"id": 2, "question": "Capital of France?", "answer": "Paris", "tags": {"geo": true}, "score": null},
        {"id": 1, "question": "2+2?", "answer": "4", "tags": ["math", "easy"], "score": 0.5}
    ]);
    assert_eq!(o.result["rows"], json!([rows]));
    assert_eq!(o.result["row"], rows, "each row streamed on `row`");
    assert_eq!(o.result["first"], json!([[{"question": "2+2?"}]]));

    // Another user has their own databases: user 2 has no flashcards.db yet.
    let mut req = nodetool_engine::RunRequest::new(graph(
        &[
            (
                "q",
                "lib.sqlite.Query",
                json!({"database_name": "flashcards.db", "table_name": "study_cards"}),
            ),
            ("o", "nodetool.output.Output", json!({"name": "rows"})),
        ],
        &[("q", "output", "o", "value")],
    ));
    req.user_id = "2".into();
    let other = engine
        .run(
            req,
            RunOptions::default(),
            nodetool_engine::VecSink::new(),
            tokio_util::sync::CancellationToken::new(),
        )
        .await;
    assert_eq!(other.status, Status::Completed, "{:?}", other.error);
    assert_eq!(other.result["rows"], json!([[]]));
}

#[tokio::test]
async fn bad_input_is_refused_and_reaches_no_other_file() {
    let ws = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let engine = engine_in(ws.path()).await;
    let cases: Vec<(&str, Value, ErrorKind, &str)> = vec![
        (
            "lib.sqlite.Query",
            json!({"database_name": "../escape.db", "table_name": "t"}),
            ErrorKind::InvalidInput,
            "must be a plain file name",
        ),
        (
            "lib.sqlite.Insert",
            json!({"database_name": outside.path().join("x.db").display().to_string(), "table_name": "t", "data": {"a": 1}}),
            ErrorKind::InvalidInput,
            "must be a plain file name",
        ),
        (
            "lib.sqlite.ExecuteSQL",
            json!({"database_name": "a.db", "sql": format!("ATTACH DATABASE '{}' AS x", outside.path().join("y.db").display())}),
            ErrorKind::InvalidInput,
            "may not use ATTACH",
        ),
        (
            "lib.sqlite.Query",
            json!({"database_name": "a.db", "table_name": "t", "where": "1=1; DROP TABLE t"}),
            ErrorKind::InvalidInput,
            "one SQL statement",
        ),
        (
            "lib.sqlite.Delete",
            json!({"database_name": "a.db", "table_name": "t", "where": ""}),
            ErrorKind::InvalidInput,
            "WHERE clause is required",
        ),
        (
            "lib.sqlite.Insert",
            json!({"database_name": "a.db", "table_name": "missing", "data": {"a": 1}}),
            ErrorKind::InvalidInput,
            "no such table",
        ),
    ];
    for (node_type, data, kind, needle) in cases {
        let o = run_graph(&engine, &[("n", node_type, data.clone())], &[]).await;
        assert_eq!(o.status, Status::Failed, "{node_type} {data}");
        let err = o.error.unwrap();
        assert_eq!(err.kind(), kind, "{node_type}: {err}");
        assert!(err.message().contains(needle), "{node_type}: {err}");
    }
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "nothing written outside"
    );

    // Without a workspace (the default registry) every SQLite node refuses clearly.
    let engine = common::engine().await;
    let o = run_graph(
        &engine,
        &[("n", "lib.sqlite.Query", json!({"database_name": "a.db"}))],
        &[],
    )
    .await;
    let err = o.error.unwrap();
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
    assert!(err.message().contains("NODETOOL_WORKSPACE_DIR"), "{err}");
}
