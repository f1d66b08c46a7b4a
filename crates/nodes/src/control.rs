//! `nodetool.control.*`: If (pairs a value stream with a condition stream), ForEach and
//! Collection (generators over a list), Collect (drains a stream into a list), and the stream
//! operators of NodeTool's TypeScript base-nodes: Chunk, Count, Take, Drop, Last, Reroute; and
//! Loop, which feeds a body's result back into itself.

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use nodetool_core::{Error, Result};

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
            // The TypeScript ForEach's cap; -1 (or any negative) emits the whole list.
            .input("limit", "int", json!(-1))
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
    r.register(Arc::new(ForEach {
        spec: NodeSpec::new("nodetool.control.Collection", "Asset Collection")
            .input("items", "list[any]", json!([]))
            .output("output", "any")
            .output("index", "int")
            .streaming(),
    }));
    let stream_op = |class: &str, title: &str| {
        NodeSpec::new(format!("nodetool.control.{class}"), title)
            .input("input_item", "any", Value::Null)
            .consumes_stream()
    };
    for (spec, op) in [
        (
            stream_op("Chunk", "Chunk")
                .input("size", "int", json!(10))
                .output("output", "list[any]")
                .output("index", "int")
                .streaming(),
            StreamOp::Chunk,
        ),
        (
            stream_op("Count", "Count").output("output", "int"),
            StreamOp::Count,
        ),
        (
            stream_op("Take", "Take")
                .input("n", "int", json!(1))
                .output("output", "any")
                .output("index", "int")
                .streaming(),
            StreamOp::Take,
        ),
        (
            stream_op("Drop", "Drop")
                .input("n", "int", json!(1))
                .output("output", "any")
                .output("index", "int")
                .streaming(),
            StreamOp::Drop,
        ),
        (
            stream_op("Last", "Last").output("output", "any"),
            StreamOp::Last,
        ),
    ] {
        r.register(Arc::new(StreamNode { spec, op }));
    }
    r.register(Arc::new(Loop {
        spec: NodeSpec::new("nodetool.control.Loop", "Loop")
            .input("initial", "any", Value::Null)
            .input("next", "any", Value::Null)
            .input("condition", "bool", json!(true))
            .input("max_iterations", "int", json!(DEFAULT_MAX_ITERATIONS))
            .output("value", "any")
            .output("index", "int")
            .output("done", "any")
            .feedback("next")
            .feedback("condition")
            .streaming()
            .consumes_stream(),
    }));
    r.register(Arc::new(StreamNode {
        spec: NodeSpec::new("nodetool.control.Reroute", "Reroute")
            .input("input_value", "any", Value::Null)
            .output("output", "any")
            .consumes_stream()
            .streaming(),
        op: StreamOp::Reroute,
    }));
}

/// NodeTool's Loop bounds (TypeScript `kernel/src/loop.ts`).
const DEFAULT_MAX_ITERATIONS: i64 = 10;
const MAX_ITERATIONS_LIMIT: i64 = 1000;

/// `nodetool.control.Loop` (NodeTool's TypeScript kernel): for each `initial` value, emits it on
/// `value` with `index` 0, waits for the body to feed `next` (and `condition`, when wired) back,
/// and runs again with `next` while the condition holds and fewer than `max_iterations` (1..=1000,
/// default 10) passes have run; then emits the last `next` on `done`. The body runs at least once;
/// with `condition` unwired it runs exactly `max_iterations` times. The edges into `next` and
/// `condition` close a cycle, which validation allows only there. A run whose body stops feeding
/// back (a branch that drops the value) ends without `done` when the graph is quiescent, instead
/// of waiting forever. Each pass must feed back one value: the runs are sequential, so unlike
/// NodeTool's correlation lineage, a second value for a pass is taken as the next pass's.
#[derive(Debug)]
struct Loop {
    spec: NodeSpec,
}

#[async_trait]
impl NodeImpl for Loop {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(&self, _: &ProcessingContext, _: &NodeInputs, _: &mut Emitter) -> Result<()> {
        Err(Error::unexpected("Loop runs through run_stream"))
    }

