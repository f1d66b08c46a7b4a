//! The Docker strategy end to end, on the real engine: `nodetool docker build-image` packages the
//! freshly built `nodetool` binary, then workflows of `nodetool.test` nodes run in containers
//! (the shared strategy suite against the threaded strategy), a running job's container is
//! inspected for every hardening setting, and leftovers are reaped.
//!
//! One sequential test: `reap_leftovers` removes every job container, so nothing may run beside it;
//! hence its own test binary, not a module of `tests/cli/`.
#![allow(clippy::unwrap_used)]

#[path = "../src/docker_cmd.rs"]
mod docker_cmd;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nodetool_engine::{Event, Status, VecSink};
use nodetool_exec::threaded::ThreadedStrategy;
use nodetool_exec::{ExecutionStrategy, JobSpec, WorkerRef};
use nodetool_workers::docker::bollard;
use nodetool_workers::docker::{
    image, DockerConfig, DockerStrategy, PullPolicy, INSTANCE_LABEL, JOB_LABEL,
};
use serde_json::json;

use nodetool_testkit::strategy_suite;

const SOCKET: &str = "/var/run/docker.sock";
const MIB: u64 = 1024 * 1024;

/// The binary packaged into the image: this package's `nodetool` (entrypoint `nodetool worker`).
/// `NODETOOL_TEST_DOCKER_WORKER` may name another worker binary (it must accept and ignore the
/// `worker` argument).
fn worker_binary() -> (PathBuf, bool) {
    match std::env::var_os("NODETOOL_TEST_DOCKER_WORKER") {
        Some(p) => (PathBuf::from(p), false),
        None => (PathBuf::from(env!("CARGO_BIN_EXE_nodetool")), true),
    }
}

async fn engine_reachable(test: &str) -> bool {
    if !Path::new(SOCKET).exists() {
        nodetool_testkit::skip_or_fail(test, "no Docker socket at /var/run/docker.sock");
        return false;
    }
    if let Err(e) = nodetool_workers::docker::connect_engine(Path::new(SOCKET)).await {
        nodetool_testkit::skip_or_fail(test, &format!("Docker engine unreachable: {e}"));
        return false;
    }
    true
}

/// This test's own instance id: its containers are told apart from other suites' (a failed
/// suite may leave its own behind), and only they are counted and reaped.
fn instance() -> String {
    format!("docker-e2e-{}", std::process::id())
}

