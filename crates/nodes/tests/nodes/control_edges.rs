//! Control edges through `Engine::run`: an agent-style controller that calls its targets as
//! tools (`ProcessingContext::run_controlled`) and reads `control_context`, the legacy
//! `__control_output__` form, targeted events, failures on either side, cancellation, and the
//! validation rules. The plain controller semantics are pinned against recordings of the
//! original in `tests/conformance/control_*`.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use nodetool_core::{ErrorKind, Result};
use nodetool_engine::{
    Emitter, Graph, NodeImpl, NodeInputs, NodeSpec, ProcessingContext, RunOptions, Status,
};
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

/// Calls each target named in `calls` (`[[node id, {properties}], ...]`) as a tool, in order,
/// and emits `{"context": control_context, "results": [outputs...]}`.
#[derive(Debug)]
struct ToolCaller {
    spec: NodeSpec,
}

#[async_trait]
impl NodeImpl for ToolCaller {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        let mut results = Vec::new();
        for call in inputs.list("calls")? {
            let target = call[0].as_str().unwrap_or_default().to_owned();
            let props: Map<String, Value> = call[1].as_object().cloned().unwrap_or_default();
            let outputs = ctx.run_controlled(&target, props).await?;
            results.push(Value::Object(outputs));
        }
        out.emit(
            "output",
            json!({"context": ctx.control_context(), "results": results}),
        )
        .await
    }
}

/// Emits each of `events` on `__control__`.
#[derive(Debug)]
struct EmitControl {
    spec: NodeSpec,
}

#[async_trait]
impl NodeImpl for EmitControl {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        _ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        for event in inputs.list("events")? {
            out.emit("__control__", event).await?;
        }
        Ok(())
    }
}

fn registry() -> nodetool_engine::Registry {
    let mut r = nodetool_nodes::registry();
    r.register(Arc::new(EmitControl {
        spec: NodeSpec::new("test.EmitControl", "Emit Control").input("events", "list", json!([])),
    }));
    r.register(Arc::new(ToolCaller {
        spec: NodeSpec::new("test.ToolCaller", "Tool Caller")
            .input("calls", "list", json!([]))
            .output("output", "any"),
    }));
    r
}

fn control_edge(g: &mut Graph, id: &str, source: &str, target: &str) {
    g.edges.push(
        serde_json::from_value(json!({
            "id": id, "source": source, "sourceHandle": "__control__",
            "target": target, "targetHandle": "__control__", "edge_type": "control"
        }))
        .unwrap(),
    );
}

const THRESHOLD: &str = "nodetool.workflows.test_helper.ThresholdProcessor";

#[tokio::test]
async fn a_controller_calls_its_targets_as_tools_and_gets_their_outputs() {
    let engine = engine_with(registry()).await;
    let mut g = graph(
        &[
            (
                "agent",
                "test.ToolCaller",
                json!({"calls": [["t", {"threshold": 0.2}], ["t", {"threshold": 0.9, "mode": "strict"}]]}),
            ),
            ("v", "nodetool.constant.Float", json!({"value": 0.5})),
            ("t", THRESHOLD, json!({"threshold": 0.4})),
            ("o", "nodetool.output.Output", json!({"name": "agent"})),
            ("ot", "nodetool.output.Output", json!({"name": "tool"})),
        ],
        &[
            ("v", "output", "t", "value"),
            ("agent", "output", "o", "value"),
            ("t", "output", "ot", "value"),
        ],
    );
    control_edge(&mut g, "c1", "agent", "t");
    let (outcome, events) = run(&engine, g, Value::Null, RunOptions::default()).await;
    assert_eq!(outcome.status, Status::Completed, "{:?}", outcome.error);
    let agent = &outcome.result["agent"][0];
    assert_eq!(
        agent["results"],
        json!([
            {"output": "value=0.5, threshold=0.2, mode=normal, exceeds=True"},
            {"output": "value=0.5, threshold=0.9, mode=strict, exceeds=False"}
        ])
    );
    // NodeTool's _control_context: the target's type and every property with its graph value.
    let ctx = &agent["context"]["t"];
    assert_eq!(ctx["node_type"], THRESHOLD);
    assert_eq!(ctx["properties"]["threshold"]["value"], json!(0.4));
    assert_eq!(ctx["properties"]["mode"]["type"], "str");
    // Each tool call also flows downstream like any run.
    assert_eq!(outcome.result["tool"].as_array().unwrap().len(), 2);
    assert_eq!(
        node_statuses(&events, "t"),
        ["running", "completed", "running", "completed"]
    );
}

