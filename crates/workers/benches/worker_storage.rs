//! What a worker pays for using its parent's storage: a 64 MiB upload and download through the
//! worker protocol's calls (a child process with the worker's `CallClient` and `RemoteStorage`,
//! over stdin/stdout pipes, against the parent's `CallHandler`) versus the same operations on
//! the same file storage in-process.
//! `cargo bench -p nodetool-exec --bench worker_storage`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use nodetool_core::{ByteStream, PutOptions, Storage, StorageKey};
use nodetool_engine::Graph;
use nodetool_exec::JobSpec;
use nodetool_workers::calls::client::remote_resources;
use nodetool_workers::calls::{CallClient, CallHandler, CallScope, WorkerServices};
use nodetool_workers::protocol::{
    pump_frames, read_frame, write_frame, ChildFrame, ParentFrame, MAX_FRAME_BYTES,
};

const SIZE: usize = 64 * 1024 * 1024;
/// Pieces the body is made of (what a node streaming a file would hand over).
const PIECE: usize = 1024 * 1024;
const ROUNDS: usize = 5;
const CHILD_ARG: &str = "--worker-storage-child";

fn body() -> ByteStream {
    let piece = Bytes::from(vec![0x5au8; PIECE]);
    futures::stream::iter((0..SIZE / PIECE).map(move |_| Ok(piece.clone()))).boxed()
}

async fn upload_download(storage: &Arc<dyn Storage>, key: &StorageKey) -> (Duration, Duration) {
    let t = Instant::now();
    let meta = storage
        .upload(key, body(), PutOptions::default())
        .await
        .unwrap();
    let up = t.elapsed();
    assert_eq!(meta.size, SIZE as u64);
    let t = Instant::now();
    let mut got = 0;
    let mut stream = storage.download(key, None).await.unwrap().body;
    while let Some(chunk) = stream.next().await {
        got += chunk.unwrap().len();
    }
    let down = t.elapsed();
    assert_eq!(got, SIZE);
    (up, down)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rate(d: Duration) -> f64 {
    SIZE as f64 / (1024.0 * 1024.0) / d.as_secs_f64()
}

/// The worker's side: reads the request (for the offer), then times upload and download through
/// calls and prints `upload_ns download_ns` per round on stderr.
async fn child() {
    // The worker's own stdin/stdout handling.
    let (mut stdin, mut stdout) = nodetool_workers::worker::stdio();
    let Some(ParentFrame::Request {
        services: Some(offer),
        ..
    }) = read_frame::<_, ParentFrame>(&mut stdin, MAX_FRAME_BYTES)
        .await
        .unwrap()
    else {
        panic!("expected a request with services")
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<ChildFrame>();
    let client = CallClient::new(tx, offer.max_calls_in_flight);
    tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            write_frame(&mut stdout, &frame).await.unwrap();
        }
    });
    tokio::spawn({
        let client = client.clone();
        async move {
            while let Ok(Some(ParentFrame::Reply {
                call_id,
                result,
                error,
                data,
            })) = read_frame::<_, ParentFrame>(&mut stdin, MAX_FRAME_BYTES).await
            {
                client.deliver(call_id, ParentFrame::reply_answer(result, error, data));
            }
        }
    });
    let res = remote_resources(&client, Some(&offer), "1");
    let key = StorageKey::new("1/bench-remote.bin").unwrap();
    for _ in 0..ROUNDS {
        let (up, down) = upload_download(&res.asset_storage, &key).await;
        eprintln!("{} {}", up.as_nanos(), down.as_nanos());
    }
}

