use std::path::{Path, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use nodetool_core::storage::{not_found, ByteStream, Download, ObjectMeta, Progress, PutOptions};
use nodetool_core::{
    ByteRange, Error, Result, Storage, StorageCapabilities, StorageInfo, StorageKey, StoragePrefix,
};

use crate::join_url;
use crate::read_cache::{self, ReadCache, Stamp};
use crate::signing::UrlSigner;

/// Directory under the root that holds in-flight uploads; never a key.
const RESERVED: &str = ".nodetool";
/// Extended attribute holding an object's content type. It is set on the temp file before the
/// rename, so data and type become visible together.
const XATTR_CONTENT_TYPE: &str = "user.nodetool.content_type";
/// Objects (or ranges) up to this size are read whole when opened.
const SMALL_OBJECT: u64 = 64 * 1024;

/// Objects as files under a root directory (`~/.config/nodetool/assets` by default).
///
/// Invariants:
/// - a key maps to `root/<segments>`; `StorageKey` rules out traversal, and the top-level
///   `.nodetool/` directory (temp files) is refused as a key;
/// - uploads go to `root/.nodetool/tmp/` (same filesystem), are fsynced, then renamed into place,
///   so readers see the old or the new file, never a partial one;
/// - the ETag is derived from inode, size and mtime: every upload creates a new inode;
/// - with a read cache, a cached object is served only while its path still stats the same as
///   the file it was read from (see `read_cache`).
#[derive(Debug)]
pub struct FileStorage {
    root: PathBuf,
    base_url: String,
    signer: Option<UrlSigner>,
    read_cache: Option<ReadCache>,
}

impl FileStorage {
    /// Creates the root (and its temp directory) if needed.
    pub fn new(root: impl Into<PathBuf>, base_url: impl Into<String>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join(RESERVED).join("tmp")).map_err(|e| {
            Error::from(e)
                .with_operation("file.new")
                .with_context("root", root.display())
        })?;
        Ok(Self {
            root,
            base_url: base_url.into(),
            signer: None,
            read_cache: None,
        })
    }

    /// Keeps objects of up to 64 KiB in memory after they are read, up to `max_bytes` in all
    /// (0: no cache). Each use is checked against the file with one `statx`.
    pub fn with_read_cache(mut self, max_bytes: u64) -> Self {
        self.read_cache = (max_bytes > 0).then(|| ReadCache::new(max_bytes));
        self
    }

    /// URLs from [`Storage::url`] carry an expiring signature, so they work without a token.
    pub fn with_signer(mut self, signer: UrlSigner) -> Self {
        self.signer = Some(signer);
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &StorageKey, op: &'static str) -> Result<PathBuf> {
        if key.segments().next() == Some(RESERVED) {
            return Err(Error::invalid_input(format!(
                "keys under '{RESERVED}/' are reserved by file storage"
            ))
            .with_operation(op)
            .with_context("key", key));
        }
        let mut path = self.root.clone();
        path.extend(key.segments());
        Ok(path)
    }

    fn temp_path(&self) -> PathBuf {
        self.root
            .join(RESERVED)
            .join("tmp")
            .join(nodetool_core::id::new_id())
    }

    /// Writes a new object through a temp file: `fill` writes and syncs it, the content type
    /// goes on as an xattr, and the file is renamed into place. On any failure the temp file is
    /// removed and the old object (if any) stays.
    async fn store<F, Fut>(&self, key: &StorageKey, opts: PutOptions, fill: F) -> Result<ObjectMeta>
    where
        F: FnOnce(std::fs::File) -> Fut,
        Fut: std::future::Future<Output = Result<u64>>,
    {
        const OP: &str = "file.upload";
        let path = self.path(key, OP)?;
        if let Some(cache) = &self.read_cache {
            cache.remove(key.as_str());
        }
        let temp = self.temp_path();
        let content_type = opts.effective_content_type(key);
        let written = async {
            let file = std::fs::File::create(&temp)?;
            let for_xattr = file.try_clone()?;
            fill(file).await?;
            set_content_type(for_xattr, content_type).await?;
            if let Some(parent) = path.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            tokio::fs::rename(&temp, &path).await?;
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(e.with_operation(OP).with_context("key", key));
        }
        self.require_metadata(key).await
    }
}

