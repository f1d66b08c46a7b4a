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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_file_with_read_cache_behaviour() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = FileStorage::new(dir.path().join("assets"), "/api/storage")
        .expect("file storage")
        .with_read_cache(1 << 20);
    nodetool_testkit::storage_suite::run(Arc::new(storage)).await;
}

#[tokio::test]
async fn only_file_storage_offers_a_local_path_and_copies_from_a_file() {
    use nodetool_core::{PutOptions, Storage, StorageKey};
    let dir = tempfile::tempdir().expect("tempdir");
    let file = FileStorage::new(dir.path().join("assets"), "/api/storage").expect("file storage");
    let key = StorageKey::new("a/b.txt").expect("key");
    file.upload_bytes(
        &key,
        bytes::Bytes::from_static(b"hello"),
        PutOptions::default(),
    )
    .await
    .expect("upload");
    let path = file.local_path(&key).expect("file storage is local");
    assert_eq!(std::fs::read(&path).expect("read"), b"hello");
    // The reserved folder is no key of file storage, so no path either.
    let reserved = StorageKey::new(".nodetool/tmp/x").expect("key");
    assert_eq!(file.local_path(&reserved), None);

    let memory = MemoryStorage::new("/api/storage");
    assert_eq!(memory.local_path(&key), None);

    // Likewise only file storage copies from a local file itself.
    let src = std::fs::File::open(&path).expect("open");
    let copy = StorageKey::new("a/copy.txt").expect("key");
    let meta = file
        .upload_file(&copy, &src, PutOptions::default(), None)
        .await
        .expect("file storage copies from a file");
    assert_eq!(meta.size, 5);
    let err = memory
        .upload_file(&copy, &src, PutOptions::default(), None)
        .await
        .expect_err("memory storage streams instead");
    assert_eq!(err.kind(), nodetool_core::ErrorKind::Unsupported);
}

/// Larger than one copy step, so the flusher thread that writes back behind the copy runs.
#[tokio::test]
async fn file_storage_copies_a_multi_step_file_whole() {
    use nodetool_core::{PutOptions, Storage, StorageKey};
    use std::io::{Seek, SeekFrom, Write};
    let dir = tempfile::tempdir().expect("tempdir");
    let file = FileStorage::new(dir.path().join("assets"), "/api/storage").expect("file storage");
    let data = nodetool_testkit::storage_suite::pattern(40 * 1024 * 1024 + 3);
    let mut src = tempfile::tempfile_in(dir.path()).expect("temp file");
    src.write_all(&data).expect("write");
    src.seek(SeekFrom::Start(0)).expect("seek");
    let key = StorageKey::new("big/object.bin").expect("key");
    let meta = file
        .upload_file(&key, &src, PutOptions::default(), None)
        .await
        .expect("upload_file");
    assert_eq!(meta.size, data.len() as u64);
    let path = file.local_path(&key).expect("local path");
    assert!(std::fs::read(path).expect("read") == data, "bytes differ");
}