async fn parent() {
    let dir = tempfile::tempdir().unwrap();
    let env: BTreeMap<String, String> = [
        ("ENV".to_owned(), "development".to_owned()),
        ("HOME".to_owned(), dir.path().display().to_string()),
        (
            "ASSET_FOLDER".to_owned(),
            dir.path().join("assets").display().to_string(),
        ),
    ]
    .into();
    let settings = nodetool_config::Settings::load(&nodetool_config::Sources::new(
        env,
        dir.path().join("config"),
    ))
    .unwrap();
    let resources = nodetool_runtime::Resources::new(settings, Default::default());
    let res = resources.engine_resources().await.unwrap();

    // In-process: the file storage directly.
    let key = StorageKey::new("1/bench-local.bin").unwrap();
    let (mut ups, mut downs) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (u, d) = upload_download(&res.asset_storage, &key).await;
        ups.push(u);
        downs.push(d);
    }
    let (local_up, local_down) = (median(ups), median(downs));

    // Through a worker process, raw chunks and (the previous wire format) base64 chunks, in
    // the same run.
    let (remote_up, remote_down) = through_worker(&res, true).await;
    let (b64_up, b64_down) = through_worker(&res, false).await;

    println!("64 MiB through file storage, median of {ROUNDS}:");
    for (what, local, remote, b64) in [
        ("upload", local_up, remote_up, b64_up),
        ("download", local_down, remote_down, b64_down),
    ] {
        println!(
            "  {what:8} in-process {:>8.1} ms ({:>6.0} MiB/s)   through a worker {:>8.1} ms ({:>6.0} MiB/s, {:.2}x)   base64 chunks {:>8.1} ms ({:>6.0} MiB/s)",
            local.as_secs_f64() * 1e3,
            rate(local),
            remote.as_secs_f64() * 1e3,
            rate(remote),
            remote.as_secs_f64() / local.as_secs_f64(),
            b64.as_secs_f64() * 1e3,
            rate(b64),
        );
    }
}

/// Median upload and download through a worker process; `binary`: chunks as attachments.
async fn through_worker(
    res: &nodetool_engine::EngineResources,
    binary: bool,
) -> (Duration, Duration) {
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .arg(CHILD_ARG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut child_in = child.stdin.take().unwrap();
    let mut child_out = child.stdout.take().unwrap();
    let child_err = child.stderr.take().unwrap();
    let services = WorkerServices::new(res.clone());
    let spec = JobSpec::new(Graph::default());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handler = CallHandler::new(
        services.clone(),
        CallScope::for_job(&spec, services.keys),
        tx.clone(),
        MAX_FRAME_BYTES,
    );
    let mut offer = services.offer(MAX_FRAME_BYTES);
    // Off: chunks as base64 inside the JSON, what a parent without `binary_chunks` gets.
    offer.binary_chunks = binary;
    let request = ParentFrame::request(spec, Some(offer));
    drop(tx);
    let writer = tokio::spawn(async move {
        pump_frames(&mut child_in, &request, &mut rx).await.ok();
    });
    let reader = tokio::spawn({
        let handler = handler.clone();
        async move {
            while let Ok(Some(ChildFrame::Call {
                call_id,
                op,
                args,
                data,
            })) = read_frame::<_, ChildFrame>(&mut child_out, MAX_FRAME_BYTES).await
            {
                handler.dispatch(call_id, op, args, data);
            }
        }
    });
    let mut lines = tokio::io::BufReader::new(child_err).lines();
    let (mut ups, mut downs) = (Vec::new(), Vec::new());
    while let Some(line) = lines.next_line().await.unwrap() {
        let mut parts = line.split_whitespace().map(|p| p.parse::<u64>());
        match (parts.next(), parts.next()) {
            (Some(Ok(u)), Some(Ok(d))) => {
                ups.push(Duration::from_nanos(u));
                downs.push(Duration::from_nanos(d));
            }
            _ => eprintln!("worker: {line}"),
        }
    }
    assert!(child.wait().await.unwrap().success());
    reader.await.unwrap();
    handler.finish(Duration::from_secs(10)).await;
    writer.await.unwrap();
    assert_eq!(ups.len(), ROUNDS, "the worker reported every round");
    (median(ups), median(downs))
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    if std::env::args().any(|a| a == CHILD_ARG) {
        rt.block_on(child());
    } else {
        rt.block_on(parent());
    }
    rt.shutdown_timeout(Duration::from_millis(100));
}
