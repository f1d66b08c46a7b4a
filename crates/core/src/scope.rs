//! Which storage keys a caller may touch: the one rule the HTTP storage routes, the engine
//! (threaded jobs, Python bridge nodes) and the worker-call handler (subprocess and Docker jobs)
//! all apply.
//!
//! Under a single-user auth provider the whole store is the user's ([`KeyScope::WholeStore`]).
//! Under a multi-user provider ([`KeyScope::UserPrefix`]) a user owns exactly the keys whose
//! first segment is their id, in asset and in temp storage; a job's temp objects live under
//! `{user}/jobs/{job}/` there, so they are that job's and that user's (the HTTP temp route serves
//! them to their owner, and no other user's job can name them). Single-user stores keep
//! NodeTool's `jobs/{job}/` layout.
//!
//! [`ScopedStorage`] wraps a backend so that every keyed call outside the scope fails with
//! [`ErrorKind::PermissionDenied`] before the backend is touched: the engine gives each job its
//! storages wrapped, so no node can reach another user's key by any path.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::key::{StorageKey, StoragePrefix};
use crate::storage::{
    ByteRange, ByteStream, Download, ObjectMeta, Progress, PutOptions, Storage, StorageInfo,
};

/// Which keys a user owns (see the module docs). Chosen once per process from the auth
/// provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyScope {
    /// Single-user auth providers (none, local, static): the whole store is the user's.
    #[default]
    WholeStore,
    /// Multi-user auth providers: a user owns the keys under `{user_id}/`, nothing else.
    UserPrefix,
}

impl KeyScope {
    /// The scope of a process whose auth provider is multi-user (`true`) or not.
    pub fn for_auth(multi_user: bool) -> Self {
        if multi_user {
            Self::UserPrefix
        } else {
            Self::WholeStore
        }
    }

    /// Does `user` own the key or prefix `path`? Under [`KeyScope::UserPrefix`] its first
    /// segment must be `user` and something must follow (`u1` alone or `u10/...` is not
    /// `u1`'s; an empty prefix would be everyone's).
    pub fn permits(self, user: &str, path: &str) -> bool {
        match self {
            Self::WholeStore => true,
            Self::UserPrefix => {
                !user.is_empty()
                    && path
                        .strip_prefix(user)
                        .is_some_and(|rest| rest.starts_with('/'))
            }
        }
    }

    /// The folder a job's temp objects go in: `jobs/{job}/`, or `{user}/jobs/{job}/` under
    /// [`KeyScope::UserPrefix`].
    pub fn temp_prefix(self, user: &str, job_id: &str) -> String {
        match self {
            Self::WholeStore => format!("jobs/{job_id}/"),
            Self::UserPrefix => format!("{user}/jobs/{job_id}/"),
        }
    }

    /// `PermissionDenied` naming `path` when `user` does not own it.
    pub fn check(self, user: &str, path: &str, what: &'static str) -> Result<()> {
        if self.permits(user, path) {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "{what} {path:?} belongs to another user (this user's keys start with {user:?}/)"
            ),
        )
        .with_operation("storage.scope")
        .with_context(what, path))
    }
}

/// A storage seen by one user: every keyed call outside `scope` for `user` is refused with
/// `PermissionDenied` before `inner` is called. With [`KeyScope::WholeStore`] it only forwards.
pub struct ScopedStorage {
    inner: Arc<dyn Storage>,
    scope: KeyScope,
    user: String,
}

impl fmt::Debug for ScopedStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopedStorage")
            .field("inner", &self.inner)
            .field("scope", &self.scope)
            .field("user", &self.user)
            .finish()
    }
}

impl ScopedStorage {
    /// `inner` itself when the scope is the whole store, else `inner` wrapped for `user`.
    pub fn wrap(inner: Arc<dyn Storage>, scope: KeyScope, user: &str) -> Arc<dyn Storage> {
        match scope {
            KeyScope::WholeStore => inner,
            KeyScope::UserPrefix => Arc::new(Self {
                inner,
                scope,
                user: user.to_owned(),
            }),
        }
    }

    fn key(&self, key: &StorageKey) -> Result<()> {
        self.scope.check(&self.user, key.as_str(), "key")
    }
}

#[async_trait]
impl Storage for ScopedStorage {
    fn info(&self) -> StorageInfo {
        self.inner.info()
    }

    async fn upload(
        &self,
        key: &StorageKey,
        body: ByteStream,
        opts: PutOptions,
    ) -> Result<ObjectMeta> {
        self.key(key)?;
        self.inner.upload(key, body, opts).await
    }

    async fn download(&self, key: &StorageKey, range: Option<ByteRange>) -> Result<Download> {
        self.key(key)?;
        self.inner.download(key, range).await
    }

    async fn metadata(&self, key: &StorageKey) -> Result<Option<ObjectMeta>> {
        self.key(key)?;
        self.inner.metadata(key).await
    }

    async fn delete(&self, key: &StorageKey) -> Result<()> {
        self.key(key)?;
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &StoragePrefix) -> Result<Vec<ObjectMeta>> {
        self.scope.check(&self.user, prefix.as_str(), "prefix")?;
        self.inner.list(prefix).await
    }

    async fn url(&self, key: &StorageKey) -> Result<String> {
        self.key(key)?;
        self.inner.url(key).await
    }

    fn local_path(&self, key: &StorageKey) -> Option<std::path::PathBuf> {
        self.key(key).ok()?;
        self.inner.local_path(key)
    }

    async fn reap_interrupted(&self, _older_than: Duration) -> Result<usize> {
        // Housekeeping of the whole store is the operator's, never a user's.
        Ok(0)
    }

    async fn upload_file(
        &self,
        key: &StorageKey,
        file: &std::fs::File,
        opts: PutOptions,
        progress: Option<Progress>,
    ) -> Result<ObjectMeta> {
        self.key(key)?;
        self.inner.upload_file(key, file, opts, progress).await
    }

    async fn presigned_url(&self, key: &StorageKey, expires_in: Duration) -> Result<String> {
        self.key(key)?;
        self.inner.presigned_url(key, expires_in).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_store_permits_everything() {
        for p in ["", "u2/a", "jobs/j/x", "u1"] {
            assert!(KeyScope::WholeStore.permits("u1", p), "{p}");
        }
        assert_eq!(KeyScope::WholeStore.temp_prefix("u1", "j"), "jobs/j/");
    }

    #[test]
    fn user_prefix_permits_only_the_users_folder() {
        let s = KeyScope::UserPrefix;
        assert!(s.permits("u1", "u1/a.txt"));
        assert!(s.permits("u1", "u1/"));
        assert!(s.permits("u1", "u1/jobs/j/x"));
        for p in ["", "u", "u1", "u10/a", "u2/u1/a", "jobs/j/x", "/u1/a"] {
            assert!(!s.permits("u1", p), "{p}");
        }
        assert!(!s.permits("", "/a"), "an empty user owns nothing");
        assert_eq!(s.temp_prefix("u1", "j"), "u1/jobs/j/");
        assert!(s.permits("u1", &s.temp_prefix("u1", "j")));
        let err = s.check("u1", "u2/a", "key").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied);
        assert!(err.message().contains("u2/a"), "{err}");
    }

    #[test]
    fn serde_names_are_stable() {
        assert_eq!(
            serde_json::to_string(&KeyScope::UserPrefix).unwrap(),
            "\"user_prefix\""
        );
        assert_eq!(
            serde_json::from_str::<KeyScope>("\"whole_store\"").unwrap(),
            KeyScope::WholeStore
        );
    }
}
