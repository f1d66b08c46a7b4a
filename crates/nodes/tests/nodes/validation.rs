//! Validation lists every problem; bad input gives clear errors and never hangs.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::Arc;

use common::*;
use nodetool_core::ErrorKind;
use nodetool_engine::{
    parse_workflow, validate, FnNode, NodeSpec, ProblemKind, Registry, RunOptions, Status,
};
use serde_json::{json, Map, Value};

fn registry_with_required() -> Registry {
    let mut r = nodetool_nodes::registry();
    r.register(Arc::new(FnNode::new(
        NodeSpec::new("test.NeedsX", "Needs X")
            .required("x", "str")
            .output("output", "str"),
        |i| Ok(i.value("x")),
    )));
    r
}

#[test]
fn every_problem_is_listed() {
    let g = graph(
        &[
            ("typo", "nodetool.text.Concatt", json!({})),
            ("a", "nodetool.text.ToUppercase", json!({})),
            ("b", "nodetool.text.ToLowercase", json!({})),
            ("num", "nodetool.constant.Integer", json!({"value": 3})),
            ("cat", "nodetool.text.Concat", json!({"a": 5})),
            ("need", "test.NeedsX", json!({})),
            ("i1", "nodetool.input.StringInput", json!({"name": "dup"})),
            ("i2", "nodetool.input.StringInput", json!({"name": "dup"})),
            ("s", "nodetool.constant.String", json!({"value": "x"})),
            ("j", "nodetool.text.Join", json!({})),
            ("l", "nodetool.constant.List", json!({"value": []})),
            ("u", "nodetool.text.ToUppercase", json!({})),
        ],
        &[
            ("a", "output", "b", "text"),            // e1 cycle a -> b -> a
            ("b", "output", "a", "text"),            // e2
            ("a", "nope", "cat", "b"),               // e3 unknown source handle
            ("s", "output", "cat", "missing_input"), // e4 unknown target handle
            ("ghost", "output", "cat", "b"),         // e5 missing node (+ duplicate into cat.b)
            ("num", "output", "j", "separator"),     // e6 int into str: type mismatch
            ("l", "output", "u", "text"), // e7 list into str (str into a list would be a collect edge)
        ],
    );
    let err = validate(&g, &registry_with_required(), &Map::new()).unwrap_err();
    let kinds: Vec<ProblemKind> = err.problems.iter().map(|p| p.kind).collect();
    let text = err.to_string();
    for want in [
        ProblemKind::UnknownNodeType,
        ProblemKind::UnknownHandle,
        ProblemKind::MissingNode,
        ProblemKind::DuplicateEdge,
        ProblemKind::Cycle,
        ProblemKind::MissingInput,
        ProblemKind::TypeMismatch,
        ProblemKind::DuplicateInputName,
    ] {
        assert!(kinds.contains(&want), "{want:?} missing from:\n{text}");
    }
    assert!(text.contains("did you mean nodetool.text.Concat"), "{text}");
    assert!(text.contains("has no output `nope`"), "{text}");
    assert!(text.contains("has no input `missing_input`"), "{text}");
    assert!(text.contains("missing node `ghost`"), "{text}");
    assert!(text.contains("data cycle through nodes a, b"), "{text}");
    assert!(text.contains("required input `x`"), "{text}");
    assert!(
        text.contains("property `a` expects str but is int"),
        "{text}"
    );
    assert!(
        text.contains("output `num.output` is int but input `j.separator` expects str"),
        "{text}"
    );
    assert!(
        text.contains("input name `dup` is used by 2 nodes"),
        "{text}"
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == ProblemKind::TypeMismatch)
            .count(),
        3,
        "{text}"
    );
}

#[test]
fn a_valid_graph_passes_and_dynamic_nodes_accept_any_handle() {
    let g = graph(
        &[
            ("s", "nodetool.constant.String", json!({"value": "x"})),
            (
                "f",
                "nodetool.text.FormatText",
                json!({"template": "{{ anything }}"}),
            ),
        ],
        &[("s", "output", "f", "anything")],
    );
    validate(&g, &nodetool_nodes::registry(), &Map::new()).unwrap();
}

#[tokio::test]
async fn an_invalid_graph_fails_the_job_before_any_node_runs() {
    let g = graph(&[("x", "nodetool.nothing.Here", json!({}))], &[]);
    let (o, events) = run(&engine().await, g, Value::Null, RunOptions::default()).await;
    assert_eq!(o.status, Status::Failed);
    assert_eq!(o.error.as_ref().unwrap().kind(), ErrorKind::InvalidInput);
    assert!(o
        .error
        .unwrap()
        .to_string()
        .contains("unknown node type `nodetool.nothing.Here`"));
    let types: Vec<String> = to_values(&events)
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["type"].as_str().unwrap(),
                e["status"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(types, vec!["job_update:running", "job_update:failed"]);
}

#[test]
fn malformed_and_misshapen_files_say_where() {
    let err = parse_workflow("{\"graph\": {\"nodes\": [}\n}").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(err.context_value("line"), Some("1"));
    assert!(err.to_string().contains("line 1, column 22"), "{err}");

    let err = parse_workflow("[1, 2]").unwrap_err();
    assert!(err.to_string().contains("JSON object"), "{err}");

    let err = parse_workflow(r#"{"graph": {"nodes": [{"id": 1, "type": "x"}]}}"#).unwrap_err();
    assert!(
        err.to_string()
            .contains("invalid type: integer `1`, expected a string"),
        "{err}"
    );
}

#[tokio::test]
async fn huge_literals_and_wrong_runtime_types_fail_cleanly() {
    // A large literal flows through without trouble.
    let big = "y".repeat(5 * 1024 * 1024);
    let g = graph(
        &[
            ("s", "nodetool.constant.String", json!({"value": big})),
            ("len", "nodetool.text.Length", json!({})),
            ("out", "nodetool.output.Output", json!({"name": "n"})),
        ],
        &[
            ("s", "output", "len", "text"),
            ("len", "output", "out", "value"),
        ],
    );
    let (o, _) = run(&engine().await, g, Value::Null, RunOptions::default()).await;
    assert_eq!(Value::Object(o.result), json!({"n": [5 * 1024 * 1024]}));

    // A value of the wrong type arriving at run time (through an `any` output) fails that node.
    let g = graph(
        &[
            ("d", "nodetool.constant.Dict", json!({"value": {"k": [1]}})),
            ("get", "nodetool.dictionary.GetValue", json!({"key": "k"})),
            ("up", "nodetool.text.Split", json!({})),
        ],
        &[
            ("d", "output", "get", "dictionary"),
            ("get", "output", "up", "text"),
        ],
    );
    let (o, _) = run(&engine().await, g, Value::Null, RunOptions::default()).await;
    assert_eq!(o.status, Status::Failed);
    assert_eq!(o.failed_node.as_deref(), Some("up"));
    let err = o.error.unwrap();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("input `text`"), "{err}");
}
