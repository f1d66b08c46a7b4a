//! Workers use their parent's storage, temp storage, node cache and asset records through calls
//! (DESIGN §5), on real child processes (`nodetool-exec-worker`) and, when a Docker engine is
//! here, in real containers (skipped loudly otherwise; a failure under `NODETOOL_TEST_REQUIRE=1`).
//! The parent owns file storage, the in-process node cache and a SQLite asset store; the worker
//! has no settings and no credentials.
#![allow(clippy::unwrap_used)]

use crate::docker_image;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::Notify;

use nodetool_assets::SqliteAssetStore;
use nodetool_core::{
    AssetQuery, AssetStore, ByteRange, ByteStream, Download, ObjectMeta, PutOptions, Result,
    Storage, StorageInfo, StorageKey, StoragePrefix,
};
use nodetool_engine::{EngineResources, Graph, Status};
use nodetool_exec::{ExecutionStrategy, JobSpec, WorkerRef};
use nodetool_runtime::{ResourceOptions, Resources};
use nodetool_testkit::strategy_suite::{graph, run_job};
use nodetool_workers::docker::{DockerConfig, DockerStrategy, PullPolicy};
use nodetool_workers::subprocess::{SubprocessConfig, SubprocessStrategy};
use nodetool_workers::WorkerServices;

const WORKER: &str = env!("CARGO_BIN_EXE_nodetool-exec-worker");

/// The parent: file asset and temp storage, the in-process node cache (its hits counted by
/// `Resources`), asset records in SQLite.
struct Parent {
    dir: tempfile::TempDir,
    resources: Arc<Resources>,
    engine: EngineResources,
    store: Arc<SqliteAssetStore>,
}

impl Parent {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let env: BTreeMap<String, String> = [
            ("ENV", "development"),
            ("HOME", &dir.path().display().to_string()),
            (
                "ASSET_FOLDER",
                &dir.path().join("assets").display().to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let settings = nodetool_config::Settings::load(&nodetool_config::Sources::new(
            env,
            dir.path().join("config"),
        ))
        .unwrap();
        let store = Arc::new(
            SqliteAssetStore::open(&dir.path().join("nodetool.db"))
                .await
                .unwrap(),
        );
        let resources = Arc::new(
            Resources::new(settings, ResourceOptions::default()).with_asset_store(store.clone()),
        );
        let engine = resources.engine_resources().await.unwrap();
        Self {
            dir,
            resources,
            engine,
            store,
        }
    }

    fn services(&self) -> WorkerServices {
        WorkerServices::new(self.engine.clone())
    }

    async fn keys(&self, storage: &Arc<dyn Storage>) -> Vec<String> {
        storage
            .list(&StoragePrefix::all())
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key.to_string())
            .collect()
    }
}

/// A worker environment with nothing but a search path: no storage, cache or config settings.
fn subprocess(services: WorkerServices, scratch: &Path) -> Arc<dyn ExecutionStrategy> {
    let mut cfg = SubprocessConfig::new(WORKER);
    cfg.args = vec![];
    cfg.env = BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]);
    cfg.scratch_root = Some(scratch.to_path_buf());
    Arc::new(SubprocessStrategy::new(cfg).with_services(services))
}

fn node(id: &str, node_type: &str, data: Value) -> Value {
    json!({"id": id, "type": node_type, "data": data})
}

fn edge(source: &str, handle: &str, target: &str, target_handle: &str) -> Value {
    json!({"id": format!("{source}-{target}-{target_handle}"), "source": source,
           "sourceHandle": handle, "target": target, "targetHandle": target_handle})
}

fn output(id: &str, name: &str) -> Value {
    node(id, "nodetool.output.Output", json!({"name": name}))
}

