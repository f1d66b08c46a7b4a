//! `nodetool.control.*`: If, ForEach (a generator), Collect (drains a stream into a list).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use nodetool_core::Result;

use crate::context::ProcessingContext;
use crate::node::{Emitter, Inbox, NodeImpl, NodeInputs, NodeSpec};
use crate::registry::Registry;

pub fn register(r: &mut Registry) {
    r.register(Arc::new(If {
        spec: NodeSpec::new("nodetool.control.If", "If")
            .input("condition", "bool", json!(false))
            .input("value", "any", Value::Null)
            .output("if_true", "any")
            .output("if_false", "any"),
    }));
    r.register(Arc::new(ForEach {
        spec: NodeSpec::new("nodetool.control.ForEach", "For Each")
            .input("input_list", "list[any]", json!([]))
            .output("output", "any")
            .output("index", "int")
            .streaming(),
    }));
    r.register(Arc::new(Collect {
        spec: NodeSpec::new("nodetool.control.Collect", "Collect")
            .input("input_item", "any", Value::Null)
            .output("output", "list[any]")
            .consumes_stream(),
    }));
}

/// Routes `value` to `if_true` or `if_false`. Unlike NodeTool's, it waits for both the condition
/// and the value (on_any batching), so the branch never depends on arrival order.
#[derive(Debug)]
struct If {
    spec: NodeSpec,
}

#[async_trait]
impl NodeImpl for If {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        _: &ProcessingContext,
        i: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        let slot = if i.bool("condition")? {
            "if_true"
        } else {
            "if_false"
        };
        out.emit(slot, i.value("value")).await
    }
}

#[derive(Debug)]
struct ForEach {
    spec: NodeSpec,
}

#[async_trait]
impl NodeImpl for ForEach {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        i: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        for (index, item) in i.list("input_list")?.into_iter().enumerate() {
            ctx.check_cancelled()?;
            out.emit("output", item).await?;
            out.emit("index", json!(index)).await?;
        }
        Ok(())
    }
}

/// Every item that arrives on `input_item`, in order, as one list (NodeTool drops the first
/// item; we do not).
#[derive(Debug)]
struct Collect {
    spec: NodeSpec,
}

#[async_trait]
impl NodeImpl for Collect {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        _: &ProcessingContext,
        i: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        let items = match i.value("input_item") {
            Value::Null => Vec::new(),
            v => vec![v],
        };
        out.emit("output", Value::Array(items)).await
    }

    async fn run_stream(
        &self,
        ctx: &ProcessingContext,
        props: &NodeInputs,
        inbox: &mut Inbox,
        out: &mut Emitter,
    ) -> Result<()> {
        if inbox.handle_index("input_item").is_none() {
            return self.process(ctx, props, out).await;
        }
        let mut items = Vec::new();
        while let Some(item) = inbox.recv("input_item").await? {
            items.push(item);
        }
        out.emit("output", Value::Array(items)).await
    }
}
