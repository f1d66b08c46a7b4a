//! The bridge client against the real worker (nodetool-core 0.8.2 from PyPI) and the test node
//! pack: handshake, requests, streaming, blobs, secrets, cancellation, errors, crashes, hangs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

use crate::common;

use std::time::Duration;

use bytes::Bytes;
use rmpv::Value as Mp;

use nodetool_bridge::{BlobInput, ExecEvent, ExecuteRequest, Execution, PythonBridge};
use nodetool_core::ErrorKind;

fn request(node_type: &str, fields: Vec<(&str, Mp)>) -> ExecuteRequest {
    ExecuteRequest {
        node_type: node_type.to_owned(),
        label: format!("node `t` ({node_type})"),
        fields: fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        node_id: "t".to_owned(),
        job_id: "job-1".to_owned(),
        max_result_blob_bytes: 1 << 30,
        ..ExecuteRequest::default()
    }
}

/// Runs to the end: (events before the result, the result's outputs).
async fn drain(
    mut exec: Execution,
) -> nodetool_core::Result<(Vec<ExecEvent>, nodetool_bridge::Outputs)> {
    let mut events = Vec::new();
    while let Some(ev) = exec.next().await? {
        match ev {
            ExecEvent::Result(out) => return Ok((events, out)),
            other => events.push(other),
        }
    }
    panic!("no result");
}

fn output<'a>(out: &'a nodetool_bridge::Outputs, slot: &str) -> &'a Mp {
    &out.values.iter().find(|(k, _)| k == slot).expect("slot").1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovers_the_pack_and_runs_a_plain_node() {
    let Some(env) = common::python("discovers_the_pack_and_runs_a_plain_node") else {
        return;
    };
    let bridge = common::bridge(&env).await;
    let d = bridge.discovery();
    assert_eq!(d.protocol_version, 6);
    assert!(d.load_errors.is_empty(), "{:?}", d.load_errors);
    let echo = d.node("bridgetest.basic.Echo").expect("Echo discovered");
    assert_eq!(
        echo.property("times").unwrap().default,
        serde_json::json!(1)
    );
    assert_eq!(echo.outputs[0].type_name, "str");
    assert!(
        d.node("bridgetest.basic.Count")
            .unwrap()
            .is_streaming_output
    );
    assert_eq!(
        d.node("bridgetest.basic.ReadSecret")
            .unwrap()
            .required_settings,
        vec!["BRIDGE_TEST_SECRET".to_owned()]
    );
    assert_eq!(
        d.node("bridgetest.basic.Invert")
            .unwrap()
            .property("image")
            .unwrap()
            .type_name,
        "image"
    );

    let exec = bridge
        .execute(&request(
            "bridgetest.basic.Echo",
            vec![("text", Mp::from("ab")), ("times", Mp::from(3))],
        ))
        .await
        .unwrap();
    let (_, out) = drain(exec).await.unwrap();
    assert_eq!(output(&out, "output").as_str(), Some("ababab"));
}

/// Fails the test instead of hanging it.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(90), f)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

