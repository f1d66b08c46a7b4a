//! Small file objects kept in memory after a read, for [`crate::FileStorage`].
//!
//! A hit costs one `statx` of the object's path instead of open + fstat + xattr + read + close
//! (most of a 4 KiB GET's system time). An entry is used only while the path's current
//! [`Stamp`] equals the stamp of the file it was read from, so a replaced file (new inode), an
//! in-place write, truncate or xattr change (new ctime, which user space cannot set) is a miss,
//! never stale bytes. What slips through is what also defeats the object's ETag: a same-size
//! rewrite in place, or an inode freed and reused for a file of the same size, within one tick
//! of the filesystem's coarse clock (kernels since 6.13 give a fine-grained ctime to a change
//! made after a stat, which closes the first case).

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use bytes::Bytes;
use nodetool_core::storage::ObjectMeta;

/// Objects up to this size are cached.
pub(crate) const MAX_OBJECT: u64 = 64 * 1024;

/// What identifies one version of a file: same inode, same size, same modification and change
/// times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    pub(crate) fn of(md: &std::fs::Metadata) -> Self {
        Self {
            dev: md.dev(),
            ino: md.ino(),
            size: md.len(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
        }
    }
}

/// One cached object: its bytes and the metadata a read of it returns.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) stamp: Stamp,
    pub(crate) meta: ObjectMeta,
    pub(crate) bytes: Bytes,
}

/// Bounded by the bytes it holds (least recently and least frequently used go first).
#[derive(Clone)]
pub(crate) struct ReadCache {
    entries: moka::sync::Cache<String, Arc<Entry>>,
}

impl std::fmt::Debug for ReadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadCache")
            .field("weighted_bytes", &self.entries.weighted_size())
            .finish()
    }
}

impl ReadCache {
    pub(crate) fn new(max_bytes: u64) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|key: &String, entry: &Arc<Entry>| {
                    // Bytes plus a rough allowance for the key, metadata and bookkeeping.
                    u32::try_from(entry.bytes.len() + 2 * key.len() + 256).unwrap_or(u32::MAX)
                })
                .build(),
        }
    }

    /// The cached entry for `key`, current or not: the caller compares its stamp with the
    /// file's and [`remove`](Self::remove)s it when they differ.
    pub(crate) fn get(&self, key: &str) -> Option<Arc<Entry>> {
        self.entries.get(key)
    }

    pub(crate) fn insert(&self, key: &str, entry: Entry) {
        if entry.bytes.len() as u64 <= MAX_OBJECT {
            self.entries.insert(key.to_owned(), Arc::new(entry));
        }
    }

    pub(crate) fn remove(&self, key: &str) {
        self.entries.invalidate(key);
    }
}