/// SaveText and SaveImage in one job, LoadTextAssets in the next: blobs and rows land in the
/// parent's storage and database, and a later worker lists them.
/// The text output `text` of a completed job: saved under `user` in the parent's storage with
/// `content`; its key and its asset record (`user`'s).
async fn saved_text(
    parent: &Parent,
    o: &nodetool_exec::JobOutcome,
    user: &str,
    content: &str,
) -> (StorageKey, nodetool_core::AssetRecord) {
    assert_eq!(o.status, Status::Completed, "{o:?}");
    let text_ref = &o.result["text"][0];
    let uri = text_ref["uri"].as_str().unwrap();
    let key = StorageKey::new(uri.strip_prefix("asset://").unwrap()).unwrap();
    assert!(
        key.as_str().starts_with(&format!("{user}/")),
        "{user}: {key}"
    );
    assert_eq!(
        parent
            .engine
            .asset_storage
            .download_bytes(&key)
            .await
            .unwrap(),
        content.as_bytes()
    );
    let record = parent
        .store
        .get(user, text_ref["asset_id"].as_str().unwrap())
        .await
        .unwrap()
        .expect("the text's record, the job's user's");
    (key, record)
}

async fn saved_assets_are_the_parents(strategy: &Arc<dyn ExecutionStrategy>, parent: &Parent) {
    let save = graph(
        vec![
            node(
                "text",
                "nodetool.text.SaveText",
                json!({"text": "hello from a worker", "name": "note.txt"}),
            ),
            node(
                "bg",
                "lib.pillow.draw.Background",
                json!({"width": 5, "height": 4}),
            ),
            node("img", "nodetool.image.SaveImage", json!({"name": "bg.png"})),
            output("o1", "text"),
            output("o2", "image"),
        ],
        vec![
            edge("text", "output", "o1", "value"),
            edge("bg", "output", "img", "image"),
            edge("img", "output", "o2", "value"),
        ],
    );
    let spec = JobSpec::new(save);
    let job_id = spec.job_id.clone();
    let (o, _) = run_job(strategy, spec).await;
    let (key, record) = saved_text(parent, &o, "1", "hello from a worker").await;
    assert_eq!(record.name, "note.txt");
    assert_eq!(record.job_id.as_deref(), Some(job_id.as_str()));
    assert_eq!(record.storage_key.as_deref(), Some(key.as_str()));
    let image_ref = &o.result["image"][0];
    let image_key = StorageKey::new(
        image_ref["uri"]
            .as_str()
            .unwrap()
            .strip_prefix("asset://")
            .unwrap(),
    )
    .unwrap();
    let png = parent
        .engine
        .asset_storage
        .download_bytes(&image_key)
        .await
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG in the parent's storage");

    let load = graph(
        vec![
            node(
                "load",
                "nodetool.text.LoadTextAssets",
                json!({"folder": "1"}),
            ),
            output("names", "names"),
        ],
        vec![edge("load", "name", "names", "value")],
    );
    let (o, _) = run_job(strategy, JobSpec::new(load)).await;
    assert_eq!(o.status, Status::Completed, "{o:?}");
    let names: Vec<&str> = o.result["names"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(names.contains(&"note.txt"), "{names:?}");
    let home = parent
        .store
        .list(&AssetQuery::children("1", "1", 100))
        .await
        .unwrap();
    assert!(home.assets.iter().any(|a| a.name == "bg.png"));
}

/// A cacheable node computed by one worker is a hit for the next: the cache is the parent's.
async fn node_cache_is_shared_across_jobs(strategy: &Arc<dyn ExecutionStrategy>, parent: &Parent) {
    let value = format!("cached {}", nodetool_core::id::new_id());
    let g = || {
        graph(
            vec![
                node(
                    "s",
                    "nodetool.test.Sleep",
                    json!({"seconds": 0, "value": value}),
                ),
                output("out", "result"),
            ],
            vec![edge("s", "output", "out", "value")],
        )
    };
    let stats = parent.resources.node_cache_stats();
    let (hits, misses) = (stats.hits(), stats.misses());
    let (first, _) = run_job(strategy, JobSpec::new(g())).await;
    assert_eq!(first.status, Status::Completed, "{first:?}");
    assert_eq!(
        (stats.hits() - hits, stats.misses() - misses),
        (0, 1),
        "the first job misses"
    );
    let (second, _) = run_job(strategy, JobSpec::new(g())).await;
    assert_eq!(second.result, first.result);
    assert_eq!(
        (stats.hits() - hits, stats.misses() - misses),
        (1, 1),
        "the second job hits the parent's cache"
    );
}

/// Intermediate images go to the parent's temp storage and come back from it: Background and
/// Resize write `temp://` images, Resize, GetMetadata and SaveImage read them.
async fn temp_storage_round_trips(strategy: &Arc<dyn ExecutionStrategy>, parent: &Parent) {
    let g = graph(
        vec![
            node(
                "bg",
                "lib.pillow.draw.Background",
                json!({"width": 8, "height": 6}),
            ),
            node(
                "resize",
                "nodetool.image.Resize",
                json!({"width": 4, "height": 3}),
            ),
            node("meta", "nodetool.image.GetMetadata", json!({})),
            output("w", "width"),
            output("h", "height"),
        ],
        vec![
            edge("bg", "output", "resize", "image"),
            edge("resize", "output", "meta", "image"),
            edge("meta", "width", "w", "value"),
            edge("meta", "height", "h", "value"),
        ],
    );
    let spec = JobSpec::new(g);
    let job_id = spec.job_id.clone();
    let (o, _) = run_job(strategy, spec).await;
    assert_eq!(o.status, Status::Completed, "{o:?}");
    assert_eq!(o.result["width"], json!([4]), "{o:?}");
    assert_eq!(o.result["height"], json!([3]), "{o:?}");
    let temp = parent.keys(&parent.engine.temp_storage).await;
    let mine: Vec<&String> = temp
        .iter()
        .filter(|k| k.starts_with(&format!("jobs/{job_id}/")))
        .collect();
    assert_eq!(mine.len(), 2, "Background's and Resize's images: {temp:?}");
}

/// Asset storage that holds an upload after its first chunk until released, and says when it
/// got there: lets a test kill the worker in the middle of an upload, deterministically.
#[derive(Debug)]
struct HoldingStorage {
    inner: Arc<dyn Storage>,
    first_chunk: Arc<Notify>,
    release: Arc<Notify>,
}

#[async_trait]
impl Storage for HoldingStorage {
    fn info(&self) -> StorageInfo {
        self.inner.info()
    }

    async fn upload(
        &self,
        key: &StorageKey,
        body: ByteStream,
        opts: PutOptions,
    ) -> Result<ObjectMeta> {
        let (first, release) = (self.first_chunk.clone(), self.release.clone());
        let held = futures::stream::unfold((body, false), move |(mut body, seen)| {
            let (first, release) = (first.clone(), release.clone());
            async move {
                let item = body.next().await?;
                if !seen {
                    first.notify_one();
                    release.notified().await;
                }
                Some((item, (body, true)))
            }
        });
        self.inner.upload(key, held.boxed(), opts).await
    }

    async fn download(&self, key: &StorageKey, range: Option<ByteRange>) -> Result<Download> {
        self.inner.download(key, range).await
    }

    async fn metadata(&self, key: &StorageKey) -> Result<Option<ObjectMeta>> {
        self.inner.metadata(key).await
    }

    async fn delete(&self, key: &StorageKey) -> Result<()> {
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &StoragePrefix) -> Result<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }

    async fn url(&self, key: &StorageKey) -> Result<String> {
        self.inner.url(key).await
    }
}

