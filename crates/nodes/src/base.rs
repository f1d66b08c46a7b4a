//! `nodetool.workflows.base_node.*`: Preview (posts what it receives), Comment and Group
//! (editor-only, never run).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use nodetool_core::Result;

use nodetool_engine::context::ProcessingContext;
use nodetool_engine::node::{Emitter, Inbox, NodeImpl, NodeInputs, NodeKind, NodeSpec};
use nodetool_engine::registry::Registry;

pub fn register(r: &mut Registry) {
    r.register(Arc::new(Preview {
        spec: NodeSpec::new("nodetool.workflows.base_node.Preview", "Preview")
            .input("value", "any", Value::Null)
            .input("name", "str", json!(""))
            .consumes_stream(),
    }));
    for (class, title) in [("Comment", "Comment"), ("Group", "Group")] {
        r.register(Arc::new(Inert {
            spec: NodeSpec::new(format!("nodetool.workflows.base_node.{class}"), title)
                .dynamic()
                .kind(NodeKind::Inert),
        }));
    }
}

#[derive(Debug)]
struct Preview {
    spec: NodeSpec,
}

#[async_trait]
impl NodeImpl for Preview {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        i: &NodeInputs,
        _: &mut Emitter,
    ) -> Result<()> {
        ctx.post_preview(i.value("value"));
        Ok(())
    }

    async fn run_stream(
        &self,
        ctx: &ProcessingContext,
        props: &NodeInputs,
        inbox: &mut Inbox,
        out: &mut Emitter,
    ) -> Result<()> {
        if inbox.handle_index("value").is_none() {
            return self.process(ctx, props, out).await;
        }
        while let Some(v) = inbox.recv("value").await? {
            ctx.post_preview(v);
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Inert {
    spec: NodeSpec,
}

#[async_trait]
impl NodeImpl for Inert {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(&self, _: &ProcessingContext, _: &NodeInputs, _: &mut Emitter) -> Result<()> {
        Ok(())
    }
}
