//! Sink helpers shared by the strategies.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use nodetool_core::JobId;
use nodetool_engine::events::JobUpdate;
use nodetool_engine::{Event, EventEnvelope, EventSink};

use crate::strategy::JobOutcome;

/// Forwards events and remembers the last seq and whether a terminal `job_update` went through,
/// so a strategy can close a stream the job itself could not finish (crash, hard timeout).
#[derive(Debug)]
pub struct TrackingSink {
    inner: Arc<dyn EventSink>,
    job_id: JobId,
    last_seq: AtomicU64,
    terminal_sent: AtomicBool,
}

impl TrackingSink {
    pub fn new(job_id: JobId, inner: Arc<dyn EventSink>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            job_id,
            last_seq: AtomicU64::new(0),
            terminal_sent: AtomicBool::new(false),
        })
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Acquire)
    }

    pub fn terminal_sent(&self) -> bool {
        self.terminal_sent.load(Ordering::Acquire)
    }

    /// Notes an event sent by another path, so the next seq follows it (nothing is forwarded).
    pub fn observe(&self, event: &EventEnvelope) {
        self.last_seq.fetch_max(event.seq, Ordering::AcqRel);
    }

    /// Posts the terminal `job_update` for `outcome` unless one was already sent.
    pub fn finish(&self, workflow_id: &str, outcome: &JobOutcome) {
        if self.terminal_sent() {
            return;
        }
        let update = JobUpdate {
            status: outcome.status,
            workflow_id: Some(workflow_id.to_owned()),
            message: None,
            result: (outcome.status == nodetool_engine::Status::Completed)
                .then(|| outcome.result.clone()),
            error: outcome.error_text(),
            traceback: None,
            run_state: None,
            duration: Some(outcome.duration_secs),
            peak_memory_bytes: None,
        };
        self.send(EventEnvelope {
            job_id: self.job_id.to_string(),
            seq: self.last_seq() + 1,
            event: Event::JobUpdate(update),
        });
    }
}

impl EventSink for TrackingSink {
    fn send(&self, mut event: EventEnvelope) {
        // After the terminal update nothing else belongs to the job's stream.
        if self.terminal_sent() {
            return;
        }
        if let Event::JobUpdate(u) = &event.event {
            if u.status.is_terminal() {
                self.terminal_sent.store(true, Ordering::Release);
            }
        }
        // A worker cannot rename the job: the parent's id is the only one.
        if event.job_id != self.job_id {
            event.job_id = self.job_id.to_string();
        }
        self.last_seq.fetch_max(event.seq, Ordering::AcqRel);
        self.inner.send(event);
    }
}
