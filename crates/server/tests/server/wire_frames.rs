//! Every frame shape of the typed wire layer (`nodetool_server::wire`), pinned as snapshots in
//! JSON and MessagePack: a protocol change shows up as a reviewed diff of `tests/server/snapshots/`.
//! Each snapshot holds the JSON form and the MessagePack bytes (hex); the MessagePack form must
//! also decode to the same value as the JSON form.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use chrono::{DateTime, Utc};
use nodetool_core::ErrorKind;
use nodetool_engine::events::{JobUpdate, NodeUpdate, OutputUpdate};
use nodetool_engine::{Event, EventEnvelope, Status};
use nodetool_exec::{JobRecord, StrategyKind};
use nodetool_server::wire::{
    self, ActiveJob, Control, ErrorFrame, Followed, Frame, InputApplied, JobControlled, JobList,
    JobResumed, JobStarted, JobView, LagNotice, Mode, Reply, StatusReply, WsStatus,
};
use nodetool_testkit::ids::jid;
use serde_json::{json, Map, Value};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// The JSON form and the MessagePack bytes of a frame, checked to decode alike.
fn both(frame: &Frame) -> Value {
    let json: Value = serde_json::from_str(&frame.to_json().unwrap()).unwrap();
    let packed = frame.to_msgpack().unwrap();
    let unpacked = nodetool_server::ws::decode_binary_frame(&packed).unwrap();
    assert_eq!(unpacked, json, "MessagePack and JSON disagree");
    let hex: String = packed.iter().map(|b| format!("{b:02x}")).collect();
    json!({"json": json, "msgpack": hex})
}

macro_rules! frame {
    ($name:expr, $frame:expr) => {
        insta::assert_json_snapshot!($name, both(&Frame::from($frame)))
    };
}

fn record(status: Status, error: Option<&str>) -> JobRecord {
    JobRecord {
        id: jid("job-1"),
        user_id: "alice".into(),
        workflow_id: "wf-1".into(),
        strategy: StrategyKind::Threaded,
        status,
        params: json!({"text": "hi"}),
        created_at: at("2026-01-02T03:04:05Z"),
        started_at: Some(at("2026-01-02T03:04:06Z")),
        finished_at: status.is_terminal().then(|| at("2026-01-02T03:04:07Z")),
        error: error.map(str::to_owned),
        result: (status == Status::Completed).then(|| json!({"result": ["done"]})),
        worker: Some(nodetool_exec::WorkerRef::Pid(42)),
    }
}

fn envelope(seq: u64, event: Event) -> EventEnvelope {
    EventEnvelope {
        job_id: "job-1".into(),
        seq,
        event,
    }
}

fn job_update(status: Status, error: Option<&str>) -> Event {
    Event::JobUpdate(JobUpdate {
        status,
        workflow_id: Some("wf-1".into()),
        message: None,
        result: None,
        error: error.map(str::to_owned),
        traceback: None,
        run_state: None,
        duration: status.is_terminal().then_some(1.5),
        peak_memory_bytes: None,
    })
}

const TIMEOUT: &str = "job exceeded its time limit of 2.000s";

#[test]
fn replies() {
    frame!(
        "reply_set_mode",
        Reply::SetMode {
            message: "Mode set to text".into(),
            mode: Mode::Text
        }
    );
    frame!(
        "reply_run_job",
        Reply::RunJob(JobStarted {
            message: "Job started",
            job_id: "job-1".into(),
            workflow_id: Some("wf-1".into()),
            status: WsStatus::Running,
            queue_position: None,
        })
    );
    frame!(
        "reply_run_job_queued",
        Reply::RunJob(JobStarted {
            message: "Job started",
            job_id: "job-2".into(),
            workflow_id: Some(String::new()),
            status: WsStatus::Queued,
            queue_position: Some(3),
        })
    );
    frame!(
        "reply_reconnect_job",
        Reply::ReconnectJob(JobResumed {
            kind: "job_resumed",
            message: "Reconnecting to job job-1".into(),
            job_id: "job-1".into(),
            workflow_id: "wf-1".into(),
            status: WsStatus::Running,
            last_seq: 4,
            since_seq: 4,
            job_seq: Some(9),
        })
    );
    frame!(
        "reply_cancel_job",
        Reply::CancelJob {
            message: "Job cancellation requested",
            job_id: "job-1".into()
        }
    );
    let controlled = |message, status, changed| JobControlled {
        message,
        job_id: "job-1".into(),
        status,
        changed,
    };
    frame!(
        "reply_pause_job",
        Reply::PauseJob(controlled("Job paused", WsStatus::Paused, true))
    );
    frame!(
        "reply_resume_job",
        Reply::ResumeJob(controlled("Job resumed", WsStatus::Running, true))
    );
    frame!(
        "reply_get_status_job",
        Reply::GetStatus(StatusReply::Job {
            job_id: "job-1".into(),
            workflow_id: "wf-1".into(),
            status: WsStatus::TimedOut,
            error: Some(TIMEOUT.into()),
            queue_position: None,
        })
    );
    frame!(
        "reply_get_status_not_found",
        Reply::GetStatus(StatusReply::NotFound {
            job_id: "nope".into(),
            status: "not_found"
        })
    );
    frame!(
        "reply_get_status_active",
        Reply::GetStatus(StatusReply::Active {
            active_jobs: vec![ActiveJob {
                job_id: "job-1".into(),
                workflow_id: "wf-1".into(),
                status: WsStatus::Paused,
            }]
        })
    );
    let applied = |message| InputApplied {
        message,
        job_id: "job-1".into(),
        input: "text".into(),
        handle: Some("output".into()),
    };
    frame!(
        "reply_stream_input",
        Reply::StreamInput(applied("Input value pushed"))
    );
    frame!(
        "reply_end_input_stream",
        Reply::EndInputStream(applied("Input stream ended"))
    );
}

