//! Python nodes under the engine, beside native ones: mixed workflows with the same events as a
//! native run, item-by-item streaming into native nodes, images through storage, secrets,
//! cancellation and timeouts, failures, validation, and native types winning.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

use crate::common;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use nodetool_bridge::{register_python_nodes, PythonBridge, SecretSource};
use nodetool_core::{PutOptions, StorageKey};
use nodetool_engine::{
    Engine, EngineResources, EventEnvelope, FnNode, Graph, NodeSpec, Registry, RunOptions,
    RunOutcome, RunRequest, Status, VecSink,
};

async fn resources() -> EngineResources {
    let dir = tempfile::tempdir().unwrap();
    let env: BTreeMap<String, String> = [("ENV".to_owned(), "test".to_owned())].into();
    let settings =
        nodetool_config::Settings::load(&nodetool_config::Sources::new(env, dir.path())).unwrap();
    let store = nodetool_assets::SqliteAssetStore::in_memory()
        .await
        .unwrap();
    nodetool_runtime::Resources::new(settings, nodetool_runtime::ResourceOptions::default())
        .with_asset_store(Arc::new(store))
        .engine_resources()
        .await
        .unwrap()
}

struct Harness {
    engine: Engine,
    res: EngineResources,
    bridge: PythonBridge,
}

async fn harness_with(bridge: PythonBridge, mut registry: Registry) -> Harness {
    let added = register_python_nodes(&mut registry, &bridge);
    assert!(
        added.added.iter().any(|t| t == "bridgetest.basic.Echo"),
        "{added:?}"
    );
    let res = resources().await;
    Harness {
        engine: Engine::new(Arc::new(registry), res.clone()),
        res,
        bridge,
    }
}

async fn harness(test: &str) -> Option<Harness> {
    let env = common::python(test)?;
    Some(harness_with(common::bridge(&env).await, nodetool_nodes::registry()).await)
}

fn graph(nodes: &[(&str, &str, Value)], edges: &[(&str, &str, &str, &str)]) -> Graph {
    let nodes: Vec<Value> = nodes
        .iter()
        .map(|(id, t, data)| json!({"id": id, "type": t, "data": data}))
        .collect();
    let edges: Vec<Value> = edges
        .iter()
        .enumerate()
        .map(|(i, (s, sh, t, th))| {
            json!({"id": format!("e{}", i + 1), "source": s, "sourceHandle": sh, "target": t, "targetHandle": th})
        })
        .collect();
    serde_json::from_value(json!({"nodes": nodes, "edges": edges})).unwrap()
}

impl Harness {
    async fn run(&self, g: Graph, opts: RunOptions) -> (RunOutcome, Vec<EventEnvelope>) {
        self.run_cancel(g, opts, CancellationToken::new()).await
    }

    async fn run_cancel(
        &self,
        g: Graph,
        opts: RunOptions,
        cancel: CancellationToken,
    ) -> (RunOutcome, Vec<EventEnvelope>) {
        let sink = VecSink::new();
        let outcome = tokio::time::timeout(
            Duration::from_secs(90),
            self.engine
                .run(RunRequest::new(g), opts, sink.clone(), cancel),
        )
        .await
        .expect("the run hung");
        (outcome, sink.events())
    }

    async fn put_png(&self, img: image::RgbImage) -> Value {
        let mut png = Vec::new();
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let key = format!("tests/{}.png", nodetool_core::id::new_id());
        self.res
            .asset_storage
            .upload_bytes(
                &StorageKey::new(key.clone()).unwrap(),
                png.into(),
                PutOptions::content_type("image/png"),
            )
            .await
            .unwrap();
        json!({"type": "image", "uri": format!("asset://{key}"), "asset_id": null, "data": null})
    }

    async fn fetch(&self, r: &Value) -> Vec<u8> {
        let uri = r["uri"].as_str().unwrap();
        let (storage, key) = if let Some(k) = uri.strip_prefix("temp://") {
            (&self.res.temp_storage, k)
        } else if let Some(k) = uri.strip_prefix("asset://") {
            (&self.res.asset_storage, k)
        } else {
            panic!("unexpected uri {uri}")
        };
        let got = storage
            .download(&StorageKey::new(key).unwrap(), None)
            .await
            .unwrap();
        nodetool_core::storage::collect(got.body)
            .await
            .unwrap()
            .to_vec()
    }
}

