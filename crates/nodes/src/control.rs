//! `nodetool.control.*`: If (pairs a value stream with a condition stream), ForEach (a
//! generator), Collect (drains a stream into a list).

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use nodetool_core::Result;

use nodetool_engine::context::ProcessingContext;
use nodetool_engine::node::{Emitter, InMsg, Inbox, NodeImpl, NodeInputs, NodeSpec};
use nodetool_engine::registry::Registry;

use super::boolean::truthy;

pub fn register(r: &mut Registry) {
    r.register(Arc::new(If {
        spec: NodeSpec::new("nodetool.control.If", "If")
            .input("condition", "bool", json!(false))
            .input("value", "any", Value::Null)
            .output("if_true", "any")
            .output("if_false", "any")
            .streaming()
            .consumes_stream(),
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

/// Routes each `value` to `if_true` or `if_false`. As NodeTool's, it drains both inputs as
/// streams and pairs the n-th value with the n-th condition; once the condition stream has ended
/// (or is not wired) the last condition applies to later values. Unlike NodeTool's, a value
/// waits for its condition instead of taking whichever condition arrived last, so the branch
/// never depends on arrival order. With no value arriving at all, the literal `value` is routed
/// once by the last condition. Null values are not emitted (NodeTool never emits None).
#[derive(Debug)]
struct If {
    spec: NodeSpec,
}

impl If {
    async fn route(out: &mut Emitter, condition: bool, value: Value) -> Result<()> {
        if value.is_null() {
            return Ok(());
        }
        let slot = if condition { "if_true" } else { "if_false" };
        out.emit(slot, value).await
    }
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
        Self::route(out, truthy(&i.value("condition")), i.value("value")).await
    }

    async fn run_stream(
        &self,
        _: &ProcessingContext,
        props: &NodeInputs,
        inbox: &mut Inbox,
        out: &mut Emitter,
    ) -> Result<()> {
        let cond_handle = inbox.handle_index("condition");
        let value_handle = inbox.handle_index("value");
        let mut cond_open = cond_handle.is_some();
        let mut value_open = value_handle.is_some();
        // The condition in force once the queue is empty: the literal, then the last one used.
        let mut current = truthy(&props.value("condition"));
        let mut latest_seen = current;
        let mut conds: VecDeque<bool> = VecDeque::new();
        let mut values: VecDeque<Value> = VecDeque::new();
        let mut routed_any = false;
        loop {
            while !values.is_empty() {
                let cond = match conds.pop_front() {
                    Some(c) => c,
                    None if !cond_open => current,
                    None => break,
                };
                current = cond;
                routed_any = true;
                let value = values.pop_front().unwrap_or(Value::Null);
                Self::route(out, cond, value).await?;
            }
            // Read only the handle that unblocks a waiting item, so the other handle's items stay
            // in the inbox and keep backpressure on their producer.
            let (handle, item) = if !values.is_empty() && cond_open {
                match inbox.recv("condition").await? {
                    Some(c) => (cond_handle, c),
                    None => {
                        cond_open = false;
                        continue;
                    }
                }
            } else if !conds.is_empty() && value_open {
                match inbox.recv("value").await? {
                    Some(v) => (value_handle, v),
                    None => {
                        value_open = false;
                        continue;
                    }
                }
            } else {
                match inbox.next_msg().await? {
                    None => break,
                    Some(InMsg::End { handle }) => {
                        cond_open &= Some(handle) != cond_handle;
                        value_open &= Some(handle) != value_handle;
                        continue;
                    }
                    Some(InMsg::Item { handle, value, .. }) => (Some(handle), value),
                }
            };
            if handle == cond_handle {
                latest_seen = truthy(&item);
                if value_open {
                    conds.push_back(latest_seen);
                }
            } else if handle == value_handle {
                values.push_back(item);
            }
        }
        if !routed_any {
            Self::route(out, latest_seen, props.value("value")).await?;
        }
        Ok(())
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