    async fn run_stream(
        &self,
        ctx: &ProcessingContext,
        props: &NodeInputs,
        inbox: &mut Inbox,
        out: &mut Emitter,
    ) -> Result<()> {
        use nodetool_engine::node::Wake;
        let max = props
            .opt_i64("max_iterations")?
            .unwrap_or(DEFAULT_MAX_ITERATIONS)
            .clamp(1, MAX_ITERATIONS_LIMIT);
        let (initial_h, next_h, cond_h) = (
            inbox.handle_index("initial"),
            inbox.handle_index("next"),
            inbox.handle_index("condition"),
        );
        // Initial values waiting for their run; unwired, the literal is the one run.
        let mut starts: VecDeque<Value> = VecDeque::new();
        let mut initial_open = initial_h.is_some();
        if initial_h.is_none() {
            starts.push_back(props.value("initial"));
        }
        let (mut next_open, mut cond_open) = (next_h.is_some(), cond_h.is_some());
        loop {
            let start = match starts.pop_front() {
                Some(v) => v,
                None if initial_open => match inbox.recv("initial").await? {
                    Some(v) => v,
                    None => break,
                },
                None => break,
            };
            let mut iteration = 0i64;
            out.emit("value", start).await?;
            out.emit("index", json!(iteration)).await?;
            let (mut next, mut cond): (Option<Value>, Option<bool>) = (None, None);
            loop {
                ctx.check_cancelled()?;
                if let Some(n) = next.clone().filter(|_| cond_h.is_none() || cond.is_some()) {
                    let again = cond.unwrap_or(true);
                    if again && iteration + 1 < max {
                        iteration += 1;
                        next = None;
                        cond = None;
                        out.emit("value", n).await?;
                        out.emit("index", json!(iteration)).await?;
                        continue;
                    }
                    if again && cond_h.is_some() {
                        ctx.log(
                            nodetool_engine::events::Severity::Warning,
                            format!(
                                "Loop stopped after max_iterations ({max}) while its condition \
                                 was still true."
                            ),
                        );
                    }
                    out.emit("done", n).await?;
                    break;
                }
                let feedback_closed = (next.is_none() && !next_open)
                    || (cond_h.is_some() && cond.is_none() && !cond_open);
                if feedback_closed {
                    ctx.log(
                        nodetool_engine::events::Severity::Info,
                        "Loop run ended without a result: its feedback input closed",
                    );
                    break;
                }
                match inbox.next_or_quiet().await? {
                    Wake::Quiet => {
                        ctx.log(
                            nodetool_engine::events::Severity::Info,
                            "Loop run ended without a result: the loop body stopped feeding back",
                        );
                        break;
                    }
                    Wake::Ended => {
                        next_open = false;
                        cond_open = false;
                        initial_open = false;
                    }
                    Wake::Msg(InMsg::End { handle }) => {
                        next_open &= Some(handle) != next_h;
                        cond_open &= Some(handle) != cond_h;
                        initial_open &= Some(handle) != initial_h;
                    }
                    Wake::Msg(InMsg::Item { handle, value, .. }) => {
                        if Some(handle) == next_h {
                            next = Some(value);
                        } else if Some(handle) == cond_h {
                            cond = Some(truthy(&value));
                        } else if Some(handle) == initial_h {
                            starts.push_back(value);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// What a [`StreamNode`] does with the items of its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamOp {
    /// Lists of `size` items (the last one shorter), each with its batch index.
    Chunk,
    /// The number of items, once the stream ends.
    Count,
    /// The first `n` items, each with its index; the rest is drained.
    Take,
    /// Every item after the first `n`, indexed from 0.
    Drop,
    /// Only the final item (nothing for an empty stream).
    Last,
    /// Every item unchanged, as it arrives.
    Reroute,
}

/// The stream operators of NodeTool's TypeScript `control.ts`. Each drains its one streamed
/// input; an unwired input is the literal value as a stream of one (or none when null).
#[derive(Debug)]
struct StreamNode {
    spec: NodeSpec,
    op: StreamOp,
}

impl StreamNode {
    fn input_name(&self) -> &'static str {
        if self.op == StreamOp::Reroute {
            "input_value"
        } else {
            "input_item"
        }
    }

    /// A count property that must not be negative (`size` must be at least 1).
    fn count(props: &NodeInputs, name: &'static str, min: i64) -> Result<usize> {
        let v = props.opt_i64(name)?.unwrap_or(min.max(1));
        usize::try_from(v).ok().filter(|_| v >= min).ok_or_else(|| {
            Error::invalid_input(format!("input `{name}` must be at least {min}, got {v}"))
                .with_context("input", name)
        })
    }
}

#[async_trait]
impl NodeImpl for StreamNode {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(&self, _: &ProcessingContext, _: &NodeInputs, _: &mut Emitter) -> Result<()> {
        // Only reached through `run_stream`, which every StreamNode declares.
        Err(Error::unexpected("stream operators run through run_stream"))
    }

    async fn run_stream(
        &self,
        ctx: &ProcessingContext,
        props: &NodeInputs,
        inbox: &mut Inbox,
        out: &mut Emitter,
    ) -> Result<()> {
        let name = self.input_name();
        let (size, n) = match self.op {
            StreamOp::Chunk => (Self::count(props, "size", 1)?, 0),
            StreamOp::Take | StreamOp::Drop => (0, Self::count(props, "n", 0)?),
            _ => (0, 0),
        };
        // Unwired: the literal is a stream of one item (none when null).
        let mut literal = if inbox.handle_index(name).is_none() {
            Some(props.value(name)).filter(|v| !v.is_null())
        } else {
            None
        };
        let wired = inbox.handle_index(name).is_some();
        let mut seen = 0usize;
        let mut emitted = 0usize;
        let mut batch = Vec::new();
        let mut budget = nodetool_engine::limits::Budget::new();
        let mut last = None;
        loop {
            let item = if wired {
                inbox.recv(name).await?
            } else {
                literal.take()
            };
            let Some(item) = item else { break };
            ctx.check_cancelled()?;
            seen += 1;
            match self.op {
                StreamOp::Chunk => {
                    budget.add("the chunk", &item)?;
                    batch.push(item);
                    if batch.len() >= size {
                        budget.reset();
                        out.emit("output", Value::Array(std::mem::take(&mut batch)))
                            .await?;
                        out.emit("index", json!(emitted)).await?;
                        emitted += 1;
                    }
                }
                StreamOp::Take if emitted < n => {
                    out.emit("output", item).await?;
                    out.emit("index", json!(emitted)).await?;
                    emitted += 1;
                }
                StreamOp::Drop if seen > n => {
                    out.emit("output", item).await?;
                    out.emit("index", json!(emitted)).await?;
                    emitted += 1;
                }
                StreamOp::Last => last = Some(item),
                StreamOp::Reroute => out.emit("output", item).await?,
                StreamOp::Count | StreamOp::Take | StreamOp::Drop => {}
            }
        }
        match self.op {
            StreamOp::Chunk if !batch.is_empty() => {
                out.emit("output", Value::Array(batch)).await?;
                out.emit("index", json!(emitted)).await?;
            }
            StreamOp::Count => out.emit("output", json!(seen)).await?,
            StreamOp::Last => {
                if let Some(item) = last {
                    out.emit("output", item).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }
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
        // ForEach iterates `input_list`, Collection its `items`.
        let name = if self.spec.input_spec("items").is_some() {
            "items"
        } else {
            "input_list"
        };
        let limit = match i.opt_i64("limit")? {
            Some(n) if n >= 0 => usize::try_from(n).unwrap_or(usize::MAX),
            _ => usize::MAX,
        };
        for (index, item) in i.list(name)?.into_iter().take(limit).enumerate() {
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
        let mut budget = nodetool_engine::limits::Budget::new();
        while let Some(item) = inbox.recv("input_item").await? {
            budget.add("the collected list", &item)?;
            items.push(item);
        }
        out.emit("output", Value::Array(items)).await
    }
}
