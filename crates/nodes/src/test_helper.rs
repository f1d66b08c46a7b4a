//! `nodetool.workflows.test_helper.*`: the controller and controlled nodes NodeTool's own runtime
//! ships for testing control edges (nodetool-core `workflows/test_helper.py`), with the same
//! type names, properties and outputs, so control-edge workflows recorded with the original run
//! here unchanged.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use nodetool_core::{Error, Result};

use nodetool_engine::context::ProcessingContext;
use nodetool_engine::node::{Emitter, NodeImpl, NodeInputs, NodeSpec};
use nodetool_engine::registry::Registry;

use crate::text::python_float;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Threshold,
    PassThrough,
    Error,
    SimpleController,
    MultiTrigger,
    StopController,
    LegacyController,
}

#[derive(Debug)]
struct HelperNode {
    spec: NodeSpec,
    kind: Kind,
}

pub fn register(r: &mut Registry) {
    let t = |class: &str, title: &str| {
        NodeSpec::new(format!("nodetool.workflows.test_helper.{class}"), title)
    };
    let nodes = [
        (
            t("ThresholdProcessor", "Threshold Processor")
                .input("value", "float", json!(0.0))
                .input("threshold", "float", json!(0.5))
                .input("mode", "str", json!("normal"))
                .output("output", "str"),
            Kind::Threshold,
        ),
        (
            t("PassThrough", "Pass Through")
                .input("value", "any", Value::Null)
                .input("prefix", "str", json!(""))
                .output("output", "str"),
            Kind::PassThrough,
        ),
        (
            t("ErrorProcessor", "Error Processor")
                .input("message", "str", json!("Controlled node failure"))
                .output("output", "any"),
            Kind::Error,
        ),
        (
            t("SimpleController", "Simple Controller")
                .input("control_threshold", "float", json!(0.8))
                .input("control_mode", "str", json!("strict"))
                .input("trigger_on_init", "bool", json!(true))
                .input("include_properties", "bool", json!(true))
                .output("result", "str")
                .streaming(),
            Kind::SimpleController,
        ),
        (
            t("MultiTriggerController", "Multi Trigger Controller")
                .input(
                    "event_properties",
                    "list[dict]",
                    json!([{"threshold": 0.3}, {"threshold": 0.6}, {"threshold": 0.9}]),
                )
                .input("emit_final_result", "bool", json!(false))
                .input(
                    "final_message",
                    "str",
                    json!("MultiTrigger controller completed"),
                )
                .output("result", "str")
                .streaming(),
            Kind::MultiTrigger,
        ),
        (
            t("StopEventController", "Stop Event Controller")
                .input("emit_stop", "bool", json!(true))
                .input("emit_run_first", "bool", json!(true))
                .streaming(),
            Kind::StopController,
        ),
        (
            t("LegacyControlController", "Legacy Control Controller")
                .input("threshold", "float", json!(0.5))
                .input("mode", "str", json!("normal"))
                .output("result", "str"),
            Kind::LegacyController,
        ),
    ];
    for (spec, kind) in nodes {
        r.register(Arc::new(HelperNode { spec, kind }));
    }
}

/// A float property as Python holds it (an int literal becomes a float).
fn float(inputs: &NodeInputs, name: &str) -> Result<f64> {
    inputs.f64(name)
}

#[async_trait]
impl NodeImpl for HelperNode {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        _ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        match self.kind {
            Kind::Threshold => {
                let value = float(inputs, "value")?;
                let threshold = float(inputs, "threshold")?;
                let mode = inputs.str("mode")?;
                let exceeds = if mode == "strict" {
                    value > threshold
                } else {
                    value >= threshold
                };
                let text = format!(
                    "value={}, threshold={}, mode={mode}, exceeds={}",
                    python_float(value),
                    python_float(threshold),
                    if exceeds { "True" } else { "False" }
                );
                out.emit("output", json!(text)).await
            }
            Kind::PassThrough => {
                let value = nodetool_engine::node::value_to_text(&inputs.value("value"));
                let prefix = inputs.str("prefix")?;
                let text = if prefix.is_empty() {
                    value
                } else {
                    format!("{prefix}:{value}")
                };
                out.emit("output", json!(text)).await
            }
            Kind::Error => Err(Error::unexpected(inputs.str("message")?)),
            Kind::SimpleController => {
                let threshold = float(inputs, "control_threshold")?;
                let mode = inputs.str("control_mode")?;
                if inputs.bool("trigger_on_init")? {
                    let properties = if inputs.bool("include_properties")? {
                        json!({"threshold": threshold, "mode": mode})
                    } else {
                        json!({})
                    };
                    out.emit(
                        "__control__",
                        json!({"event_type": "run", "properties": properties}),
                    )
                    .await?;
                }
                let text = format!(
                    "Controller configured with threshold={}, mode={mode}",
                    python_float(threshold)
                );
                out.emit("result", json!(text)).await
            }
            Kind::MultiTrigger => {
                let mut events = inputs.list("event_properties")?;
                if events.is_empty() {
                    events.push(json!({}));
                }
                for props in events {
                    let props = if props.is_null() { json!({}) } else { props };
                    out.emit(
                        "__control__",
                        json!({"event_type": "run", "properties": props}),
                    )
                    .await?;
                }
                if inputs.bool("emit_final_result")? {
                    out.emit("result", json!(inputs.str("final_message")?))
                        .await?;
                }
                Ok(())
            }
            Kind::StopController => {
                if inputs.bool("emit_run_first")? {
                    out.emit(
                        "__control__",
                        json!({"event_type": "run", "properties": {}}),
                    )
                    .await?;
                }
                if inputs.bool("emit_stop")? {
                    out.emit("__control__", json!({"event_type": "stop"}))
                        .await?;
                }
                Ok(())
            }
            Kind::LegacyController => {
                let threshold = float(inputs, "threshold")?;
                let mode = inputs.str("mode")?;
                out.emit(
                    "__control_output__",
                    json!({"threshold": threshold, "mode": mode}),
                )
                .await?;
                out.emit("result", json!("legacy controller done")).await
            }
        }
    }
}