/// Records the content type in an xattr (before the rename, so data and type appear together).
/// Filesystems without user xattrs still work; the type is then guessed on read.
async fn set_content_type(file: std::fs::File, content_type: String) -> Result<()> {
    tokio::task::spawn_blocking(move || {
        if let Err(e) =
            xattr::FileExt::set_xattr(&file, XATTR_CONTENT_TYPE, content_type.as_bytes())
        {
            tracing::debug!(error = %e, "file storage: cannot record content type in an xattr");
        }
    })
    .await
    .map_err(|e| Error::unexpected("xattr task failed").with_source(e))
}

fn meta_from(
    key: &StorageKey,
    md: &std::fs::Metadata,
    file: Option<&std::fs::File>,
    path: &Path,
) -> ObjectMeta {
    use std::os::unix::fs::MetadataExt;
    let modified = md.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let content_type = file
        .map(|f| xattr::FileExt::get_xattr(f, XATTR_CONTENT_TYPE))
        .unwrap_or_else(|| xattr::get(path, XATTR_CONTENT_TYPE))
        .ok()
        .flatten()
        .and_then(|v| String::from_utf8(v).ok())
        .unwrap_or_else(|| nodetool_core::storage::guess_content_type(key.as_str()).to_owned());
    ObjectMeta {
        key: key.clone(),
        size: md.len(),
        last_modified: DateTime::<Utc>::from(modified),
        etag: Some(format!(
            "{:x}-{:x}-{:x}.{:x}",
            md.ino(),
            md.len(),
            md.mtime(),
            md.mtime_nsec()
        )),
        content_type: Some(content_type),
    }
}

fn io_err(e: std::io::Error, op: &'static str, key: &StorageKey) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        not_found("file", key).with_operation(op)
    } else {
        Error::from(e).with_operation(op).with_context("key", key)
    }
}

/// Reads `len` bytes at `offset` only if the page cache holds them all (`RWF_NOWAIT`), so the
/// caller may run on an async worker. `None`: not cached, not supported by the filesystem, or
/// short (the blocking read then reports what is wrong).
fn read_cached(file: &std::fs::File, offset: u64, len: usize) -> Option<bytes::Bytes> {
    use rustix::io::{preadv2, Errno, ReadWriteFlags};
    let mut buf = vec![0; len];
    let mut filled = 0;
    while filled < len {
        let mut slice = [std::io::IoSliceMut::new(&mut buf[filled..])];
        match preadv2(
            file,
            &mut slice,
            offset + filled as u64,
            ReadWriteFlags::NOWAIT,
        ) {
            Ok(0) => return None,
            Ok(n) => filled += n,
            Err(Errno::INTR) => {}
            Err(_) => return None,
        }
    }
    Some(bytes::Bytes::from(buf))
}

/// `len` (at most [`SMALL_OBJECT`]) bytes at `start`: from the page cache on this thread when
/// they are there, else on the blocking pool.
async fn read_small(
    file: std::fs::File,
    start: u64,
    len: u64,
    key: &StorageKey,
) -> Result<bytes::Bytes> {
    const OP: &str = "file.download";
    if let Some(bytes) = read_cached(&file, start, len as usize) {
        return Ok(bytes);
    }
    let key = key.clone();
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0; len as usize];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, start)
            .map_err(|e| io_err(e, OP, &key))?;
        Ok::<_, Error>(bytes::Bytes::from(buf))
    })
    .await
    .map_err(|e| Error::unexpected("read task failed").with_source(e))?
}

