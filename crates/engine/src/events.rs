//! Job events: NodeTool's typed messages (`reference/nodetool-execution.md` §2.1, same `type` tags
//! and field names) wrapped in an [`EventEnvelope`] that adds `job_id` and a per-job `seq`.
//!
//! Every status uses the one vocabulary of [`Status`] (NodeTool's `error` node status is `failed`
//! here). Events are serde-(de)serialisable and self-describing, so WS, SSE and the worker
//! protocol carry them unchanged.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The one status vocabulary for jobs and nodes (memory, DB, wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Scheduled,
    Running,
    Completed,
    Failed,
    Cancelled,
    Suspended,
    /// A running job whose nodes are held at their next node boundary
    /// ([`crate::pause::PauseGate`]); its `job_update` events say so. Not terminal.
    Paused,
    /// NodeTool's status for a job that ran out of time. The engine and the strategies report a
    /// time-out as `failed` with a `timeout` error ([`crate::job_timeout_error`]); only the
    /// server's `/ws` layer says `timed_out`, for NodeTool clients.
    TimedOut,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Scheduled => "scheduled",
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Suspended => "suspended",
            Status::Paused => "paused",
            Status::TimedOut => "timed_out",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Completed
                | Status::Failed
                | Status::Cancelled
                | Status::Suspended
                | Status::TimedOut
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `edge_update` statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeStatus {
    MessageSent,
    Drained,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStateInfo {
    pub status: String,
    #[serde(default)]
    pub suspended_node_id: Option<String>,
    #[serde(default)]
    pub suspension_reason: Option<String>,
    #[serde(default)]
    pub error_message: Option<String>,
    #[serde(default)]
    pub execution_strategy: Option<String>,
    #[serde(default)]
    pub is_resumable: bool,
}

/// `job_update`. The job id is the envelope's `job_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobUpdate {
    pub status: Status,
    #[serde(default)]
    pub workflow_id: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// Final outputs `{output_name: [values...]}` (on completion).
    #[serde(default)]
    pub result: Option<Map<String, Value>>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub traceback: Option<String>,
    #[serde(default)]
    pub run_state: Option<RunStateInfo>,
    /// Seconds, set on a terminal status.
    #[serde(default)]
    pub duration: Option<f64>,
    /// Peak resident memory of the worker process that ran the job (subprocess and Docker
    /// jobs: its `VmHWM`), on the terminal update. Absent for threaded jobs, whose nodes share
    /// the server's heap. Ours: NodeTool's clients ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeUpdate {
    pub node_id: String,
    pub node_name: String,
    pub node_type: String,
    pub status: Status,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub result: Option<Map<String, Value>>,
    #[serde(default)]
    pub properties: Option<Map<String, Value>>,
    #[serde(default)]
    pub workflow_id: Option<String>,
    /// On the update that ends a firing (`completed`, `failed`, `cancelled`): what the firing
    /// cost. Ours (NodeTool's updates have no such field; its clients ignore it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<crate::meter::NodeResources>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeProgress {
    pub node_id: String,
    pub progress: i64,
    pub total: i64,
    #[serde(default)]
    pub chunk: String,
    #[serde(default)]
    pub workflow_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeUpdate {
    pub workflow_id: String,
    pub edge_id: String,
    pub status: EdgeStatus,
    #[serde(default)]
    pub counter: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputUpdate {
    pub node_id: String,
    /// For an output node this is the output *name* (as in NodeTool).
    pub node_name: String,
    pub output_name: String,
    pub value: Value,
    pub output_type: String,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default)]
    pub workflow_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogUpdate {
    pub node_id: String,
    pub node_name: String,
    pub content: String,
    pub severity: Severity,
    #[serde(default)]
    pub workflow_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub node_id: String,
    pub content: String,
    pub severity: Severity,
    #[serde(default)]
    pub workflow_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorMessage {
    pub message: String,
    #[serde(default)]
    pub thread_id: Option<String>,
    #[serde(default)]
    pub workflow_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviewUpdate {
    pub node_id: String,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaveUpdate {
    pub node_id: String,
    pub name: String,
    pub value: Value,
    pub output_type: String,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    #[serde(default)]
    pub node_id: Option<String>,
    #[serde(default)]
    pub thread_id: Option<String>,
    #[serde(default)]
    pub workflow_id: Option<String>,
    #[serde(default = "text")]
    pub content_type: String,
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub content_metadata: Map<String, Value>,
    #[serde(default)]
    pub done: bool,
    #[serde(default)]
    pub thinking: bool,
}

fn text() -> String {
    "text".to_owned()
}

/// `tool_call_update`: an agent node is calling a tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallUpdate {
    #[serde(default)]
    pub node_id: Option<String>,
    #[serde(default)]
    pub thread_id: Option<String>,
    #[serde(default)]
    pub workflow_id: Option<String>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub args: Map<String, Value>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub step_id: Option<String>,
    #[serde(default)]
    pub agent_execution_id: Option<String>,
}

/// `prediction`: one finished model call of a node, with NodeTool's `Prediction` fields and
/// the token counts of its provider-call log (`input_tokens`, `output_tokens`, …). `cost` is in
/// NodeTool credits (1 credit = $0.01).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub id: String,
    pub user_id: String,
    pub node_id: String,
    #[serde(default)]
    pub workflow_id: Option<String>,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub node_type: Option<String>,
    pub status: String,
    #[serde(default)]
    pub params: Map<String, Value>,
    #[serde(default)]
    pub cost: Option<f64>,
    #[serde(default)]
    pub error: Option<String>,
    /// Seconds.
    #[serde(default)]
    pub duration: Option<f64>,
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default)]
    pub cached_tokens: Option<u64>,
    #[serde(default)]
    pub reasoning_tokens: Option<u64>,
}

