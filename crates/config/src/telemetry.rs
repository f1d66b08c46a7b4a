//! Trace export (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
//! `OTEL_SERVICE_NAME`): the standard OpenTelemetry variables, read here like every setting.
//! Off unless an endpoint is set.

use std::collections::BTreeMap;

use nodetool_core::Result;

use crate::parse;
use crate::settings::Reader;

/// Where spans go, if anywhere.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TelemetrySettings {
    /// The OTLP/HTTP traces URL (`…/v1/traces`): `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as given,
    /// else `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`, as the OpenTelemetry spec says.
    /// `None`: no export.
    pub otlp_traces_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// A worker process whose parent forwards its spans: they go to the parent over the worker
    /// protocol instead of to a collector (a Docker worker has no network). Only a parent sets it,
    /// with [`RELAY_ENV`] in the worker's environment ([`Self::worker_env`]).
    pub relay_to_parent: bool,
}

/// `1` in a worker's environment: send spans to the parent ([`TelemetrySettings::relay_to_parent`]).
pub const RELAY_ENV: &str = "NODETOOL_TRACE_RELAY";

impl TelemetrySettings {
    pub(crate) fn read(r: &Reader<'_>) -> Result<Self> {
        let traces = r.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", parse::url)?;
        let base = r.get("OTEL_EXPORTER_OTLP_ENDPOINT", parse::url)?;
        Ok(Self {
            otlp_traces_endpoint: traces.or_else(|| base.map(|b| format!("{b}/v1/traces"))),
            service_name: r.require("OTEL_SERVICE_NAME", |s| Ok(s.to_owned()))?,
            relay_to_parent: false,
        })
    }

    /// For a process that loads no settings (the `nodetool worker` child): the same values from
    /// its environment alone, which its parent set from [`Self::worker_env`]. A malformed value
    /// turns export off.
    pub fn from_env(env: &BTreeMap<String, String>) -> Self {
        let get = |k: &str| {
            env.get(k)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .and_then(|v| parse::url(v).ok())
        };
        let traces = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        let base = get("OTEL_EXPORTER_OTLP_ENDPOINT");
        Self {
            otlp_traces_endpoint: traces.or_else(|| base.map(|b| format!("{b}/v1/traces"))),
            service_name: env
                .get("OTEL_SERVICE_NAME")
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "nodetool".to_owned()),
            relay_to_parent: env.get(RELAY_ENV).is_some_and(|v| v.trim() == "1"),
        }
    }

    /// The environment of a worker of a process with these settings: when this process exports,
    /// its workers relay their spans to it ([`RELAY_ENV`]) under the same service name; they
    /// are given no collector of their own (a Docker worker could not reach it, and the parent
    /// sends their spans on). [`Self::from_env`] reads it back.
    pub fn worker_env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        if self.otlp_traces_endpoint.is_some() {
            env.insert(RELAY_ENV.to_owned(), "1".to_owned());
            env.insert("OTEL_SERVICE_NAME".to_owned(), self.service_name.clone());
        }
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_of_an_exporting_process_relays_its_spans_to_it() {
        let t = TelemetrySettings {
            otlp_traces_endpoint: Some("http://127.0.0.1:4318/v1/traces".into()),
            service_name: "svc".into(),
            relay_to_parent: false,
        };
        // The worker relays to its parent, under the parent's service name, with no collector.
        assert_eq!(
            TelemetrySettings::from_env(&t.worker_env()),
            TelemetrySettings {
                otlp_traces_endpoint: None,
                service_name: "svc".into(),
                relay_to_parent: true,
            }
        );
        let off = TelemetrySettings::from_env(&BTreeMap::new());
        assert_eq!(off.otlp_traces_endpoint, None);
        assert!(off.worker_env().is_empty());
        let mut bad = BTreeMap::new();
        bad.insert(
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
            "not a url".to_owned(),
        );
        assert_eq!(TelemetrySettings::from_env(&bad).otlp_traces_endpoint, None);
        let mut base = BTreeMap::new();
        base.insert(
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
            "http://c:4318/".to_owned(),
        );
        assert_eq!(
            TelemetrySettings::from_env(&base)
                .otlp_traces_endpoint
                .as_deref(),
            Some("http://c:4318/v1/traces")
        );
    }
}
