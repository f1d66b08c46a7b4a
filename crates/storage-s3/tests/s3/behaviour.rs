//! The shared storage behaviour suite against a real S3-protocol server (moto), with and without
//! a root prefix, and against an external endpoint (MinIO, ...) when `NODETOOL_TEST_S3_*` is set.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::sync::Arc;

use nodetool_storage_s3::{S3Config, S3Storage};
use nodetool_testkit::{s3_server, storage_suite};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behaviour_suite_against_moto() {
    let Some(moto) = common::Moto::start("behaviour_suite_against_moto").await else {
        return;
    };
    storage_suite::run(Arc::new(moto.storage())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behaviour_suite_against_moto_under_a_root_prefix() {
    let Some(moto) = common::Moto::start("behaviour_suite_against_moto_under_a_root_prefix").await
    else {
        return;
    };
    let storage = S3Storage::new(S3Config {
        root: Some("temp/".to_owned()),
        ..moto.config()
    })
    .unwrap();
    storage_suite::run(Arc::new(storage)).await;
    // The suite cleans up after itself: nothing may have escaped the root.
    let listing = moto.raw_get("?list-type=2").await;
    assert!(
        !listing.contains("<Key>suite-"),
        "objects written outside temp/: {listing}"
    );
}

/// Runs only when all four `NODETOOL_TEST_S3_*` variables name an external endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behaviour_suite_against_external_endpoint() {
    let Some(target) = s3_server::external_target() else {
        eprintln!(
            "behaviour_suite_against_external_endpoint: NODETOOL_TEST_S3_ENDPOINT / _ACCESS_KEY_ID / _SECRET_ACCESS_KEY / _BUCKET not set; only moto is tested"
        );
        return;
    };
    let storage = S3Storage::new(S3Config {
        endpoint: Some(target.endpoint.clone()),
        access_key_id: Some(target.access_key_id.clone()),
        secret_access_key: Some(target.secret_access_key.clone()),
        ..S3Config::new(target.bucket.clone())
    })
    .unwrap();
    storage_suite::run(Arc::new(storage)).await;
}
