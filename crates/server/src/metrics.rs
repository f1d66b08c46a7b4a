//! `/metrics` in the Prometheus text format, rendered by hand from a few counters.
//!
//! Series:
//! - `nodetool_http_requests_total`, `nodetool_http_requests_in_flight`;
//! - `nodetool_storage_operations_total{op,status}`;
//! - `nodetool_jobs{status}`: jobs scheduled or running now (a gauge, from the manager's live
//!   records at scrape time);
//! - `nodetool_jobs_finished_total{strategy,status}` and the histogram
//!   `nodetool_job_duration_seconds{strategy,status}` (from start to finish; from submission for
//!   a job cancelled before it started), fed by the manager when each job finishes, counted
//!   since this process started;
//! - `nodetool_node_cache_hits_total`, `nodetool_node_cache_misses_total` and
//!   `nodetool_node_cache_hit_ratio` (hits / lookups since start; NaN before the first lookup) of
//!   the process's node cache (jobs run in this process, and the lookups subprocess and Docker
//!   workers make through their call channel);
//! - `nodetool_open_streams{kind}`: open SSE and NDJSON event streams, `/ws` sockets and
//!   terminal sockets;
//! - per node type, from each ended firing's figures (threaded, subprocess and Docker jobs of
//!   this process): `nodetool_node_firings_total{node_type,status}`,
//!   `nodetool_node_wall_seconds_total`, `nodetool_node_cpu_seconds_total`,
//!   `nodetool_node_storage_read_bytes_total`, `nodetool_node_storage_written_bytes_total`
//!   and `nodetool_node_cache_lookups_total{node_type,result}`;
//! - `nodetool_dropped_spans_total`: trace spans the OTLP export gave up on (a full queue, a
//!   collector that is slow or gone), process-wide.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use nodetool_engine::Status;
use nodetool_exec::node_stats::NodeTotals;
use nodetool_exec::JobRecord;

use crate::AppState;

/// Upper bounds (seconds) of the job duration histogram's buckets; `+Inf` is implied.
pub const JOB_DURATION_BUCKETS: [f64; 13] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// What an open stream is, for `nodetool_open_streams{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// `text/event-stream` responses (job events).
    Sse,
    /// `application/x-ndjson` responses (job events).
    Ndjson,
    /// `/ws` sessions.
    WebSocket,
    /// `/ws/terminal` sessions.
    Terminal,
}

impl StreamKind {
    const ALL: [StreamKind; 4] = [
        StreamKind::Sse,
        StreamKind::Ndjson,
        StreamKind::WebSocket,
        StreamKind::Terminal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Sse => "sse",
            StreamKind::Ndjson => "ndjson",
            StreamKind::WebSocket => "websocket",
            StreamKind::Terminal => "terminal",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Per bucket of [`JOB_DURATION_BUCKETS`], not cumulative.
    buckets: [u64; JOB_DURATION_BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, value: f64) {
        if let Some(i) = JOB_DURATION_BUCKETS.iter().position(|le| value <= *le) {
            self.buckets[i] += 1;
        }
        self.sum += value;
        self.count += 1;
    }
}

/// Process-wide counters of the server.
#[derive(Debug, Default)]
pub struct Metrics {
    requests_total: AtomicU64,
    requests_in_flight: AtomicI64,
    /// (operation, status code) → count.
    storage_ops: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Indexed by [`StreamKind::index`].
    open_streams: [AtomicI64; 4],
    /// (strategy, final status) → durations.
    job_durations: Mutex<BTreeMap<(String, &'static str), Histogram>>,
}

/// Keeps one stream counted in `nodetool_open_streams` until dropped.
#[derive(Debug)]
pub struct OpenStream {
    metrics: Arc<Metrics>,
    kind: StreamKind,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.metrics.open_streams[self.kind.index()].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Values read from outside [`Metrics`] when rendering.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Live (non-terminal) jobs by status; `None` when the server runs without a job manager.
    pub active_jobs: Option<BTreeMap<&'static str, u64>>,
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// What the nodes of this server's jobs cost, by node type.
    pub nodes: Vec<(String, NodeTotals)>,
}

impl Metrics {
    pub fn storage_op(&self, op: &'static str, status: StatusCode) {
        let mut ops = self.storage_ops.lock().unwrap_or_else(|p| p.into_inner());
        *ops.entry((op, status.as_u16())).or_default() += 1;
    }

