//! Shared test helpers; `strategy_suite` is the behaviour suite every strategy passes.
#![allow(dead_code)]

pub mod strategy_suite;

use std::collections::BTreeMap;
use std::sync::Arc;

use nodetool_engine::{Engine, EngineResources, Registry};

/// An engine on test settings (in-memory/temp storage) under `dir`.
pub async fn test_engine(dir: &std::path::Path) -> Engine {
    let env: BTreeMap<String, String> = [("ENV".to_owned(), "test".to_owned())].into();
    let settings = nodetool_config::Settings::load(&nodetool_config::Sources::new(env, dir))
        .expect("settings");
    let resources = nodetool_runtime::Resources::new(settings, Default::default());
    let res = EngineResources::from_resources(&resources)
        .await
        .expect("resources");
    Engine::new(Arc::new(Registry::builtin()), res)
}

/// The Docker engine and the test worker's image (built on first use), or `None` after
/// `skip_or_fail` when no engine is here.
pub async fn worker_image(test: &str) -> Option<(bollard::Docker, String)> {
    use nodetool_exec::docker::image;
    let socket = std::path::Path::new("/var/run/docker.sock");
    let client = match nodetool_exec::docker::connect_engine(socket).await {
        Ok(c) => c,
        Err(e) => {
            nodetool_testkit::skip_or_fail(test, &format!("no Docker engine: {e}"));
            return None;
        }
    };
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_nodetool-exec-worker"));
    let tag = image::pinned_tag(binary).expect("image tag");
    if !image::image_exists(&client, &tag)
        .await
        .expect("image lookup")
    {
        image::build_image(
            &client,
            binary,
            std::slice::from_ref(&tag),
            "1000:1000",
            &["worker".into()],
        )
        .await
        .expect("image build");
    }
    Some((client, tag))
}
