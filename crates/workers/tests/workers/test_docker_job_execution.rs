//! Docker strategy, unit level: the container definition built from settings (every hardening
//! flag), refusals (host network, root, docker socket), and the errors for an absent engine and
//! a missing image. The end-to-end runs are in `crates/cli/tests/test_docker_runners_e2e.rs`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bollard::models::{ContainerCreateBody, MountTypeEnum};
use nodetool_core::ErrorKind;
use nodetool_engine::{Graph, NullSink};
use nodetool_exec::{JobSpec, ResourceLimits};
use nodetool_workers::docker::{
    config, image, DockerConfig, DockerJobOptions, DockerStrategy, PullPolicy, JOB_LABEL,
};

const SOCKET: &str = "/var/run/docker.sock";

fn settings(vars: &[(&str, &str)]) -> nodetool_config::Settings {
    let dir = tempfile::tempdir().unwrap();
    let env: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let sources = nodetool_config::Sources::new(env, dir.path());
    nodetool_config::Settings::load(&sources).unwrap()
}

fn full_config() -> DockerConfig {
    let s = settings(&[
        ("DOCKER_IMAGE", "nodetool-worker:9.9.9-test"),
        ("DOCKER_CPU_LIMIT", "1.5"),
        ("DOCKER_MEM_LIMIT", "256m"),
        ("DOCKER_SHM_SIZE", "32m"),
        ("DOCKER_PIDS_LIMIT", "64"),
        ("DOCKER_USER", "1234:2345"),
        ("DOCKER_GPU_DEVICES", "0,2"),
        ("DOCKER_PULL_POLICY", "never"),
    ]);
    DockerConfig::from_settings(&s, "/srv/jobs", Some(PathBuf::from("/srv/assets"))).unwrap()
}

fn body(c: &DockerConfig, spec: &JobSpec) -> ContainerCreateBody {
    c.container_body(spec, &c.image, Path::new("/srv/jobs/j1"))
        .unwrap()
}

#[test]
fn settings_map_onto_the_config() {
    let c = full_config();
    assert_eq!(c.image, "nodetool-worker:9.9.9-test");
    assert_eq!(c.cpu_limit, Some(1.5));
    assert_eq!(
        c.memory_limit,
        Some(256 * 1024 * 1024),
        "DOCKER_MEM_LIMIT alias"
    );
    assert_eq!(c.shm_size, Some(32 * 1024 * 1024));
    assert_eq!(c.pids_limit, Some(64));
    assert_eq!(c.user, "1234:2345");
    assert_eq!(c.gpu_devices, Some(vec!["0".to_owned(), "2".to_owned()]));
    assert_eq!(c.network, None);
    assert_eq!(c.pull_policy, PullPolicy::Never);

    let d = DockerConfig::from_settings(&settings(&[]), "/srv/jobs", None).unwrap();
    assert_eq!(d.user, "1000:1000", "default user is not root");
    assert_eq!(d.image, image::default_image());
    assert!(!d.image.ends_with(":latest"));
    assert_eq!(d.pull_policy, PullPolicy::Missing);

    let dir = tempfile::tempdir().unwrap();
    let env: BTreeMap<String, String> =
        [("DOCKER_PULL_POLICY".to_owned(), "sometimes".to_owned())].into();
    let err = nodetool_config::Settings::load(&nodetool_config::Sources::new(env, dir.path()))
        .unwrap_err();
    assert!(err.to_string().contains("DOCKER_PULL_POLICY"), "{err}");
}

