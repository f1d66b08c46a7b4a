//! Shared test helpers; `strategy_suite` is the behaviour suite every strategy passes.
#![allow(dead_code)]

pub mod strategy_suite;

use std::collections::BTreeMap;
use std::sync::Arc;

use nodetool_engine::Engine;

/// An engine on test settings (in-memory/temp storage) under `dir`.
pub async fn test_engine(dir: &std::path::Path) -> Engine {
    let env: BTreeMap<String, String> = [("ENV".to_owned(), "test".to_owned())].into();
    let settings = nodetool_config::Settings::load(&nodetool_config::Sources::new(env, dir))
        .expect("settings");
    let resources = nodetool_runtime::Resources::new(settings, Default::default());
    let res = resources.engine_resources().await.expect("resources");
    Engine::new(Arc::new(nodetool_nodes::registry()), res)
}
