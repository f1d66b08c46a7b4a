//! Docker strategy overhead: a trivial workflow (one `nodetool.test.Sleep` of 0 s into an
//! Output) submitted → completed through `DockerStrategy`, against a bare
//! `docker run --rm <same image>` that does nothing (the worker reads EOF and exits), measured
//! in the same run. Prints p50/p90 and the ratio. Target: Docker p50 ≤ 1.2× bare run.
//!
//! `cargo bench -p nodetool-exec --bench docker_vs_run` (`DOCKER_BENCH_ITERS`, default 20).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nodetool_engine::{NullSink, Status};
use nodetool_exec::{ExecutionStrategy, JobSpec};
use nodetool_workers::docker::{image, DockerConfig, DockerStrategy, PullPolicy};
use serde_json::json;

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let iters: usize = std::env::var("DOCKER_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let socket = Path::new("/var/run/docker.sock");
    let client = match nodetool_workers::docker::connect_engine(socket).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("docker_vs_run: skipped, no Docker engine: {e}");
            return;
        }
    };
    let binary = Path::new(env!("CARGO_BIN_EXE_nodetool-exec-worker"));
    let tag = image::pinned_tag(binary).expect("hash");
    if !image::image_exists(&client, &tag).await.expect("inspect") {
        image::build_image(
            &client,
            binary,
            std::slice::from_ref(&tag),
            "1000:1000",
            &["worker".into()],
        )
        .await
        .expect("build image");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = DockerConfig::new(dir.path());
    config.image = tag.clone();
    config.pull_policy = PullPolicy::Never;
    let strategy = DockerStrategy::connect(config).await.expect("connect");
    let graph: nodetool_engine::Graph = serde_json::from_value(json!({
        "nodes": [
            {"id": "n", "type": "nodetool.test.Sleep", "data": {"seconds": 0.0, "value": 1}},
            {"id": "out", "type": "nodetool.output.Output", "data": {"name": "result"}}
        ],
        "edges": [{"id": "e1", "source": "n", "sourceHandle": "output", "target": "out", "targetHandle": "value"}]
    }))
    .expect("graph");

    // Warm-up: one of each (page cache, image layers).
    let run_bare = || {
        let t = Instant::now();
        let status = std::process::Command::new("docker")
            .args(["run", "--rm", "--network", "none", &tag])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("docker run");
        // The worker exits non-zero on EOF before a request: that is the "does nothing" run.
        let _ = status;
        t.elapsed()
    };
    let run_job = || async {
        let mut spec = JobSpec::new(graph.clone());
        spec.use_cache = false;
        let t = Instant::now();
        let mut h = strategy
            .start(spec, Arc::new(NullSink))
            .await
            .expect("start");
        let o = h.wait().await;
        assert_eq!(o.status, Status::Completed, "{o:?}");
        t.elapsed()
    };
    run_bare();
    run_job().await;

    let (mut bare, mut jobs) = (Vec::new(), Vec::new());
    // Interleaved so drift on a noisy machine hits both sides alike.
    for _ in 0..iters {
        bare.push(tokio::task::block_in_place(run_bare));
        jobs.push(run_job().await);
    }
    let (b50, b90) = (percentile(&mut bare, 0.5), percentile(&mut bare, 0.9));
    let (j50, j90) = (percentile(&mut jobs, 0.5), percentile(&mut jobs, 0.9));
    println!("docker_vs_run: {iters} iterations, image {tag}");
    println!(
        "  bare `docker run --rm` : p50 {:8.1} ms  p90 {:8.1} ms",
        ms(b50),
        ms(b90)
    );
    println!(
        "  DockerStrategy job     : p50 {:8.1} ms  p90 {:8.1} ms",
        ms(j50),
        ms(j90)
    );
    println!(
        "  ratio p50 (job / bare) : {:.2}x (target <= 1.20x)",
        ms(j50) / ms(b50)
    );
}
