//! `nodetool run --profile` and `--trace FILE`: per-node timings taken from the job's own event
//! stream as it arrives (a node runs from its `running` update to its terminal one), so every
//! strategy is profiled the same way. Output bytes are the JSON size of what a node emitted;
//! CPU time, bytes read from and written to storage and the cache outcome come from the
//! figures the firing's terminal update carries (`nodetool_engine::meter`). Per-node memory is
//! not measured (the nodes of a job share one process heap); a worker run's peak memory is, from
//! the job's terminal update. `--trace` writes Chrome's trace-event JSON (the format
//! `chrome://tracing` and Perfetto open); `--profile` prints a table on stderr.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use nodetool_engine::{Event, EventEnvelope, Status};
use serde_json::{json, Value};

/// One node's span.
#[derive(Debug, Clone)]
struct Span {
    node_id: String,
    name: String,
    node_type: String,
    start_us: u64,
    end_us: Option<u64>,
    status: Status,
    outputs: u64,
    output_bytes: u64,
    /// The firing's own figures, from its terminal update.
    resources: Option<nodetool_engine::meter::NodeResources>,
}

/// Collects spans from events in arrival order.
#[derive(Debug)]
pub struct Profile {
    t0: Instant,
    spans: Vec<Span>,
    open: BTreeMap<String, usize>,
    /// The worker's peak resident memory (subprocess and Docker runs), from the last update.
    peak_memory_bytes: Option<u64>,
}

impl Default for Profile {
    fn default() -> Self {
        Self::new()
    }
}

impl Profile {
    pub fn new() -> Self {
        Self {
            t0: Instant::now(),
            spans: Vec::new(),
            open: BTreeMap::new(),
            peak_memory_bytes: None,
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.t0.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    pub fn observe(&mut self, event: &EventEnvelope) {
        let now = self.now_us();
        match &event.event {
            Event::NodeUpdate(n) if n.status == Status::Running => {
                self.open.insert(n.node_id.clone(), self.spans.len());
                self.spans.push(Span {
                    node_id: n.node_id.clone(),
                    name: n.node_name.clone(),
                    node_type: n.node_type.clone(),
                    start_us: now,
                    end_us: None,
                    status: Status::Running,
                    outputs: 0,
                    output_bytes: 0,
                    resources: None,
                });
            }
            Event::NodeUpdate(n) if n.status.is_terminal() => {
                if let Some(i) = self.open.remove(&n.node_id) {
                    let span = &mut self.spans[i];
                    span.end_us = Some(now);
                    span.status = n.status;
                    span.resources.clone_from(&n.resources);
                    // A node's terminal update carries its last outputs (a streaming node's
                    // items were counted as they went out).
                    if let Some(result) = &n.result {
                        if span.outputs == 0 {
                            span.outputs = result.len() as u64;
                            span.output_bytes = result.values().map(json_len).sum();
                        }
                    }
                }
            }
            Event::JobUpdate(u) if u.peak_memory_bytes.is_some() => {
                self.peak_memory_bytes = u.peak_memory_bytes;
            }
            Event::OutputUpdate(o) => {
                if let Some(&i) = self.open.get(&o.node_id) {
                    let span = &mut self.spans[i];
                    span.outputs += 1;
                    span.output_bytes += json_len(&o.value);
                }
            }
            _ => {}
        }
    }

    /// Closes spans still open (a cancelled or failed job) at the current time.
    pub fn finish(&mut self) {
        let now = self.now_us();
        for (_, i) in std::mem::take(&mut self.open) {
            self.spans[i].end_us.get_or_insert(now);
        }
    }

    /// Chrome trace-event JSON: one complete (`X`) event per node run, on lanes that never
    /// overlap so concurrent nodes show side by side.
    pub fn chrome_trace(&self) -> Value {
        let mut lanes: Vec<u64> = Vec::new(); // end time of each lane's last span
        let mut events = Vec::new();
        for s in &self.spans {
            let end = s.end_us.unwrap_or(s.start_us);
            let lane = match lanes.iter().position(|&free_at| free_at <= s.start_us) {
                Some(l) => {
                    lanes[l] = end;
                    l
                }
                None => {
                    lanes.push(end);
                    lanes.len() - 1
                }
            };
            events.push(json!({
                "name": s.name,
                "cat": s.node_type,
                "ph": "X",
                "ts": s.start_us,
                "dur": end.saturating_sub(s.start_us),
                "pid": 1,
                "tid": lane + 1,
                "args": {"node_id": s.node_id, "status": s.status.as_str(),
                         "outputs": s.outputs, "output_bytes": s.output_bytes,
                         "resources": s.resources},
            }));
        }
        json!({"traceEvents": events, "displayTimeUnit": "ms"})
    }

    pub fn write_trace(&self, path: &Path) -> anyhow::Result<()> {
        let body = serde_json::to_vec(&self.chrome_trace())?;
        // Write aside then rename: a reader never sees half a trace.
        let tmp = path.with_extension("tmp-trace");
        std::fs::write(&tmp, body)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// The per-node table, slowest first.
    pub fn table(&self) -> String {
        let mut rows: Vec<&Span> = self.spans.iter().collect();
        let dur = |s: &Span| s.end_us.unwrap_or(s.start_us).saturating_sub(s.start_us);
        rows.sort_by_key(|s| std::cmp::Reverse(dur(s)));
        let mut out = String::new();
        out.push_str(&format!(
            "{:<24} {:<36} {:>10} {:>10} {:>9} {:>8} {:>12} {:>10} {:>10} {:>5}  {}\n",
            "node",
            "type",
            "start ms",
            "wall ms",
            "cpu ms",
            "outputs",
            "output bytes",
            "read",
            "written",
            "cache",
            "status"
        ));
        for s in rows {
            let r = s.resources.as_ref();
            let cpu = r.map_or("-".to_owned(), |r| format!("{:.3}", r.cpu_ms));
            let read = r.map_or("-".to_owned(), |r| r.bytes_read.to_string());
            let written = r.map_or("-".to_owned(), |r| r.bytes_written.to_string());
            let cache = match r.and_then(|r| r.cache) {
                Some(nodetool_engine::meter::CacheOutcome::Hit) => "hit",
                Some(nodetool_engine::meter::CacheOutcome::Miss) => "miss",
                None => "-",
            };
            out.push_str(&format!(
                "{:<24} {:<36} {:>10.3} {:>10.3} {:>9} {:>8} {:>12} {:>10} {:>10} {:>5}  {}\n",
                truncate(&s.node_id, 24),
                truncate(&s.node_type, 36),
                s.start_us as f64 / 1000.0,
                dur(s) as f64 / 1000.0,
                cpu,
                s.outputs,
                s.output_bytes,
                read,
                written,
                cache,
                s.status.as_str()
            ));
        }
        if let Some(peak) = self.peak_memory_bytes {
            out.push_str(&format!(
                "worker peak memory: {:.1} MiB (the whole worker process)\n",
                peak as f64 / (1024.0 * 1024.0)
            ));
        }
        out
    }

    pub fn print_table(&self) -> anyhow::Result<()> {
        let mut err = std::io::stderr().lock();
        err.write_all(self.table().as_bytes())?;
        Ok(())
    }
}

/// Size of a value as JSON: what it costs on the wire.
fn json_len(v: &Value) -> u64 {
    serde_json::to_vec(v).map_or(0, |b| b.len() as u64)
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}
