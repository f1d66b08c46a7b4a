//! Dynamic inputs as NodeTool's TypeScript runtime takes them: `Prompt` (FormatText's newer
//! name) with literal and wired variables, each forwarded on an output of its own name, and
//! Template with wired inputs of any type. FormatText and Template against the original are in
//! `tests/conformance/dynamic_inputs`.

#![allow(clippy::unwrap_used)]

use crate::common;

use common::*;
use nodetool_engine::{Graph, RunOptions, Status};
use serde_json::{json, Map, Value};

fn with_dynamic_values(mut g: Graph, node: &str, props: Value) -> Graph {
    let n = g.nodes.iter_mut().find(|n| n.id == node).unwrap();
    n.dynamic_properties = props.as_object().unwrap().clone();
    g
}

#[tokio::test]
async fn prompt_renders_and_forwards_its_variables() {
    let engine = engine().await;
    let g = graph(
        &[
            ("who", "nodetool.constant.String", json!({"value": "Ada"})),
            (
                "p",
                "nodetool.text.Prompt",
                json!({"prompt": "Dear {{ name|upper }}, {greeting}! {{ n }}"}),
            ),
            ("o", "nodetool.output.Output", json!({"name": "text"})),
            ("fw", "nodetool.output.Output", json!({"name": "forwarded"})),
        ],
        &[
            ("who", "output", "p", "name"),
            ("p", "output", "o", "value"),
            // A variable comes out on a handle of its own name, undeclared by the node.
            ("p", "name", "fw", "value"),
        ],
    );
    let g = with_dynamic_values(g, "p", json!({"greeting": "hello", "n": 2}));
    engine.validate(&g, &Map::new()).unwrap();
    let (outcome, _) = run(&engine, g, Value::Null, RunOptions::default()).await;
    assert_eq!(outcome.status, Status::Completed, "{:?}", outcome.error);
    assert_eq!(outcome.result["text"], json!(["Dear ADA, hello! 2"]));
    assert_eq!(outcome.result["forwarded"], json!(["Ada"]));
}

#[tokio::test]
async fn template_takes_wired_dynamic_inputs_of_any_type() {
    let engine = engine().await;
    let g = graph(
        &[
            ("n", "nodetool.constant.Integer", json!({"value": 7})),
            (
                "t",
                "nodetool.text.Template",
                json!({"string": "n={{ count }}, {count}"}),
            ),
            ("o", "nodetool.output.Output", json!({"name": "out"})),
        ],
        &[("n", "output", "t", "count"), ("t", "output", "o", "value")],
    );
    let (outcome, _) = run(&engine, g, Value::Null, RunOptions::default()).await;
    assert_eq!(outcome.status, Status::Completed, "{:?}", outcome.error);
    assert_eq!(outcome.result["out"], json!(["n=7, 7"]));
}