fn strategy_config(workspace: &Path, tag: &str) -> DockerConfig {
    let mut c = DockerConfig::new(workspace);
    c.image = tag.to_owned();
    c.pull_policy = PullPolicy::Never;
    c.instance_id = Some(instance());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_runners_e2e() {
    if !engine_reachable("docker_runners_e2e").await {
        return;
    }
    let (binary, verify) = worker_binary();
    let tag = image::pinned_tag(&binary).expect("hash the binary");

    // 1. `nodetool docker build-image --tag <tag> --binary <nodetool>` (verifies `--version` runs).
    let code = docker_cmd::run(docker_cmd::DockerCommand::BuildImage {
        tag: Some(tag.clone()),
        binary: Some(binary.clone()),
        socket: PathBuf::from(SOCKET),
        user: Some("1000:1000".into()),
        no_verify: !verify,
    })
    .await
    .expect("build-image");
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    let client = nodetool_workers::docker::connect_engine(Path::new(SOCKET))
        .await
        .unwrap();
    assert!(image::image_exists(&client, &tag).await.unwrap());
    let inspect = client.inspect_image(&tag).await.unwrap();
    let cfg = inspect.config.unwrap();
    assert_eq!(cfg.user.as_deref(), Some("1000:1000"));
    assert_eq!(
        cfg.entrypoint,
        Some(vec!["/nodetool".to_owned(), "worker".to_owned()])
    );

    let dir = tempfile::tempdir().unwrap();
    let workspaces = dir.path().join("jobs");
    std::fs::create_dir_all(&workspaces).unwrap();

    // 2. The shared behaviour suite, against the threaded strategy as reference.
    let docker: Arc<dyn ExecutionStrategy> = Arc::new(
        DockerStrategy::connect(strategy_config(&workspaces, &tag))
            .await
            .expect("connect"),
    );
    let threaded: Arc<dyn ExecutionStrategy> = Arc::new(
        ThreadedStrategy::new(strategy_suite::test_engine(dir.path()).await, 2).expect("threaded"),
    );
    strategy_suite::run(docker.clone(), threaded).await;
    assert_no_job_containers(&client).await;

    // 3. A running job's container carries every hardening setting; it is gone afterwards.
    hardening_of_a_running_container(&workspaces, &tag).await;

    // 4. Leftovers from a dead manager are reaped.
    reap_leftovers(&workspaces, &tag).await;

    let left: Vec<_> = std::fs::read_dir(&workspaces).unwrap().collect();
    assert!(left.is_empty(), "job workspaces left behind: {left:?}");
}

async fn assert_no_job_containers(client: &bollard::Docker) {
    let ids = job_containers(client).await;
    assert!(ids.is_empty(), "job containers left behind: {ids:?}");
}

/// The job containers of this test's instance.
async fn job_containers(client: &bollard::Docker) -> Vec<String> {
    let mut filters = std::collections::HashMap::new();
    filters.insert(
        "label".to_owned(),
        vec![
            JOB_LABEL.to_owned(),
            format!("{INSTANCE_LABEL}={}", instance()),
        ],
    );
    let opts = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    client
        .list_containers(Some(opts))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

async fn hardening_of_a_running_container(workspaces: &Path, tag: &str) {
    let mut config = strategy_config(workspaces, tag);
    config.cpu_limit = Some(0.5);
    config.memory_limit = Some(256 * MIB);
    config.shm_size = Some(16 * MIB);
    config.pids_limit = Some(64);
    config.user = "1000:1000".into();
    let strategy = DockerStrategy::connect(config).await.unwrap();

    let mut spec = JobSpec::new(strategy_suite::one(
        "nodetool.test.Sleep",
        json!({"seconds": 60.0, "value": 1}),
    ));
    spec.secrets
        .insert("NODETOOL_TEST_SECRET".into(), "s3cr3t-do-not-leak".into());
    let sink = VecSink::new();
    let mut handle = strategy.start(spec.clone(), sink.clone()).await.unwrap();
    let Some(WorkerRef::Container(id)) = handle.worker().cloned() else {
        panic!("a docker job names its container: {:?}", handle.worker());
    };
    let mut running = false;
    for _ in 0..600 {
        running = sink.events().iter().any(|e| {
            matches!(&e.event, Event::NodeUpdate(n) if n.node_id == "n" && n.status == Status::Running)
        });
        if running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(running, "the Sleep node never started: {:?}", sink.events());

    let c = strategy
        .client()
        .inspect_container(
            &id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap();
    let state = c.state.clone().unwrap();
    assert_eq!(state.running, Some(true));
    let h = c.host_config.clone().unwrap();
    assert_eq!(h.cap_drop, Some(vec!["ALL".to_owned()]));
    assert!(h.cap_add.unwrap_or_default().is_empty());
    assert_eq!(h.security_opt, Some(vec!["no-new-privileges".to_owned()]));
    assert_eq!(h.readonly_rootfs, Some(true));
    assert_eq!(h.network_mode.as_deref(), Some("none"));
    assert_ne!(h.ipc_mode.as_deref(), Some("host"));
    assert_ne!(h.privileged, Some(true));
    assert_eq!(h.memory, Some(256 * MIB as i64));
    assert_eq!(h.nano_cpus, Some(500_000_000));
    assert_eq!(h.pids_limit, Some(64));
    assert_eq!(h.shm_size, Some(16 * MIB as i64));
    assert!(h.tmpfs.unwrap_or_default().contains_key("/tmp"));

    let cfg = c.config.clone().unwrap();
    let user = cfg.user.clone().unwrap_or_default();
    assert!(
        !user.is_empty() && !user.starts_with("0") && !user.starts_with("root"),
        "user {user:?}"
    );
    assert_eq!(
        cfg.labels
            .unwrap_or_default()
            .get(JOB_LABEL)
            .map(String::as_str),
        Some(spec.job_id.as_str())
    );
    for var in cfg.env.unwrap_or_default() {
        assert!(!var.contains("s3cr3t-do-not-leak"), "secret in env: {var}");
        assert!(!var.starts_with("NODETOOL_TEST_SECRET"), "{var}");
    }
    let mounts = c.mounts.clone().unwrap_or_default();
    for m in &mounts {
        let src = m.source.clone().unwrap_or_default();
        assert!(!src.contains("docker.sock"), "docker socket mounted: {m:?}");
    }
    let ws = mounts
        .iter()
        .find(|m| m.destination.as_deref() == Some("/workspace"))
        .expect("workspace mount");
    let ws_src = PathBuf::from(ws.source.clone().unwrap());
    assert!(ws_src.starts_with(workspaces), "{ws_src:?}");
    assert!(ws_src.is_dir());
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&ws_src).unwrap();
        if nix_is_root() {
            assert_eq!((meta.uid(), meta.gid()), (1000, 1000), "workspace owner");
        }
    }

    // Cancel twice: cancelled, and the container and workspace are gone.
    handle.cancel();
    handle.cancel();
    let o = tokio::time::timeout(Duration::from_secs(60), handle.wait())
        .await
        .expect("cancel ends the job");
    assert_eq!(o.status, Status::Cancelled, "{o:?}");
    let err = strategy
        .client()
        .inspect_container(
            &id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("404") || err.to_string().contains("No such"),
        "{err}"
    );
    assert!(!ws_src.exists(), "workspace removed");
    let last = sink.events().pop().unwrap();
    assert!(
        matches!(&last.event, Event::JobUpdate(u) if u.status == Status::Cancelled),
        "{last:?}"
    );
}

fn nix_is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

async fn reap_leftovers(workspaces: &Path, tag: &str) {
    let strategy = DockerStrategy::connect(strategy_config(workspaces, tag))
        .await
        .unwrap();
    let client = strategy.client();
    // What a dead manager leaves: a labelled container, not running.
    let mut labels = std::collections::HashMap::new();
    labels.insert(JOB_LABEL.to_owned(), "leftover-job".to_owned());
    labels.insert(INSTANCE_LABEL.to_owned(), instance());
    let body = bollard::models::ContainerCreateBody {
        image: Some(tag.to_owned()),
        labels: Some(labels),
        ..Default::default()
    };
    let created = client
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            body,
        )
        .await
        .unwrap();
    assert!(job_containers(client).await.contains(&created.id));
    let removed = strategy.reap_leftovers().await.unwrap();
    assert!(removed >= 1, "removed {removed}");
    assert_no_job_containers(client).await;
}
