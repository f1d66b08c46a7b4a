//! W3C Trace Context: the `traceparent` value a client sends so that a job's spans join its
//! trace (<https://www.w3.org/TR/trace-context/#traceparent-header>).
//!
//! Parsing is lenient in the way the spec asks: a malformed value is `None` (the caller starts a
//! fresh trace), never an error; a future version is read for its first four fields.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Spans this process gave up exporting: dropped because the export queue was full, or in a
/// batch the collector did not take. Process-wide, as the exporter is (`nodetool` counts them,
/// `/metrics` shows them as `nodetool_dropped_spans_total`).
static DROPPED_SPANS: AtomicU64 = AtomicU64::new(0);

/// Counts `n` spans given up on (see [`dropped_spans`]).
pub fn count_dropped_spans(n: u64) {
    DROPPED_SPANS.fetch_add(n, Ordering::Relaxed);
}

/// Spans this process has given up exporting since it started.
pub fn dropped_spans() -> u64 {
    DROPPED_SPANS.load(Ordering::Relaxed)
}

/// A batch of finished spans a worker process hands its parent over the worker protocol, for
/// the parent to send to its collector: a Docker worker has no network, and a subprocess worker's
/// spans then reach the collector before its job's outcome does, not at its exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayedSpans {
    /// How many spans `otlp` holds (counted as dropped if the parent cannot send them on).
    pub spans: u32,
    /// Spans the worker gave up on before this batch (its buffer was full): the parent counts
    /// them, since only the parent's count is shown (`/metrics`).
    pub dropped: u32,
    /// An OTLP `ExportTraceServiceRequest`, protobuf-encoded: the body of an OTLP/HTTP export.
    pub otlp: bytes::Bytes,
}

type SpanSource = Box<dyn Fn() -> Option<RelayedSpans> + Send + Sync>;
type SpanForwarder = Box<dyn Fn(RelayedSpans) + Send + Sync>;

/// The worker process's finished spans, buffered for its parent (set by the binary).
static RELAY_SOURCE: OnceLock<SpanSource> = OnceLock::new();
/// Where the parent process sends relayed spans (set by the binary when it exports).
static FORWARDER: OnceLock<SpanForwarder> = OnceLock::new();

/// Makes `source` the answer of [`take_relayed_spans`]. Process-wide, like the tracing
/// subscriber it serves: `false` (and nothing changes) when one was set before.
pub fn set_relay_source(source: impl Fn() -> Option<RelayedSpans> + Send + Sync + 'static) -> bool {
    RELAY_SOURCE.set(Box::new(source)).is_ok()
}

/// The spans that ended since the last call, for the parent (`None`: none, or this process
/// does not relay its spans).
pub fn take_relayed_spans() -> Option<RelayedSpans> {
    RELAY_SOURCE.get().and_then(|take| take())
}

/// Makes `forward` the destination of [`forward_spans`]; `false` when one was set before.
pub fn set_span_forwarder(forward: impl Fn(RelayedSpans) + Send + Sync + 'static) -> bool {
    FORWARDER.set(Box::new(forward)).is_ok()
}

/// Sends a worker's spans on to this process's collector and counts the ones it dropped. MUST
/// NOT block: the forwarder queues them (or drops and counts them). With no forwarder they are
/// counted as dropped.
pub fn forward_spans(batch: RelayedSpans) {
    count_dropped_spans(u64::from(batch.dropped));
    if batch.spans == 0 {
        return;
    }
    match FORWARDER.get() {
        Some(forward) => forward(batch),
        None => count_dropped_spans(u64::from(batch.spans)),
    }
}

/// A parsed `traceparent`: `{version}-{trace-id}-{parent-id}-{flags}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

impl TraceParent {
    /// Whether the caller sampled this trace (flag bit 0).
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// Reads a `traceparent` value; `None` for anything the spec says to ignore: a wrong
    /// length or separator, upper-case or non-hex digits, version `ff`, an all-zero trace or
    /// parent id, or extra fields on version `00`.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        let mut parts = value.split('-');
        let version = parts.next()?;
        let trace_id = parts.next()?;
        let parent_id = parts.next()?;
        let flags = parts.next()?;
        let rest: Vec<&str> = parts.collect();
        if version.len() != 2 || trace_id.len() != 32 || parent_id.len() != 16 || flags.len() != 2 {
            return None;
        }
        let version = hex_byte(version)?;
        if version == 0xff || (version == 0 && !rest.is_empty()) {
            return None;
        }
        let mut t = [0u8; 16];
        decode_hex(trace_id, &mut t)?;
        let mut p = [0u8; 8];
        decode_hex(parent_id, &mut p)?;
        if t == [0; 16] || p == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id: t,
            parent_id: p,
            flags: hex_byte(flags)?,
        })
    }
}

/// The version-00 header value.
impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("00-")?;
        for b in self.trace_id {
            write!(f, "{b:02x}")?;
        }
        f.write_str("-")?;
        for b in self.parent_id {
            write!(f, "{b:02x}")?;
        }
        write!(f, "-{:02x}", self.flags)
    }
}

/// Spans and trace context (feature `otel`): what the crates that start spans share.
#[cfg(feature = "otel")]
mod spans {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::TraceParent;

    /// Makes `span` a child of the remote `parent` (a caller's or a parent process's span).
    pub fn join(span: &tracing::Span, parent: &TraceParent) {
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

    /// `span`'s own context as a `traceparent`, when it is traced (an OpenTelemetry layer is
    /// installed and the trace is recorded).
    pub fn traceparent_of(span: &tracing::Span) -> Option<TraceParent> {
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        sc.is_valid().then(|| TraceParent {
            trace_id: sc.trace_id().to_bytes(),
            parent_id: sc.span_id().to_bytes(),
            flags: sc.trace_flags().to_u8(),
        })
    }
}

#[cfg(feature = "otel")]
pub use spans::{join, traceparent_of};

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex_byte(s: &str) -> Option<u8> {
    let b = s.as_bytes();
    Some(hex_digit(b[0])? << 4 | hex_digit(b[1])?)
}

fn decode_hex(s: &str, out: &mut [u8]) -> Option<()> {
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        out[i] = hex_digit(pair[0])? << 4 | hex_digit(pair[1])?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::TraceParent;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_and_writes_the_spec_example() {
        let t = TraceParent::parse(GOOD).unwrap();
        assert_eq!(t.trace_id[0], 0x4b);
        assert_eq!(t.parent_id[7], 0xb7);
        assert!(t.sampled());
        assert_eq!(t.to_string(), GOOD);
        assert_eq!(TraceParent::parse(&format!(" {GOOD} ")), Some(t));
    }

    #[test]
    fn future_versions_keep_their_first_fields() {
        let v = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra";
        let t = TraceParent::parse(v).unwrap();
        assert!(!t.sampled());
    }

    #[test]
    fn malformed_values_are_ignored() {
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "0-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            "00-é4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }
}
