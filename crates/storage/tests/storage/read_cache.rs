//! File storage's read cache never serves bytes or metadata the file no longer has, however the
//! file changed: through the storage, or behind its back on disk.

use std::time::Duration;

use bytes::Bytes;
use nodetool_core::{ByteRange, ErrorKind, PutOptions, Storage, StorageKey};
use nodetool_storage::FileStorage;

struct Fixture {
    _dir: tempfile::TempDir,
    storage: FileStorage,
    key: StorageKey,
    path: std::path::PathBuf,
}

/// A cached storage holding `a/obj.bin` = `contents`, read once so that it is cached.
async fn cached(contents: &[u8]) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = FileStorage::new(dir.path().join("assets"), "/api/storage")
        .expect("file storage")
        .with_read_cache(1 << 20);
    let key = StorageKey::new("a/obj.bin").expect("key");
    storage
        .upload_bytes(
            &key,
            Bytes::copy_from_slice(contents),
            PutOptions::default(),
        )
        .await
        .expect("upload");
    assert_eq!(read(&storage, &key).await, contents);
    let path = storage.local_path(&key).expect("local path");
    Fixture {
        _dir: dir,
        storage,
        key,
        path,
    }
}

async fn read(storage: &FileStorage, key: &StorageKey) -> Bytes {
    storage.download_bytes(key).await.expect("download")
}

#[tokio::test]
async fn repeated_reads_and_ranges_come_from_the_same_bytes() {
    let f = cached(b"0123456789").await;
    assert_eq!(read(&f.storage, &f.key).await, "0123456789");
    let part = f
        .storage
        .download(&f.key, Some(ByteRange::Bounded { start: 2, end: 4 }))
        .await
        .expect("range");
    assert_eq!(part.range, 2..5);
    assert_eq!(part.meta.size, 10);
    assert_eq!(part.into_bytes().await.expect("bytes"), "234");
    let tail = f
        .storage
        .download(&f.key, Some(ByteRange::Suffix(3)))
        .await
        .expect("suffix");
    assert_eq!(tail.into_bytes().await.expect("bytes"), "789");
    let err = f
        .storage
        .download(&f.key, Some(ByteRange::From(10)))
        .await
        .expect_err("past the end");
    assert_eq!(err.kind(), ErrorKind::RangeNotSatisfiable);
}

#[tokio::test]
async fn an_upload_through_the_storage_is_seen() {
    let f = cached(b"old contents").await;
    f.storage
        .upload_bytes(
            &f.key,
            Bytes::from_static(b"new contents"),
            PutOptions::default(),
        )
        .await
        .expect("upload");
    assert_eq!(read(&f.storage, &f.key).await, "new contents");
}

#[tokio::test]
async fn a_file_replaced_on_disk_is_seen() {
    let f = cached(b"old contents").await;
    let temp = f.path.with_extension("tmp");
    std::fs::write(&temp, b"NEW CONTENTS").expect("write");
    std::fs::rename(&temp, &f.path).expect("rename");
    assert_eq!(read(&f.storage, &f.key).await, "NEW CONTENTS");
}

#[tokio::test]
async fn an_in_place_write_of_the_same_size_with_the_old_mtime_is_seen() {
    let f = cached(b"old contents").await;
    let mtime = std::fs::metadata(&f.path)
        .expect("stat")
        .modified()
        .expect("mtime");
    // Same inode, same size, and the modification time put back: only the change time (which
    // user space cannot set) tells.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&f.path, b"NEW CONTENTS").expect("write in place");
    let file = std::fs::File::options()
        .write(true)
        .open(&f.path)
        .expect("open");
    file.set_modified(mtime).expect("set mtime");
    drop(file);
    assert_eq!(read(&f.storage, &f.key).await, "NEW CONTENTS");
}

#[tokio::test]
async fn a_content_type_changed_on_disk_is_seen() {
    let f = cached(b"{}").await;
    let before = f
        .storage
        .download(&f.key, None)
        .await
        .expect("download")
        .meta;
    std::thread::sleep(Duration::from_millis(20));
    if xattr::set(&f.path, "user.nodetool.content_type", b"application/json").is_err() {
        // No user xattrs on this filesystem: the type is guessed, nothing to change.
        return;
    }
    let after = f
        .storage
        .download(&f.key, None)
        .await
        .expect("download")
        .meta;
    assert_ne!(before.content_type, after.content_type);
    assert_eq!(after.content_type.as_deref(), Some("application/json"));
}

#[tokio::test]
async fn a_file_deleted_on_disk_is_not_found() {
    let f = cached(b"contents").await;
    std::fs::remove_file(&f.path).expect("remove");
    let err = f.storage.download(&f.key, None).await.expect_err("deleted");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn a_delete_through_the_storage_is_not_found() {
    let f = cached(b"contents").await;
    f.storage.delete(&f.key).await.expect("delete");
    let err = f.storage.download(&f.key, None).await.expect_err("deleted");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn objects_over_the_cached_size_are_served_whole() {
    let big = vec![7u8; 200 * 1024];
    let f = cached(&big).await;
    assert_eq!(read(&f.storage, &f.key).await.len(), big.len());
    let part = f
        .storage
        .download(&f.key, Some(ByteRange::Suffix(5)))
        .await
        .expect("range");
    assert_eq!(part.into_bytes().await.expect("bytes"), &[7u8; 5][..]);
}
