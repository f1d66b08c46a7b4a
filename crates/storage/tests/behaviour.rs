//! The shared storage behaviour suite against the in-process backends.

use std::sync::Arc;

use nodetool_storage::{FileStorage, MemoryStorage};

#[tokio::test]
async fn storage_memory_behaviour() {
    nodetool_testkit::storage_suite::run(Arc::new(MemoryStorage::new("/api/storage"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_file_behaviour() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage =
        FileStorage::new(dir.path().join("assets"), "/api/storage").expect("file storage");
    nodetool_testkit::storage_suite::run(Arc::new(storage)).await;
    // The suite cleans up after itself; no temp file may be left behind by failed uploads.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("assets/.nodetool/tmp"))
        .expect("tmp dir")
        .collect();
    assert!(
        leftovers.is_empty(),
        "temp files left behind: {leftovers:?}"
    );
}
