//! The process's tracing: log lines on stderr (`--log`, `RUST_LOG`, default `warn`) and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `…_TRACES_ENDPOINT`) is set, every `nodetool::trace` span
//! (jobs, nodes) exported over OTLP/HTTP in batches.
//!
//! Export never slows or fails a job: spans queue in a bounded buffer that a background thread
//! drains; when the collector is slow or gone the buffer fills and further spans are dropped
//! (the SDK logs how many).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
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

fn exporter(url: &str, service: &str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build())
}
