use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustix::fs::{AtFlags, Mode, OFlags};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use nodetool_core::storage::{not_found, ByteStream, Download, ObjectMeta, Progress, PutOptions};
use nodetool_core::{
    ByteRange, Error, Result, Storage, StorageCapabilities, StorageInfo, StorageKey, StoragePrefix,
};

use crate::beneath;
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
/// In-flight uploads, under the root (same filesystem, so the final rename is atomic).
pub(crate) const TEMP_DIR: &str = ".nodetool/tmp";

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
    /// The root, opened once: every path is resolved beneath it, never through a link.
    root_fd: Arc<OwnedFd>,
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
        let root_fd: OwnedFd = std::fs::File::open(&root)
            .map_err(|e| {
                Error::from(e)
                    .with_operation("file.new")
                    .with_context("root", root.display())
            })?
            .into();
        Ok(Self {
            root,
            root_fd: Arc::new(root_fd),
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

    /// Opens `key`'s file for reading (non-blocking open, so a FIFO cannot hang us), refusing
    /// links anywhere on its path.
    fn open_object(&self, key: &StorageKey, op: &'static str) -> Result<std::fs::File> {
        self.path(key, op)?;
        beneath::open(
            &self.root_fd,
            key.as_str(),
            OFlags::RDONLY | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .map(std::fs::File::from)
        .map_err(|e| io_err(e, op, key))
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
        self.path(key, OP)?;
        if let Some(cache) = &self.read_cache {
            cache.remove(key.as_str());
        }
        let content_type = opts.effective_content_type(key);
        let root = self.root_fd.clone();
        let temp_name = nodetool_core::id::new_id();
        let temp_dir = beneath::create_dirs(&root, TEMP_DIR).map_err(|e| io_err(e, OP, key))?;
        // The key goes on once, below.
        let io = |e: std::io::Error| {
            if beneath::is_link_refusal(&e) {
                link_refused_bare()
            } else {
                Error::from(e)
            }
        };
        let written = async {
            let file: std::fs::File = rustix::fs::openat(
                &temp_dir,
                temp_name.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .map_err(|e| io(e.into()))?
            .into();
            let for_xattr = file.try_clone().map_err(io)?;
            fill(file).await?;
            set_content_type(for_xattr, content_type).await?;
            let (parent, name) = beneath::split(key.as_str());
            let parent_dir = beneath::create_dirs(&root, parent).map_err(io)?;
            // The last component is replaced as a name: a link there is replaced, not followed.
            rustix::fs::renameat(&temp_dir, temp_name.as_str(), &parent_dir, name)
                .map_err(|e| io(e.into()))?;
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = written {
            let _ = rustix::fs::unlinkat(&temp_dir, temp_name.as_str(), AtFlags::empty());
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

/// The object's metadata from its open file (`fgetxattr`: never through a path).
fn meta_from(key: &StorageKey, md: &std::fs::Metadata, file: &std::fs::File) -> ObjectMeta {
    use std::os::unix::fs::MetadataExt;
    let modified = md.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let content_type = xattr::FileExt::get_xattr(file, XATTR_CONTENT_TYPE)
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
    if beneath::is_link_refusal(&e) {
        link_refused(op, key)
    } else if e.kind() == std::io::ErrorKind::NotFound {
        not_found("file", key).with_operation(op)
    } else {
        Error::from(e).with_operation(op).with_context("key", key)
    }
}

/// A key whose path crosses a symbolic link inside the root: never followed.
fn link_refused(op: &'static str, key: &StorageKey) -> Error {
    link_refused_bare()
        .with_operation(op)
        .with_context("key", key)
}

fn link_refused_bare() -> Error {
    Error::new(
        nodetool_core::ErrorKind::PermissionDenied,
        "the object's path inside the storage folder is a symbolic link; file storage does not \
         follow links",
    )
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

    /// `None` (the caller then streams a download) when a link lies on the path: a path handed
    /// out is opened by code that follows links.
    fn local_path(&self, key: &StorageKey) -> Option<PathBuf> {
        let path = self.path(key, "file.local_path").ok()?;
        let mut at = self.root.clone();
        for segment in key.segments() {
            at.push(segment);
            match std::fs::symlink_metadata(&at) {
                Ok(md) if md.file_type().is_symlink() => return None,
                _ => {}
            }
        }
        Some(path)
    }

    /// Deletes partial uploads in `.nodetool/tmp/` whose last write is older than
    /// `older_than` (a live upload writes, and so touches its file, far more often).
    async fn reap_interrupted(&self, older_than: std::time::Duration) -> Result<usize> {
        let root = self.root_fd.clone();
        tokio::task::spawn_blocking(move || reap_temp_files(&root, older_than))
            .await
            .map_err(|e| Error::unexpected("reap task failed").with_source(e))?
    }

    async fn download(&self, key: &StorageKey, range: Option<ByteRange>) -> Result<Download> {
        const OP: &str = "file.download";
        let path = self.path(key, OP)?;
        if let Some(cache) = &self.read_cache {
            if let Some(entry) = cache.get(key.as_str()) {
                // The stat follows no link at the end; a link on the way could only lead to
                // the very inode the entry was read from (beneath the root), which is the
                // object itself.
                match std::fs::symlink_metadata(&path) {
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
        let file = self.open_object(key, OP)?;
        let md = file.metadata().map_err(|e| io_err(e, OP, key))?;
        if !md.is_file() {
            return Err(not_found("file", key).with_operation(OP));
        }
        let meta = meta_from(key, &md, &file);
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
        self.path(key, OP)?;
        let key = key.clone();
        let root = self.root_fd.clone();
        tokio::task::spawn_blocking(move || {
            let file = match beneath::open(
                &root,
                key.as_str(),
                OFlags::RDONLY | OFlags::NONBLOCK,
                Mode::empty(),
            ) {
                Ok(fd) => std::fs::File::from(fd),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                // A directory or a file on the way (`ENOTDIR`) is no object either.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) => {
                    return Ok(None)
                }
                Err(e) => return Err(io_err(e, OP, &key)),
            };
            match file.metadata() {
                Ok(md) if md.is_file() => Ok(Some(meta_from(&key, &md, &file))),
                Ok(_) => Ok(None),
                Err(e) => Err(io_err(e, OP, &key)),
            }
        })
        .await
        .map_err(|e| Error::unexpected("metadata task failed").with_source(e))?
    }

    async fn delete(&self, key: &StorageKey) -> Result<()> {
        const OP: &str = "file.delete";
        self.path(key, OP)?;
        if let Some(cache) = &self.read_cache {
            cache.remove(key.as_str());
        }
        let root = self.root_fd.clone();
        let key = key.clone();
        tokio::task::spawn_blocking(move || delete_blocking(&root, &key))
            .await
            .map_err(|e| Error::unexpected("delete task failed").with_source(e))?
    }

    async fn list(&self, prefix: &StoragePrefix) -> Result<Vec<ObjectMeta>> {
        let root = self.root_fd.clone();
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

fn reap_temp_files(root: &OwnedFd, older_than: std::time::Duration) -> Result<usize> {
    const OP: &str = "file.reap_interrupted";
    let dir = match beneath::open(
        root,
        TEMP_DIR,
        OFlags::RDONLY | OFlags::DIRECTORY,
        Mode::empty(),
    ) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::from(e).with_operation(OP)),
    };
    let cutoff = SystemTime::now()
        .checked_sub(older_than)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut removed = 0;
    let entries = rustix::fs::Dir::read_from(&dir)
        .map_err(|e| Error::from(std::io::Error::from(e)).with_operation(OP))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        let Ok(st) = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        let modified = SystemTime::UNIX_EPOCH
            + std::time::Duration::new(st.st_mtime.max(0) as u64, st.st_mtime_nsec as u32);
        if modified >= cutoff || rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir() {
            continue;
        }
        match rustix::fs::unlinkat(&dir, name, AtFlags::empty()) {
            Ok(()) => removed += 1,
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => tracing::warn!(error = %e, "file storage: cannot remove a partial upload"),
        }
    }
    if removed > 0 {
        tracing::info!(
            removed,
            "file storage: removed partial uploads left by an interrupted process"
        );
    }
    Ok(removed)
}

/// Unlinks the object (refusing a link in its place or on its path), then prunes the
/// directories the delete emptied, up to (not including) the root.
fn delete_blocking(root: &OwnedFd, key: &StorageKey) -> Result<()> {
    const OP: &str = "file.delete";
    let (parent, name) = beneath::split(key.as_str());
    let dir = match beneath::open(
        root,
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY,
        Mode::empty(),
    ) {
        Ok(d) => d,
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) =>
        {
            return Ok(())
        }
        Err(e) => return Err(io_err(e, OP, key)),
    };
    match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st)
            if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink =>
        {
            return Err(link_refused(OP, key))
        }
        Ok(_) => {}
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(io_err(e.into(), OP, key)),
    }
    match rustix::fs::unlinkat(&dir, name, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(io_err(e.into(), OP, key)),
    }
    let mut rel = parent;
    while !rel.is_empty() {
        let (up, name) = beneath::split(rel);
        let Ok(up_dir) = beneath::open(root, up, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
        else {
            break;
        };
        if rustix::fs::unlinkat(&up_dir, name, AtFlags::REMOVEDIR).is_err() {
            break;
        }
        rel = up;
    }
    Ok(())
}

fn list_blocking(root: &OwnedFd, prefix: &StoragePrefix) -> Result<Vec<ObjectMeta>> {
    use rustix::fs::FileType;
    let list_err = |e: std::io::Error, rel: &str| {
        if beneath::is_link_refusal(&e) {
            Error::new(
                nodetool_core::ErrorKind::PermissionDenied,
                "the listed folder inside the storage folder is a symbolic link; file storage \
                 does not follow links",
            )
            .with_operation("file.list")
            .with_context("dir", rel)
        } else {
            Error::from(e)
                .with_operation("file.list")
                .with_context("dir", rel)
        }
    };
    // Start at the deepest directory the prefix names in full: "a/b/c" walks root/a/b.
    let dir_part = match prefix.as_str().rfind('/') {
        Some(i) => prefix.as_str()[..i].to_owned(),
        None => String::new(),
    };
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY;
    let start = match beneath::open(root, &dir_part, dir_flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(rustix::io::Errno::NOTDIR.raw_os_error()) =>
        {
            return Ok(Vec::new())
        }
        Err(e) => return Err(list_err(e, &dir_part)),
    };
    let mut out = Vec::new();
    let mut stack = vec![(start, dir_part)];
    while let Some((dir, rel)) = stack.pop() {
        let entries = rustix::fs::Dir::read_from(&dir).map_err(|e| list_err(e.into(), &rel))?;
        for entry in entries {
            let entry = entry.map_err(|e| list_err(e.into(), &rel))?;
            let Ok(name) = entry.file_name().to_str().map(str::to_owned) else {
                tracing::warn!(dir = %rel, "file storage: skipping non-UTF-8 name");
                continue;
            };
            if name == "." || name == ".." || (rel.is_empty() && name == RESERVED) {
                continue;
            }
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let mut file_type = entry.file_type();
            if file_type == FileType::Unknown {
                // Filesystems without d_type: ask, without following a link.
                file_type = match rustix::fs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                {
                    Ok(st) => FileType::from_raw_mode(st.st_mode),
                    Err(_) => continue,
                };
            }
            match file_type {
                FileType::Directory => {
                    // Only descend where keys could still match the prefix.
                    let as_dir = format!("{child}/");
                    if as_dir.starts_with(prefix.as_str()) || prefix.as_str().starts_with(&as_dir) {
                        match beneath::open(&dir, &name, dir_flags, Mode::empty()) {
                            Ok(sub) => stack.push((sub, child)),
                            // Gone or replaced by a link since readdir: not listed.
                            Err(_) => continue,
                        }
                    }
                }
                FileType::RegularFile if child.starts_with(prefix.as_str()) => {
                    let Ok(key) = StorageKey::new(child.clone()) else {
                        tracing::warn!(name = %child, "file storage: skipping a file whose name is not a valid key");
                        continue;
                    };
                    let file = match beneath::open(
                        &dir,
                        &name,
                        OFlags::RDONLY | OFlags::NONBLOCK,
                        Mode::empty(),
                    ) {
                        Ok(fd) => std::fs::File::from(fd),
                        // Deleted or replaced (by a link) between readdir and open: not listed.
                        Err(_) => continue,
                    };
                    match file.metadata() {
                        Ok(md) if md.is_file() => out.push(meta_from(&key, &md, &file)),
                        Ok(_) => {}
                        Err(e) => {
                            return Err(Error::from(e)
                                .with_operation("file.list")
                                .with_context("key", key))
                        }
                    }
                }
                // Links (and anything else) are never followed nor listed.
                _ => {}
            }
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}
