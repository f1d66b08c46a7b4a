//! Streaming inputs: values pushed into a running job's input nodes from outside (NodeTool's
//! `stream_input` / `end_input_stream`).
//!
//! **Which inputs are streamed.** In a run whose [`RunOptions::input_streams`] is set, NodeTool's
//! rule: every *streaming* input node (a `nodetool.input.*` type whose spec is `streaming`, such
//! as `RealtimeAudioInput`) stays open — it first sends its param, or its literal `value` when
//! that is not null, then each pushed value. Other input nodes emit their param (or default) once
//! and cannot be fed. Streams made with [`InputStreams::all_unset`] (our `streaming_inputs: true`,
//! not NodeTool's) also stream every other input node whose `name` has no entry in the request's
//! `params`; such a node emits nothing by itself. Each pushed value goes downstream at once as
//! one stream item (a streamed node's edges are streaming edges, so `zip_all` consumers take one
//! item per firing, `Collect` gathers them, and nodes downstream are not cached), and the node
//! ends when its stream is ended ([`InputStreams::end`]) or the job is cancelled, fails or times
//! out. Until then the job keeps running. In a run without `input_streams` every input node,
//! streaming or not, emits its param (or default) once.
//!
//! **Values** are JSON values checked against the input's declared type, as params are; a
//! NodeTool chunk (`{"type": "chunk", ...}`) passes to any input unchanged (the engine has no
//! separate chunk type: nodes see the dict).
//!
//! **Buffering is bounded, with backpressure:** each streamed input holds at most
//! `RunOptions::inbox_capacity` values not yet taken by its node; a push waits while that buffer
//! is full and fails once the run is over. A push that arrives before the run has planned its
//! graph waits for it.
//!
//! **Errors** go to the caller and never fail the job: an unknown input name or handle is
//! [`ErrorKind::NotFound`]; a value of the wrong type, an input that is not streamed (it took
//! its value once), or a stream that has ended is [`ErrorKind::InvalidInput`]; a run that is over (or never started) is
//! [`ErrorKind::Unavailable`]. Ending an ended stream is a no-op.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::{mpsc, watch};

use nodetool_core::{Error, ErrorKind, Result};

use crate::types;

/// The handle through which a caller feeds a run's streamed inputs. Cheap to clone and `Send`;
/// one handle serves one run (pass it in [`RunOptions::input_streams`](crate::RunOptions)).
#[derive(Clone)]
pub struct InputStreams {
    shared: Arc<Shared>,
}

struct Shared {
    phase: watch::Sender<Phase>,
    /// Also stream every non-streaming input node that has no param ([`InputStreams::all_unset`]).
    all_unset: bool,
    /// Taken by the run that uses these streams, so a second run cannot take them over.
    claimed: AtomicBool,
}

#[derive(Clone)]
enum Phase {
    /// The run has not planned its graph yet.
    Waiting,
    Open(Arc<Feeds>),
    /// The run is over; the text says why, for errors.
    Closed(Arc<str>),
}

/// The streamed inputs of one run, by input name.
pub(crate) struct Feeds {
    streamed: HashMap<String, Feed>,
    /// Input names that took their value once (not streamed), for a clearer error.
    fixed: BTreeSet<String>,
}

/// One streamed input node.
pub(crate) struct Feed {
    handle: String,
    type_name: String,
    /// `None` once the stream has ended; dropping the last sender ends the node's stream.
    tx: Mutex<Option<mpsc::Sender<Value>>>,
}

impl Feeds {
    pub(crate) fn new() -> Self {
        Self {
            streamed: HashMap::new(),
            fixed: BTreeSet::new(),
        }
    }