#[test]
fn container_carries_every_hardening_setting() {
    let c = full_config();
    let mut spec = JobSpec::new(Graph::default());
    spec.secrets
        .insert("OPENAI_API_KEY".into(), "sk-secret-value".into());
    let b = body(&c, &spec);
    let h = b.host_config.clone().unwrap();

    assert_eq!(b.image.as_deref(), Some("nodetool-worker:9.9.9-test"));
    assert_eq!(b.user.as_deref(), Some("1234:2345"));
    assert_eq!(h.cap_drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(h.cap_add, None);
    assert_eq!(h.security_opt, Some(vec!["no-new-privileges".to_owned()]));
    assert_eq!(h.readonly_rootfs, Some(true));
    assert!(h.tmpfs.as_ref().unwrap().contains_key("/tmp"));
    assert_eq!(h.network_mode.as_deref(), Some("none"));
    assert_ne!(h.ipc_mode.as_deref(), Some("host"));
    assert_ne!(h.privileged, Some(true));
    assert_eq!(h.nano_cpus, Some(1_500_000_000));
    assert_eq!(h.memory, Some(256 * 1024 * 1024));
    assert_eq!(h.memory_swap, h.memory, "no swap beyond the memory limit");
    assert_eq!(h.shm_size, Some(32 * 1024 * 1024));
    assert_eq!(h.pids_limit, Some(64));
    assert_eq!(
        b.labels
            .as_ref()
            .unwrap()
            .get(JOB_LABEL)
            .map(String::as_str),
        Some(spec.job_id.as_str())
    );

    // GPUs: `--gpus "device=0,2"` is one request for devices 0 and 2.
    let gpus = h.device_requests.clone().unwrap();
    assert_eq!(gpus.len(), 1);
    assert_eq!(
        gpus[0].device_ids,
        Some(vec!["0".to_owned(), "2".to_owned()])
    );
    assert_eq!(gpus[0].capabilities, Some(vec![vec!["gpu".to_owned()]]));

    // Mounts: the workspace (rw) and the asset folder (ro), nothing else; never the socket.
    let mounts = h.mounts.clone().unwrap();
    assert_eq!(mounts.len(), 2, "{mounts:?}");
    let ws = mounts
        .iter()
        .find(|m| m.target.as_deref() == Some("/workspace"))
        .unwrap();
    assert_eq!(ws.source.as_deref(), Some("/srv/jobs/j1"));
    assert_eq!(ws.typ, Some(MountTypeEnum::BIND));
    assert_ne!(ws.read_only, Some(true));
    let assets = mounts
        .iter()
        .find(|m| m.target.as_deref() == Some(config::ASSETS_IN_CONTAINER))
        .unwrap();
    assert_eq!(assets.source.as_deref(), Some("/srv/assets"));
    assert_eq!(assets.read_only, Some(true));
    assert!(h.binds.is_none());
    for m in &mounts {
        assert!(!m.source.as_deref().unwrap_or("").contains("docker.sock"));
    }

    // No secret in the environment (secrets travel in the request frame), and no setting at
    // all: the worker's storage, cache and records are the parent's, through calls.
    for var in b.env.clone().unwrap_or_default() {
        assert!(!var.contains("sk-secret-value"), "{var}");
        assert!(!var.starts_with("OPENAI_API_KEY"), "{var}");
    }
    assert_eq!(
        b.env.clone().unwrap_or_default(),
        vec!["HOME=/workspace".to_owned(), "TMPDIR=/tmp".to_owned()]
    );
    // stdin carries the request; no TTY so stdout stays binary-clean.
    assert_eq!(b.open_stdin, Some(true));
    assert_eq!(b.tty, Some(false));
}

#[test]
fn safe_limits_and_no_gpu_by_default() {
    // With no DOCKER_* setting at all, both ways of building a config limit every job.
    let defaults = nodetool_config::docker_defaults();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(defaults.cpus, cpus as f64);
    assert_eq!(defaults.pids, 512);
    assert!(
        defaults.memory_bytes > 0 && defaults.memory_bytes <= nodetool_config::DOCKER_MEMORY_CAP
    );
    for c in [
        DockerConfig::new("/srv/jobs"),
        DockerConfig::from_settings(&settings(&[]), "/srv/jobs", None).unwrap(),
    ] {
        let h = body(&c, &JobSpec::new(Graph::default()))
            .host_config
            .unwrap();
        assert_eq!(h.memory, Some(defaults.memory_bytes as i64));
        assert_eq!(h.memory_swap, h.memory, "no swap");
        assert_eq!(h.nano_cpus, Some(cpus as i64 * 1_000_000_000));
        assert_eq!(h.pids_limit, Some(512));
        assert_eq!(h.device_requests, None, "no DOCKER_GPU_DEVICES: no GPU");
        assert_eq!(h.network_mode.as_deref(), Some("none"));
    }
}

#[test]
fn a_requested_image_runs_only_when_allowed() {
    let mut c = DockerConfig::new("/srv/jobs");
    c.image = "nodetool-worker:1.0.0".into();
    c.allowed_images = vec!["nodetool-worker-gpu:2.0.0".into(), "team/worker:*".into()];
    assert_eq!(c.image_for(None).unwrap(), "nodetool-worker:1.0.0");
    for ok in [
        "nodetool-worker:1.0.0",
        "nodetool-worker-gpu:2.0.0",
        "team/worker:7",
    ] {
        assert_eq!(c.image_for(Some(ok)).unwrap(), ok);
    }
    for bad in ["nodetool-worker-gpu:2.0.1", "other:1", "team/workers:1"] {
        let err = c.image_for(Some(bad)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}");
        let msg = err.to_string();
        assert!(
            msg.contains(bad)
                && msg.contains("not allowed")
                && msg.contains("DOCKER_ALLOWED_IMAGES"),
            "{msg}"
        );
    }
    let err = c.image_for(Some("team/worker:latest")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("latest"), "{err}");
}

#[test]
fn no_gpu_and_no_network_by_default() {
    let c = DockerConfig::new("/srv/jobs");
    let h = body(&c, &JobSpec::new(Graph::default()))
        .host_config
        .unwrap();
    assert_eq!(h.device_requests, None, "no DOCKER_GPU_DEVICES: no GPU");
    assert_eq!(h.network_mode.as_deref(), Some("none"));
    assert_eq!(h.mounts.unwrap().len(), 1, "only the workspace");
}

#[test]
fn request_limits_tighten_the_settings() {
    let c = full_config();
    let mut spec = JobSpec::new(Graph::default());
    spec.resource_limits = ResourceLimits {
        memory_bytes: Some(64 * 1024 * 1024),
        processes: Some(1000),
        ..Default::default()
    };
    let h = body(&c, &spec).host_config.unwrap();
    assert_eq!(h.memory, Some(64 * 1024 * 1024), "the smaller memory wins");
    assert_eq!(h.pids_limit, Some(64), "the smaller pids limit wins");
}

#[test]
fn granted_network_is_used_but_host_is_refused() {
    let mut c = DockerConfig::new("/srv/jobs");
    c.network = Some("jobs-net".into());
    let h = body(&c, &JobSpec::new(Graph::default()))
        .host_config
        .unwrap();
    assert_eq!(h.network_mode.as_deref(), Some("jobs-net"));

    for bad in ["host", "HOST", " host ", "container:abc"] {
        c.network = Some(bad.into());
        let err = c
            .container_body(&JobSpec::new(Graph::default()), "x:1", Path::new("/w"))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{bad}");
        assert!(err.to_string().contains("refused"), "{err}");
        assert!(config::check_network(bad).is_err());
    }
}

#[test]
fn root_user_is_refused() {
    for bad in ["0", "0:0", "root", "root:root", ""] {
        let mut c = DockerConfig::new("/srv/jobs");
        c.user = bad.into();
        let err = c.validate().unwrap_err();
        assert!(err.to_string().contains("root"), "{bad}: {err}");
    }
    let s = settings(&[("DOCKER_USER", "0:0")]);
    assert!(DockerConfig::from_settings(&s, "/srv/jobs", None).is_err());
}

#[test]
fn docker_socket_is_never_mounted() {
    let mut c = DockerConfig::new("/srv/jobs");
    c.asset_folder = Some(PathBuf::from("/var/run/docker.sock"));
    let err = c
        .container_body(&JobSpec::new(Graph::default()), "x:1", Path::new("/w"))
        .unwrap_err();
    assert!(err.to_string().contains("Docker socket"), "{err}");
}

#[test]
fn pull_policy_parses() {
    assert_eq!("never".parse::<PullPolicy>().unwrap(), PullPolicy::Never);
    assert_eq!(
        "Missing".parse::<PullPolicy>().unwrap(),
        PullPolicy::Missing
    );
    assert_eq!("always".parse::<PullPolicy>().unwrap(), PullPolicy::Always);
    assert!("sometimes".parse::<PullPolicy>().is_err());
}

#[tokio::test]
async fn absent_engine_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = DockerConfig::new(dir.path());
    c.socket = dir.path().join("no-such-docker.sock");
    let err = DockerStrategy::connect(c.clone()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    let text = err.to_string();
    assert!(text.contains("docker execution strategy"), "{text}");
    assert!(text.contains(&c.socket.display().to_string()), "{text}");

    // A path that exists but is not a socket fails the same way.
    let not_socket = dir.path().join("plain-file.sock");
    std::fs::write(&not_socket, b"").unwrap();
    c.socket = not_socket.clone();
    let err = DockerStrategy::connect(c).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(
        err.to_string().contains(&not_socket.display().to_string()),
        "{err}"
    );
}

async fn engine(test: &str, workspace: &Path, policy: PullPolicy) -> Option<DockerStrategy> {
    if !Path::new(SOCKET).exists() {
        nodetool_testkit::skip_or_fail(test, "no Docker socket at /var/run/docker.sock");
        return None;
    }
    let mut c = DockerConfig::new(workspace);
    c.pull_policy = policy;
    match DockerStrategy::connect(c).await {
        Ok(s) => Some(s),
        Err(e) => {
            nodetool_testkit::skip_or_fail(test, &format!("Docker engine unreachable: {e}"));
            None
        }
    }
}

#[tokio::test]
async fn missing_image_names_build_image() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!(
        "nodetool-worker:missing-{}",
        nodetool_core::id::new_id().to_lowercase()
    );
    for policy in [PullPolicy::Never, PullPolicy::Missing] {
        let Some(s) = engine("missing_image_names_build_image", dir.path(), policy).await else {
            return;
        };
        let err = s.ensure_image(&missing).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{policy}: {err}");
        let text = err.to_string();
        assert!(text.contains("nodetool docker build-image"), "{text}");
        assert!(text.contains(&missing), "{text}");

        // Starting a job on it fails before anything is created.
        let spec = JobSpec::new(Graph::default());
        let job_id = spec.job_id.clone();
        let err = s
            .start_with(
                spec,
                Arc::new(NullSink),
                DockerJobOptions {
                    image: Some(missing.clone()),
                    network: None,
                },
            )
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("nodetool docker build-image"),
            "{err}"
        );
        assert!(
            !dir.path().join(format!("nodetool-job-{job_id}")).exists(),
            "no workspace left behind"
        );
    }
}

#[tokio::test]
async fn latest_tag_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let Some(s) = engine(
        "latest_tag_is_refused_at_start",
        dir.path(),
        PullPolicy::Never,
    )
    .await
    else {
        return;
    };
    let err = s.ensure_image("nodetool-worker:latest").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("latest"), "{err}");
}

#[tokio::test]
async fn job_granted_host_network_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let Some(s) = engine(
        "job_granted_host_network_is_refused",
        dir.path(),
        PullPolicy::Never,
    )
    .await
    else {
        return;
    };
    let err = s
        .start_with(
            JobSpec::new(Graph::default()),
            Arc::new(NullSink),
            DockerJobOptions {
                image: None,
                network: Some("host".into()),
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
}