    /// Counts a request as received and in flight until the returned guard is dropped.
    pub fn request_started(self: &Arc<Self>) -> InFlight {
        self.requests_total.fetch_add(1, Ordering::Relaxed);
        self.requests_in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    pub fn requests_in_flight(&self) -> i64 {
        self.requests_in_flight.load(Ordering::Relaxed)
    }

    /// Counts a stream as open until the returned guard is dropped.
    pub fn open_stream(self: &Arc<Self>, kind: StreamKind) -> OpenStream {
        self.open_streams[kind.index()].fetch_add(1, Ordering::Relaxed);
        OpenStream {
            metrics: self.clone(),
            kind,
        }
    }

    pub fn open_streams(&self, kind: StreamKind) -> i64 {
        self.open_streams[kind.index()].load(Ordering::Relaxed)
    }

    /// Records a finished job (its final record) in the finished counter and the duration
    /// histogram. Records that are not terminal are ignored.
    pub fn job_finished(&self, record: &JobRecord) {
        if !record.status.is_terminal() {
            return;
        }
        let Some(finished) = record.finished_at else {
            return;
        };
        let started = record.started_at.unwrap_or(record.created_at);
        let seconds = (finished - started)
            .to_std()
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let mut durations = self.job_durations.lock().unwrap_or_else(|p| p.into_inner());
        durations
            .entry((record.strategy.to_string(), record.status.as_str()))
            .or_default()
            .observe(seconds);
    }

    /// The Prometheus text for the server's own counters plus `snapshot`.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let mut out = String::new();
        self.render_http(&mut out);
        self.render_streams(&mut out);
        self.render_jobs(&mut out, snapshot.active_jobs.as_ref());
        render_cache(&mut out, snapshot.cache_hits, snapshot.cache_misses);
        render_nodes(&mut out, &snapshot.nodes);
        let _ = writeln!(
            out,
            "# HELP nodetool_dropped_spans_total Trace spans not exported (the export queue was \
             full or the collector did not take them); 0 with export off.\n\
             # TYPE nodetool_dropped_spans_total counter\n\
             nodetool_dropped_spans_total {}",
            nodetool_core::trace::dropped_spans()
        );
        out
    }

    fn render_http(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP nodetool_http_requests_total HTTP requests received.\n\
             # TYPE nodetool_http_requests_total counter\n\
             nodetool_http_requests_total {}",
            self.requests_total.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP nodetool_http_requests_in_flight HTTP requests being served, open streams included.\n\
             # TYPE nodetool_http_requests_in_flight gauge\n\
             nodetool_http_requests_in_flight {}",
            self.requests_in_flight()
        );
        let _ = writeln!(
            out,
            "# HELP nodetool_storage_operations_total Storage route requests by operation and status.\n\
             # TYPE nodetool_storage_operations_total counter"
        );
        let ops = self.storage_ops.lock().unwrap_or_else(|p| p.into_inner());
        for ((op, status), n) in ops.iter() {
            let _ = writeln!(
                out,
                "nodetool_storage_operations_total{{op=\"{op}\",status=\"{status}\"}} {n}"
            );
        }
    }

    fn render_streams(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP nodetool_open_streams Open event streams and WebSockets by kind.\n\
             # TYPE nodetool_open_streams gauge"
        );
        for kind in StreamKind::ALL {
            let _ = writeln!(
                out,
                "nodetool_open_streams{{kind=\"{}\"}} {}",
                kind.as_str(),
                self.open_streams(kind)
            );
        }
    }

    fn render_jobs(&self, out: &mut String, active: Option<&BTreeMap<&'static str, u64>>) {
        if let Some(active) = active {
            let _ = writeln!(
                out,
                "# HELP nodetool_jobs Jobs scheduled or running now, by status.\n\
                 # TYPE nodetool_jobs gauge"
            );
            // Always both series, so a dashboard sees 0 rather than nothing.
            let mut by_status: BTreeMap<&str, u64> = [
                (Status::Scheduled.as_str(), 0),
                (Status::Running.as_str(), 0),
            ]
            .into_iter()
            .collect();
            by_status.extend(active.iter().map(|(k, v)| (*k, *v)));
            for (status, n) in by_status {
                let _ = writeln!(out, "nodetool_jobs{{status=\"{status}\"}} {n}");
            }
        }
        let durations = self
            .job_durations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let _ = writeln!(
            out,
            "# HELP nodetool_jobs_finished_total Jobs finished since the server started, by strategy and final status.\n\
             # TYPE nodetool_jobs_finished_total counter"
        );
        for ((strategy, status), h) in &durations {
            let _ = writeln!(
                out,
                "nodetool_jobs_finished_total{{strategy=\"{strategy}\",status=\"{status}\"}} {}",
                h.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP nodetool_job_duration_seconds Job run time (start to finish), by strategy and final status.\n\
             # TYPE nodetool_job_duration_seconds histogram"
        );
        for ((strategy, status), h) in &durations {
            let labels = format!("strategy=\"{strategy}\",status=\"{status}\"");
            let mut cumulative = 0;
            for (le, n) in JOB_DURATION_BUCKETS.iter().zip(h.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "nodetool_job_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "nodetool_job_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}\n\
                 nodetool_job_duration_seconds_sum{{{labels}}} {}\n\
                 nodetool_job_duration_seconds_count{{{labels}}} {}",
                h.count, h.sum, h.count
            );
        }
    }
}

