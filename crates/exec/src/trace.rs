//! Job spans: one `job` span per job (target `nodetool::trace`, fields job id, user, workflow,
//! strategy), joined to the caller's W3C trace when the request carried a `traceparent`, and
//! its own context handed to workers so their spans are its children.
//!
//! The OpenTelemetry API calls here do nothing unless the binary installed an OpenTelemetry
//! layer (export is the binary's choice, see `nodetool_config::TelemetrySettings`).

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use nodetool_core::trace::TraceParent;

use crate::strategy::JobSpec;

/// The target of every span meant for export (`job` here, `node` in the engine).
pub const TRACE_TARGET: &str = "nodetool::trace";

/// A `job` span for `spec`, child of its `traceparent` when it has a valid one.
pub fn job_span(spec: &JobSpec, strategy: &str) -> tracing::Span {
    let span = tracing::info_span!(
        target: "nodetool::trace",
        "job",
        job_id = %spec.job_id,
        user_id = %spec.user_id,
        workflow_id = %spec.workflow_id,
        strategy,
    );
    if let Some(parent) = spec.traceparent.as_deref().and_then(TraceParent::parse) {
        let remote = SpanContext::new(
            TraceId::from_bytes(parent.trace_id),
            SpanId::from_bytes(parent.parent_id),
            TraceFlags::new(parent.flags),
            true,
            TraceState::default(),
        );
        // Fails only when no OpenTelemetry layer is installed: then there is nothing to join.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
    span
}

/// `span`'s own context as a `traceparent`, when it is being traced (an OpenTelemetry layer is
/// installed and the trace is recorded).
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| {
        TraceParent {
            trace_id: sc.trace_id().to_bytes(),
            parent_id: sc.span_id().to_bytes(),
            flags: sc.trace_flags().to_u8(),
        }
        .to_string()
    })
}
