//! Quiescence: whether a running graph can still make progress on its own. A graph with a
//! feedback loop (a node with [`NodeSpec::feedback`](crate::node::NodeSpec) inputs, NodeTool's
//! `nodetool.control.Loop`) uses it to end a run whose body stopped feeding back, which would
//! otherwise wait forever: the body waits on the loop, the loop on the body.
//!
//! The graph is quiescent when every live actor is parked — blocked on its inbox with nothing
//! buffered — and no item is in flight on any edge. Nothing can then happen without the outside
//! (cancellation, a timeout): parked actors wake only for items, and only running actors send
//! them. Streamed input nodes are never parked, so a job fed from outside is never quiescent.
//! The runner tracks this only for graphs with feedback inputs.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

#[derive(Debug)]
pub(crate) struct Quiet {
    live: AtomicUsize,
    parked: AtomicUsize,
    /// Items sent on an edge and not yet taken from the consumer's channel.
    pending: AtomicI64,
    notify: Notify,
}

impl Quiet {
    pub(crate) fn new(actors: usize) -> Arc<Self> {
        Arc::new(Self {
            live: AtomicUsize::new(actors),
            parked: AtomicUsize::new(0),
            pending: AtomicI64::new(0),
            notify: Notify::new(),
        })
    }

    /// Every live actor parked and nothing in flight. `parked` is read first: once every actor
    /// is parked nobody runs, so `pending` cannot change before it is read.
    pub(crate) fn is_quiet(&self) -> bool {
        let parked = self.parked.load(Ordering::SeqCst);
        let live = self.live.load(Ordering::SeqCst);
        parked >= live && self.pending.load(Ordering::SeqCst) <= 0
    }

    fn check(&self) {
        if self.is_quiet() {
            self.notify.notify_waiters();
        }
    }

    /// An actor blocks on its inbox until the guard is dropped.
    pub(crate) fn park(self: &Arc<Self>) -> Parked {
        self.parked.fetch_add(1, Ordering::SeqCst);
        self.check();
        Parked(self.clone())
    }

    /// An item is about to be sent on an edge.
    pub(crate) fn sent(&self) {
        self.pending.fetch_add(1, Ordering::SeqCst);
    }

    /// An item left an edge: taken by its consumer, or dropped with a closed inbox.
    pub(crate) fn taken(&self) {
        self.pending.fetch_sub(1, Ordering::SeqCst);
        self.check();
    }

    /// An actor has ended.
    pub(crate) fn finished(&self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
        self.check();
    }

    /// Resolves once the graph is quiescent (at once if it already is).
    pub(crate) async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_quiet() {
                return;
            }
            notified.await;
        }
    }
}

/// Held while an actor is parked on its inbox.
#[derive(Debug)]
pub(crate) struct Parked(Arc<Quiet>);

impl Drop for Parked {
    fn drop(&mut self) {
        self.0.parked.fetch_sub(1, Ordering::SeqCst);
    }
}
