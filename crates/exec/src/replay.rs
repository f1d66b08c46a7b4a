//! Replay of a job that is no longer in the manager's memory, from the store's event log.

use std::collections::VecDeque;

use nodetool_core::JobId;
use nodetool_engine::events::JobUpdate;
use nodetool_engine::{Event, EventEnvelope};

use crate::manager::REPLAY_BATCH;
use crate::store::JobStore;

fn is_terminal(e: &EventEnvelope) -> bool {
    matches!(&e.event, Event::JobUpdate(u) if u.status.is_terminal())
}

/// Waits for a wake-up about `job_id`'s events or record (or any reconnect of the listener), at
/// most `poll`.
pub(crate) async fn wait_for_job(
    wake: Option<&mut tokio::sync::broadcast::Receiver<crate::queue::Wakeup>>,
    job_id: &JobId,
    poll: std::time::Duration,
) {
    use crate::queue::Wakeup;
    wait_for_wakeup(wake, poll, |w| matches!(w, Wakeup::Job(id) if job_id == id)).await;
}

/// Waits for a wake-up `wanted` accepts (or any reconnect of the listener, or lost wake-ups), at
/// most `poll`. With no listener, just `poll`.
pub(crate) async fn wait_for_wakeup(
    wake: Option<&mut tokio::sync::broadcast::Receiver<crate::queue::Wakeup>>,
    poll: std::time::Duration,
    wanted: impl Fn(&crate::queue::Wakeup) -> bool,
) {
    use crate::queue::Wakeup;
    use tokio::sync::broadcast::error::RecvError;
    let Some(rx) = wake else {
        tokio::time::sleep(poll).await;
        return;
    };
    let woken = async {
        loop {
            match rx.recv().await {
                Ok(Wakeup::Reconnected) | Err(RecvError::Lagged(_)) => return,
                Ok(w) if wanted(&w) => return,
                Ok(_) => {}
                // No listener (it never ends): poll only.
                Err(RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
    };
    let _ = tokio::time::timeout(poll, woken).await;
}

/// Pages through a job's stored events; ends with its terminal `job_update`. A following
/// replay (a queue worker runs the job) waits for more while the job's record is not terminal.
#[derive(Debug)]
pub(crate) struct StoredEvents {
    store: JobStore,
    job_id: JobId,
    backlog: VecDeque<EventEnvelope>,
    /// Every stored event after the start seq has been read.
    exhausted: bool,
    done: bool,
    /// Follow a running job: `LISTEN` wake-ups, else polling.
    follow: Option<Option<tokio::sync::broadcast::Receiver<crate::queue::Wakeup>>>,
    /// The record was seen terminal: one more read catches events stored before it ended.
    final_pass: bool,
}

impl StoredEvents {
    pub(crate) fn new(store: JobStore, job_id: &JobId) -> Self {
        Self {
            store,
            job_id: job_id.clone(),
            backlog: VecDeque::new(),
            exhausted: false,
            done: false,
            follow: None,
            final_pass: false,
        }
    }

    /// Like [`StoredEvents::new`], but a job still running elsewhere is followed until it ends.
    pub(crate) fn following(store: JobStore, job_id: &JobId) -> Self {
        let wake = store.wakeups();
        let mut s = Self::new(store, job_id);
        s.follow = Some(wake);
        s
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
            if self.exhausted && self.follow.is_some() && !self.final_pass {
                let status = match self.store.get(&self.job_id).await {
                    Ok(Some(r)) => Some(r.status),
                    Ok(None) => None,
                    Err(error) => {
                        tracing::warn!(job_id = %self.job_id, %error, "cannot read the job's record");
                        Some(nodetool_engine::Status::Running)
                    }
                };
                match status {
                    // Unknown: nothing to follow.
                    None => self.final_pass = true,
                    Some(s) if s.is_terminal() => {
                        // Its last events were stored with (or before) the terminal status.
                        self.final_pass = true;
                        self.exhausted = false;
                        continue;
                    }
                    Some(_) => {
                        let wake = self.follow.as_mut().and_then(Option::as_mut);
                        wait_for_job(wake, &self.job_id, crate::manager::FOLLOW_POLL).await;
                        self.exhausted = false;
                        continue;
                    }
                }
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
            job_id: record.id.to_string(),
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
                peak_memory_bytes: None,
            }),
        })
    }
}