    /// Declares a streamed input node and returns the receiver its node reads; `first` (a
    /// streaming input's param or literal value) is its first item.
    pub(crate) fn add(
        &mut self,
        name: &str,
        handle: &str,
        type_name: &str,
        capacity: usize,
        first: Option<Value>,
    ) -> mpsc::Receiver<Value> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        if let Some(v) = first {
            // A fresh channel has room for one value.
            let _ = tx.try_send(v);
        }
        self.streamed.insert(
            name.to_owned(),
            Feed {
                handle: handle.to_owned(),
                type_name: type_name.to_owned(),
                tx: Mutex::new(Some(tx)),
            },
        );
        rx
    }

    /// Declares an input node that emits its param or default once.
    pub(crate) fn add_fixed(&mut self, name: &str) {
        self.fixed.insert(name.to_owned());
    }

    fn find(&self, input: &str, handle: &str, op: &'static str) -> Result<&Feed> {
        let Some(feed) = self.streamed.get(input) else {
            if self.fixed.contains(input) {
                return Err(not_streamed(input).with_operation(op));
            }
            let mut names: Vec<&str> = self.streamed.keys().map(String::as_str).collect();
            names.sort_unstable();
            let known = if names.is_empty() {
                "this job has no streamed inputs".to_owned()
            } else {
                format!("streamed inputs: {}", names.join(", "))
            };
            return Err(
                Error::not_found(format!("no input node named `{input}` ({known})"))
                    .with_operation(op)
                    .with_context("input", input),
            );
        };
        if !handle.is_empty() && feed.handle != handle {
            return Err(Error::not_found(format!(
                "input `{input}` has no output handle `{handle}` (it streams on `{}`)",
                feed.handle
            ))
            .with_operation(op)
            .with_context("input", input)
            .with_context("handle", handle));
        }
        Ok(feed)
    }
}

/// The refusal of a push to an input node that is not streamed.
pub fn not_streamed(input: &str) -> Error {
    Error::invalid_input(format!(
        "input `{input}` is not streamed: it took its value once, from the job's params or its \
         default (only streaming inputs such as RealtimeAudioInput stay open, and every input \
         without a param when the job is submitted with `streaming_inputs: true`)"
    ))
    .with_context("input", input)
}

fn is_chunk(value: &Value) -> bool {
    value.get("type").and_then(Value::as_str) == Some("chunk")
}

impl Default for InputStreams {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for InputStreams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match &*self.shared.phase.borrow() {
            Phase::Waiting => "waiting".to_owned(),
            Phase::Open(feeds) => format!("open ({} streamed)", feeds.streamed.len()),
            Phase::Closed(_) => "closed".to_owned(),
        };
        f.debug_struct("InputStreams")
            .field("phase", &phase)
            .finish()
    }
}

impl InputStreams {
    /// Streams for NodeTool's rule: only streaming input nodes are fed.
    pub fn new() -> Self {
        Self::with(false)
    }

    /// Streams that also feed every input node without a param (`streaming_inputs: true`).
    pub fn all_unset() -> Self {
        Self::with(true)
    }

    fn with(all_unset: bool) -> Self {
        Self {
            shared: Arc::new(Shared {
                phase: watch::Sender::new(Phase::Waiting),
                all_unset,
                claimed: AtomicBool::new(false),
            }),
        }
    }

    /// Whether input nodes without a param are streamed too ([`InputStreams::all_unset`]).
    pub fn streams_unset_inputs(&self) -> bool {
        self.shared.all_unset
    }