fn render_cache(out: &mut String, hits: u64, misses: u64) {
    let lookups = hits + misses;
    let ratio = if lookups == 0 {
        f64::NAN
    } else {
        hits as f64 / lookups as f64
    };
    let _ = writeln!(
        out,
        "# HELP nodetool_node_cache_hits_total Node cache lookups that found a value.\n\
         # TYPE nodetool_node_cache_hits_total counter\n\
         nodetool_node_cache_hits_total {hits}\n\
         # HELP nodetool_node_cache_misses_total Node cache lookups that found nothing (errors included).\n\
         # TYPE nodetool_node_cache_misses_total counter\n\
         nodetool_node_cache_misses_total {misses}\n\
         # HELP nodetool_node_cache_hit_ratio Hits over lookups since the server started (NaN before the first).\n\
         # TYPE nodetool_node_cache_hit_ratio gauge\n\
         nodetool_node_cache_hit_ratio {}",
        if ratio.is_nan() {
            "NaN".to_owned()
        } else {
            ratio.to_string()
        }
    );
}

/// The per-node-type series (from each firing's `resources`).
fn render_nodes(out: &mut String, nodes: &[(String, NodeTotals)]) {
    type Value = fn(&NodeTotals) -> f64;
    let sums: [(&str, &str, Value); 4] = [
        (
            "nodetool_node_wall_seconds_total",
            "Wall time of node firings, by node type.",
            |t| t.wall_seconds,
        ),
        (
            "nodetool_node_cpu_seconds_total",
            "CPU time of node firings (the polling thread's), by node type.",
            |t| t.cpu_seconds,
        ),
        (
            "nodetool_node_storage_read_bytes_total",
            "Bytes nodes read from storage, files and HTTP, by node type.",
            |t| t.bytes_read as f64,
        ),
        (
            "nodetool_node_storage_written_bytes_total",
            "Bytes nodes wrote to asset and temp storage, by node type.",
            |t| t.bytes_written as f64,
        ),
    ];
    let header = |out: &mut String, name: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    };
    let firings = "nodetool_node_firings_total";
    header(
        out,
        firings,
        "Node firings that ended, by node type and status.",
    );
    for (node_type, t) in nodes {
        for (status, n) in &t.firings {
            let l = label(node_type);
            let _ = writeln!(
                out,
                "{firings}{{node_type=\"{l}\",status=\"{status}\"}} {n}"
            );
        }
    }
    for (name, help, value) in sums {
        header(out, name, help);
        for (node_type, t) in nodes {
            let _ = writeln!(
                out,
                "{name}{{node_type=\"{}\"}} {}",
                label(node_type),
                value(t)
            );
        }
    }
    let lookups = "nodetool_node_cache_lookups_total";
    header(
        out,
        lookups,
        "Node cache lookups of cacheable firings, by node type and result.",
    );
    for (node_type, t) in nodes {
        let l = label(node_type);
        for (result, n) in [("hit", t.cache_hits), ("miss", t.cache_misses)] {
            let _ = writeln!(
                out,
                "{lookups}{{node_type=\"{l}\",result=\"{result}\"}} {n}"
            );
        }
    }
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Keeps a request counted as in flight (see [`Metrics::request_started`]).
#[derive(Debug)]
pub struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.requests_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `GET /metrics`.
pub async fn render(State(state): State<AppState>) -> Response {
    let cache = state.resources.node_cache_stats();
    let mut snapshot = Snapshot {
        active_jobs: None,
        cache_hits: cache.hits(),
        cache_misses: cache.misses(),
        nodes: Vec::new(),
    };
    if let Some(manager) = &state.jobs {
        snapshot.active_jobs = Some(active_jobs(manager).await);
        snapshot.nodes = manager.node_stats();
    }
    let mut body = state.metrics.render(&snapshot);
    // AI model calls, tokens and cost by provider and model (crates/providers' usage meter).
    body.push_str(&state.resources.providers().meter().render_prometheus());
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Live jobs that have not ended, by status. Only in-memory records are read (a live job's
/// `get` does not touch the store).
async fn active_jobs(manager: &nodetool_exec::JobExecutionManager) -> BTreeMap<&'static str, u64> {
    let mut counts = BTreeMap::new();
    for id in manager.live_jobs() {
        // A job evicted between the two calls is finished anyway: skip it.
        if let Ok(Some(rec)) = manager.get(&id).await {
            if !rec.status.is_terminal() {
                *counts.entry(rec.status.as_str()).or_default() += 1;
            }
        }
    }
    counts
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(status: Status, created: i64, started: Option<i64>, finished: i64) -> JobRecord {
        let at = |s: i64| chrono::DateTime::from_timestamp(s, 0).unwrap();
        JobRecord {
            id: nodetool_core::JobId::parse("j").unwrap(),
            user_id: "1".into(),
            workflow_id: "w".into(),
            strategy: nodetool_exec::StrategyKind::Threaded,
            status,
            params: serde_json::Value::Null,
            created_at: at(created),
            started_at: started.map(at),
            finished_at: Some(at(finished)),
            error: None,
            result: None,
            worker: None,
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_sum_and_count() {
        let m = Metrics::default();
        m.job_finished(&record(Status::Completed, 0, Some(10), 10)); // 0 s
        m.job_finished(&record(Status::Completed, 0, Some(10), 12)); // 2 s
        m.job_finished(&record(Status::Completed, 0, Some(0), 7200)); // 2 h: only +Inf
        m.job_finished(&record(Status::Cancelled, 100, None, 103)); // never started: from submission
        let text = m.render(&Snapshot::default());
        let labels = "strategy=\"threaded\",status=\"completed\"";
        for (le, n) in [("0.05", 1), ("2.5", 2), ("3600", 2), ("+Inf", 3)] {
            let line =
                format!("nodetool_job_duration_seconds_bucket{{{labels},le=\"{le}\"}} {n}\n");
            assert!(text.contains(&line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains(&format!(
            "nodetool_job_duration_seconds_sum{{{labels}}} 7202\n"
        )));
        assert!(text.contains(&format!(
            "nodetool_job_duration_seconds_count{{{labels}}} 3\n"
        )));
        assert!(text.contains(&format!("nodetool_jobs_finished_total{{{labels}}} 3\n")));
        assert!(text.contains(
            "nodetool_job_duration_seconds_sum{strategy=\"threaded\",status=\"cancelled\"} 3\n"
        ));
    }

    #[test]
    fn unfinished_records_are_not_observed() {
        let m = Metrics::default();
        m.job_finished(&record(Status::Running, 0, Some(0), 5));
        assert!(!m
            .render(&Snapshot::default())
            .contains("status=\"running\"}"));
    }

    #[test]
    fn cache_ratio_and_stream_gauges() {
        let m = Arc::new(Metrics::default());
        let text = m.render(&Snapshot::default());
        assert!(
            text.contains("nodetool_node_cache_hit_ratio NaN\n"),
            "{text}"
        );
        let totals = NodeTotals {
            firings: [("completed", 3)].into_iter().collect(),
            bytes_read: 10,
            cache_hits: 2,
            ..NodeTotals::default()
        };
        let text = m.render(&Snapshot {
            active_jobs: Some([("running", 2)].into_iter().collect()),
            cache_hits: 3,
            cache_misses: 1,
            nodes: vec![("odd\"type\\x".to_owned(), totals)],
        });
        // Label values are escaped as the text format asks.
        for line in [
            "nodetool_node_firings_total{node_type=\"odd\\\"type\\\\x\",status=\"completed\"} 3\n",
            "nodetool_node_storage_read_bytes_total{node_type=\"odd\\\"type\\\\x\"} 10\n",
            "nodetool_node_cache_lookups_total{node_type=\"odd\\\"type\\\\x\",result=\"hit\"} 2\n",
        ] {
            assert!(text.contains(line), "{line}: {text}");
        }
        assert!(
            text.contains("nodetool_node_cache_hit_ratio 0.75\n"),
            "{text}"
        );
        assert!(
            text.contains("nodetool_jobs{status=\"running\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("nodetool_jobs{status=\"scheduled\"} 0\n"),
            "{text}"
        );

        let a = m.open_stream(StreamKind::Terminal);
        let b = m.open_stream(StreamKind::Terminal);
        assert_eq!(m.open_streams(StreamKind::Terminal), 2);
        drop(a);
        assert!(m
            .render(&Snapshot::default())
            .contains("nodetool_open_streams{kind=\"terminal\"} 1\n"));
        drop(b);
        assert_eq!(m.open_streams(StreamKind::Terminal), 0);
    }
}
