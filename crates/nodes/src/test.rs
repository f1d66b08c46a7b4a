//! `nodetool.test.*`: nodes that exercise the runner and the execution strategies (sleep, block,
//! fail, progress, streams, big outputs, memory, panics, crashes).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use nodetool_core::{Error, ErrorKind, Result};

use nodetool_engine::context::ProcessingContext;
use nodetool_engine::node::{Emitter, NodeImpl, NodeInputs, NodeSpec};
use nodetool_engine::registry::Registry;

/// Upper bounds that keep a typo from taking the machine down.
const MAX_BIG_OUTPUT: i64 = 1 << 30;
const MAX_ALLOCATE_MB: i64 = 64 * 1024;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Sleep,
    Block,
    Fail,
    Progress,
    Generate,
    BigOutput,
    Allocate,
    Panic,
    Crash,
}

#[derive(Debug)]
struct TestNode {
    spec: NodeSpec,
    kind: Kind,
}

pub fn register(r: &mut Registry) {
    let t = |class: &str| NodeSpec::new(format!("nodetool.test.{class}"), class);
    let nodes = [
        (
            t("Sleep")
                .input("seconds", "float", json!(0.0))
                .input("value", "any", Value::Null)
                .output("output", "any")
                .cacheable(),
            Kind::Sleep,
        ),
        (
            // Blocks its thread and never looks at cancellation: what a hard deadline is for.
            // Not idempotent: the queue tests' stand-in for a node with side effects.
            t("Block")
                .input("seconds", "float", json!(0.0))
                .output("output", "any"),
            Kind::Block,
        ),
        (
            t("Fail")
                .input("message", "str", json!("failed on purpose"))
                .output("output", "any"),
            Kind::Fail,
        ),
        (
            t("Progress")
                .input("steps", "int", json!(10))
                .output("output", "int")
                .idempotent(),
            Kind::Progress,
        ),
        (
            t("Generate")
                .input("count", "int", json!(10))
                .output("output", "int")
                .streaming()
                .idempotent(),
            Kind::Generate,
        ),
        (
            t("BigOutput")
                .input("bytes", "int", json!(1024))
                .output("output", "str"),
            Kind::BigOutput,
        ),
        (
            t("Allocate")
                .input("megabytes", "int", json!(1))
                .output("output", "int"),
            Kind::Allocate,
        ),
        (
            t("Panic")
                .input("message", "str", json!("panicked on purpose"))
                .output("output", "any"),
            Kind::Panic,
        ),
        (t("Crash").output("output", "any"), Kind::Crash),
    ];
    for (spec, kind) in nodes {
        r.register(Arc::new(TestNode { spec, kind }));
    }
}

#[async_trait]
impl NodeImpl for TestNode {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    async fn process(
        &self,
        ctx: &ProcessingContext,
        i: &NodeInputs,
        out: &mut Emitter,
    ) -> Result<()> {
        match self.kind {
            Kind::Sleep => {
                let secs = i.f64("seconds").unwrap_or(0.0);
                if !(0.0..=86_400.0).contains(&secs) {
                    return Err(Error::invalid_input("seconds must be within 0..=86400"));
                }
                ctx.sleep(Duration::from_secs_f64(secs)).await?;
                out.emit("output", i.value("value")).await
            }
            Kind::Block => {
                let secs = i.f64("seconds").unwrap_or(0.0);
                if !(0.0..=86_400.0).contains(&secs) {
                    return Err(Error::invalid_input("seconds must be within 0..=86400"));
                }
                std::thread::sleep(Duration::from_secs_f64(secs));
                out.emit("output", json!(secs)).await
            }
            Kind::Fail => Err(Error::new(ErrorKind::Unexpected, i.str("message")?)
                .with_operation("nodetool.test.Fail")),
            Kind::Progress => {
                let steps = i.i64("steps")?.max(0);
                for step in 1..=steps {
                    ctx.check_cancelled()?;
                    ctx.post_progress(step, steps);
                    tokio::task::yield_now().await;
                }
                out.emit("output", json!(steps)).await
            }
            Kind::Generate => {
                let count = i.i64("count")?.max(0);
                for n in 0..count {
                    out.emit("output", json!(n)).await?;
                }
                Ok(())
            }
            Kind::BigOutput => {
                let n = i.i64("bytes")?;
                if !(0..=MAX_BIG_OUTPUT).contains(&n) {
                    return Err(Error::new(
                        ErrorKind::TooLarge,
                        "bytes must be within 0..=1GiB",
                    ));
                }
                out.emit("output", Value::String("x".repeat(n as usize)))
                    .await
            }
            Kind::Allocate => {
                let mb = i.i64("megabytes")?;
                if !(0..=MAX_ALLOCATE_MB).contains(&mb) {
                    return Err(Error::new(
                        ErrorKind::TooLarge,
                        "megabytes must be within 0..=65536",
                    ));
                }
                // Touch every page so the memory is really committed (and limits bite).
                let mut buf = vec![0u8; mb as usize * 1024 * 1024];
                for page in buf.chunks_mut(4096) {
                    page[0] = 1;
                }
                let touched: usize = buf.iter().step_by(4096).map(|b| *b as usize).sum();
                drop(buf);
                out.emit("output", json!(touched / 256)).await
            }
            Kind::Panic => {
                let msg = i.str("message")?;
                panic!("{msg}");
            }
            Kind::Crash => {
                // Kills the whole process on purpose: strategies must contain this.
                std::process::abort();
            }
        }
    }
}
