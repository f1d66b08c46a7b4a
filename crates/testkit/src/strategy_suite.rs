//! The strategy behaviour suite: every `ExecutionStrategy` (threaded, subprocess, Docker) must
//! pass it. `run(strategy, reference)` compares event streams against `reference` (a threaded
//! strategy) and panics listing every failed case. [`test_engine`] is the engine such a
//! reference runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use nodetool_engine::{Engine, Event, EventEnvelope, Graph, Status, VecSink};
use nodetool_exec::{ExecutionStrategy, JobOutcome, JobSpec};
use serde_json::{json, Value};

/// An engine on test settings (in-memory/temp storage) under `dir`, with every registered node
/// (the `nodetool.test.*` nodes too when `nodetool-nodes`' `test-nodes` feature is on).
pub async fn test_engine(dir: &std::path::Path) -> Engine {
    let env: BTreeMap<String, String> = [("ENV".to_owned(), "test".to_owned())].into();
    let settings = nodetool_config::Settings::load(&nodetool_config::Sources::new(env, dir))
        .expect("settings");
    let resources = nodetool_runtime::Resources::new(settings, Default::default());
    let res = resources.engine_resources().await.expect("resources");
    Engine::new(Arc::new(nodetool_nodes::registry()), res)
}

pub fn graph(nodes: Vec<Value>, edges: Vec<Value>) -> Graph {
    serde_json::from_value(json!({"nodes": nodes, "edges": edges})).expect("graph")
}

/// `node_type(data)` → Output named "result".
pub fn one(node_type: &str, data: Value) -> Graph {
    graph(
        vec![
            json!({"id": "n", "type": node_type, "data": data}),
            json!({"id": "out", "type": "nodetool.output.Output", "data": {"name": "result"}}),
        ],
        vec![
            json!({"id": "e1", "source": "n", "sourceHandle": "output", "target": "out", "targetHandle": "value"}),
        ],
    )
}

pub async fn run_job(
    strategy: &Arc<dyn ExecutionStrategy>,
    spec: JobSpec,
) -> (JobOutcome, Vec<EventEnvelope>) {
    let sink = VecSink::new();
    let mut handle = strategy.start(spec, sink.clone()).await.expect("start");
    let outcome = handle.wait().await;
    (outcome, sink.events())
}

/// Events with timing, ids and the worker's memory taken out, sorted (parallel nodes may
/// interleave).
fn normalise(events: &[EventEnvelope], job_id: &str) -> Vec<String> {
    let mut out: Vec<String> = events
        .iter()
        .map(|e| {
            let mut v = serde_json::to_value(e).expect("event json");
            if let Some(o) = v.as_object_mut() {
                o.remove("seq");
                o.remove("job_id");
                o.remove("duration");
                // A worker's own memory, which an in-process run has not.
                o.remove("peak_memory_bytes");
                // A firing's times vary; its bytes and cache outcome must not.
                if let Some(r) = o.get_mut("resources").and_then(Value::as_object_mut) {
                    r.remove("wall_ms");
                    r.remove("cpu_ms");
                }
            }
            sorted_keys(v).to_string().replace(job_id, "JOB")
        })
        .collect();
    out.sort();
    out
}

/// `v` with every object's keys in order: with serde_json's `preserve_order` (which a crate in
/// the build may switch on) a job result's keys follow the order its outputs finished in.
fn sorted_keys(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sorted_keys(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted_keys).collect()),
        other => other,
    }
}

/// Seqs run 1..=n and exactly the last event is a terminal job_update with `status`.
fn check_stream(events: &[EventEnvelope], job_id: &str, status: Status) -> Result<(), String> {
    for (i, e) in events.iter().enumerate() {
        if e.seq != i as u64 + 1 {
            return Err(format!("event {i} has seq {} (want {})", e.seq, i + 1));
        }
        if e.job_id != job_id {
            return Err(format!("event {i} has job id {} (want {job_id})", e.job_id));
        }
    }
    match events.last().map(|e| &e.event) {
        Some(Event::JobUpdate(u)) if u.status == status => Ok(()),
        other => Err(format!(
            "last event is {other:?}, want a job_update {status}"
        )),
    }
}

