//! Symbolic links planted inside a file storage's root are never followed: reads (whole and
//! ranged, with and without the read cache), metadata, writes, deletes and listings through a
//! link to a file or a folder outside the root all refuse, and the outside files stay as they
//! were. Partial uploads left by a killed process are reaped once stale.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use nodetool_core::{ByteRange, ErrorKind, PutOptions, Storage, StorageKey, StoragePrefix};
use nodetool_storage::FileStorage;

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

/// A root with `real/ok.txt`, `real/filelink` → an outside file, `dirlink` → an outside folder
/// (holding `secret.txt`), and `real/dirlink2` → the same folder.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("assets");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(root.join("real")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(root.join("real/ok.txt"), b"inside").unwrap();
    std::fs::write(outside.join("secret.txt"), b"outside secret").unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("real/filelink")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("dirlink")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("real/dirlink2")).unwrap();
    Fixture {
        _dir: dir,
        root,
        outside,
    }
}

fn key(k: &str) -> StorageKey {
    StorageKey::new(k).unwrap()
}

fn storages(root: &Path) -> Vec<FileStorage> {
    vec![
        FileStorage::new(root, "/api/storage").unwrap(),
        FileStorage::new(root, "/api/storage")
            .unwrap()
            .with_read_cache(1 << 20),
    ]
}

const LINKED: [&str; 3] = [
    "real/filelink",
    "dirlink/secret.txt",
    "real/dirlink2/secret.txt",
];

fn assert_refused(e: &nodetool_core::Error, what: &str) {
    assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{what}: {e}");
    assert!(e.to_string().contains("symbolic link"), "{what}: {e}");
}

#[tokio::test]
async fn reads_and_metadata_through_links_refuse() {
    let f = fixture();
    for storage in storages(&f.root) {
        // The real object still reads.
        let d = storage.download(&key("real/ok.txt"), None).await.unwrap();
        assert_eq!(
            nodetool_core::storage::collect(d.body).await.unwrap(),
            "inside"
        );
        for k in LINKED {
            let e = storage.download(&key(k), None).await.unwrap_err();
            assert_refused(&e, &format!("download {k}"));
            let range = ByteRange::Bounded { start: 0, end: 3 };
            let e = storage.download(&key(k), Some(range)).await.unwrap_err();
            assert_refused(&e, &format!("ranged download {k}"));
            let e = storage.metadata(&key(k)).await.unwrap_err();
            assert_refused(&e, &format!("metadata {k}"));
            assert!(storage.local_path(&key(k)).is_none(), "local_path {k}");
        }
    }
}

#[tokio::test]
async fn a_cached_object_replaced_by_a_link_is_not_served() {
    let f = fixture();
    let storage = FileStorage::new(&f.root, "/api/storage")
        .unwrap()
        .with_read_cache(1 << 20);
    let k = key("real/ok.txt");
    let d = storage.download(&k, None).await.unwrap();
    nodetool_core::storage::collect(d.body).await.unwrap();
    std::fs::remove_file(f.root.join("real/ok.txt")).unwrap();
    std::os::unix::fs::symlink(f.outside.join("secret.txt"), f.root.join("real/ok.txt")).unwrap();
    let e = storage.download(&k, None).await.unwrap_err();
    assert_refused(&e, "cached then linked");
}

#[tokio::test]
async fn writes_through_links_refuse_and_leave_the_outside_alone() {
    let f = fixture();
    let storage = FileStorage::new(&f.root, "/api/storage").unwrap();
    for k in [
        "dirlink/secret.txt",
        "dirlink/new.txt",
        "real/dirlink2/deeper/new.txt",
    ] {
        let e = storage
            .upload_bytes(&key(k), Bytes::from_static(b"pwned"), PutOptions::default())
            .await
            .unwrap_err();
        assert_refused(&e, &format!("upload {k}"));
    }
    assert_eq!(
        std::fs::read(f.outside.join("secret.txt")).unwrap(),
        b"outside secret"
    );
    assert!(!f.outside.join("new.txt").exists());
    assert!(!f.outside.join("deeper").exists());
    // A link as the last component is replaced (as a name), never written through.
    storage
        .upload_bytes(
            &key("real/filelink"),
            Bytes::from_static(b"replaced"),
            PutOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(f.outside.join("secret.txt")).unwrap(),
        b"outside secret"
    );
    assert!(!std::fs::symlink_metadata(f.root.join("real/filelink"))
        .unwrap()
        .file_type()
        .is_symlink());
    // No temp file is left behind by the refused uploads.
    let tmp: Vec<_> = std::fs::read_dir(f.root.join(".nodetool/tmp"))
        .unwrap()
        .collect();
    assert!(tmp.is_empty(), "{tmp:?}");
}

#[tokio::test]
async fn a_linked_temp_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("assets");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(root.join(".nodetool")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, root.join(".nodetool/tmp")).unwrap();
    let storage = FileStorage::new(&root, "/api/storage").unwrap();
    let e = storage
        .upload_bytes(
            &key("a.txt"),
            Bytes::from_static(b"x"),
            PutOptions::default(),
        )
        .await
        .unwrap_err();
    assert_refused(&e, "upload through a linked temp folder");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
}

#[tokio::test]
async fn deletes_through_links_refuse() {
    let f = fixture();
    let storage = FileStorage::new(&f.root, "/api/storage").unwrap();
    for k in LINKED {
        let e = storage.delete(&key(k)).await.unwrap_err();
        assert_refused(&e, &format!("delete {k}"));
    }
    assert!(f.outside.join("secret.txt").exists());
    assert!(std::fs::symlink_metadata(f.root.join("real/filelink")).is_ok());
    // Deleting the real object still works and prunes nothing outside.
    storage.delete(&key("real/ok.txt")).await.unwrap();
    assert!(!f.root.join("real/ok.txt").exists());
    assert!(f.outside.exists());
}

#[tokio::test]
async fn listings_skip_links_and_refuse_linked_folders() {
    let f = fixture();
    let storage = FileStorage::new(&f.root, "/api/storage").unwrap();
    let all = storage.list(&StoragePrefix::all()).await.unwrap();
    let keys: Vec<&str> = all.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(keys, vec!["real/ok.txt"]);
    for prefix in ["dirlink/", "real/dirlink2/s"] {
        let e = storage
            .list(&StoragePrefix::new(prefix).unwrap())
            .await
            .unwrap_err();
        assert_refused(&e, &format!("list {prefix}"));
    }
}

fn age(path: &Path, by: Duration) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - by).unwrap();
}

#[tokio::test]
async fn stale_partial_uploads_are_reaped_and_live_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FileStorage::new(dir.path(), "/api/storage").unwrap();
    let tmp = dir.path().join(".nodetool/tmp");
    std::fs::write(tmp.join("killed-mid-upload"), vec![0u8; 4096]).unwrap();
    age(&tmp.join("killed-mid-upload"), Duration::from_secs(7200));
    std::fs::write(tmp.join("in-flight"), b"still writing").unwrap();
    let removed = storage
        .reap_interrupted(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(removed, 1);
    assert!(!tmp.join("killed-mid-upload").exists());
    assert!(tmp.join("in-flight").exists());
    // Through gc too (with its own bound), whatever the temp TTL.
    age(&tmp.join("in-flight"), Duration::from_secs(7200));
    let report = nodetool_storage::gc::reap(
        &storage,
        &StoragePrefix::all(),
        Duration::from_secs(86400),
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(report.interrupted, 1);
    assert!(!tmp.join("in-flight").exists());
}
