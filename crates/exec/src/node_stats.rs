//! What the nodes of this manager's jobs cost, by node type, since it started: the figures each
//! firing's terminal `node_update` carries ([`nodetool_engine::meter::NodeResources`]), summed
//! as the events pass the job's event hub — so threaded, subprocess and Docker jobs count alike.
//! `/metrics` renders them.

use std::collections::BTreeMap;
use std::sync::Mutex;

use nodetool_engine::events::NodeUpdate;
use nodetool_engine::meter::CacheOutcome;
use nodetool_engine::Status;

/// One node type's totals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeTotals {
    /// Firings that ended, by how (`completed`, `failed`, `cancelled`).
    pub firings: BTreeMap<&'static str, u64>,
    pub wall_seconds: f64,
    pub cpu_seconds: f64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
}

/// The totals of every node type seen; cheap to update (one lock per ended firing).
#[derive(Debug, Default)]
pub struct NodeStats(Mutex<BTreeMap<String, NodeTotals>>);

impl NodeStats {
    /// Adds an ended firing; other updates (and ones without figures) change nothing.
    pub fn record(&self, update: &NodeUpdate) {
        let Some(r) = &update.resources else {
            return;
        };
        let status = match update.status {
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            _ => return,
        };
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let t = all.entry(update.node_type.clone()).or_default();
        *t.firings.entry(status).or_default() += 1;
        t.wall_seconds += r.wall_ms / 1000.0;
        t.cpu_seconds += r.cpu_ms / 1000.0;
        t.bytes_read += r.bytes_read;
        t.bytes_written += r.bytes_written;
        match r.cache {
            Some(CacheOutcome::Hit) => t.cache_hits += 1,
            Some(CacheOutcome::Miss) => t.cache_misses += 1,
            None => {}
        }
    }

    /// Every node type's totals, by type.
    pub fn snapshot(&self) -> Vec<(String, NodeTotals)> {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}