#[test]
fn errors() {
    frame!(
        "error_undecodable",
        ErrorFrame::undecodable("expected value at line 1 column 1".into())
    );
    frame!(
        "error_invalid_message",
        wire::parse_frame(json!({"data": {}})).unwrap_err()
    );
    frame!(
        "error_unknown_command",
        wire::parse_frame(json!({"command": "no_such", "data": {}})).unwrap_err()
    );
    frame!(
        "error_invalid_command",
        wire::parse_frame(json!({"command": "cancel_job", "data": {}})).unwrap_err()
    );
    frame!(
        "error_not_found",
        ErrorFrame::new("cancel_job", "not_found", "Job not found").job("job-9")
    );
    frame!(
        "error_job_rejected",
        ErrorFrame::new(
            "run_job",
            "job_rejected",
            "job_id job-1 is already in use; send a new id for a new run"
        )
        .kind(ErrorKind::AlreadyExists)
    );
    frame!(
        "error_busy",
        ErrorFrame::new("stream_input", "busy", "64 input commands are waiting")
            .job("job-1")
            .input("text")
    );
    frame!(
        "error_pause_finished",
        ErrorFrame::new(
            "pause_job",
            wire::wire_error(ErrorKind::Unavailable).ws,
            "job job-1 is no longer running (completed)"
        )
        .job("job-1")
        .kind(ErrorKind::Unavailable)
    );
}

#[test]
fn control_frames() {
    frame!("control_pong", Control::Pong { ts: 1767323045.5 });
    frame!("control_lag", Control::Lag(LagNotice::new("job-1", 3, 7)));
    frame!(
        "control_queued",
        Control::Queued {
            job_id: "job-2".into(),
            workflow_id: "wf-1".into(),
            status: WsStatus::Queued,
            queue_position: 2,
        }
    );
}

#[test]
fn job_events_carry_job_seq_and_nodetool_statuses() {
    let node = Event::NodeUpdate(NodeUpdate {
        node_id: "n1".into(),
        node_name: "Sleep".into(),
        node_type: "nodetool.test.Sleep".into(),
        status: Status::Running,
        error: None,
        result: None,
        properties: Some(Map::new()),
        workflow_id: Some("wf-1".into()),
        resources: None,
    });
    frame!(
        "event_node_update",
        Followed::Event(Box::new(envelope(2, node)))
    );
    // The update that ends a firing says what it cost.
    let done = Event::NodeUpdate(NodeUpdate {
        node_id: "n1".into(),
        node_name: "Sleep".into(),
        node_type: "nodetool.test.Sleep".into(),
        status: Status::Completed,
        error: None,
        result: Some(Map::new()),
        properties: Some(Map::new()),
        workflow_id: Some("wf-1".into()),
        resources: Some(nodetool_engine::meter::NodeResources {
            wall_ms: 12.5,
            cpu_ms: 0.25,
            bytes_read: 4096,
            bytes_written: 1024,
            cache: Some(nodetool_engine::meter::CacheOutcome::Miss),
        }),
    });
    frame!(
        "event_node_update_completed",
        Followed::Event(Box::new(envelope(3, done)))
    );
    frame!(
        "event_output_update",
        Followed::Event(Box::new(envelope(
            3,
            Event::OutputUpdate(OutputUpdate {
                node_id: "out".into(),
                node_name: "result".into(),
                output_name: "result".into(),
                value: json!("done"),
                output_type: "any".into(),
                metadata: Map::new(),
                workflow_id: Some("wf-1".into()),
            })
        )))
    );
    frame!(
        "event_job_paused",
        Followed::Event(Box::new(envelope(4, job_update(Status::Paused, None))))
    );
    frame!(
        "event_job_completed",
        Followed::Event(Box::new(envelope(5, job_update(Status::Completed, None))))
    );
    // A job time-out is `failed` inside; NodeTool clients read `timed_out`.
    frame!(
        "event_job_timed_out",
        Followed::Event(Box::new(envelope(
            5,
            job_update(Status::Failed, Some(TIMEOUT))
        )))
    );
    frame!(
        "event_final_update",
        Followed::Final(JobView::of(&record(Status::Completed, None)).final_update())
    );
    frame!(
        "event_final_update_timed_out",
        Followed::Final(JobView::of(&record(Status::Failed, Some(TIMEOUT))).final_update())
    );
}