#[tokio::test]
async fn tool_call_failures_and_wrong_targets_are_clear_errors() {
    let engine = engine_with(registry()).await;
    // Calling a node this controller does not control.
    let mut g = graph(
        &[
            (
                "agent",
                "test.ToolCaller",
                json!({"calls": [["other", {}]]}),
            ),
            ("t", THRESHOLD, json!({})),
            ("other", THRESHOLD, json!({})),
        ],
        &[],
    );
    control_edge(&mut g, "c1", "agent", "t");
    let (outcome, _) = run(&engine, g, Value::Null, RunOptions::default()).await;
    assert_eq!(outcome.status, Status::Failed);
    let err = outcome.error.unwrap().to_string();
    assert!(err.contains("no control edge to node `other`"), "{err}");

    // A property the target does not have.
    let mut g = graph(
        &[
            (
                "agent",
                "test.ToolCaller",
                json!({"calls": [["t", {"nope": 1}]]}),
            ),
            ("t", THRESHOLD, json!({})),
        ],
        &[],
    );
    control_edge(&mut g, "c1", "agent", "t");
    let (outcome, _) = run(&engine, g, Value::Null, RunOptions::default()).await;
    assert_eq!(outcome.status, Status::Failed);
    let err = outcome.error.unwrap().to_string();
    assert!(err.contains("property `nope`"), "{err}");

    // The target fails: the call sees the failure, the job fails.
    let mut g = graph(
        &[
            (
                "agent",
                "test.ToolCaller",
                json!({"calls": [["e", {"message": "tool broke"}]]}),
            ),
            (
                "e",
                "nodetool.workflows.test_helper.ErrorProcessor",
                json!({}),
            ),
        ],
        &[],
    );
    control_edge(&mut g, "c1", "agent", "e");
    let (outcome, _) = run(&engine, g, Value::Null, RunOptions::default()).await;
    assert_eq!(outcome.status, Status::Failed);
    assert!(
        outcome.error.unwrap().to_string().contains("tool broke"),
        "the failure names the cause"
    );
}

#[tokio::test]
async fn legacy_control_output_and_targeted_events() {
    let engine = engine().await;
    // NodeTool's own runtime fails this graph (it injects `_control_context` into a buffered
    // controller's properties); the form itself is supported.
    let g: Graph = serde_json::from_value(json!({
        "nodes": [
            {"id": "c", "type": "nodetool.workflows.test_helper.LegacyControlController",
             "data": {"threshold": 0.25, "mode": "strict"}},
            {"id": "t", "type": THRESHOLD, "data": {"value": 0.25}},
            {"id": "o", "type": "nodetool.output.Output", "data": {"name": "out"}}
        ],
        "edges": [
            {"id": "e1", "source": "c", "sourceHandle": "__control_output__", "target": "t",
             "targetHandle": "__control__", "edge_type": "control"},
            {"id": "e2", "source": "t", "sourceHandle": "output", "target": "o", "targetHandle": "value"}
        ]
    }))
    .unwrap();
    let (outcome, _) = run(&engine, g, Value::Null, RunOptions::default()).await;
    assert_eq!(outcome.status, Status::Completed, "{:?}", outcome.error);
    assert_eq!(
        outcome.result["out"],
        json!(["value=0.25, threshold=0.25, mode=strict, exceeds=False"])
    );

    // Python's targeted payload reaches only the named target.
    let engine = engine_with(registry()).await;
    let targeted = |target: &str| {
        let mut g = graph(
            &[
                (
                    "c",
                    "test.EmitControl",
                    json!({"events": [{"target_node_id": target,
                                       "event": {"event_type": "run", "properties": {"value": 1.0}}}]}),
                ),
                ("t1", THRESHOLD, json!({})),
                ("t2", THRESHOLD, json!({})),
                ("o1", "nodetool.output.Output", json!({"name": "t1"})),
                ("o2", "nodetool.output.Output", json!({"name": "t2"})),
            ],
            &[
                ("t1", "output", "o1", "value"),
                ("t2", "output", "o2", "value"),
            ],
        );
        control_edge(&mut g, "c1", "c", "t1");
        control_edge(&mut g, "c2", "c", "t2");
        g
    };
    let (outcome, _) = run(&engine, targeted("t2"), Value::Null, RunOptions::default()).await;
    assert_eq!(outcome.status, Status::Completed, "{:?}", outcome.error);
    assert!(outcome.result.get("t1").is_none(), "{:?}", outcome.result);
    assert_eq!(
        outcome.result["t2"],
        json!(["value=1.0, threshold=0.5, mode=normal, exceeds=True"])
    );
    let (outcome, _) = run(&engine, targeted("o1"), Value::Null, RunOptions::default()).await;
    assert_eq!(outcome.status, Status::Failed);
    let err = outcome.error.unwrap().to_string();
    assert!(err.contains("does not control"), "{err}");
    // A control value that is not an event.
    let mut g = graph(
        &[
            ("c", "test.EmitControl", json!({"events": ["run please"]})),
            ("t", THRESHOLD, json!({})),
        ],
        &[],
    );
    control_edge(&mut g, "c1", "c", "t");
    let (outcome, _) = run(&engine, g, Value::Null, RunOptions::default()).await;
    assert_eq!(outcome.status, Status::Failed);
    let err = outcome.error.unwrap().to_string();
    assert!(err.contains("a control event must be an object"), "{err}");
}