    /// Sends `value` downstream from the streamed input named `input` on its output `handle`
    /// (`"output"` for the built-in inputs but RealtimeAudioInput's `"chunk"`; an empty `handle`
    /// is the input's own, whatever it is). Waits while the input's buffer is full, and
    /// until the run has planned its graph. See the module docs for the errors.
    pub async fn push(&self, input: &str, handle: &str, value: Value) -> Result<()> {
        const OP: &str = "engine.stream_input";
        let feeds = self.opened(OP).await?;
        let feed = feeds.find(input, handle, OP)?;
        if !is_chunk(&value) && !types::value_fits(&value, &feed.type_name) {
            return Err(Error::invalid_input(format!(
                "input `{input}` takes {}, got {}",
                feed.type_name,
                types::type_of(&value)
            ))
            .with_operation(OP)
            .with_context("input", input));
        }
        let tx = feed
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| {
                Error::invalid_input(format!("the stream of input `{input}` has already ended"))
                    .with_operation(OP)
                    .with_context("input", input)
            })?;
        drop(feeds);
        // The receiver goes away only when the input node stops, i.e. the run is ending.
        tx.send(value).await.map_err(|_| self.over(OP))
    }

    /// Ends the stream of `input` on `handle`: its node finishes once it has sent what was
    /// pushed before, and downstream inboxes see end-of-stream. Ending twice is a no-op.
    pub async fn end(&self, input: &str, handle: &str) -> Result<()> {
        const OP: &str = "engine.end_input_stream";
        let feeds = self.opened(OP).await?;
        let feed = feeds.find(input, handle, OP)?;
        feed.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        Ok(())
    }

    /// Whether the run that used these streams is over.
    pub fn is_closed(&self) -> bool {
        matches!(&*self.shared.phase.borrow(), Phase::Closed(_))
    }

    async fn opened(&self, op: &'static str) -> Result<Arc<Feeds>> {
        let mut rx = self.shared.phase.subscribe();
        // The sender lives in `self.shared`, so this only fails if it is somehow gone.
        let phase = rx
            .wait_for(|p| !matches!(p, Phase::Waiting))
            .await
            .map(|p| p.clone())
            .map_err(|_| self.over(op))?;
        match phase {
            Phase::Open(feeds) => Ok(feeds),
            Phase::Closed(why) => Err(Error::new(ErrorKind::Unavailable, why.to_string())
                .with_operation(op)
                .set_temporary(false)),
            Phase::Waiting => Err(self.over(op)),
        }
    }

    fn over(&self, op: &'static str) -> Error {
        let why = match &*self.shared.phase.borrow() {
            Phase::Closed(why) => why.to_string(),
            _ => "the job is no longer running".to_owned(),
        };
        Error::new(ErrorKind::Unavailable, why)
            .with_operation(op)
            .set_temporary(false)
    }

    /// Takes these streams for one run; `false` if another run already has them.
    pub(crate) fn claim(&self) -> bool {
        !self.shared.claimed.swap(true, Ordering::AcqRel)
    }

    /// The run has planned its graph: pushes go to `feeds` from now on.
    pub(crate) fn open(&self, feeds: Feeds) {
        self.shared.phase.send_replace(Phase::Open(Arc::new(feeds)));
    }

    /// The run is over: pushes fail with `why` from now on.
    pub(crate) fn close(&self, why: String) {
        self.shared.phase.send_replace(Phase::Closed(why.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn open_one() -> (InputStreams, mpsc::Receiver<Value>) {
        let s = InputStreams::new();
        assert!(s.claim());
        assert!(!s.claim(), "a second run cannot take the streams");
        let mut feeds = Feeds::new();
        let rx = feeds.add("text", "output", "str", 2, None);
        feeds.add_fixed("fixed");
        s.open(feeds);
        (s, rx)
    }

    #[tokio::test]
    async fn push_end_and_the_errors() {
        let (s, mut rx) = open_one();
        s.push("text", "output", json!("a")).await.unwrap();
        s.push("text", "output", json!({"type": "chunk", "content": "b"}))
            .await
            .unwrap();
        assert_eq!(rx.recv().await, Some(json!("a")));
        assert_eq!(rx.recv().await.unwrap()["content"], "b");

        let err = s.push("nope", "output", json!("x")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.to_string().contains("streamed inputs: text"), "{err}");
        let err = s.push("text", "other", json!("x")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        let err = s.push("fixed", "output", json!("x")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("not streamed"), "{err}");
        let err = s.push("text", "output", json!(3)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);

        s.end("text", "output").await.unwrap();
        s.end("text", "output").await.unwrap();
        assert_eq!(rx.recv().await, None, "ending closes the node's stream");
        let err = s.push("text", "output", json!("late")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("already ended"), "{err}");

        s.close("job j has completed".into());
        assert!(s.is_closed());
        let err = s.end("text", "output").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.to_string().contains("completed"), "{err}");
    }

    #[tokio::test]
    async fn a_push_before_open_waits_and_a_full_buffer_backpressures() {
        let s = InputStreams::new();
        let early = tokio::spawn({
            let s = s.clone();
            async move { s.push("text", "output", json!("first")).await }
        });
        tokio::task::yield_now().await;
        assert!(!early.is_finished(), "a push waits for the run to open");
        assert!(s.claim());
        let mut feeds = Feeds::new();
        let mut rx = feeds.add("text", "output", "str", 1, None);
        s.open(feeds);
        early.await.unwrap().unwrap();

        // The buffer (1) is full: the next push waits until the node takes a value.
        let blocked = tokio::spawn({
            let s = s.clone();
            async move { s.push("text", "output", json!("second")).await }
        });
        tokio::task::yield_now().await;
        assert!(!blocked.is_finished());
        assert_eq!(rx.recv().await, Some(json!("first")));
        blocked.await.unwrap().unwrap();
        assert_eq!(rx.recv().await, Some(json!("second")));

        // A push waiting on a node that stops fails instead of hanging.
        s.push("text", "output", json!("third")).await.unwrap();
        let stuck = tokio::spawn({
            let s = s.clone();
            async move { s.push("text", "output", json!("fourth")).await }
        });
        tokio::task::yield_now().await;
        s.close("job j was cancelled".into());
        drop(rx);
        let err = stuck.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
    }
}
