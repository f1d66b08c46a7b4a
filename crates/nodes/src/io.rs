//! `nodetool.input.*` and `nodetool.output.*`: workflow inputs (replaced by job params by name)
//! and outputs (collected into the job result by name).
//!
//! An input node emits its param (or default) once. In a run with input streams, a streaming
//! input (`RealtimeAudioInput`), and with `streaming_inputs: true` any input without a param, is
//! instead fed from outside: the runner streams its param and the pushed values on its output
//! and never calls the function below (see [`nodetool_engine::inputs`]).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use nodetool_core::Result;

use nodetool_engine::context::ProcessingContext;
use nodetool_engine::node::{Emitter, Inbox, NodeImpl, NodeInputs, NodeKind, NodeSpec};
use nodetool_engine::registry::Registry;

use super::fn_node;

pub fn register(r: &mut Registry) {
    let inputs: [(&str, &str, &str, Value); 10] = [
        ("StringInput", "String Input", "str", json!("")),
        ("IntegerInput", "Integer Input", "int", json!(0)),
        ("FloatInput", "Float Input", "float", json!(0.0)),
        ("BooleanInput", "Boolean Input", "bool", json!(false)),
        ("ImageInput", "Image Input", "image", Value::Null),
        ("AudioInput", "Audio Input", "audio", Value::Null),
        ("VideoInput", "Video Input", "video", Value::Null),
        ("DocumentInput", "Document Input", "document", Value::Null),
        (
            "StringListInput",
            "String List Input",
            "list[str]",
            json!([]),
        ),
        ("ColorInput", "Color Input", "color", Value::Null),
    ];
    for (class, title, ty, default) in inputs {
        let mut spec = NodeSpec::new(format!("nodetool.input.{class}"), title)
            .input("name", "str", json!(""))
            .input("value", ty, default)
            .input("description", "str", json!(""))
            .output("output", ty)
            .kind(NodeKind::Input);
        // NodeTool shows min/max on numeric inputs as UI hints; they are not enforced.
        if ty == "int" || ty == "float" {
            spec = spec
                .input("min", ty, Value::Null)
                .input("max", ty, Value::Null);
        }
        fn_node(r, spec, |i| Ok(i.value("value")));
    }
    // NodeTool's one streaming input: it stays open for `stream_input` chunks (see
    // `nodetool_engine::inputs`); without input streams (`nodetool run`) it emits its value once.
    let realtime = NodeSpec::new("nodetool.input.RealtimeAudioInput", "Realtime Audio Input")
        .input("name", "str", json!("audio"))
        .input("value", "audio", Value::Null)
        .input("description", "str", json!(""))
        .output("chunk", "chunk")
        .streaming()
        .kind(NodeKind::Input);
    r.register(Arc::new(RealtimeAudioInput { spec: realtime }));

    let outputs: [(&str, &str); 12] = [
        ("Output", "any"),
        ("StringOutput", "str"),
        ("IntegerOutput", "int"),
        ("FloatOutput", "float"),
        ("BooleanOutput", "bool"),
        ("ListOutput", "list[any]"),
        ("DictionaryOutput", "dict[str, any]"),
        ("ImageOutput", "image"),
        ("AudioOutput", "audio"),
        ("VideoOutput", "video"),
        ("DocumentOutput", "document"),
        ("TextOutput", "str"),
    ];
    for (class, ty) in outputs {
        r.register(Arc::new(OutputNode {
            spec: NodeSpec::new(format!("nodetool.output.{class}"), "Output")
                .input("name", "str", json!(""))
                .input("value", ty, Value::Null)
                .input("description", "str", json!(""))
                .output("output", ty)
                .consumes_stream()
                .kind(NodeKind::Output),
        }));
    }
}

/// Unfed (no input streams), it sends its value once on `chunk`, or nothing when it has none.
#[derive(Debug)]
struct RealtimeAudioInput {
    spec: NodeSpec,
}

#[async_trait]
impl NodeImpl for RealtimeAudioInput {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        _ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        match inputs.value("value") {
            Value::Null => Ok(()),
            value => out.emit("chunk", value).await,
        }
    }
}

/// Every value that reaches `value` is one entry of `result[name]`, except `null`: as in
/// NodeTool, a None reaching an output is "no value" and is not recorded (it still gets its
/// `output_update`).
#[derive(Debug)]
struct OutputNode {
    spec: NodeSpec,
}

#[async_trait]
impl NodeImpl for OutputNode {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        inputs: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        let value = inputs.value("value");
        record(ctx, &inputs.str("name")?, &value);
        out.emit("output", value).await
    }

    async fn run_stream(
        &self,
        ctx: &ProcessingContext,
        props: &NodeInputs,
        inbox: &mut Inbox,
        out: &mut Emitter,
    ) -> Result<()> {
        let name = props.str("name")?;
        let mut last = None;
        if inbox.handle_index("value").is_some() {
            while let Some(value) = inbox.recv("value").await? {
                record(ctx, &name, &value);
                last = Some(value);
            }
        }
        match last {
            Some(value) => out.emit("output", value).await,
            // Nothing arrived (or not wired): NodeTool reports the literal value once, even
            // when it is None.
            None => self.process(ctx, props, out).await,
        }
    }
}

fn record(ctx: &ProcessingContext, name: &str, value: &Value) {
    if value.is_null() {
        ctx.post_output(name, value.clone());
    } else {
        ctx.record_output(name, value.clone());
    }
}