/// One NodeTool message, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    JobUpdate(JobUpdate),
    NodeUpdate(NodeUpdate),
    NodeProgress(NodeProgress),
    EdgeUpdate(EdgeUpdate),
    OutputUpdate(OutputUpdate),
    LogUpdate(LogUpdate),
    Notification(Notification),
    Error(ErrorMessage),
    PreviewUpdate(PreviewUpdate),
    SaveUpdate(SaveUpdate),
    Chunk(Chunk),
    ToolCallUpdate(ToolCallUpdate),
    Prediction(Prediction),
}

impl Event {
    /// The `type` tag.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::JobUpdate(_) => "job_update",
            Event::NodeUpdate(_) => "node_update",
            Event::NodeProgress(_) => "node_progress",
            Event::EdgeUpdate(_) => "edge_update",
            Event::OutputUpdate(_) => "output_update",
            Event::LogUpdate(_) => "log_update",
            Event::Notification(_) => "notification",
            Event::Error(_) => "error",
            Event::PreviewUpdate(_) => "preview_update",
            Event::SaveUpdate(_) => "save_update",
            Event::Chunk(_) => "chunk",
            Event::ToolCallUpdate(_) => "tool_call_update",
            Event::Prediction(_) => "prediction",
        }
    }
}

/// An event as it goes over the wire: the NodeTool message's fields plus `job_id` and `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    pub job_id: String,
    /// Monotonic per job, from 1: clients resume with `since_seq` / `Last-Event-ID`.
    pub seq: u64,
    #[serde(flatten)]
    pub event: Event,
}

/// Where a job's events go. Non-blocking by contract: `send` must not wait on a slow consumer
/// (a bounded buffer should drop or lag, and say so), because nodes post events from hot paths.
pub trait EventSink: Send + Sync + fmt::Debug + 'static {
    fn send(&self, event: EventEnvelope);
}

/// Discards everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl EventSink for NullSink {
    fn send(&self, _event: EventEnvelope) {}
}

/// Keeps every event in memory (tests, `nodetool run`).
#[derive(Debug, Default)]
pub struct VecSink(Mutex<Vec<EventEnvelope>>);

impl VecSink {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn events(&self) -> Vec<EventEnvelope> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl EventSink for VecSink {
    fn send(&self, event: EventEnvelope) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(event);
    }
}

impl EventSink for tokio::sync::mpsc::UnboundedSender<EventEnvelope> {
    fn send(&self, event: EventEnvelope) {
        // A closed receiver means nobody listens any more; the job goes on.
        let _ = tokio::sync::mpsc::UnboundedSender::send(self, event);
    }
}

impl EventSink for tokio::sync::broadcast::Sender<EventEnvelope> {
    fn send(&self, event: EventEnvelope) {
        // No subscriber is fine; lagging subscribers see `Lagged` and resync by seq.
        let _ = tokio::sync::broadcast::Sender::send(self, event);
    }
}

/// Stamps events with the job id and the next `seq` and hands them to the sink. Shared by every
/// node task of one job.
#[derive(Debug)]
pub struct EventPoster {
    job_id: String,
    seq: AtomicU64,
    // Serialises "take a seq, send": a sink then sees seqs in order.
    order: Mutex<()>,
    sink: Arc<dyn EventSink>,
}

impl EventPoster {
    pub fn new(job_id: impl Into<String>, sink: Arc<dyn EventSink>) -> Self {
        Self {
            job_id: job_id.into(),
            seq: AtomicU64::new(0),
            order: Mutex::new(()),
            sink,
        }
    }

    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    pub fn post(&self, event: Event) {
        let _guard = self.order.lock().unwrap_or_else(|p| p.into_inner());
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.sink.send(EventEnvelope {
            job_id: self.job_id.clone(),
            seq,
            event,
        });
    }

    /// The last seq handed out.
    pub fn last_seq(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelope_is_flat_and_round_trips() {
        let env = EventEnvelope {
            job_id: "j1".into(),
            seq: 7,
            event: Event::EdgeUpdate(EdgeUpdate {
                workflow_id: "".into(),
                edge_id: "e1".into(),
                status: EdgeStatus::MessageSent,
                counter: Some(2),
            }),
        };
        let v = serde_json::to_value(&env).unwrap();
        assert_eq!(
            v,
            json!({"type": "edge_update", "job_id": "j1", "seq": 7, "workflow_id": "",
                   "edge_id": "e1", "status": "message_sent", "counter": 2})
        );
        let back: EventEnvelope = serde_json::from_value(v).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn nodetool_job_update_parses() {
        let line = r#"{"type": "job_update", "status": "completed", "job_id": "x", "seq": 1,
            "workflow_id": "", "message": "done", "result": {"out": ["hi"]}, "error": null,
            "traceback": null, "run_state": null, "duration": 0.01}"#;
        let env: EventEnvelope = serde_json::from_str(line).unwrap();
        let Event::JobUpdate(j) = env.event else {
            panic!("wrong type")
        };
        assert_eq!(j.status, Status::Completed);
        assert_eq!(j.result.unwrap()["out"], json!(["hi"]));
    }

    #[test]
    fn poster_numbers_events_from_one() {
        let sink = VecSink::new();
        let poster = EventPoster::new("j", sink.clone());
        for _ in 0..3 {
            poster.post(Event::Error(ErrorMessage {
                message: "m".into(),
                thread_id: None,
                workflow_id: None,
            }));
        }
        let seqs: Vec<u64> = sink.events().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
    }
}