/// What a client can rely on in a run's events: the job's updates, each node's own status
/// sequence, and the order in which nodes complete and outputs arrive (dataflow order). When a
/// node *starts* relative to unrelated nodes is up to the scheduler, in native runs too.
fn shape(
    events: &[EventEnvelope],
    rename: &[(&str, &str)],
) -> (Vec<String>, BTreeMap<String, Vec<String>>) {
    let mut order = Vec::new();
    let mut per_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in events {
        let v = serde_json::to_value(&e.event).unwrap();
        let node = v["node_id"].as_str().unwrap_or("").to_owned();
        match v["type"].as_str().unwrap_or("") {
            "job_update" => order.push(format!("job {}", v["status"].as_str().unwrap_or(""))),
            "node_update" => {
                let t = v["node_type"].as_str().unwrap_or("");
                let t = rename.iter().find(|(a, _)| *a == t).map_or(t, |(_, b)| b);
                let status = v["status"].as_str().unwrap_or("").to_owned();
                if status != "running" {
                    order.push(format!("node {node} {t} {status}"));
                }
                per_node.entry(node).or_default().push(status);
            }
            "output_update" => {
                order.push(format!("output {node}"));
                per_node.entry(node).or_default().push("output".to_owned());
            }
            _ => {}
        }
    }
    (order, per_node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_python_native_runs_with_the_events_of_a_native_run() {
    let Some(h) = harness("native_python_native").await else {
        return;
    };
    let chain = |middle: &str, data: Value| {
        graph(
            &[
                ("a", "nodetool.constant.String", json!({"value": "ab"})),
                ("b", middle, data),
                ("c", "nodetool.text.Concat", json!({"b": "!"})),
                ("out", "nodetool.output.Output", json!({"name": "out"})),
            ],
            &[
                ("a", "output", "b", "text"),
                ("b", "output", "c", "a"),
                ("c", "output", "out", "value"),
            ],
        )
    };
    let (py, py_events) = h
        .run(
            chain("bridgetest.basic.Echo", json!({"times": 2})),
            RunOptions::default(),
        )
        .await;
    assert_eq!(py.status, Status::Completed, "{:?}", py.error);
    assert_eq!(py.result["out"], json!(["abab!"]));

    // The same shape with a native node in the middle (Concat's `a` plays Echo's `text`).
    let native_chain = graph(
        &[
            ("a", "nodetool.constant.String", json!({"value": "ab"})),
            ("b", "nodetool.text.Concat", json!({"b": "ab"})),
            ("c", "nodetool.text.Concat", json!({"b": "!"})),
            ("out", "nodetool.output.Output", json!({"name": "out"})),
        ],
        &[
            ("a", "output", "b", "a"),
            ("b", "output", "c", "a"),
            ("c", "output", "out", "value"),
        ],
    );
    let (native, native_events) = h.run(native_chain, RunOptions::default()).await;
    assert_eq!(native.result["out"], json!(["abab!"]));
    let (py_order, py_nodes) = shape(&py_events, &[("bridgetest.basic.Echo", "MIDDLE")]);
    let (native_order, native_nodes) = shape(&native_events, &[]);
    let native_order: Vec<String> = native_order
        .into_iter()
        .map(|s| s.replace("node b nodetool.text.Concat", "node b MIDDLE"))
        .collect();
    assert_eq!(
        py_order, native_order,
        "a Python node's events sit where a native node's do"
    );
    assert_eq!(py_nodes, native_nodes);
    // seq numbers are gapless and job-scoped, as for every run.
    for (i, e) in py_events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_stream_feeds_native_nodes_item_by_item() {
    let Some(h) = harness("a_python_stream_feeds_native_nodes").await else {
        return;
    };
    let g = graph(
        &[
            (
                "count",
                "bridgetest.basic.Count",
                json!({"n": 4, "prefix": "item-", "delay": 0.2}),
            ),
            ("up", "nodetool.text.Concat", json!({"b": "."})),
            ("out", "nodetool.output.Output", json!({"name": "labels"})),
        ],
        &[
            ("count", "label", "up", "a"),
            ("up", "output", "out", "value"),
        ],
    );
    let (o, events) = h.run(g, RunOptions::default()).await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    assert_eq!(
        o.result["labels"],
        json!(["item-0.", "item-1.", "item-2.", "item-3."])
    );
    // Item by item: the first item is through the native node before the stream ends.
    let (labels, _) = shape(&events, &[]);
    let first_output = labels.iter().position(|l| l == "output out").unwrap();
    let stream_done = labels
        .iter()
        .position(|l| l == "node count bridgetest.basic.Count completed")
        .unwrap();
    assert!(first_output < stream_done, "{labels:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_cross_as_blobs_into_temp_storage_and_a_native_save_files_an_asset() {
    let Some(h) = harness("images_cross_as_blobs").await else {
        return;
    };
    let image = h
        .put_png(image::RgbImage::from_pixel(4, 3, image::Rgb([10, 20, 30])))
        .await;
    let g = graph(
        &[
            (
                "resize",
                "nodetool.image.Resize",
                json!({"image": image, "width": 2, "height": 2}),
            ),
            ("invert", "bridgetest.basic.Invert", json!({})),
            (
                "save",
                "nodetool.image.SaveImage",
                json!({"name": "inverted.png"}),
            ),
            (
                "tmp",
                "nodetool.output.Output",
                json!({"name": "intermediate"}),
            ),
            ("out", "nodetool.output.Output", json!({"name": "saved"})),
        ],
        &[
            ("resize", "output", "invert", "image"),
            ("invert", "output", "tmp", "value"),
            ("invert", "output", "save", "image"),
            ("save", "output", "out", "value"),
        ],
    );
    let (o, _) = h.run(g, RunOptions::default()).await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    let inter = &o.result["intermediate"][0];
    let uri = inter["uri"].as_str().unwrap();
    assert!(
        uri.starts_with(&format!("temp://jobs/{}/invert-", o.job_id)),
        "{inter}"
    );
    assert!(uri.ends_with(".png"), "{uri}");
    assert!(inter["data"].is_null(), "no bytes in the value: {inter}");
    let px = image::load_from_memory(&h.fetch(inter).await)
        .unwrap()
        .to_rgb8();
    assert_eq!(px.dimensions(), (2, 2));
    assert_eq!(px.get_pixel(0, 0).0, [245, 235, 225]);
    let saved = &o.result["saved"][0];
    assert!(
        saved["uri"].as_str().unwrap().starts_with("asset://"),
        "{saved}"
    );
    assert!(saved["asset_id"].is_string(), "{saved}");
    let saved_px = image::load_from_memory(&h.fetch(saved).await)
        .unwrap()
        .to_rgb8();
    assert_eq!(saved_px, px, "the saved asset is the Python node's output");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_uri_and_inline_refs_are_sent_as_blobs() {
    let Some(h) = harness("data_uri_and_inline_refs").await else {
        return;
    };
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(1, 1, image::Rgb([0, 0, 0])))
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    use base64::Engine as _;
    let data_uri = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&png)
    );
    for image in [
        json!({"type": "image", "uri": data_uri}),
        json!({"type": "image", "uri": "", "data": png}),
    ] {
        let g = graph(
            &[
                ("invert", "bridgetest.basic.Invert", json!({"image": image})),
                ("out", "nodetool.output.Output", json!({"name": "out"})),
            ],
            &[("invert", "output", "out", "value")],
        );
        let (o, _) = h.run(g, RunOptions::default()).await;
        assert_eq!(o.status, Status::Completed, "{:?}", o.error);
        let px = image::load_from_memory(&h.fetch(&o.result["out"][0]).await)
            .unwrap()
            .to_rgb8();
        assert_eq!(px.get_pixel(0, 0).0, [255, 255, 255]);
    }
}

#[derive(Debug)]
struct ProcessSecrets;

impl SecretSource for ProcessSecrets {
    fn secret(&self, name: &str) -> Option<String> {
        (name == "BRIDGE_TEST_SECRET").then(|| "from-settings".to_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_declared_secrets_are_sent_from_the_job_or_else_the_settings() {
    let Some(env) = common::python("only_declared_secrets_are_sent") else {
        return;
    };
    let bridge = PythonBridge::start_with(common::config(&env), Some(Arc::new(ProcessSecrets)))
        .await
        .unwrap();
    let h = harness_with(bridge, nodetool_nodes::registry()).await;
    let g = || {
        graph(
            &[
                ("s", "bridgetest.basic.ReadSecret", json!({})),
                ("o1", "nodetool.output.Output", json!({"name": "secret"})),
                (
                    "o2",
                    "nodetool.output.Output",
                    json!({"name": "undeclared"}),
                ),
                ("o3", "nodetool.output.Output", json!({"name": "in_env"})),
            ],
            &[
                ("s", "secret", "o1", "value"),
                ("s", "undeclared", "o2", "value"),
                ("s", "in_env", "o3", "value"),
            ],
        )
    };
    let secrets: BTreeMap<String, String> = [
        ("BRIDGE_TEST_SECRET".to_owned(), "from-job".to_owned()),
        ("BRIDGE_TEST_UNDECLARED".to_owned(), "never-sent".to_owned()),
    ]
    .into();
    let (o, _) = h
        .run(
            g(),
            RunOptions {
                secrets,
                ..RunOptions::default()
            },
        )
        .await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    assert_eq!(o.result["secret"], json!(["from-job"]));
    assert_eq!(
        o.result["undeclared"],
        json!([""]),
        "a key the node does not declare is not sent"
    );
    assert_eq!(o.result["in_env"], json!([false]));
    let (o, _) = h.run(g(), RunOptions::default()).await;
    assert_eq!(
        o.result["secret"],
        json!(["from-settings"]),
        "without a job secret, the setting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_and_timeouts_reach_the_python_node() {
    let Some(h) = harness("cancellation_and_timeouts").await else {
        return;
    };
    let sleeper = || {
        graph(
            &[
                ("sleep", "bridgetest.basic.Sleep", json!({"seconds": 30.0})),
                ("out", "nodetool.output.Output", json!({"name": "out"})),
            ],
            &[("sleep", "output", "out", "value")],
        )
    };
    async fn wait_for(h: &Harness, n: usize) {
        let seen = || {
            h.bridge
                .recent_stderr(50)
                .iter()
                .filter(|l| l.contains("saw its cancel"))
                .count()
        };
        tokio::time::timeout(Duration::from_secs(20), async {
            while seen() < n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the cancel reached the node");
    }

    // The job's own deadline.
    let opts = RunOptions {
        job_timeout: Some(Duration::from_millis(700)),
        ..RunOptions::default()
    };
    let (o, _) = h.run(sleeper(), opts).await;
    assert_ne!(o.status, Status::Completed);
    wait_for(&h, 1).await;

    // A node time limit.
    let opts = RunOptions {
        node_timeout: Some(Duration::from_millis(500)),
        ..RunOptions::default()
    };
    let (o, _) = h.run(sleeper(), opts).await;
    assert_eq!(o.status, Status::Failed);
    assert!(o.error.unwrap().to_string().contains("time limit"));
    wait_for(&h, 2).await;

    // Cancelled from outside.
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.cancel();
    });
    let (o, _) = h.run_cancel(sleeper(), RunOptions::default(), cancel).await;
    assert_eq!(o.status, Status::Cancelled);
    wait_for(&h, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raising_python_node_fails_the_job_naming_it() {
    let Some(h) = harness("a_raising_python_node_fails_the_job").await else {
        return;
    };
    let g = graph(
        &[
            ("f", "bridgetest.basic.Fail", json!({"message": "no good"})),
            ("out", "nodetool.output.Output", json!({"name": "out"})),
        ],
        &[("f", "output", "out", "value")],
    );
    let (o, events) = h.run(g, RunOptions::default()).await;
    assert_eq!(o.status, Status::Failed);
    assert_eq!(o.failed_node.as_deref(), Some("f"));
    let text = o.error.unwrap().to_string();
    assert!(text.contains("raised ValueError: no good"), "{text}");
    let node_error = events
        .iter()
        .filter_map(|e| serde_json::to_value(&e.event).ok())
        .find(|v| v["type"] == "node_update" && v["status"] == "failed")
        .unwrap();
    assert!(
        node_error["error"]
            .as_str()
            .unwrap()
            .contains("ValueError: no good"),
        "{node_error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_and_log_updates_become_engine_events() {
    let Some(h) = harness("progress_and_log_updates").await else {
        return;
    };
    let g = graph(
        &[
            ("chatty", "bridgetest.basic.Chatty", json!({"text": "yo"})),
            ("out", "nodetool.output.Output", json!({"name": "out"})),
        ],
        &[("chatty", "output", "out", "value")],
    );
    let (o, events) = h.run(g, RunOptions::default()).await;
    assert_eq!(o.result["out"], json!(["YO"]));
    let values: Vec<Value> = events
        .iter()
        .map(|e| serde_json::to_value(&e.event).unwrap())
        .collect();
    assert!(
        values.iter().any(|v| v["type"] == "node_progress"
            && v["node_id"] == "chatty"
            && v["progress"] == 1
            && v["total"] == 2),
        "{values:#?}"
    );
    assert!(
        values.iter().any(|v| v["type"] == "log_update"
            && v["content"] == "log: yo"
            && v["severity"] == "warning"),
        "{values:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_treats_python_types_like_native_ones() {
    let Some(h) = harness("validation_treats_python_types").await else {
        return;
    };
    let g = graph(
        &[
            ("e", "bridgetest.basic.Echo", json!({"times": "many"})),
            ("typo", "bridgetest.basic.Ekho", json!({})),
            ("c", "bridgetest.basic.Count", json!({})),
            ("out", "nodetool.output.Output", json!({"name": "out"})),
        ],
        &[("c", "nope", "out", "value")],
    );
    let err = h.engine.validate(&g, &Map::new()).unwrap_err().to_string();
    assert!(
        err.contains("property `times` expects int but is str"),
        "{err}"
    );
    assert!(
        err.contains("did you mean bridgetest.basic.Echo"),
        "suggestions include Python types: {err}"
    );
    assert!(err.contains("has no output `nope`"), "{err}");
    let unknown = graph(&[("x", "otherpack.Thing", json!({}))], &[]);
    let err = h
        .engine
        .validate(&unknown, &Map::new())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the Python worker") && err.contains("does not provide it either"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_type_wins_over_a_python_one_of_the_same_name() {
    let Some(env) = common::python("a_native_type_wins") else {
        return;
    };
    let mut registry = nodetool_nodes::registry();
    registry.register(Arc::new(FnNode::new(
        NodeSpec::new("bridgetest.basic.Echo", "Native Echo")
            .input("text", "str", json!(""))
            .input("times", "int", json!(1))
            .output("output", "str"),
        |i| Ok(json!(format!("native:{}", i.str("text")?))),
    )));
    let bridge = common::bridge(&env).await;
    let installed = register_python_nodes(&mut registry, &bridge);
    assert!(installed
        .shadowed
        .contains(&"bridgetest.basic.Echo".to_owned()));
    let h = Harness {
        engine: Engine::new(Arc::new(registry), resources().await),
        res: resources().await,
        bridge,
    };
    let g = graph(
        &[
            ("e", "bridgetest.basic.Echo", json!({"text": "x"})),
            ("out", "nodetool.output.Output", json!({"name": "out"})),
        ],
        &[("e", "output", "out", "value")],
    );
    let (o, _) = h.run(g, RunOptions::default()).await;
    assert_eq!(o.result["out"], json!(["native:x"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_bridge_unknown_types_say_how_to_enable_python() {
    let mut registry = nodetool_nodes::registry();
    nodetool_bridge::mark_bridge_disabled(&mut registry);
    let engine = Engine::new(Arc::new(registry), resources().await);
    let g = graph(&[("x", "bridgetest.basic.Echo", json!({}))], &[]);
    let err = engine.validate(&g, &Map::new()).unwrap_err().to_string();
    assert!(
        err.contains("unknown node type `bridgetest.basic.Echo`"),
        "{err}"
    );
    assert!(err.contains("set NODETOOL_PYTHON"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_python_nodes_share_a_pool_of_workers() {
    let Some(env) = common::python("concurrent_python_nodes_share_a_pool") else {
        return;
    };
    let mut cfg = common::config(&env);
    cfg.workers = 2;
    let bridge = PythonBridge::start(cfg).await.unwrap();
    let h = harness_with(bridge, nodetool_nodes::registry()).await;
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    let ids: Vec<(String, String)> = (0..6).map(|i| (format!("s{i}"), format!("o{i}"))).collect();
    for (id, out) in &ids {
        nodes.push((
            id.as_str(),
            "bridgetest.basic.Sleep",
            json!({"seconds": 0.5}),
        ));
        nodes.push((out.as_str(), "nodetool.output.Output", json!({"name": out})));
        edges.push((id.as_str(), "output", out.as_str(), "value"));
    }
    let (o, events) = h.run(graph(&nodes, &edges), RunOptions::default()).await;
    assert_eq!(o.status, Status::Completed, "{:?}", o.error);
    // All six ran at once: every sleeper started before the first one finished.
    let (order, per_node) = shape(&events, &[]);
    let first_done = order
        .iter()
        .position(|l| l.starts_with("node s") && l.ends_with("completed"))
        .unwrap();
    let running_before: usize = events[..]
        .iter()
        .take_while(|e| {
            !shape(std::slice::from_ref(e), &[])
                .0
                .iter()
                .any(|l| l.starts_with("node s") && l.ends_with("completed"))
        })
        .filter(|e| {
            let v = serde_json::to_value(&e.event).unwrap();
            v["type"] == "node_update"
                && v["status"] == "running"
                && v["node_id"].as_str().unwrap_or("").starts_with('s')
        })
        .count();
    assert!(first_done > 0);
    assert_eq!(running_before, 6, "{per_node:?}");
    // The busy pool grows to its size (the second worker starts in the background).
    tokio::time::timeout(Duration::from_secs(60), async {
        while h.bridge.worker_pids().len() < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a second worker");
}