fn resolve(range: Option<ByteRange>, size: u64, key: &StorageKey) -> Result<std::ops::Range<u64>> {
    match range {
        Some(r) => r
            .resolve(size)
            .map_err(|e| e.with_operation("file.download").with_context("key", key)),
        None => Ok(0..size),
    }
}

/// A resolved range of an in-memory object (at most [`read_cache::MAX_OBJECT`] long).
fn to_usize(range: &std::ops::Range<u64>) -> std::ops::Range<usize> {
    range.start as usize..range.end as usize
}

#[async_trait]
impl Storage for FileStorage {
    fn info(&self) -> StorageInfo {
        StorageInfo {
            scheme: "file",
            location: self.root.display().to_string(),
            capabilities: StorageCapabilities {
                presign: false,
                durable: true,
            },
        }
    }

    async fn upload(
        &self,
        key: &StorageKey,
        body: ByteStream,
        opts: PutOptions,
    ) -> Result<ObjectMeta> {
        self.store(key, opts, |temp| {
            crate::blocking_io::write_stream(temp, body, |f| f.sync_data())
        })
        .await
    }

    /// The kernel copies the file into the temp file (`copy_file_range`); the rest is as
    /// [`upload`](Storage::upload).
    async fn upload_file(
        &self,
        key: &StorageKey,
        file: &std::fs::File,
        opts: PutOptions,
        progress: Option<Progress>,
    ) -> Result<ObjectMeta> {
        let src = file.try_clone().map_err(|e| {
            Error::from(e)
                .with_operation("file.upload")
                .with_context("key", key)
        })?;
        self.store(key, opts, |temp| {
            crate::blocking_io::copy_file(src, temp, progress, true)
        })
        .await
    }

    fn local_path(&self, key: &StorageKey) -> Option<PathBuf> {
        self.path(key, "file.local_path").ok()
    }

    async fn download(&self, key: &StorageKey, range: Option<ByteRange>) -> Result<Download> {
        const OP: &str = "file.download";
        let path = self.path(key, OP)?;
        if let Some(cache) = &self.read_cache {
            if let Some(entry) = cache.get(key.as_str()) {
                // Same path resolution as the open below (follows symlinks).
                match std::fs::metadata(&path) {
                    Ok(md) if Stamp::of(&md) == entry.stamp => {
                        let range = resolve(range, entry.meta.size, key)?;
                        let body = entry.bytes.slice(to_usize(&range));
                        return Ok(Download {
                            meta: entry.meta.clone(),
                            range,
                            body: nodetool_core::storage::once(body),
                        });
                    }
                    // Changed or gone: the open below says which.
                    _ => cache.remove(key.as_str()),
                }
            }
        }
        // One open, one fstat: the metadata describes exactly the bytes we stream. The open,
        // the fstat and the content-type xattr run inline: they are answered from the inode
        // cache in the common case, and a round trip through the blocking pool cost more than
        // all three (most of a 4 KiB GET's CPU time). Data reads never block a runtime worker:
        // small objects are read with RWF_NOWAIT, which only answers from the page cache, and
        // go to the blocking pool otherwise; large ones stream from a reader thread.
        let file = std::fs::File::open(&path).map_err(|e| io_err(e, OP, key))?;
        let md = file.metadata().map_err(|e| io_err(e, OP, key))?;
        if !md.is_file() {
            return Err(not_found("file", key).with_operation(OP));
        }
        let meta = meta_from(key, &md, Some(&file), &path);
        let range = resolve(range, meta.size, key)?;
        let len = range.end - range.start;
        let body = match &self.read_cache {
            // Read the whole object so that later ranges of it hit too. The stamp is the
            // opened file's: a write racing this read changes the ctime, so the entry is
            // never used for the new contents.
            Some(cache) if meta.size <= read_cache::MAX_OBJECT => {
                let bytes = read_small(file, 0, meta.size, key).await?;
                let body = bytes.slice(to_usize(&range));
                cache.insert(
                    key.as_str(),
                    read_cache::Entry {
                        stamp: Stamp::of(&md),
                        meta: meta.clone(),
                        bytes,
                    },
                );
                nodetool_core::storage::once(body)
            }
            _ if len <= SMALL_OBJECT => {
                nodetool_core::storage::once(read_small(file, range.start, len, key).await?)
            }
            _ => crate::blocking_io::read_stream(file, range.start, len),
        };
        Ok(Download { meta, range, body })
    }

