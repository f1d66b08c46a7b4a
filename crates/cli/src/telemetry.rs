//! The process's tracing: log lines on stderr (`--log`, `RUST_LOG`, default `warn`) and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) is set, every `nodetool::trace` span
//! (jobs, nodes) exported over OTLP/HTTP in batches.
//!
//! Export never slows or fails a job: spans queue in a bounded buffer ([`QUEUE`]) that a
//! background thread drains; when the collector is slow or gone the buffer fills and further
//! spans are dropped. Dropped spans, and those of batches the collector did not take, are
//! counted ([`nodetool_core::trace::count_dropped_spans`]; `/metrics` shows the total).
//!
//! Workers do not export: a worker process (`relay_to_parent`, set by its parent) buffers its
//! spans ([`RelayBuffer`]) and hands them to the parent in its last frame before the outcome; the
//! parent posts those bytes, already OTLP protobuf, to its own collector ([`Forwarder`]: a thread
//! behind a bounded queue, so the job path never waits for it).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter,
    SpanProcessor,
};
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::prelude::*;

use nodetool_config::TelemetrySettings;

/// Keeps the span exporter alive; [`Telemetry::shutdown`] flushes what is queued.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    forwarder: Option<Arc<Forwarder>>,
}

impl Telemetry {
    /// Sends the spans still queued, this process's and its workers' (bounded by the exporter's
    /// timeout), and stops the exporter. Blocking: call it outside the async runtime.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                tracing::warn!(error = %e, "flushing the last spans failed");
            }
        }
        if let Some(forwarder) = self.forwarder {
            forwarder.finish();
        }
    }
}

/// Installs the global subscriber. An exporter that cannot be built is reported on stderr and
/// left out: tracing problems never stop the command.
pub fn init(filter: Option<&str>, settings: &TelemetrySettings) -> Telemetry {
    let filter = filter
        .map(EnvFilter::new)
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let (provider, forwarder) = if settings.relay_to_parent {
        (Some(relay_provider(&settings.service_name)), None)
    } else {
        match settings.otlp_traces_endpoint.as_deref() {
            None => (None, None),
            Some(url) => match exporter(url, &settings.service_name) {
                Ok(p) => (Some(p), Some(Forwarder::start(url))),
                Err(e) => {
                    eprintln!("warning: span export to {url} is off: {e}");
                    (None, None)
                }
            },
        }
    };
    // Only our job and node spans are exported, whatever the log filter says.
    let spans = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("nodetool"))
            .with_filter(Targets::new().with_target("nodetool::trace", LevelFilter::INFO))
    });
    tracing_subscriber::registry().with(logs).with(spans).init();
    Telemetry {
        provider,
        forwarder,
    }
}

/// Spans waiting for export at most; past it a finished span is dropped (and counted).
pub const QUEUE: usize = 2048;
/// How long a span may wait for its batch.
const EXPORT_DELAY: Duration = Duration::from_secs(1);

fn exporter(url: &str, service: &str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let pending = Arc::new(AtomicUsize::new(0));
    let batches = BatchSpanProcessor::builder(CountingExporter {
        inner: exporter,
        pending: pending.clone(),
    })
    .with_batch_config(
        BatchConfigBuilder::default()
            .with_max_queue_size(QUEUE)
            .with_scheduled_delay(EXPORT_DELAY)
            .build(),
    )
    .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(Bounded {
            inner: batches,
            pending,
        })
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build())
}

/// The batch processor behind a count of the spans handed to it and not yet exported: past
/// [`QUEUE`] a span is dropped here, counted, before the SDK's own queue (which drops without
/// telling) could be full — that queue never holds more than this count.
#[derive(Debug)]
struct Bounded {
    inner: BatchSpanProcessor,
    pending: Arc<AtomicUsize>,
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.pending.fetch_add(1, Ordering::AcqRel) >= QUEUE {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            nodetool_core::trace::count_dropped_spans(1);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, settling [`Bounded`]'s count per batch and counting the spans of a batch
/// the collector did not take (unreachable, refused, timed out) as dropped.
#[derive(Debug)]
struct CountingExporter<E> {
    inner: E,
    pending: Arc<AtomicUsize>,
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        self.pending.fetch_sub(n, Ordering::AcqRel);
        if result.is_err() {
            nodetool_core::trace::count_dropped_spans(n as u64);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// A worker's tracer: spans wait in a [`RelayBuffer`] until the worker sends them to its parent
/// (`nodetool_core::trace::take_relayed_spans`, right before the job's outcome).
fn relay_provider(service: &str) -> SdkTracerProvider {
    let buffer = Arc::new(RelayBuffer::default());
    let source = buffer.clone();
    nodetool_core::trace::set_relay_source(move || source.take());
    SdkTracerProvider::builder()
        .with_span_processor(RelayProcessor(buffer))
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build()
}

/// A worker's ended spans, at most [`QUEUE`] (past it a span is dropped and counted), and the
/// resource they are exported under.
#[derive(Debug, Default)]
struct RelayBuffer {
    spans: std::sync::Mutex<Vec<SpanData>>,
    /// Dropped since the last [`RelayBuffer::take`].
    dropped: AtomicUsize,
    resource: std::sync::Mutex<Option<opentelemetry_sdk::Resource>>,
}

impl RelayBuffer {
    fn push(&self, span: SpanData) {
        let mut spans = self.spans.lock().unwrap_or_else(|e| e.into_inner());
        if spans.len() >= QUEUE {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            spans.push(span);
        }
    }

    /// Everything buffered, as one OTLP request.
    fn take(&self) -> Option<nodetool_core::trace::RelayedSpans> {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
        use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
        use prost::Message as _;

        let spans = std::mem::take(&mut *self.spans.lock().unwrap_or_else(|e| e.into_inner()));
        let dropped = self.dropped.swap(0, Ordering::Relaxed) as u32;
        if spans.is_empty() && dropped == 0 {
            return None;
        }
        let n = spans.len() as u32;
        let resource = self
            .resource
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| opentelemetry_sdk::Resource::builder().build());
        let request = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                spans,
                &ResourceAttributesWithSchema::from(&resource),
            ),
        };
        Some(nodetool_core::trace::RelayedSpans {
            spans: n,
            dropped,
            otlp: request.encode_to_vec().into(),
        })
    }
}

#[derive(Debug)]
struct RelayProcessor(Arc<RelayBuffer>);

impl SpanProcessor for RelayProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        self.0.push(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    /// Spans that ended after the worker's last frame never reach the parent: counted.
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        let left = std::mem::take(&mut *self.0.spans.lock().unwrap_or_else(|e| e.into_inner()));
        nodetool_core::trace::count_dropped_spans(left.len() as u64);
        Ok(())
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        *self.0.resource.lock().unwrap_or_else(|e| e.into_inner()) = Some(resource.clone());
    }
}

