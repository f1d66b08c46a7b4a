//! Resources builds what the selection rules choose, once per process.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use nodetool_config::{Settings, Sources};
use nodetool_core::{PutOptions, StorageKey};
use nodetool_runtime::{ResourceOptions, Resources, StorageRole};

fn resources(dir: &tempfile::TempDir, vars: &[(&str, &str)], use_s3: bool) -> Resources {
    let env: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let settings = Settings::load(&Sources::new(env, dir.path())).expect("settings");
    Resources::new(settings, ResourceOptions { use_s3 })
}

/// (case, variables, use_s3, asset backend, temp backend)
type Row<'a> = (&'a str, Vec<(&'a str, &'a str)>, bool, &'a str, &'a str);

#[test]
fn each_rule_builds_its_backend() {
    let s3 = [
        ("S3_ACCESS_KEY_ID", "AKIAEXAMPLE"),
        ("S3_SECRET_ACCESS_KEY", "secret"),
        ("S3_ENDPOINT_URL", "http://127.0.0.1:9"),
    ];
    let supabase = [
        ("SUPABASE_URL", "https://example.supabase.co"),
        ("SUPABASE_KEY", "service-role"),
    ];
    let with_temp_bucket: Vec<_> = supabase
        .iter()
        .copied()
        .chain([("ASSET_TEMP_BUCKET", "assets-temp")])
        .collect();
    let rows: Vec<Row<'_>> = vec![
        ("defaults", vec![], false, "file", "file"),
        ("ENV=test", vec![("ENV", "test")], false, "memory", "memory"),
        (
            "ENV=test beats S3",
            [&s3[..], &[("ENV", "test")]].concat(),
            false,
            "memory",
            "memory",
        ),
        ("S3 keys", s3.to_vec(), false, "s3", "s3"),
        (
            "forced S3",
            vec![("S3_ENDPOINT_URL", "http://127.0.0.1:9")],
            true,
            "s3",
            "s3",
        ),
        (
            "Supabase, no temp bucket",
            supabase.to_vec(),
            false,
            "supabase",
            "file",
        ),
        (
            "Supabase with temp bucket",
            with_temp_bucket,
            false,
            "supabase",
            "supabase",
        ),
        (
            "Supabase beats S3",
            [&s3[..], &supabase[..]].concat(),
            false,
            "supabase",
            "file",
        ),
    ];
    for (name, vars, use_s3, asset, temp) in rows {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = resources(&dir, &vars, use_s3);
        let got_asset = r.asset_storage().unwrap_or_else(|e| panic!("{name}: {e}"));
        let got_temp = r.temp_storage().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got_asset.info().scheme, asset, "{name}: asset");
        assert_eq!(got_temp.info().scheme, temp, "{name}: temp");
        let report = r.report();
        assert_eq!(
            report[0].as_ref().expect("asset report").backend,
            asset,
            "{name}"
        );
        assert_eq!(
            report[1].as_ref().expect("temp report").backend,
            temp,
            "{name}"
        );
    }
}

#[test]
fn file_storage_lands_in_the_config_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = resources(&dir, &[], false);
    assert_eq!(
        r.asset_storage().expect("asset").info().location,
        dir.path().join("assets").display().to_string()
    );
    assert_eq!(
        r.temp_storage().expect("temp").info().location,
        dir.path().join("temp").display().to_string()
    );
}

#[tokio::test]
async fn storage_is_built_once_and_shared() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = resources(&dir, &[("ENV", "test")], false);
    let a = r.asset_storage().expect("asset");
    let b = r.asset_storage().expect("asset again");
    assert!(Arc::ptr_eq(&a, &b), "one process-wide memory storage");
    let key = StorageKey::new("x.txt").expect("key");
    a.upload_bytes(&key, Bytes::from_static(b"x"), PutOptions::default())
        .await
        .expect("upload");
    assert!(b.exists(&key).await.expect("exists"));
    // Temp storage is a different store.
    assert!(!r
        .temp_storage()
        .expect("temp")
        .exists(&key)
        .await
        .expect("exists"));
}

#[tokio::test]
async fn node_cache_selection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let memory = resources(&dir, &[], false);
    let cache = memory.node_cache().await.expect("cache");
    assert_eq!(cache.name(), "memory");
    assert!(Arc::ptr_eq(
        &cache,
        &memory.node_cache().await.expect("again")
    ));

    let Some(server) = nodetool_testkit::memcached::MemcachedServer::start().await else {
        nodetool_testkit::skip_or_fail("node_cache_selection", "memcached binary not found");
        return;
    };
    let port = server.port().to_string();
    let vars = [
        ("MEMCACHE_HOST", "127.0.0.1"),
        ("MEMCACHE_PORT", port.as_str()),
    ];
    let remote = resources(&dir, &vars, false);
    let cache = remote.node_cache().await.expect("cache");
    assert_eq!(cache.name(), "memcached");
    let value = nodetool_core::CacheValue::from("hit");
    cache
        .set("k", value.clone(), std::time::Duration::from_secs(60))
        .await
        .expect("set");
    assert_eq!(cache.get("k").await.expect("get"), Some(value));
}

#[test]
fn broken_s3_config_fails_only_its_role() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Only one S3 key: asset selection fails with a message naming the missing variable...
    let r = resources(&dir, &[("S3_ACCESS_KEY_ID", "AKIAEXAMPLE")], false);
    let err = r
        .storage(StorageRole::Asset)
        .expect_err("half-configured S3");
    assert!(err.to_string().contains("S3_SECRET_ACCESS_KEY"), "{err}");
}