    async fn metadata(&self, key: &StorageKey) -> Result<Option<ObjectMeta>> {
        const OP: &str = "file.metadata";
        let path = self.path(key, OP)?;
        let key = key.clone();
        tokio::task::spawn_blocking(move || match std::fs::metadata(&path) {
            Ok(md) if md.is_file() => Ok(Some(meta_from(&key, &md, None, &path))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(e, OP, &key)),
        })
        .await
        .map_err(|e| Error::unexpected("metadata task failed").with_source(e))?
    }

    async fn delete(&self, key: &StorageKey) -> Result<()> {
        const OP: &str = "file.delete";
        let path = self.path(key, OP)?;
        if let Some(cache) = &self.read_cache {
            cache.remove(key.as_str());
        }
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(e, OP, key)),
        }
        // Prune directories the delete emptied, up to (not including) the root.
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || tokio::fs::remove_dir(d).await.is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }

    async fn list(&self, prefix: &StoragePrefix) -> Result<Vec<ObjectMeta>> {
        let root = self.root.clone();
        let prefix = prefix.clone();
        tokio::task::spawn_blocking(move || list_blocking(&root, &prefix))
            .await
            .map_err(|e| Error::unexpected("list task failed").with_source(e))?
    }

    async fn url(&self, key: &StorageKey) -> Result<String> {
        self.path(key, "file.url")?;
        let url = join_url(&self.base_url, key);
        Ok(match &self.signer {
            Some(signer) => signer.sign_url(&url, Utc::now()),
            None => url,
        })
    }
}

fn list_blocking(root: &Path, prefix: &StoragePrefix) -> Result<Vec<ObjectMeta>> {
    // Start at the deepest directory the prefix names in full: "a/b/c" walks root/a/b.
    let dir_part = match prefix.as_str().rfind('/') {
        Some(i) => &prefix.as_str()[..i],
        None => "",
    };
    let mut start = root.to_path_buf();
    if !dir_part.is_empty() {
        start.extend(dir_part.split('/'));
    }
    let mut out = Vec::new();
    let mut stack = vec![(start, dir_part.to_owned())];
    while let Some((dir, rel)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(Error::from(e)
                    .with_operation("file.list")
                    .with_context("dir", dir.display()))
            }
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::from(e).with_operation("file.list"))?;
            let Ok(name) = entry.file_name().into_string() else {
                tracing::warn!(path = %entry.path().display(), "file storage: skipping non-UTF-8 name");
                continue;
            };
            if rel.is_empty() && name == RESERVED {
                continue;
            }
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let file_type = entry
                .file_type()
                .map_err(|e| Error::from(e).with_operation("file.list"))?;
            if file_type.is_dir() {
                // Only descend where keys could still match the prefix.
                let as_dir = format!("{child}/");
                if as_dir.starts_with(prefix.as_str()) || prefix.as_str().starts_with(&as_dir) {
                    stack.push((entry.path(), child));
                }
            } else if file_type.is_file() && child.starts_with(prefix.as_str()) {
                let Ok(key) = StorageKey::new(child.clone()) else {
                    tracing::warn!(name = %child, "file storage: skipping a file whose name is not a valid key");
                    continue;
                };
                match entry.metadata() {
                    Ok(md) => out.push(meta_from(&key, &md, None, &entry.path())),
                    // Deleted between readdir and stat: not listed.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(Error::from(e)
                            .with_operation("file.list")
                            .with_context("key", key))
                    }
                }
            }
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}
