//! Replay of a job that is no longer in the manager's memory, from the store's event log.

use std::collections::VecDeque;

use nodetool_engine::events::JobUpdate;
use nodetool_engine::{Event, EventEnvelope};

use crate::manager::REPLAY_BATCH;
use crate::store::JobStore;

fn is_terminal(e: &EventEnvelope) -> bool {
    matches!(&e.event, Event::JobUpdate(u) if u.status.is_terminal())
}

/// Pages through a job's stored events; ends with its terminal `job_update`.
#[derive(Debug)]
pub(crate) struct StoredEvents {
    store: JobStore,
    job_id: String,
    backlog: VecDeque<EventEnvelope>,
    /// Every stored event after the start seq has been read.
    exhausted: bool,
    done: bool,
}

impl StoredEvents {
    pub(crate) fn new(store: JobStore, job_id: &str) -> Self {
        Self {
            store,
            job_id: job_id.to_owned(),
            backlog: VecDeque::new(),
            exhausted: false,
            done: false,
        }
    }

    /// The next stored event after `*last` (advancing it), or `None` at the end.
    pub(crate) async fn next(&mut self, last: &mut u64) -> Option<EventEnvelope> {
        loop {
            if self.done {
                return None;
            }
            if let Some(e) = self.backlog.pop_front() {
                if e.seq <= *last {
                    continue;
                }
                *last = e.seq;
                self.done = is_terminal(&e);
                return Some(e);
            }
            if self.exhausted {
                self.done = true;
                return self.closing_update(*last).await.inspect(|e| *last = e.seq);
            }
            match self
                .store
                .events_after(&self.job_id, *last, REPLAY_BATCH as u32)
                .await
            {
                Ok(page) => {
                    self.exhausted = page.len() < REPLAY_BATCH;
                    self.backlog = page.into();
                }
                Err(error) => {
                    tracing::warn!(job_id = %self.job_id, %error, "cannot read the job's stored events");
                    self.exhausted = true;
                }
            }
        }
    }

    /// When the log has no terminal event (it was expired, or the job ran before events were
    /// persisted, or the process died before writing it): one made from the job's record, after
    /// `last`. `None` when the log's terminal event was already delivered, or the job is
    /// unknown or not finished.
    async fn closing_update(&self, last: u64) -> Option<EventEnvelope> {
        let stored_last = match self.store.last_event(&self.job_id).await {
            Ok(e) => e,
            Err(error) => {
                tracing::warn!(job_id = %self.job_id, %error, "cannot read the job's stored events");
                None
            }
        };
        if stored_last.as_ref().is_some_and(is_terminal) {
            return None;
        }
        let record = match self.store.get(&self.job_id).await {
            Ok(Some(r)) if r.status.is_terminal() => r,
            Ok(_) => return None,
            Err(error) => {
                tracing::warn!(job_id = %self.job_id, %error, "cannot read the job's record");
                return None;
            }
        };
        let seq = last.max(stored_last.map_or(0, |e| e.seq)) + 1;
        let duration = match (record.started_at, record.finished_at) {
            (Some(s), Some(f)) => Some((f - s).num_milliseconds().max(0) as f64 / 1000.0),
            _ => None,
        };
        Some(EventEnvelope {
            job_id: record.id.clone(),
            seq,
            event: Event::JobUpdate(JobUpdate {
                status: record.status,
                workflow_id: Some(record.workflow_id.clone()),
                message: None,
                result: record.result.as_ref().and_then(|r| r.as_object().cloned()),
                error: record.error.clone(),
                traceback: None,
                run_state: None,
                duration,
            }),
        })
    }
}
