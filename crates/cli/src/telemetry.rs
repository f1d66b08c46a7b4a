//! The process's tracing: log lines on stderr (`--log`, `RUST_LOG`, default `warn`) and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) is set, every `nodetool::trace` span
//! (jobs, nodes) exported over OTLP/HTTP in batches.
//!
//! Export never slows or fails a job: spans queue in a bounded buffer ([`QUEUE`]) that a
//! background thread drains; when the collector is slow or gone the buffer fills and further
//! spans are dropped. Dropped spans, and those of batches the collector did not take, are
//! counted ([`nodetool_core::trace::count_dropped_spans`]; `/metrics` shows the total).

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
}

impl Telemetry {
    /// Sends the spans still queued (bounded by the exporter's timeout) and stops the exporter.
    /// Blocking: call it outside the async runtime.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                tracing::warn!(error = %e, "flushing the last spans failed");
            }
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
    let provider = settings.otlp_traces_endpoint.as_deref().and_then(|url| {
        match exporter(url, &settings.service_name) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("warning: span export to {url} is off: {e}");
                None
            }
        }
    });
    // Only our job and node spans are exported, whatever the log filter says.
    let spans = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("nodetool"))
            .with_filter(Targets::new().with_target("nodetool::trace", LevelFilter::INFO))
    });
    tracing_subscriber::registry().with(logs).with(spans).init();
    Telemetry { provider }
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