fn expect(cond: bool, msg: impl Into<String>) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(msg.into())
    }
}

async fn same_events_as_reference(
    s: &Arc<dyn ExecutionStrategy>,
    reference: &Arc<dyn ExecutionStrategy>,
) -> Result<(), String> {
    let g = graph(
        vec![
            json!({"id": "gen", "type": "nodetool.test.Generate", "data": {"count": 3}}),
            json!({"id": "prog", "type": "nodetool.test.Progress", "data": {"steps": 3}}),
            json!({"id": "o1", "type": "nodetool.output.Output", "data": {"name": "numbers"}}),
            json!({"id": "o2", "type": "nodetool.output.Output", "data": {"name": "steps"}}),
        ],
        vec![
            json!({"id": "e1", "source": "gen", "sourceHandle": "output", "target": "o1", "targetHandle": "value"}),
            json!({"id": "e2", "source": "prog", "sourceHandle": "output", "target": "o2", "targetHandle": "value"}),
        ],
    );
    let mut spec = JobSpec::new(g);
    spec.use_cache = false;
    let (a, ea) = run_job(s, spec.clone()).await;
    let (b, eb) = run_job(reference, spec.clone()).await;
    expect(
        a.status == Status::Completed,
        format!("status {:?}: {:?}", a.status, a.error),
    )?;
    expect(
        a.result == b.result,
        format!("result {:?} vs reference {:?}", a.result, b.result),
    )?;
    expect(
        a.result.get("numbers") == Some(&json!([0, 1, 2])),
        format!("numbers: {:?}", a.result),
    )?;
    check_stream(&ea, spec.job_id.as_str(), Status::Completed)?;
    let (na, nb) = (
        normalise(&ea, spec.job_id.as_str()),
        normalise(&eb, spec.job_id.as_str()),
    );
    expect(
        na == nb,
        format!("events differ:\n{na:#?}\nreference:\n{nb:#?}"),
    )
}

async fn failing_node(s: &Arc<dyn ExecutionStrategy>) -> Result<(), String> {
    let spec = JobSpec::new(one(
        "nodetool.test.Fail",
        json!({"message": "boom on purpose"}),
    ));
    let (o, ev) = run_job(s, spec.clone()).await;
    expect(o.status == Status::Failed, format!("status {:?}", o.status))?;
    let text = o.error_text().unwrap_or_default();
    expect(text.contains("boom on purpose"), format!("error: {text}"))?;
    expect(
        o.failed_node.as_deref() == Some("n"),
        format!("failed node {:?}", o.failed_node),
    )?;
    check_stream(&ev, spec.job_id.as_str(), Status::Failed)
}