#[tokio::test]
async fn a_waiting_controlled_node_is_cancelled_with_the_job() {
    let engine = engine().await;
    // The controller sleeps, so the controlled node waits on its control queue.
    let mut g = graph(
        &[
            ("s", "nodetool.test.Sleep", json!({"seconds": 30.0})),
            ("t", THRESHOLD, json!({})),
        ],
        &[],
    );
    g.edges.push(
        serde_json::from_value(json!({
            "id": "c1", "source": "s", "sourceHandle": "output", "target": "t",
            "targetHandle": "__control__", "edge_type": "control"
        }))
        .unwrap(),
    );
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.cancel();
    });
    let started = std::time::Instant::now();
    let (outcome, _) =
        run_with_cancel(&engine, g, Value::Null, RunOptions::default(), cancel).await;
    assert_eq!(outcome.status, Status::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn control_edges_are_validated() {
    let engine = engine_with(registry()).await;
    let problems = |g: Graph| {
        let err = engine.validate(&g, &Map::new()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        err.to_string()
    };
    let base = || {
        graph(
            &[
                ("agent", "test.ToolCaller", json!({})),
                ("t", THRESHOLD, json!({})),
                ("o", "nodetool.output.Output", json!({"name": "o"})),
            ],
            &[],
        )
    };
    // Wrong target handle.
    let mut g = base();
    g.edges.push(
        serde_json::from_value(
            json!({"id": "c1", "source": "agent", "sourceHandle": "__control__",
            "target": "t", "targetHandle": "value", "edge_type": "control"}),
        )
        .unwrap(),
    );
    assert!(problems(g).contains("must end in `__control__`"));
    // A missing end.
    let mut g = base();
    control_edge(&mut g, "c1", "agent", "ghost");
    assert!(problems(g).contains("missing node `ghost`"));
    // A node that cannot be controlled.
    let mut g = base();
    control_edge(&mut g, "c1", "agent", "o");
    assert!(problems(g).contains("cannot be controlled"));
    // The controller waits for data from the node it controls: it could never start.
    let mut g = base();
    control_edge(&mut g, "c1", "agent", "t");
    g.edges.push(
        serde_json::from_value(json!({"id": "d1", "source": "t", "sourceHandle": "output",
            "target": "agent", "targetHandle": "calls"}))
        .unwrap(),
    );
    assert!(problems(g).contains("cycle through a control edge"));
    // Control cycles.
    let mut g = base();
    control_edge(&mut g, "c1", "agent", "t");
    control_edge(&mut g, "c2", "t", "agent");
    assert!(problems(g).contains("cycle"));
    // A source handle the controller does not have.
    let mut g = base();
    g.edges.push(
        serde_json::from_value(
            json!({"id": "c1", "source": "agent", "sourceHandle": "nope",
            "target": "t", "targetHandle": "__control__", "edge_type": "control"}),
        )
        .unwrap(),
    );
    assert!(problems(g).contains("has no output `nope`"));
    // A controlled node's required inputs may come with the events: not a problem.
    let mut g = graph(
        &[
            ("agent", "test.ToolCaller", json!({})),
            ("d", "nodetool.dictionary.GetValue", json!({})),
        ],
        &[],
    );
    control_edge(&mut g, "c1", "agent", "d");
    engine.validate(&g, &Map::new()).unwrap();
}