/// Batches relayed by this process's workers waiting to be posted, at most.
const RELAY_QUEUE: usize = 256;

/// Posts workers' span batches to the collector from its own thread: a full queue, a refused
/// batch or an unreachable collector drops the batch and counts its spans, and never holds up
/// the job that sent it.
struct Forwarder {
    tx: std::sync::Mutex<Option<std::sync::mpsc::SyncSender<nodetool_core::trace::RelayedSpans>>>,
    done: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Forwarder {
    fn start(url: &str) -> Arc<Self> {
        let (tx, rx) =
            std::sync::mpsc::sync_channel::<nodetool_core::trace::RelayedSpans>(RELAY_QUEUE);
        let (done_tx, done) = std::sync::mpsc::channel();
        let url = url.to_owned();
        let spawned = std::thread::Builder::new()
            .name("span-forwarder".into())
            .spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build();
                for batch in rx {
                    let n = u64::from(batch.spans);
                    let Ok(client) = &client else {
                        nodetool_core::trace::count_dropped_spans(n);
                        continue;
                    };
                    let sent = client
                        .post(&url)
                        .header("content-type", "application/x-protobuf")
                        .body(batch.otlp)
                        .send();
                    match sent {
                        Ok(r) if r.status().is_success() => {}
                        Ok(r) => {
                            tracing::debug!(status = %r.status(), "the collector refused a worker's spans");
                            nodetool_core::trace::count_dropped_spans(n);
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "a worker's spans did not reach the collector");
                            nodetool_core::trace::count_dropped_spans(n);
                        }
                    }
                }
                let _ = done_tx.send(());
            });
        let forwarder = Arc::new(Self {
            tx: std::sync::Mutex::new(spawned.is_ok().then_some(tx)),
            done: std::sync::Mutex::new(done),
        });
        let hook = forwarder.clone();
        nodetool_core::trace::set_span_forwarder(move |batch| hook.send(batch));
        forwarder
    }

    fn send(&self, batch: nodetool_core::trace::RelayedSpans) {
        let n = u64::from(batch.spans);
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let queued = tx.as_ref().is_some_and(|tx| tx.try_send(batch).is_ok());
        if !queued {
            nodetool_core::trace::count_dropped_spans(n);
        }
    }

    /// Closes the queue and waits (bounded) for the batches in it to be posted.
    fn finish(&self) {
        drop(self.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        // Each post is bounded by the client's timeout; a collector that answers none of a
        // full queue is not waited for past this.
        let _ = done.recv_timeout(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;

    fn span(i: u64) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(7u128),
                SpanId::from(i + 1),
                TraceFlags::SAMPLED,
                false,
                Default::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: "node".into(),
            start_time: std::time::SystemTime::UNIX_EPOCH,
            end_time: std::time::SystemTime::UNIX_EPOCH + Duration::from_millis(1),
            attributes: vec![opentelemetry::KeyValue::new("node_id", i as i64)],
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    #[test]
    fn a_full_relay_buffer_counts_what_it_drops_and_hands_the_rest_as_one_otlp_request() {
        let mut processor = RelayProcessor(Arc::new(RelayBuffer::default()));
        processor.set_resource(
            &opentelemetry_sdk::Resource::builder()
                .with_service_name("svc")
                .build(),
        );
        for i in 0..(QUEUE as u64 + 3) {
            processor.on_end(span(i));
        }
        let batch = processor.0.take().expect("a batch");
        assert_eq!((batch.spans, batch.dropped), (QUEUE as u32, 3));
        let request = ExportTraceServiceRequest::decode(batch.otlp).expect("OTLP protobuf");
        let [resource_spans] = request.resource_spans.as_slice() else {
            panic!("one resource: {request:?}")
        };
        let service = resource_spans
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
            .and_then(|a| a.value.clone())
            .and_then(|v| v.value);
        assert_eq!(
            service,
            Some(
                opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue("svc".into())
            )
        );
        let sent: usize = resource_spans
            .scope_spans
            .iter()
            .map(|s| s.spans.len())
            .sum();
        assert_eq!(sent, QUEUE);
        // Taken: the next job starts from nothing.
        assert_eq!(processor.0.take(), None);
    }
}