#[test]
fn the_job_view_rest_sse_and_ws_share() {
    let view = JobView::of(&record(Status::Completed, None));
    insta::assert_json_snapshot!("rest_job_view", view);
    insta::assert_json_snapshot!(
        "rest_job_list",
        JobList {
            jobs: vec![JobView::of(&record(Status::Running, None))],
            next_start_key: None,
        }
    );
    let text = serde_json::to_string(&view).unwrap();
    assert!(!text.contains("worker") && !text.contains("42"), "{text}");
}

#[test]
fn the_error_table() {
    let kinds = [
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::InvalidInput,
        ErrorKind::RangeNotSatisfiable,
        ErrorKind::TooLarge,
        ErrorKind::StorageFull,
        ErrorKind::ConfigInvalid,
        ErrorKind::PermissionDenied,
        ErrorKind::RateLimited,
        ErrorKind::Timeout,
        ErrorKind::Cancelled,
        ErrorKind::Unsupported,
        ErrorKind::Unavailable,
        ErrorKind::Unexpected,
    ];
    let table: Vec<Value> = kinds
        .iter()
        .map(|k| {
            let w = wire::wire_error(*k);
            json!({"kind": k, "status": w.status.as_u16(), "code": w.code, "ws": w.ws})
        })
        .collect();
    insta::assert_json_snapshot!("error_table", table);
    // serde names round-trip.
    for k in kinds {
        let v = serde_json::to_value(k).unwrap();
        assert_eq!(serde_json::from_value::<ErrorKind>(v).unwrap(), k);
    }
}

/// What the decoder makes of the web client's frames (`type` and `command` both set, a client
/// job id, `last_seq`, our `since_seq`, non-command frames).
#[test]
fn inbound_frames() {
    let frames = [
        json!({"type": "ping"}),
        json!({"command": "ping"}),
        json!({"type": "client_tools_manifest", "tools": [{"name": "ui_x"}]}),
        json!({"type": "reconnect_job", "command": "reconnect_job",
               "data": {"job_id": "j1", "workflow_id": "wf", "last_seq": 7}}),
        json!({"command": "reconnect_job", "data": {"job_id": "j1", "since_seq": 3}}),
        json!({"command": "reconnect_job", "data": {"job_id": "j1", "last_seq": -1}}),
        json!({"type": "pause_job", "command": "pause_job", "data": {"job_id": "j1", "workflow_id": "wf"}}),
        json!({"type": "resume_job", "command": "resume_job", "data": {"job_id": "j1"}}),
        json!({"type": "stream_input", "command": "stream_input",
               "data": {"input": "text", "value": null, "handle": null, "job_id": "j1", "workflow_id": "wf"}}),
        json!({"command": "end_input_stream", "data": {"input": "text", "job_id": "j1"}}),
        json!({"command": "stream_input", "data": {"input": "text", "job_id": "j1"}}),
        json!({"command": "set_mode", "data": {"mode": "binary"}}),
        json!({"command": "get_status"}),
        json!({"command": "get_status", "data": []}),
        json!([1, 2]),
    ];
    let parsed: Vec<String> = frames
        .into_iter()
        .map(|f| format!("{f} => {:?}", wire::parse_frame(f.clone())))
        .collect();
    insta::assert_debug_snapshot!("inbound_frames", parsed);
    // The web client's run_job: `type` + `command`, its own job id, NodeTool's fields.
    let run = json!({"type": "run_job", "command": "run_job", "data": {
        "type": "run_job_request", "api_url": "http://localhost:7777", "user_id": "1",
        "workflow_id": "wf", "auth_token": "local_token", "job_type": "workflow",
        "execution_strategy": "threaded", "params": {}, "explicit_types": false,
        "graph": {"nodes": [], "edges": []}, "resource_limits": null, "settings": {},
        "job_id": "0b7a3c52-1d2e-4f5a-9b8c-7d6e5f4a3b2c"}});
    match wire::parse_frame(run).unwrap() {
        wire::Inbound::Command(wire::Command::RunJob(req)) => {
            assert_eq!(
                req.job_id.as_deref(),
                Some("0b7a3c52-1d2e-4f5a-9b8c-7d6e5f4a3b2c")
            );
            assert_eq!(
                req.validate()
                    .unwrap()
                    .job_id
                    .as_ref()
                    .map(nodetool_core::JobId::as_str),
                Some("0b7a3c52-1d2e-4f5a-9b8c-7d6e5f4a3b2c")
            );
        }
        other => panic!("{other:?}"),
    }
}
