//! Paths under the storage root, resolved without following symbolic links: every file
//! operation of [`FileStorage`](crate::FileStorage) opens its target relative to a descriptor
//! of the root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (Linux 5.6+), or, where
//! that call is missing (old kernels, seccomp profiles), one `openat(O_NOFOLLOW)` per
//! component. A link planted inside the root (by a job that can write there, or by hand) can
//! therefore never make a read, write, delete or listing reach a file outside it; the
//! operation fails with `ELOOP`, which [`is_link_refusal`] recognises.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Cleared on the first `ENOSYS`/`EPERM` from `openat2`, after which the per-component walk
/// is used.
static OPENAT2: AtomicBool = AtomicBool::new(true);

/// Opens `rel` (`/`-separated, no `.`/`..`; empty is the root itself) under `root` with
/// `flags`, refusing every symbolic link on the way and at the end.
pub(crate) fn open(root: &OwnedFd, rel: &str, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let rel = if rel.is_empty() { "." } else { rel };
    if OPENAT2.load(Ordering::Relaxed) {
        match rustix::fs::openat2(
            root,
            rel,
            flags,
            mode,
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOSYS) | Err(Errno::PERM) => OPENAT2.store(false, Ordering::Relaxed),
            Err(Errno::AGAIN) => {} // a concurrent rename: the walk below retries once
            // `O_DIRECTORY` on a link says ENOTDIR: the walk tells a link from a file.
            Err(Errno::NOTDIR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    walk(root, rel, flags, mode)
}

/// One `openat(O_NOFOLLOW)` per component: each directory is opened from the descriptor of
/// the one before, so no path is ever resolved twice.
fn walk(root: &OwnedFd, rel: &str, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut parts: Vec<&str> = rel
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(Errno::XDEV.into());
    }
    let Some(last) = parts.pop() else {
        return Ok(rustix::fs::openat(root, ".", flags, mode)?);
    };
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut dir: Option<OwnedFd> = None;
    for part in parts {
        let base = dir.as_ref().map_or(root.as_fd(), |d| d.as_fd());
        dir = Some(
            match rustix::fs::openat(base, part, dir_flags, Mode::empty()) {
                Ok(fd) => fd,
                // `O_DIRECTORY | O_NOFOLLOW` on a link says ENOTDIR: tell a link from a file.
                Err(Errno::NOTDIR) => return Err(link_or_notdir(base, part)),
                Err(e) => return Err(e.into()),
            },
        );
    }
    let base = dir.as_ref().map_or(root.as_fd(), |d| d.as_fd());
    match rustix::fs::openat(base, last, flags, mode) {
        Ok(fd) => Ok(fd),
        Err(Errno::NOTDIR) => Err(link_or_notdir(base, last)),
        Err(e) => Err(e.into()),
    }
}

/// `ELOOP` when `name` in `dir` is a link, else `ENOTDIR` (what the open said).
fn link_or_notdir(dir: std::os::fd::BorrowedFd<'_>, name: &str) -> io::Error {
    match rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st)
            if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink =>
        {
            Errno::LOOP.into()
        }
        _ => Errno::NOTDIR.into(),
    }
}

/// Opens the directory `rel` under `root`, creating missing components (none a link).
pub(crate) fn create_dirs(root: &OwnedFd, rel: &str) -> io::Result<OwnedFd> {
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY;
    match open(root, rel, dir_flags, Mode::empty()) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }
    let mut dir = open(root, "", dir_flags, Mode::empty())?;
    for part in rel.split('/').filter(|p| !p.is_empty()) {
        match rustix::fs::mkdirat(&dir, part, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        dir = open(&dir, part, dir_flags, Mode::empty())?;
    }
    Ok(dir)
}

/// Splits `rel` into its parent directory and last component.
pub(crate) fn split(rel: &str) -> (&str, &str) {
    match rel.rfind('/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => ("", rel),
    }
}

/// Whether an error is a refused symbolic link (`ELOOP` from `O_NOFOLLOW` or
/// `RESOLVE_NO_SYMLINKS`, `EXDEV` from `RESOLVE_BENEATH`).
pub(crate) fn is_link_refusal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == Errno::LOOP.raw_os_error() || code == Errno::XDEV.raw_os_error()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_resolvers_refuse_links_anywhere_on_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        std::fs::create_dir_all(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a/ok"), b"ok").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("a/dirlink")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("a/filelink"))
            .unwrap();
        let root: OwnedFd = std::fs::File::open(dir.path()).unwrap().into();
        let ro = OFlags::RDONLY;
        for resolver in [open, walk] {
            assert!(resolver(&root, "a/ok", ro, Mode::empty()).is_ok());
            for rel in ["a/dirlink/secret", "a/filelink"] {
                let e = resolver(&root, rel, ro, Mode::empty()).unwrap_err();
                assert!(is_link_refusal(&e), "{rel}: {e}");
            }
        }
        assert!(create_dirs(&root, "a/dirlink/new").is_err());
        assert!(!outside.path().join("new").exists());
        assert!(create_dirs(&root, "a/b/c").is_ok());
        assert!(dir.path().join("a/b/c").is_dir());
    }
}