/// Services whose asset storage holds the first upload; (services, "first chunk arrived",
/// "release").
fn holding_services(parent: &Parent) -> (WorkerServices, Arc<Notify>, Arc<Notify>) {
    let first = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let mut engine = parent.engine.clone();
    engine.asset_storage = Arc::new(HoldingStorage {
        inner: parent.engine.asset_storage.clone(),
        first_chunk: first.clone(),
        release: release.clone(),
    });
    (WorkerServices::new(engine), first, release)
}

/// A 20 MiB SaveText: several chunks, so the worker is still uploading when it is killed.
fn big_save() -> Graph {
    graph(
        vec![
            node(
                "big",
                "nodetool.test.BigOutput",
                json!({"bytes": 20 * 1024 * 1024}),
            ),
            node("save", "nodetool.text.SaveText", json!({"name": "big.txt"})),
            output("out", "saved"),
        ],
        vec![
            edge("big", "output", "save", "text"),
            edge("save", "output", "out", "value"),
        ],
    )
}

/// Kills the worker once its upload is under way; the job fails, and neither a blob (nor a
/// partial file) nor a record is left.
async fn killed_mid_upload_leaves_nothing<K, F>(
    strategy: Arc<dyn ExecutionStrategy>,
    parent: &Parent,
    first: Arc<Notify>,
    release: Arc<Notify>,
    kill: K,
) where
    K: FnOnce(WorkerRef) -> F,
    F: std::future::Future<Output = ()>,
{
    let sink = nodetool_engine::VecSink::new();
    let mut handle = strategy
        .start(JobSpec::new(big_save()), sink)
        .await
        .unwrap();
    let worker = handle.worker().cloned().unwrap();
    first.notified().await;
    kill(worker).await;
    release.notify_one();
    let outcome = handle.wait().await;
    assert_eq!(outcome.status, Status::Failed, "{outcome:?}");
    assert!(parent.keys(&parent.engine.asset_storage).await.is_empty());
    let partial = parent.dir.path().join("assets/.nodetool/tmp");
    let left: Vec<_> = std::fs::read_dir(&partial)
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "partial upload left behind: {left:?}");
    let home = parent
        .store
        .list(&AssetQuery::children("1", "1", 10))
        .await
        .unwrap();
    assert!(home.assets.is_empty(), "{:?}", home.assets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprocess_workers_save_and_load_the_parents_assets() {
    let parent = Parent::new().await;
    let scratch = tempfile::tempdir().unwrap();
    let s = subprocess(parent.services(), scratch.path());
    saved_assets_are_the_parents(&s, &parent).await;
}

/// Warm workers are started before their job, so before its user is known: each job's storage
/// and asset records must still be its own user's (the scope is the parent's, per job).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_workers_store_each_job_under_its_own_user() {
    let parent = Parent::new().await;
    let scratch = tempfile::tempdir().unwrap();
    let mut cfg = SubprocessConfig::new(WORKER);
    cfg.args = vec![];
    cfg.env = BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]);
    cfg.scratch_root = Some(scratch.path().to_path_buf());
    cfg.warm_workers = 2;
    let s = SubprocessStrategy::new(cfg).with_services(parent.services());
    for user in ["alice", "bob", "alice"] {
        // A hang guard, not a timing claim: the pool refills in the background.
        for _ in 0..600 {
            if s.warm_pids().len() == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let idle = s.warm_pids();
        let save = graph(
            vec![
                node(
                    "text",
                    "nodetool.text.SaveText",
                    json!({"text": format!("saved by {user}"), "name": "who.txt"}),
                ),
                output("o1", "text"),
            ],
            vec![edge("text", "output", "o1", "value")],
        );
        let mut spec = JobSpec::new(save);
        spec.user_id = user.into();
        let mut h = s
            .start(spec, nodetool_engine::VecSink::new())
            .await
            .unwrap();
        let Some(WorkerRef::Pid(pid)) = h.worker().cloned() else {
            panic!("no pid")
        };
        assert_eq!(
            idle.first(),
            Some(&pid),
            "{user}'s job ran on a warm worker"
        );
        let o = h.wait().await;
        let (_, record) = saved_text(&parent, &o, user, &format!("saved by {user}")).await;
        assert_eq!(record.name, "who.txt");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprocess_workers_share_the_parents_node_cache() {
    let parent = Parent::new().await;
    let scratch = tempfile::tempdir().unwrap();
    let s = subprocess(parent.services(), scratch.path());
    node_cache_is_shared_across_jobs(&s, &parent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprocess_workers_round_trip_temp_storage() {
    let parent = Parent::new().await;
    let scratch = tempfile::tempdir().unwrap();
    let s = subprocess(parent.services(), scratch.path());
    temp_storage_round_trips(&s, &parent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subprocess_worker_killed_mid_upload_leaves_nothing() {
    let parent = Parent::new().await;
    let scratch = tempfile::tempdir().unwrap();
    let (services, first, release) = holding_services(&parent);
    let s = subprocess(services, scratch.path());
    killed_mid_upload_leaves_nothing(s, &parent, first, release, |worker| async move {
        let WorkerRef::Pid(pid) = worker else {
            panic!("a subprocess worker has a pid: {worker:?}")
        };
        nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    })
    .await;
}

/// A strategy without services: the worker says clearly why it cannot store anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_services_fails_storage_clearly() {
    let scratch = tempfile::tempdir().unwrap();
    let mut cfg = SubprocessConfig::new(WORKER);
    cfg.args = vec![];
    cfg.scratch_root = Some(scratch.path().to_path_buf());
    let s: Arc<dyn ExecutionStrategy> = Arc::new(SubprocessStrategy::new(cfg));
    // Background writes its image to temp storage.
    let g = graph(
        vec![
            node(
                "bg",
                "lib.pillow.draw.Background",
                json!({"width": 2, "height": 2}),
            ),
            output("o", "o"),
        ],
        vec![edge("bg", "output", "o", "value")],
    );
    let (o, _) = run_job(&s, JobSpec::new(g)).await;
    assert_eq!(o.status, Status::Failed);
    let err = o.error.clone().unwrap();
    assert_eq!(err.error_kind(), nodetool_core::ErrorKind::Unsupported);
    assert!(
        err.message.contains("lends this worker no storage"),
        "{err}"
    );
    // Saving an asset needs records, which such a worker has none of.
    let g = graph(
        vec![
            node("t", "nodetool.text.SaveText", json!({"text": "x"})),
            output("o", "o"),
        ],
        vec![edge("t", "output", "o", "value")],
    );
    let (o, _) = run_job(&s, JobSpec::new(g)).await;
    assert_eq!(o.status, Status::Failed);
    let text = o.error_text().unwrap();
    assert!(text.contains("asset records are not available"), "{text}");
}

/// The same stories in containers, when a Docker engine is here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_workers_use_the_parents_services() {
    const TEST: &str = "docker_workers_use_the_parents_services";
    let Some((client, tag)) = docker_image::worker_image(TEST).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let workspaces = dir.path().join("jobs");
    std::fs::create_dir_all(&workspaces).unwrap();
    let docker = |services: WorkerServices| {
        let mut config = DockerConfig::new(&workspaces);
        config.image = tag.clone();
        config.pull_policy = PullPolicy::Never;
        async move {
            let s = DockerStrategy::connect(config).await.unwrap();
            // Network isolation is unchanged: the container reaches its parent only through
            // stdin/stdout.
            assert_eq!(s.config().network, None);
            Arc::new(s.with_services(services)) as Arc<dyn ExecutionStrategy>
        }
    };

    let parent = Parent::new().await;
    let s = docker(parent.services()).await;
    saved_assets_are_the_parents(&s, &parent).await;
    node_cache_is_shared_across_jobs(&s, &parent).await;
    temp_storage_round_trips(&s, &parent).await;

    let parent = Parent::new().await;
    let (services, first, release) = holding_services(&parent);
    let s = docker(services).await;
    let killer = client.clone();
    killed_mid_upload_leaves_nothing(s, &parent, first, release, |worker| async move {
        let WorkerRef::Container(id) = worker else {
            panic!("a docker worker is a container: {worker:?}")
        };
        let opts = bollard::query_parameters::KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        killer.kill_container(&id, Some(opts)).await.unwrap();
    })
    .await;
    let left: Vec<_> = std::fs::read_dir(&workspaces).unwrap().collect();
    assert!(left.is_empty(), "job workspaces left behind: {left:?}");
}