async fn cancel_mid_run(s: &Arc<dyn ExecutionStrategy>) -> Result<(), String> {
    let spec = JobSpec::new(one(
        "nodetool.test.Sleep",
        json!({"seconds": 60.0, "value": 1}),
    ));
    let sink = VecSink::new();
    let mut handle = s
        .start(spec.clone(), sink.clone())
        .await
        .map_err(|e| e.to_string())?;
    // Wait until the sleeping node runs.
    let mut running = false;
    for _ in 0..300 {
        running = sink.events().iter().any(|e| {
            matches!(&e.event, Event::NodeUpdate(n) if n.node_id == "n" && n.status == Status::Running)
        });
        if running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    expect(running, "the Sleep node never started")?;
    handle.cancel();
    handle.cancel();
    let o = tokio::time::timeout(Duration::from_secs(30), handle.wait())
        .await
        .map_err(|_| "cancel did not end the job within 30s".to_owned())?;
    handle.cancel();
    expect(
        o.status == Status::Cancelled,
        format!("status {:?}: {:?}", o.status, o.error),
    )?;
    check_stream(&sink.events(), spec.job_id.as_str(), Status::Cancelled)
}

async fn timeout(s: &Arc<dyn ExecutionStrategy>) -> Result<(), String> {
    let mut spec = JobSpec::new(one("nodetool.test.Sleep", json!({"seconds": 60.0})));
    spec.resource_limits.time_seconds = Some(0.5);
    let (o, ev) = tokio::time::timeout(Duration::from_secs(30), run_job(s, spec.clone()))
        .await
        .map_err(|_| "a 0.5s time limit did not end the job within 30s".to_owned())?;
    expect(o.is_timeout(), format!("outcome {o:?}"))?;
    check_stream(&ev, spec.job_id.as_str(), Status::Failed)
}

/// `s1` (a `first`-second sleep of "a") feeds `s2` (no sleep), which feeds output "result".
pub fn chain(first: f64) -> Graph {
    graph(
        vec![
            json!({"id": "s1", "type": "nodetool.test.Sleep", "data": {"seconds": first, "value": "a"}}),
            json!({"id": "s2", "type": "nodetool.test.Sleep", "data": {"seconds": 0.0}}),
            json!({"id": "out", "type": "nodetool.output.Output", "data": {"name": "result"}}),
        ],
        vec![
            json!({"id": "e1", "source": "s1", "sourceHandle": "output", "target": "s2", "targetHandle": "value"}),
            json!({"id": "e2", "source": "s2", "sourceHandle": "output", "target": "out", "targetHandle": "value"}),
        ],
    )
}

fn node_is(e: &EventEnvelope, node: &str, status: Status) -> bool {
    matches!(&e.event, Event::NodeUpdate(n) if n.node_id == node && n.status == status)
}

fn job_is(e: &EventEnvelope, status: Status) -> bool {
    matches!(&e.event, Event::JobUpdate(u) if u.status == status)
}

fn resumed(e: &EventEnvelope) -> bool {
    matches!(&e.event, Event::JobUpdate(u)
        if u.status == Status::Running && u.message.as_deref() == Some("Job resumed"))
}

/// Waits (a hang guard, not a timing claim) until an event of `sink` matches; its index.
async fn wait_event(
    sink: &VecSink,
    what: &str,
    pred: impl Fn(&EventEnvelope) -> bool,
) -> Result<usize, String> {
    for _ in 0..600 {
        if let Some(i) = sink.events().iter().position(&pred) {
            return Ok(i);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("no {what} within 30s: {:#?}", sink.events()))
}

/// Paused while its first node runs, a job does not start the next one until it is resumed
/// (told by the order of its events), then completes.
async fn pause_between_nodes(s: &Arc<dyn ExecutionStrategy>) -> Result<(), String> {
    let mut spec = JobSpec::new(chain(2.0));
    spec.use_cache = false;
    let gate = spec.pause.clone();
    let sink = VecSink::new();
    let mut handle = s
        .start(spec.clone(), sink.clone())
        .await
        .map_err(|e| e.to_string())?;
    wait_event(&sink, "s1 running", |e| node_is(e, "s1", Status::Running)).await?;
    expect(gate.pause(), "the gate was open")?;
    let paused = wait_event(&sink, "job_update paused", |e| job_is(e, Status::Paused)).await?;
    let s1_done = wait_event(&sink, "s1 completed", |e| {
        node_is(e, "s1", Status::Completed)
    })
    .await?;
    expect(
        paused < s1_done,
        "the pause reached the job only after s1 (a 2 s sleep) was done: the setup was too slow",
    )?;
    // A moment for a gate that does not hold to let s2 start (a working one holds it however
    // long this is).
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Events posted before the resume (the run's own `job_update running` may trail the nodes it
    // releases, so the order is told by what had arrived here).
    let held = sink.events().len();
    expect(gate.resume(), "the gate was closed")?;
    let o = tokio::time::timeout(Duration::from_secs(30), handle.wait())
        .await
        .map_err(|_| "the resumed job did not end within 30s".to_owned())?;
    expect(
        o.status == Status::Completed && o.result.get("result") == Some(&json!(["a"])),
        format!("outcome {o:?}"),
    )?;
    let events = sink.events();
    let s2_started = events
        .iter()
        .position(|e| node_is(e, "s2", Status::Running));
    expect(
        s2_started.is_some_and(|i| i >= held),
        format!(
            "s2 must start after the resume (event {held} on): it started at {s2_started:?}: \
             {events:#?}"
        ),
    )?;
    expect(
        events.iter().any(resumed),
        "no job_update running \"Job resumed\"",
    )?;
    check_stream(&events, spec.job_id.as_str(), Status::Completed)
}

/// A job started paused holds before its first node; cancelling it ends it as cancelled.
async fn cancel_while_paused(s: &Arc<dyn ExecutionStrategy>) -> Result<(), String> {
    let spec = JobSpec::new(chain(0.0));
    spec.pause.pause();
    let sink = VecSink::new();
    let mut handle = s
        .start(spec.clone(), sink.clone())
        .await
        .map_err(|e| e.to_string())?;
    wait_event(&sink, "job_update paused", |e| job_is(e, Status::Paused)).await?;
    handle.cancel();
    let o = tokio::time::timeout(Duration::from_secs(30), handle.wait())
        .await
        .map_err(|_| "cancel did not end the paused job within 30s".to_owned())?;
    expect(
        o.status == Status::Cancelled,
        format!("status {:?}: {:?}", o.status, o.error),
    )?;
    let events = sink.events();
    expect(
        !events.iter().any(|e| node_is(e, "s1", Status::Completed)),
        "s1 ran while the job was paused",
    )?;
    check_stream(&events, spec.job_id.as_str(), Status::Cancelled)
}

/// The deadline runs on while a job is paused: it ends timed out.
async fn deadline_while_paused(s: &Arc<dyn ExecutionStrategy>) -> Result<(), String> {
    let mut spec = JobSpec::new(chain(0.0));
    spec.resource_limits.time_seconds = Some(0.5);
    spec.pause.pause();
    let (o, ev) = tokio::time::timeout(Duration::from_secs(30), run_job(s, spec.clone()))
        .await
        .map_err(|_| "a 0.5s time limit did not end the paused job within 30s".to_owned())?;
    expect(o.is_timeout(), format!("outcome {o:?}"))?;
    expect(
        ev.iter().any(|e| job_is(e, Status::Paused))
            && !ev.iter().any(|e| node_is(e, "s1", Status::Completed)),
        format!("the job must have been paused throughout: {ev:#?}"),
    )?;
    check_stream(&ev, spec.job_id.as_str(), Status::Failed)
}

async fn big_output(s: &Arc<dyn ExecutionStrategy>) -> Result<(), String> {
    const N: usize = 50 * 1024 * 1024;
    let spec = JobSpec::new(one("nodetool.test.BigOutput", json!({"bytes": N})));
    let (o, ev) = run_job(s, spec.clone()).await;
    expect(
        o.status == Status::Completed,
        format!("status {:?}: {:?}", o.status, o.error),
    )?;
    let len = o.result["result"][0].as_str().map(str::len);
    expect(len == Some(N), format!("output length {len:?}"))?;
    check_stream(&ev, spec.job_id.as_str(), Status::Completed)
}

async fn crash(s: &Arc<dyn ExecutionStrategy>) -> Result<(), String> {
    let spec = JobSpec::new(one("nodetool.test.Crash", json!({})));
    let (o, ev) = run_job(s, spec.clone()).await;
    expect(o.status == Status::Failed, format!("status {:?}", o.status))?;
    let text = o.error_text().unwrap_or_default();
    expect(
        text.contains("SIGABRT"),
        format!("error should name the signal: {text}"),
    )?;
    check_stream(&ev, spec.job_id.as_str(), Status::Failed)?;
    // The parent is fine and runs the next job.
    let (o, _) = run_job(
        s,
        JobSpec::new(one("nodetool.test.Sleep", json!({"value": 7}))),
    )
    .await;
    expect(
        o.status == Status::Completed,
        format!("job after a crash: {:?}", o.status),
    )
}

async fn out_of_memory(s: &Arc<dyn ExecutionStrategy>) -> Result<(), String> {
    let mut spec = JobSpec::new(one("nodetool.test.Allocate", json!({"megabytes": 2048})));
    spec.resource_limits.memory_bytes = Some(512 * 1024 * 1024);
    let (o, ev) = run_job(s, spec.clone()).await;
    expect(o.status == Status::Failed, format!("status {:?}", o.status))?;
    let text = o.error_text().unwrap_or_default();
    expect(text.contains("out of memory"), format!("error: {text}"))?;
    check_stream(&ev, spec.job_id.as_str(), Status::Failed)
}

/// The memory limit measures what a job allocates: 100 MiB fit in 256 MiB (RLIMIT_AS did not:
/// the idle worker reserves about 1 GiB of address space), 400 MiB do not, and the smallest
/// accepted limit still runs a job.
async fn memory_limit_is_accurate(s: &Arc<dyn ExecutionStrategy>) -> Result<(), String> {
    const MIB: u64 = 1024 * 1024;
    for (megabytes, limit_mb, fits) in [(100, 256, true), (400, 256, false), (0, 32, true)] {
        let mut spec = JobSpec::new(one(
            "nodetool.test.Allocate",
            json!({"megabytes": megabytes}),
        ));
        spec.resource_limits.memory_bytes = Some(limit_mb * MIB);
        let (o, ev) = run_job(s, spec.clone()).await;
        let what = format!("{megabytes} MiB under {limit_mb} MiB");
        if fits {
            expect(
                o.status == Status::Completed,
                format!("{what}: {:?} {:?}", o.status, o.error_text()),
            )?;
            expect(
                o.result.get("result") == Some(&json!([megabytes])),
                format!("{what}: result {:?}", o.result),
            )?;
            check_stream(&ev, spec.job_id.as_str(), Status::Completed)?;
        } else {
            expect(
                o.status == Status::Failed,
                format!("{what}: {:?}", o.status),
            )?;
            let text = o.error_text().unwrap_or_default();
            expect(
                text.contains("out of memory")
                    && o.error
                        .as_ref()
                        .is_some_and(|e| e.error_kind() == nodetool_core::ErrorKind::TooLarge),
                format!("{what}: error {:?}", o.error),
            )?;
            check_stream(&ev, spec.job_id.as_str(), Status::Failed)?;
        }
    }
    Ok(())
}

/// Runs every case against `strategy`; panics listing each failure.
pub async fn run(strategy: Arc<dyn ExecutionStrategy>, reference: Arc<dyn ExecutionStrategy>) {
    let caps = strategy.capabilities();
    let mut failures = Vec::new();
    let mut record = |name: &str, r: Result<(), String>| {
        if let Err(e) = r {
            failures.push(format!("{name}: {e}"));
        }
    };
    record(
        "same_events_as_reference",
        same_events_as_reference(&strategy, &reference).await,
    );
    record("failing_node", failing_node(&strategy).await);
    record("cancel_mid_run", cancel_mid_run(&strategy).await);
    record("timeout", timeout(&strategy).await);
    record("pause_between_nodes", pause_between_nodes(&strategy).await);
    record("cancel_while_paused", cancel_while_paused(&strategy).await);
    record(
        "deadline_while_paused",
        deadline_while_paused(&strategy).await,
    );
    record("big_output_50mib", big_output(&strategy).await);
    if caps.isolates_crashes {
        record("crash", crash(&strategy).await);
    }
    if caps.memory_limit {
        record("out_of_memory", out_of_memory(&strategy).await);
        record(
            "memory_limit_is_accurate",
            memory_limit_is_accurate(&strategy).await,
        );
    }
    assert!(
        failures.is_empty(),
        "{} strategy failed {} case(s):\n{}",
        strategy.name(),
        failures.len(),
        failures.join("\n")
    );
}
