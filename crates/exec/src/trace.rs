//! Job spans: one `job` span per job (target `nodetool::trace`, fields job id, user, workflow,
//! strategy), joined to the caller's W3C trace when the request carried a `traceparent`, and
//! its own context handed to workers so their spans are its children.
//!
//! The OpenTelemetry API calls behind these do nothing unless the binary installed an
//! OpenTelemetry layer (export is the binary's choice, see `nodetool_config::TelemetrySettings`).

use nodetool_core::trace::TraceParent;

use crate::strategy::JobSpec;

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
        nodetool_core::trace::join(&span, &parent);
    }
    span
}

/// `span`'s own context as a `traceparent` header value, when it is traced.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    nodetool_core::trace::traceparent_of(span).map(|t| t.to_string())
}
