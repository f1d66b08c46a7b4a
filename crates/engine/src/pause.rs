//! [`PauseGate`]: pausing a running job between node boundaries.
//!
//! Semantics: while the gate is paused, a node that has not started its next firing waits
//! before it (a regular node before each batch of inputs, a stream-consuming node before it
//! starts, a controlled node before each `run` event); a node in the middle of a firing finishes
//! that firing, and its outputs are delivered as usual. Streamed inputs keep taking values
//! (bounded by their buffers). Cancellation and the job's time limit still apply while paused:
//! the deadline keeps running, so a paused job cannot hold its slot past it. Resuming releases
//! every waiting node at once. The run posts a `job_update` `paused` when the gate closes and
//! `running` when it opens again.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use nodetool_core::{Error, ErrorKind, Result};

/// A job's pause switch, shared by its controller (the manager) and its run. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PauseGate(Arc<watch::Sender<bool>>);

impl Default for PauseGate {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(false)))
    }
}

impl PauseGate {
    pub fn new() -> Self {
        Self::default()
    }

    /// Closes the gate; `true` if it was open.
    pub fn pause(&self) -> bool {
        self.0
            .send_if_modified(|paused| !std::mem::replace(paused, true))
    }

    /// Opens the gate; `true` if it was closed.
    pub fn resume(&self) -> bool {
        self.0
            .send_if_modified(|paused| std::mem::replace(paused, false))
    }

    pub fn is_paused(&self) -> bool {
        *self.0.borrow()
    }

    /// Changes of the gate from now on (`true`: paused).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.0.subscribe()
    }

    /// Returns at once while the gate is open; otherwise waits until it opens, or fails with
    /// `Cancelled` when `cancel` fires first.
    pub async fn wait_open(&self, cancel: &CancellationToken) -> Result<()> {
        if !self.is_paused() {
            return Ok(());
        }
        let mut rx = self.0.subscribe();
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(Error::new(ErrorKind::Cancelled, "job cancelled")),
            _ = rx.wait_for(|paused| !*paused) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_gate_holds_until_opened_or_cancelled() {
        let gate = PauseGate::new();
        let cancel = CancellationToken::new();
        gate.wait_open(&cancel).await.unwrap();
        assert!(gate.pause());
        assert!(!gate.pause(), "pausing twice changes nothing");
        let waiter = {
            let (gate, cancel) = (gate.clone(), cancel.clone());
            tokio::spawn(async move { gate.wait_open(&cancel).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "a paused gate must hold");
        assert!(gate.resume());
        waiter.await.unwrap().unwrap();

        gate.pause();
        let held = {
            let (gate, cancel) = (gate.clone(), cancel.clone());
            tokio::spawn(async move { gate.wait_open(&cancel).await })
        };
        cancel.cancel();
        let err = held.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled);
    }
}