async fn echo_works(bridge: &PythonBridge) {
    let exec = bridge
        .execute(&request(
            "bridgetest.basic.Echo",
            vec![("text", Mp::from("ok"))],
        ))
        .await
        .expect("the bridge serves again");
    let (_, out) = drain(exec).await.expect("echo after trouble");
    assert_eq!(output(&out, "output").as_str(), Some("ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_node_streams_chunks_in_order() {
    let Some(env) = common::python("a_streaming_node_streams_chunks_in_order") else {
        return;
    };
    let bridge = common::bridge(&env).await;
    let mut req = request(
        "bridgetest.basic.Count",
        vec![("n", Mp::from(4)), ("delay", Mp::F64(0.05))],
    );
    req.stream = true;
    let (events, result) = within("stream", drain(bridge.execute(&req).await.unwrap()))
        .await
        .unwrap();
    let items: Vec<(i64, String)> = events
        .iter()
        .filter_map(|e| match e {
            ExecEvent::Chunk(c) => Some((
                output(c, "item").as_i64().unwrap(),
                output(c, "label").as_str().unwrap().to_owned(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        items,
        (0..4).map(|i| (i, format!("#{i}"))).collect::<Vec<_>>()
    );
    assert!(
        result.values.is_empty(),
        "execute.stream ends with an empty result"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_goes_as_a_blob_and_comes_back_over_the_chunked_transfer() {
    let Some(env) = common::python("an_image_goes_as_a_blob_and_comes_back") else {
        return;
    };
    let bridge = common::bridge(&env).await;
    let img = image::RgbImage::from_pixel(3, 2, image::Rgb([10, 20, 30]));
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let mut req = request(
        "bridgetest.basic.Invert",
        vec![(
            "image",
            rmpv::Value::Map(vec![
                (Mp::from("type"), Mp::from("image")),
                (Mp::from("uri"), Mp::from("temp://x.png")),
            ]),
        )],
    );
    req.blobs = vec![("image".to_owned(), BlobInput::One(Bytes::from(png)))];
    let (_, out) = drain(bridge.execute(&req).await.unwrap()).await.unwrap();
    let uri = nodetool_bridge::frame::map_get(output(&out, "output"), "uri")
        .and_then(Mp::as_str)
        .unwrap();
    assert!(uri.starts_with("blob://"), "{uri}");
    let blob = out
        .blobs
        .get("output")
        .expect("the output's blob (sha256-checked chunks)");
    let back = image::load_from_memory(blob).unwrap().to_rgb8();
    assert_eq!(back.dimensions(), (3, 2));
    assert_eq!(back.get_pixel(2, 1).0, [245, 235, 225]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_travel_per_request_only() {
    let Some(env) = common::python("secrets_travel_per_request_only") else {
        return;
    };
    let bridge = common::bridge(&env).await;
    let mut req = request("bridgetest.basic.ReadSecret", vec![]);
    req.secrets = vec![("BRIDGE_TEST_SECRET".to_owned(), "s3cr3t".to_owned())];
    let (_, out) = drain(bridge.execute(&req).await.unwrap()).await.unwrap();
    assert_eq!(output(&out, "secret").as_str(), Some("s3cr3t"));
    assert_eq!(
        output(&out, "in_env").as_bool(),
        Some(false),
        "never in the worker's environment"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raising_node_is_an_error_with_its_traceback_and_the_worker_lives_on() {
    let Some(env) = common::python("a_raising_node_is_an_error") else {
        return;
    };
    let bridge = common::bridge(&env).await;
    let pid = bridge.worker_pids();
    let exec = bridge
        .execute(&request(
            "bridgetest.basic.Fail",
            vec![("message", Mp::from("kaput"))],
        ))
        .await
        .unwrap();
    let err = drain(exec).await.expect_err("Fail raises");
    let text = err.to_string();
    assert!(
        text.contains("node `t` (bridgetest.basic.Fail) raised ValueError: kaput"),
        "{text}"
    );
    assert!(
        text.contains("basic.py\", line"),
        "the raising line: {text}"
    );
    echo_works(&bridge).await;
    assert_eq!(
        bridge.worker_pids(),
        pid,
        "an exception does not restart the worker"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_request_cancels_it_on_the_worker() {
    let Some(env) = common::python("dropping_a_request_cancels_it") else {
        return;
    };
    let bridge = common::bridge(&env).await;
    let exec = bridge
        .execute(&request(
            "bridgetest.basic.Sleep",
            vec![("seconds", Mp::F64(30.0))],
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(exec);
    within("the cancel to reach the node", async {
        while !bridge
            .recent_stderr(50)
            .iter()
            .any(|l| l.contains("saw its cancel"))
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    echo_works(&bridge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_writes_go_to_stderr_and_progress_and_logs_arrive() {
    let Some(env) = common::python("stdout_writes_go_to_stderr") else {
        return;
    };
    let bridge = common::bridge(&env).await;
    let exec = bridge
        .execute(&request(
            "bridgetest.basic.Chatty",
            vec![("text", Mp::from("hi"))],
        ))
        .await
        .unwrap();
    let (events, out) = drain(exec)
        .await
        .expect("a chatty node still speaks the protocol");
    assert_eq!(output(&out, "output").as_str(), Some("HI"));
    assert!(events.iter().any(|e| matches!(e, ExecEvent::Progress { progress, total, .. } if *progress == 1.0 && *total == 2.0)), "{events:?}");
    assert!(
        events.iter().any(|e| matches!(e, ExecEvent::Update(u)
        if nodetool_bridge::frame::map_get(u, "type").and_then(Mp::as_str) == Some("log_update"))),
        "{events:?}"
    );
    let stderr = bridge.recent_stderr(50);
    assert!(
        stderr.iter().any(|l| l.contains("chatty stdout: hi")),
        "print() landed on stderr: {stderr:?}"
    );
    assert!(
        stderr.iter().any(|l| l.contains("hello")),
        "the raw fd-1 write landed on stderr: {stderr:?}"
    );
    echo_works(&bridge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_node_fails_that_node_clearly_and_is_restarted() {
    let Some(env) = common::python("a_worker_killed_mid_node") else {
        return;
    };
    let bridge = common::bridge(&env).await;
    let before = bridge.worker_pids();
    let exec = bridge
        .execute(&request(
            "bridgetest.basic.Crash",
            vec![("code", Mp::from(3))],
        ))
        .await
        .unwrap();
    let err = within("the crash", drain(exec))
        .await
        .expect_err("the worker died");
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(text.contains("node `t` (bridgetest.basic.Crash)"), "{text}");
    assert!(text.contains("exit code 3"), "{text}");
    assert!(
        text.contains("about to exit"),
        "the last stderr lines: {text}"
    );
    within("the restart", echo_works(&bridge)).await;
    assert_ne!(bridge.worker_pids(), before, "a new worker process");

    // A SIGKILL from outside, while a node runs.
    let exec = bridge
        .execute(&request(
            "bridgetest.basic.Sleep",
            vec![("seconds", Mp::F64(30.0))],
        ))
        .await
        .unwrap();
    let pid = exec.worker_pid().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let err = within("the kill", drain(exec)).await.expect_err("killed");
    assert!(err.to_string().contains("SIGKILL"), "{err}");
    within("the second restart", echo_works(&bridge)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_worker_fails_its_health_check_and_is_restarted() {
    let Some(env) = common::python("a_hung_worker_fails_its_health_check") else {
        return;
    };
    let mut cfg = common::config(&env);
    cfg.health_timeout = Duration::from_secs(1);
    let bridge = PythonBridge::start(cfg).await.unwrap();
    let exec = bridge
        .execute(&request(
            "bridgetest.basic.Block",
            vec![("seconds", Mp::F64(60.0))],
        ))
        .await
        .unwrap();
    let err = within("the health check", drain(exec))
        .await
        .expect_err("hung");
    let text = err.to_string();
    assert!(
        text.contains("did not answer a health check within 1s"),
        "{text}"
    );
    assert!(text.contains("bridgetest.basic.Block"), "{text}");
    assert!(text.contains("blocking the event loop"), "stderr: {text}");
    within("the restart", echo_works(&bridge)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_over_the_cap_fail_clearly_both_ways() {
    let Some(env) = common::python("frames_over_the_cap_fail_clearly") else {
        return;
    };
    let mut cfg = common::config(&env);
    cfg.max_frame_bytes = 1024 * 1024;
    // The worker enforces its own cap: give it a larger one so that it sends what we refuse.
    cfg.env.insert(
        "NODETOOL_BRIDGE_MAX_FRAME_SIZE".into(),
        (64 * 1024 * 1024).to_string(),
    );
    let bridge = PythonBridge::start(cfg).await.unwrap();

    // Outgoing: refused before anything is written.
    let big = "x".repeat(2 * 1024 * 1024);
    let err = bridge
        .execute(&request(
            "bridgetest.basic.Echo",
            vec![("text", Mp::from(big.as_str()))],
        ))
        .await
        .expect_err("over the cap");
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    assert!(
        err.to_string().contains("NODETOOL_BRIDGE_MAX_FRAME_SIZE"),
        "{err}"
    );
    echo_works(&bridge).await;

    // Incoming: a 2 MiB result frame ends the connection, the node fails, the worker restarts.
    let exec = bridge
        .execute(&request(
            "bridgetest.basic.Echo",
            vec![
                ("text", Mp::from("y".repeat(1024).as_str())),
                ("times", Mp::from(2048)),
            ],
        ))
        .await
        .unwrap();
    let err = within("the oversized reply", drain(exec))
        .await
        .expect_err("over our cap");
    assert!(
        err.to_string().contains("exceeds the bridge frame cap"),
        "{err}"
    );
    within("the restart", echo_works(&bridge)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_refuses_a_result_over_its_own_cap() {
    let Some(env) = common::python("the_worker_refuses_a_result_over_its_own_cap") else {
        return;
    };
    let mut cfg = common::config(&env);
    cfg.max_frame_bytes = 1024 * 1024;
    cfg.env.insert(
        "NODETOOL_BRIDGE_MAX_FRAME_SIZE".into(),
        cfg.max_frame_bytes.to_string(),
    );
    let bridge = PythonBridge::start(cfg).await.unwrap();
    let exec = bridge
        .execute(&request(
            "bridgetest.basic.Echo",
            vec![
                ("text", Mp::from("y".repeat(1024).as_str())),
                ("times", Mp::from(2048)),
            ],
        ))
        .await
        .unwrap();
    let err = within("the refused reply", drain(exec))
        .await
        .expect_err("the worker's cap");
    assert!(err.to_string().contains("exceeds max size"), "{err}");
    echo_works(&bridge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_type_that_disappears_after_discover_is_a_clear_error() {
    let Some(mut env) = common::python("a_node_type_that_disappears") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pack = dir.path().join("nodetool/nodes/bridgetest");
    std::fs::create_dir_all(&pack).unwrap();
    for f in ["__init__.py", "basic.py"] {
        std::fs::copy(
            env.packs.join("nodetool/nodes/bridgetest").join(f),
            pack.join(f),
        )
        .unwrap();
    }
    std::fs::write(
        pack.join("vanishing.py"),
        "from nodetool.workflows.base_node import BaseNode\n\nclass Ghost(BaseNode):\n    async def process(self, context) -> str:\n        return 'boo'\n",
    )
    .unwrap();
    env.packs = dir.path().to_path_buf();
    let bridge = common::bridge(&env).await;
    assert!(bridge
        .discovery()
        .node("bridgetest.vanishing.Ghost")
        .is_some());
    std::fs::remove_file(pack.join("vanishing.py")).unwrap();
    let _ = std::fs::remove_dir_all(pack.join("__pycache__"));
    for pid in bridge.worker_pids() {
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
    }
    let err = within("the ghost", async {
        // The first attempt may race the kill; the restarted worker no longer has the type.
        loop {
            let r = match bridge
                .execute(&request("bridgetest.vanishing.Ghost", vec![]))
                .await
            {
                Ok(exec) => drain(exec).await.map(|_| ()),
                Err(e) => Err(e),
            };
            match r {
                Err(e) if e.kind() == ErrorKind::NotFound => return e,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                Ok(()) => panic!("the ghost ran"),
            }
        }
    })
    .await;
    assert!(
        err.to_string()
            .contains("no longer provides node type `bridgetest.vanishing.Ghost`"),
        "{err}"
    );
    assert!(bridge
        .discovery()
        .node("bridgetest.vanishing.Ghost")
        .is_none());
}
