//! Per-node resource accounting: what one firing of a node cost — wall and CPU time, bytes read
//! through the job's storages and media refs, bytes written to them, and whether the node cache
//! answered. The runner opens a firing when it posts the node's `running` update and attaches
//! the figures ([`NodeResources`]) to the update that ends it, so every strategy reports them
//! the same way (a worker's events carry them to the parent).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What one firing of a node cost (on its terminal `node_update`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeResources {
    /// From the firing's `running` update to its end.
    pub wall_ms: f64,
    /// Time the node's own code ran during the firing: the summed durations of its task's polls,
    /// which is its CPU time unless the OS preempted the thread mid-poll (work the node hands to
    /// other threads, e.g. a blocking pool, is not in it).
    pub cpu_ms: f64,
    /// Bytes read from asset or temp storage, files and HTTP through the job's context.
    pub bytes_read: u64,
    /// Bytes written to asset or temp storage.
    pub bytes_written: u64,
    /// For a cacheable node: whether the node cache answered this firing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheOutcome>,
}

/// A cacheable firing's cache lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheOutcome {
    Hit,
    Miss,
}

/// The running totals of one node, shared by its contexts; a firing is the difference between
/// two readings.
#[derive(Debug, Default)]
pub(crate) struct NodeMeter {
    cpu_ns: AtomicU64,
    read: AtomicU64,
    written: AtomicU64,
    /// 0: no lookup this firing, 1: hit, 2: miss.
    cache: AtomicU8,
    firing: Mutex<Option<Reading>>,
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    at: Instant,
    cpu_ns: u64,
    read: u64,
    written: u64,
}

impl NodeMeter {
    pub(crate) fn add_cpu(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.cpu_ns.fetch_add(ns, Ordering::Relaxed);
    }

    pub(crate) fn read(&self, bytes: usize) {
        self.read.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn written(&self, bytes: usize) {
        self.written.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn cache(&self, outcome: CacheOutcome) {
        let v = match outcome {
            CacheOutcome::Hit => 1,
            CacheOutcome::Miss => 2,
        };
        self.cache.store(v, Ordering::Relaxed);
    }

    fn reading(&self) -> Reading {
        Reading {
            at: Instant::now(),
            cpu_ns: self.cpu_ns.load(Ordering::Relaxed),
            read: self.read.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
        }
    }

    /// Bytes read and written over the node's whole run.
    pub(crate) fn totals(&self) -> (u64, u64) {
        (
            self.read.load(Ordering::Relaxed),
            self.written.load(Ordering::Relaxed),
        )
    }

    /// A firing starts now.
    pub(crate) fn begin(&self) {
        self.cache.store(0, Ordering::Relaxed);
        let now = self.reading();
        *self.firing.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
    }

    /// What the firing begun last cost; ends it. Without a begun firing (a node that failed
    /// before it started one), what the node cost so far.
    pub(crate) fn end(&self) -> NodeResources {
        let now = self.reading();
        let start = self.firing.lock().unwrap_or_else(|p| p.into_inner()).take();
        let (wall, cpu_ns, read, written) = match start {
            Some(s) => (
                now.at.duration_since(s.at),
                now.cpu_ns.saturating_sub(s.cpu_ns),
                now.read.saturating_sub(s.read),
                now.written.saturating_sub(s.written),
            ),
            None => (Duration::ZERO, now.cpu_ns, now.read, now.written),
        };
        NodeResources {
            wall_ms: wall.as_secs_f64() * 1000.0,
            cpu_ms: cpu_ns as f64 / 1e6,
            bytes_read: read,
            bytes_written: written,
            cache: match self.cache.swap(0, Ordering::Relaxed) {
                1 => Some(CacheOutcome::Hit),
                2 => Some(CacheOutcome::Miss),
                _ => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_firing_is_the_difference_between_two_readings() {
        let m = NodeMeter::default();
        m.read(10);
        m.begin();
        m.read(5);
        m.written(7);
        m.add_cpu(Duration::from_millis(3));
        m.cache(CacheOutcome::Miss);
        let r = m.end();
        assert_eq!((r.bytes_read, r.bytes_written), (5, 7));
        assert!((r.cpu_ms - 3.0).abs() < 1e-9, "{r:?}");
        assert_eq!(r.cache, Some(CacheOutcome::Miss));
        // The next firing starts from zero and had no lookup.
        m.begin();
        let r = m.end();
        assert_eq!((r.bytes_read, r.bytes_written, r.cache), (0, 0, None));
    }
}
