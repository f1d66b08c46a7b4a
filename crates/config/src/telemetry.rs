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
}

/// The variables a worker process needs to export its own spans to the same place.
pub const TELEMETRY_ENV: [&str; 3] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SERVICE_NAME",
];

impl TelemetrySettings {
    pub(crate) fn read(r: &Reader<'_>) -> Result<Self> {
        let traces = r.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", parse::url)?;
        let base = r.get("OTEL_EXPORTER_OTLP_ENDPOINT", parse::url)?;
        Ok(Self {
            otlp_traces_endpoint: traces.or_else(|| base.map(|b| format!("{b}/v1/traces"))),
            service_name: r.require("OTEL_SERVICE_NAME", |s| Ok(s.to_owned()))?,
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
        }
    }

    /// The environment that gives a worker these settings ([`Self::from_env`] reads it back).
    pub fn worker_env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        if let Some(url) = &self.otlp_traces_endpoint {
            env.insert("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT".to_owned(), url.clone());
            env.insert("OTEL_SERVICE_NAME".to_owned(), self.service_name.clone());
        }
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_env_round_trips() {
        let t = TelemetrySettings {
            otlp_traces_endpoint: Some("http://127.0.0.1:4318/v1/traces".into()),
            service_name: "svc".into(),
        };
        assert_eq!(TelemetrySettings::from_env(&t.worker_env()), t);
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
